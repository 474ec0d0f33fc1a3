"""``surge watch``: the screen rendered at a fixed width from a snapshot, the snapshot read from a home
(a child process plays the running bot: it holds the lock and writes the heartbeats it is handed), the
plain line mode, ``--once`` and the heartbeat fields the bot writes for it."""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from surge.heartbeat import ConnectionHealth, RestWeight, heartbeat_of
from surge.models import Position, Signal
from surge.operator.watch import (
    OpenPosition,
    Snapshot,
    collect_snapshot,
    plain_line,
    render,
    watch_live,
    watch_plain,
)
from surge.store import SignalRecord, StoreError, open_store
from tests.fake_bot import FakeBot
from tests.operator.ledger import HOUR, enter, run, trade

NOW = 1_764_160_000.0  # 2025-11-26 12:26:40 UTC
WIDTH = 120


def position(symbol: str = "BTCUSDT", entry: float = 100.0, qty: float = 2.0) -> Position:
    t = int(NOW * 1000) - 600_000
    return Position(f"{symbol}:{t}", symbol, qty, entry, t, entry * 1.04, entry * 0.975, t + HOUR, fees=0.1)


def snapshot(**changes: Any) -> Snapshot:
    """A running bot's screen: two connections (one down), one open position at a known last price."""
    fields: dict[str, Any] = {
        "taken_at": NOW,
        "home": "/srv/surge",
        "running": True,
        "pid": 4242,
        "written_at": NOW - 3.0,
        "current": True,
        "mode": "paper",
        "venue": "sim",
        "started_at": NOW - 3725,
        "connections": [
            ConnectionHealth(
                name="surge-ws-1",
                connected=True,
                streams=200,
                last_message_age_s=0.5,
                reconnects=2,
                age_s=900.0,
            ),
            ConnectionHealth(
                name="surge-ws-2",
                connected=False,
                streams=0,
                last_message_age_s=None,
                reconnects=7,
                age_s=0.0,
            ),
        ],
        "connected": 1,
        "streams": 200,
        "last_message_at": NOW - 3.5,
        "latency_ms_p99": 1.234,
        "rest_weight": RestWeight(used=12, peak=85, limit=2400, rate_limited=1),
        "positions": [OpenPosition(position(), 101.0)],
        "signals": [
            SignalRecord(
                Signal("BTCUSDT", int(NOW * 1000) - 600_000, 0, 4.56, 5.5, 90_000.0, 99.5), True, None
            )
        ],
        "signal_count": 3,
        "realised_today": 2.5,
        "closed_today": 2,
    }
    fields.update(changes)
    return Snapshot(**fields)


def line_of(screen: str, start: str) -> str:
    [line] = [x for x in screen.splitlines() if x.strip().startswith(start)]
    return line


def test_screen_shows_state_connections_positions_signals_weight_and_pnl() -> None:
    screen = render(snapshot(), WIDTH)
    assert all(len(line) <= WIDTH for line in screen.splitlines())
    assert "running, pid 4242 (paper, sim, up 1h 02m), heartbeat 3.0 s ago" in screen
    # a connection's age as of now: 0.5 s at the heartbeat's write + the 3 s since
    assert re.search(r"surge-ws-1\s+up\s+200\s+3\.5 s ago\s+2\s+15m 00s", line_of(screen, "surge-ws-1"))
    assert re.search(r"surge-ws-2\s+DOWN\s+0\s+-\s+7\s+-", line_of(screen, "surge-ws-2"))
    # unrealised: (101 - 100) * 2 - 0.1 of entry fee
    pos = line_of(screen, "BTCUSDT  ")
    assert re.search(r"BTCUSDT\s+2\s+100\s+101\s+\+1\.00\s+\+1\.9000\s+104\s+97\.5\s+50m 00s", pos)
    assert "open positions  1, unrealised +1.9000 USDT" in screen
    assert "realised today  +2.5000 USDT over 2 closed" in screen
    assert "REST weight     12 / 2400 (peak 85, 429/418 seen: 1)" in screen
    assert "decision p99    1.23 ms" in screen
    assert "connections     1 up, 1 down, 200 streams" in screen
    assert "last message    3.5 s ago" in screen
    assert re.search(r"2025-11-26 12:16:40\s+BTCUSDT\s+\+4\.56\s+5\.50\s+99\.5\s+entered", screen)


def test_a_position_without_a_last_price_shows_no_unrealised_pnl() -> None:
    screen = render(snapshot(positions=[OpenPosition(position(), None)]), WIDTH)
    assert re.search(r"BTCUSDT\s+2\s+100\s+-\s+-\s+-\s+104", line_of(screen, "BTCUSDT  "))
    assert "unrealised - USDT" in screen


def test_stale_and_stopped_bots_say_so() -> None:
    stale = render(snapshot(written_at=NOW - 45), WIDTH)
    assert "STALE: running, pid 4242" in stale and "heartbeat 45 s old" in stale
    stopped = render(
        snapshot(running=False, pid=None, current=False, connections=[], positions=[], rest_weight=None),
        WIDTH,
    )
    assert "NOT RUNNING (last heartbeat 2025-11-26 12:26:37 UTC)" in stopped
    assert "Streams: none (not running)" in stopped and "Open positions: none" in stopped


def test_plain_line_has_the_same_figures_in_one_line() -> None:
    line = plain_line(snapshot())
    assert "\n" not in line
    assert line.startswith("2025-11-26 12:26:40 running pid 4242 | connections 1 up, 1 down | streams 200")
    assert "weight 12/2400" in line and "open 1 unrealised +1.9000" in line
    assert "realised today +2.5000 (2 closed)" in line


def snapshots(*items: Snapshot | BaseException) -> Callable[[], Snapshot]:
    """A ``collect`` that hands out ``items`` in turn (raising the exceptions among them)."""
    queue = list(items)

    def collect() -> Snapshot:
        item = queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    return collect


def test_terminal_mode_redraws_in_place_without_a_thread_of_its_own() -> None:
    out = io.StringIO()
    console = Console(file=out, width=WIDTH, force_terminal=True, color_system=None)
    threads = threading.active_count()
    watch_live(snapshots(snapshot(), snapshot(signal_count=77)), console, 0.01, count=2)
    text = out.getvalue()
    assert "signals         3" in text and "signals         77" in text  # both frames drawn
    assert "\x1b[" in text  # cursor movement: the second frame replaces the first
    assert threading.active_count() == threads


def test_a_failed_read_is_shown_and_the_watch_goes_on() -> None:
    out = io.StringIO()
    watch_plain(snapshots(snapshot(), StoreError("database is locked"), snapshot()), out, 0.01, count=3)
    first, second, third = out.getvalue().splitlines()
    assert "cannot read" not in first and "cannot read: database is locked" in second
    assert "signals 3" in second  # the last good figures, marked
    assert "cannot read" not in third


def test_ctrl_c_leaves_with_exit_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import surge.operator.watch as watch_module

    collect = snapshots(snapshot(), KeyboardInterrupt())
    monkeypatch.setattr(watch_module, "collect_snapshot", lambda home: collect())
    result = run(tmp_path / "home", "watch", "--interval", "0.2")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1


# --------------------------------------------------------------------------- from a home


@pytest.fixture
def running_home(tmp_path: Path) -> Iterator[tuple[Path, FakeBot]]:
    """A home with one open ETHUSDT position, one trade closed today (+1.5) and one yesterday, and a
    bot holding the lock whose heartbeat gives ETHUSDT's last price and two connections."""
    home = tmp_path / "home"
    now_ms = int(time.time() * 1000)
    today = now_ms - now_ms % 86_400_000
    with open_store(home) as store:
        enter(store, "ETHUSDT", now_ms - 60_000, price=200.0, qty=0.5)
        trade(store, "AUSDT", today - 2 * HOUR, today - HOUR, -9.0)  # yesterday: not today's PnL
        trade(store, "AUSDT", today, today + 1, 1.5)
        trade(store, "BUSDT", today, today + 2, 1.0, venue="other")  # another venue than the bot's
    bot = FakeBot(home)
    bot.beat(
        written_at=time.time(),
        started_at=time.time() - 100,
        mode="paper",
        venue="sim",
        connections=2,
        streams=40,
        last_message_at=time.time() - 1,
        stream_connections=[
            {"name": "surge-ws-1", "connected": True, "streams": 20, "last_message_age_s": 0.25,
             "reconnects": 0, "age_s": 99.0},
            {"name": "surge-ws-2", "connected": True, "streams": 20, "last_message_age_s": "bad",
             "reconnects": 1, "age_s": 50.0},
            "not a connection",
        ],
        last_prices={"ETHUSDT": 210.0, "XRPUSDT": True},
        rest_weight={"used": 5, "peak": 41, "limit": 2400, "rate_limited": 0},
    )  # fmt: skip
    try:
        yield home, bot
    finally:
        bot.kill()


def test_snapshot_reads_lock_heartbeat_and_database(running_home: tuple[Path, FakeBot]) -> None:
    home, bot = running_home
    snap = collect_snapshot(home)
    assert snap.running and snap.current and snap.pid == bot.pid and not snap.stale
    assert [c["name"] for c in snap.connections] == ["surge-ws-1", "surge-ws-2"]  # junk left out
    assert snap.connections[1]["last_message_age_s"] is None  # a wrong type reads as unknown
    [op] = snap.positions
    assert op.position.symbol == "ETHUSDT" and op.last_price == 210.0
    assert op.unrealised == pytest.approx((210.0 - 200.0) * 0.5 - 0.05)
    assert (snap.realised_today, snap.closed_today) == (pytest.approx(1.5), 1)  # the bot's venue, today
    assert snap.rest_weight == {"used": 5, "peak": 41, "limit": 2400, "rate_limited": 0}
    assert snap.signal_count == 3  # on the bot's venue


def test_once_prints_one_screen(running_home: tuple[Path, FakeBot]) -> None:
    home, bot = running_home
    result = run(home, "watch", "--once")
    assert result.exit_code == 0, result.output
    assert f"running, pid {bot.pid} (paper, sim, up 1m" in result.stdout
    assert re.search(r"ETHUSDT\s+0\.5\s+200\s+210\s+\+5\.00\s+\+4\.9500", result.stdout)
    assert re.search(r"surge-ws-1\s+up\s+20\s+\d+\.\d s ago\s+0\s+1m 39s", result.stdout)
    assert "REST weight     5 / 2400" in result.stdout


def test_not_a_terminal_prints_one_plain_line_per_refresh(running_home: tuple[Path, FakeBot]) -> None:
    home, bot = running_home
    result = run(home, "watch", "--interval", "0.2", "--count", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        assert f"running pid {bot.pid} | connections 2 up | streams 40" in line
        assert "open 1 unrealised +4.9500" in line and "realised today +1.5000 (1 closed)" in line


def test_a_missing_home_is_not_running_and_is_not_created(tmp_path: Path) -> None:
    home = tmp_path / "nowhere"
    result = run(home, "watch", "--once")
    assert result.exit_code == 0, result.output
    assert "NOT RUNNING" in result.stdout and "Last signals: none yet" in result.stdout
    assert not home.exists()


def test_a_home_that_is_a_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    home = tmp_path / "file"
    home.write_text("x")
    result = run(home, "watch", "--once")
    assert result.exit_code == 2
    assert result.stderr.startswith("surge: error: SURGE_HOME") and "Traceback" not in result.output


# --------------------------------------------------------------------------- what the bot writes


def test_heartbeat_carries_connections_last_prices_of_open_positions_and_rest_weight() -> None:
    per_connection = [
        {"name": "surge-ws-1", "connected": True, "retiring": False, "streams": 3, "confirmed": 2,
         "last_message_age_s": 0.4, "reconnects": 1, "age_s": 12.5, "messages": 9},
    ]  # fmt: skip
    stats = {
        "connections": 1,
        "streams": 2,
        "reconnects": 1,
        "gaps": 0,
        "events": 9,
        "last_message_age_s": 0.4,
    }
    held = position("ETHUSDT")
    bot = SimpleNamespace(
        manager=SimpleNamespace(stats=lambda: {**stats, "per_connection": per_connection}),
        store=SimpleNamespace(signal_count=lambda venue: 1),
        latency=_Latency(),
        clock=SimpleNamespace(wall=lambda: NOW),
        settings=SimpleNamespace(trade=SimpleNamespace(mode="paper")),
        book=_Book([held]),
        last_price={"ETHUSDT": 101.5, "BTCUSDT": 7.0},
        rest=SimpleNamespace(
            limiter=SimpleNamespace(last_used_weight=7, max_used_weight=30, limit=2400, rate_limited=2)
        ),
        filters=SimpleNamespace(universe=[]),
        backfill=SimpleNamespace(done=0, pending=set(), retry=set()),
        passing=set(),
        started_at=NOW - 10,
        ready_at=NOW - 5,
        venue="sim",
        start_weight=0,
        baseline_ready=lambda: 0,
    )
    beat = heartbeat_of(bot, running=True)  # type: ignore[arg-type]
    assert beat["stream_connections"] == [
        {"name": "surge-ws-1", "connected": True, "streams": 2, "last_message_age_s": 0.4, "reconnects": 1,
         "age_s": 12.5}
    ]  # fmt: skip
    assert beat["last_prices"] == {"ETHUSDT": 101.5}  # open positions' symbols only
    assert beat["rest_weight"] == {"used": 7, "peak": 30, "limit": 2400, "rate_limited": 2}
    json.dumps(beat)  # the file is JSON
    assert os.getpid() == beat["pid"]


class _Latency:
    def percentiles(self) -> tuple[float, float]:
        return 0.5, 1.5

    def __len__(self) -> int:
        return 4


class _Book:
    def __init__(self, positions: list[Position]) -> None:
        self._positions = positions

    def positions(self) -> list[Position]:
        return list(self._positions)

    def __len__(self) -> int:
        return len(self._positions)


def test_a_heartbeat_without_connection_detail_still_counts_them() -> None:
    screen = render(snapshot(connections=[], connected=3), WIDTH)  # written by an older surge run
    assert "Streams: 3 connections, no detail in the heartbeat" in screen
    assert "connections     3 up, 200 streams" in screen
