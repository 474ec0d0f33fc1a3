"""``surge status``, ``surge signals``, ``surge positions``: the real entry point in subprocesses.

The database is filled through the Store API (what ``surge run`` uses); a running bot is played by a
child process that holds the instance lock and writes heartbeats, so status is tested against the
same files, locks and processes a trader's terminal would see.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from surge.models import Position, Signal
from surge.store import MIGRATIONS, Store, open_store
from tests.fake_bot import FakeBot

SIGNAL_KEYS = ["time", "symbol", "change_pct", "volume_multiple", "price"]
POSITION_KEYS = [
    "symbol",
    "key",
    "qty",
    "entry_price",
    "entry_time",
    "take_profit",
    "stop_loss",
    "exit_price",
    "exit_time",
    "exit_reason",
    "fees",
    "pnl",
    "venue",
]
STATUS_KEYS = [
    "running",
    "pid",
    "connections",
    "streams",
    "threads",
    "last_message_age_s",
    "signals",
    "open_positions",
]
T0 = 1_764_115_200_000  # 2025-11-26 00:00:00 UTC
M1 = 60_000


def surge(home: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURGE_")}
    env["SURGE_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "surge", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def ok_json(home: Path, *args: str) -> object:
    proc = surge(home, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    return json.loads(proc.stdout)


def sig(sym: str, minute: int, price: float) -> Signal:
    t = T0 + minute * M1
    return Signal(sym, t + 15_000, t, 3.0 + minute / 10, 4.5, 80_000.0, price)


def pos(s: Signal, qty: float) -> Position:
    entry = s.price * 1.0005
    return Position(
        s.key, s.symbol, qty, entry, s.time, entry * 1.02, entry * 0.99, s.time + 3_600_000, fees=0.05
    )


def close(p: Position, price: float, reason: str) -> Position:
    fees = p.fees + price * p.qty * 0.0005
    return replace(
        p,
        exit_price=price,
        exit_time=p.entry_time + 120_000,
        exit_reason=reason,
        fees=fees,
        pnl=(price - p.entry_price) * p.qty - fees,
    )


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Position]]]:
    """A home with 4 signals (one skipped) and 3 positions (one open) on the simulator venue."""
    home = tmp_path / "home"
    a, b, c, d = (
        sig("BTCUSDT", 0, 97_000.5),
        sig("ETHUSDT", 2, 3_000.25),
        sig("SOLUSDT", 5, 140.0),
        sig("PEPEUSDT", 7, 0.00001234),
    )
    with open_store(home) as store:
        assert store.record_entry(a, pos(a, 0.001), venue="sim")
        assert store.record_entry(b, pos(b, 0.03), venue="sim")
        assert store.record_entry(c, None, "max_open_positions", venue="sim")
        assert store.record_entry(d, pos(d, 8e6), venue="sim")
        won, lost = close(pos(a, 0.001), 99_000.0, "take_profit"), close(pos(b, 0.03), 2_960.0, "stop_loss")
        store.close_position(won)
        store.close_position(lost)
    yield home, {"won": won, "lost": lost, "open": pos(d, 8e6)}


def test_missing_home_reads_as_empty_and_is_not_created(tmp_path: Path) -> None:
    home = tmp_path / "nowhere"
    assert ok_json(home, "status") == {
        "running": False,
        "pid": None,
        "connections": 0,
        "streams": 0,
        "threads": 0,
        "last_message_age_s": None,
        "signals": 0,
        "open_positions": 0,
    }
    assert ok_json(home, "signals") == []
    assert ok_json(home, "positions", "--all") == []
    for args, text in (
        (["signals"], "no signals recorded yet"),
        (["positions"], "no open positions"),
        (["positions", "--all"], "no positions recorded yet"),
        (["status"], "running  "),
    ):
        proc = surge(home, *args)
        assert proc.returncode == 0 and text in proc.stdout, proc.stdout + proc.stderr
    assert not home.exists()


def test_signals_newest_first_exact_keys_and_limit(filled: tuple[Path, dict[str, Position]]) -> None:
    home, _ = filled
    out = ok_json(home, "signals")
    assert isinstance(out, list) and all(list(row) == SIGNAL_KEYS for row in out)
    assert [(r["symbol"], r["time"]) for r in out] == [
        ("PEPEUSDT", T0 + 7 * M1 + 15_000),
        ("SOLUSDT", T0 + 5 * M1 + 15_000),
        ("ETHUSDT", T0 + 2 * M1 + 15_000),
        ("BTCUSDT", T0 + 15_000),
    ]
    assert out[0]["price"] == 0.00001234 and out[0]["change_pct"] == pytest.approx(3.7)
    assert out[0]["volume_multiple"] == 4.5
    assert [r["symbol"] for r in ok_json(home, "signals", "--limit", "2")] == ["PEPEUSDT", "SOLUSDT"]

    table = surge(home, "signals").stdout.splitlines()
    assert table[0].split()[:3] == ["time", "(UTC)", "symbol"]
    assert table[1].startswith("2025-11-26 00:07:15  PEPEUSDT") and "0.00001234" in table[1]
    assert "skipped: max_open_positions" in table[2] and table[4].startswith("2025-11-26 00:00:15  BTCUSDT")
    assert "venue" not in table[0]  # one venue: no venue column
    assert surge(home, "signals", "--limit", "0").returncode == 2


def test_positions_open_and_all_with_realised_pnl(filled: tuple[Path, dict[str, Position]]) -> None:
    home, p = filled
    opened = ok_json(home, "positions")
    assert isinstance(opened, list) and len(opened) == 1 and list(opened[0]) == POSITION_KEYS
    o = p["open"]
    assert opened[0] == {
        "symbol": o.symbol,
        "key": o.key,
        "qty": o.qty,
        "entry_price": o.entry_price,
        "entry_time": o.entry_time,
        "take_profit": o.take_profit,
        "stop_loss": o.stop_loss,
        "exit_price": None,
        "exit_time": None,
        "exit_reason": None,
        "fees": o.fees,
        "pnl": None,
        "venue": "sim",
    }
    every = ok_json(home, "positions", "--all")
    assert isinstance(every, list)
    assert [(r["symbol"], r["exit_reason"]) for r in every] == [
        ("PEPEUSDT", None),
        ("ETHUSDT", "stop_loss"),
        ("BTCUSDT", "take_profit"),
    ]
    assert every[2]["pnl"] == p["won"].pnl and every[1]["exit_price"] == 2_960.0

    human = surge(home, "positions").stdout
    assert "PEPEUSDT" in human and "BTCUSDT" not in human and "1 open position" in human
    human_all = surge(home, "positions", "--all").stdout.splitlines()
    assert human_all[0].split()[:3] == ["entered", "(UTC)", "symbol"]
    assert re.search(r"2025-11-26 00:00:15\s+BTCUSDT.*2025-11-26 00:02:15.*take_profit", human_all[3])
    realised = p["won"].pnl + p["lost"].pnl  # type: ignore[operator]
    assert human_all[-1] == (
        f"realised PnL: {realised:+.4f} USDT over 2 closed positions (fees included), 1 open"
    )


def test_status_counts_from_the_database_when_not_running(filled: tuple[Path, dict[str, Position]]) -> None:
    home, _ = filled
    from surge.runtime import write_json_atomic

    # the heartbeat a kill -9 left behind: the lock is free, so it is not running
    write_json_atomic(
        home / "heartbeat.json",
        {
            "pid": 1,
            "written_at": time.time() - 600,
            "connections": 3,
            "streams": 40,
            "threads": 6,
            "last_message_at": time.time(),
        },
    )
    out = ok_json(home, "status")
    assert out == {
        "running": False,
        "pid": None,
        "connections": 0,
        "streams": 0,
        "threads": 0,
        "last_message_age_s": None,
        "signals": 4,
        "open_positions": 1,
    }
    human = surge(home, "status").stdout
    assert re.search(r"^running\s+no \(last heartbeat \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)$", human, re.M)
    assert re.search(r"^signals\s+4$", human, re.M) and "warning" not in human


def test_status_while_running_then_after_kill_9(filled: tuple[Path, dict[str, Position]]) -> None:
    home, _ = filled
    bot = FakeBot(home)
    try:
        now = time.time()
        bot.beat(
            written_at=now,
            started_at=now - 3725,
            connections=3,
            streams=412,
            threads=7,
            last_message_at=now - 2.5,
            signals=99,
            open_positions=99,
            mode="paper",
            venue="sim",
        )
        out = ok_json(home, "status")
        assert isinstance(out, dict) and list(out) == STATUS_KEYS
        assert out["running"] is True and out["pid"] == bot.pid
        assert (out["connections"], out["streams"], out["threads"]) == (3, 412, 7)
        assert 2.5 <= out["last_message_age_s"] < 2.5 + 20
        assert (out["signals"], out["open_positions"]) == (4, 1)  # the database, for the bot's venue

        human = surge(home, "status")
        assert re.search(rf"^running\s+yes, pid {bot.pid} \(paper, sim, up 1h 02m\)$", human.stdout, re.M)
        assert re.search(r"^last message\s+\d+\.\d s ago$", human.stdout, re.M)
        assert "warning" not in human.stdout + human.stderr

        # alive but stuck: the lock is held and the heartbeat stopped 45 s ago
        bot.beat(
            written_at=time.time() - 45,
            connections=3,
            streams=412,
            threads=7,
            last_message_at=None,
            venue="other-venue",
        )
        human = surge(home, "status")
        assert human.returncode == 0
        assert re.search(r"^warning: running but the heartbeat is 4\d s old", human.stdout, re.M)
        stale = surge(home, "status", "--json")
        assert "running but the heartbeat is" in stale.stderr  # stdout stays one JSON object
        stale_out = json.loads(stale.stdout)
        assert stale_out["last_message_age_s"] is None and stale_out["signals"] == 0  # nothing on that venue

        # a heartbeat left by an earlier run (another pid) says nothing about this one
        bot.beat(pid=1, written_at=time.time(), connections=9, streams=9, threads=9, last_message_at=1.0)
        out = ok_json(home, "status")
        assert out["running"] is True and out["pid"] == bot.pid and out["connections"] == 0
        assert out["signals"] == 4  # no venue known: every venue
    finally:
        bot.kill()
    out = ok_json(home, "status")
    assert out["running"] is False and out["pid"] is None and out["connections"] == 0
    assert (out["signals"], out["open_positions"]) == (4, 1)


def test_readers_answer_while_a_writer_holds_a_transaction(filled: tuple[Path, dict[str, Position]]) -> None:
    """WAL: another process reads the committed state at once while ``surge run`` is mid-transaction."""
    home, _ = filled
    writer = sqlite3.connect(home / "surge.db", isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute("UPDATE positions SET exit_time = 1, exit_price = 1, exit_reason = 'x', pnl = 0")
        writer.execute("DELETE FROM signals WHERE symbol = 'SOLUSDT'")
        start = time.monotonic()
        assert len(ok_json(home, "signals")) == 4  # the uncommitted delete is invisible
        assert len(ok_json(home, "positions")) == 1
        assert ok_json(home, "status")["open_positions"] == 1  # type: ignore[index]
        assert time.monotonic() - start < 8.0  # far below the 10 s busy timeout: nobody waited
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_version_1_database_reads_as_empty_and_is_not_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import surge.store as store_mod

    home = tmp_path / "home"
    monkeypatch.setattr(store_mod, "MIGRATIONS", MIGRATIONS[:1])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 1)
    Store(home / "surge.db").close()
    monkeypatch.undo()
    assert ok_json(home, "signals") == [] and ok_json(home, "positions", "--all") == []
    assert ok_json(home, "status")["signals"] == 0  # type: ignore[index]
    db = sqlite3.connect(home / "surge.db")
    assert db.execute("SELECT version FROM schema_version").fetchone()[0] == 1  # looking is not migrating
    db.close()


@pytest.mark.parametrize("content", [b"not a database at all\n", b"SQLite format 3\x00" + b"\xff" * 8192])
def test_unusable_database_is_one_line_exit_1(tmp_path: Path, content: bytes) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "surge.db").write_bytes(content)
    for args in (["status"], ["signals", "--json"], ["positions", "--all"]):
        proc = surge(home, *args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("surge: error: ") and "surge.db" in lines[0]
    assert (home / "surge.db").read_bytes() == content


def test_bad_config_exits_2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "surge.toml").write_text("[surge]\nbogus = 1\n")
    proc = surge(home, "signals")
    assert proc.returncode == 2 and "surge.bogus" in proc.stderr


def test_live_exits_by_the_exchange_are_listed(tmp_path: Path) -> None:
    """Exit reasons a live broker records ("external": closed by hand or liquidated) and the live venue
    go through the store and the CLI like the paper ones."""
    home = tmp_path / "home"
    s = sig("SOLUSDT", 1, 180.0)
    with open_store(home) as store:
        assert store.record_entry(s, pos(s, 0.5), venue="live:sim")
        store.close_position(close(pos(s, 0.5), 175.0, "external"), venue="live:sim")
    [row] = ok_json(home, "positions", "--all")
    assert row["exit_reason"] == "external" and row["venue"] == "live:sim" and row["exit_price"] == 175.0
    table = surge(home, "positions", "--all")
    assert table.returncode == 0 and "external" in table.stdout.splitlines()[1]
