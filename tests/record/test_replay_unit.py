"""The replay on hand-built recordings: what the start left, the loop's items and ticks, by hand.

Each recording is written with the recorder's own writer, so these tests read what ``surge run
--record`` writes; the expected signals and exits follow from the [surge] and [trade] defaults.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from surge.backfill import Backfilled
from surge.config import Settings
from surge.errors import ConfigError
from surge.filter4h import Rule4h
from surge.models import Kline, Position
from surge.record.format import FORMAT_VERSION, Header, Scan, Start, settings_sections
from surge.record.recorder import Recorder, check_record_dir
from surge.record.replay import replay

MINUTE = 60_000
T0 = 1_796_000_040.0  # wall seconds when the loop started: 40 s into a minute
M0 = int(T0 * 1000) // MINUTE * MINUTE  # that minute's open time
SYM, HELD = "SURGEUSDT", "HELDUSDT"


def k1m(
    symbol: str, open_time: int, open_: float, close: float, volume: float, at_ms: int, closed: bool = False
) -> Kline:
    high = max(open_, close)
    return Kline(
        symbol, "1m", open_time, open_time + MINUTE - 1, open_, high, min(open_, close), close, volume,
        volume * close, 10, closed, at_ms,
    )  # fmt: skip


def write_recording(
    directory: Path, items: list[Any], *, venue: str = "sim", resumed: list[Position] | None = None
) -> Path:
    settings = Settings()
    rule = Rule4h()
    decisions = [rule.decide(SYM, 10.0, 10.2, 1e7), rule.decide(HELD, 5.0, 9.0, 1e7)]  # HELD fails (+80 %)
    header = Header(FORMAT_VERSION, "20261130T120000", 0, int(T0 * 1000), venue, venue.startswith("live:"),
                    [SYM, HELD], settings_sections(settings))  # fmt: skip
    start = Start(0.0, T0, 0, [HELD, SYM], Scan(decisions, {}, [], int(T0 * 1000)), {}, resumed or [])
    rec = Recorder(check_record_dir(directory))
    rec.prepare(header)
    rec.write_items([start, *items])
    rec.stop(5)
    return directory


def at(seconds: float) -> tuple[float, float]:
    """The loop's (monotonic, wall) readings ``seconds`` after its start."""
    return seconds, T0 + seconds


def surge_session() -> list[Any]:
    """20 quiet minutes of 10,000 each by backfill, then a +5 % minute of 100,000 (x10), then more."""
    quiet = [k1m(SYM, M0 - i * MINUTE, 10.0, 10.0, 10_000.0, 0, closed=True) for i in range(20, 0, -1)]
    surge_ms = M0 + 45_000
    return [
        (*at(0.1), Backfilled(SYM, quiet)),
        (*at(0.2), None),
        (*at(5.0), [k1m(SYM, M0, 10.0, 10.5, 100_000.0, surge_ms)]),
        (*at(5.1), None),
        (*at(6.0), [k1m(SYM, M0, 10.0, 10.75, 110_000.0, surge_ms + 1000)]),  # +2.4 % on the entry
        (*at(6.1), None),
    ]


def test_a_surge_after_a_backfill_enters_and_its_take_profit_exits(tmp_path: Path) -> None:
    report = replay(write_recording(tmp_path, surge_session()))
    [signal] = report.signals
    assert signal == {"key": f"{SYM}:{M0}", "symbol": SYM, "time": M0 + 45_000, "price": 10.5}
    [position] = report.positions
    entry = 10.5 * 1.0005  # slippage 0.05 % against us
    assert position["entry_price"] == pytest.approx(entry)
    assert position["exit_reason"] == "take_profit"
    assert position["exit_price"] == pytest.approx(10.75 * 0.9995)
    assert report.frames == 2 and not report.warnings


def test_without_its_backfill_the_same_surge_has_no_baseline(tmp_path: Path) -> None:
    items = [item for item in surge_session() if not isinstance(item[2], Backfilled)]
    report = replay(write_recording(tmp_path, items))
    assert report.signals == [] and report.positions == []


def test_a_live_recording_replays_as_paper(tmp_path: Path) -> None:
    report = replay(write_recording(tmp_path, surge_session(), venue="live:fapi.binance.com"))
    assert [p["exit_reason"] for p in report.positions] == ["take_profit"]


def test_a_resumed_position_is_closed_by_the_ticks_clock_at_its_max_hold(tmp_path: Path) -> None:
    deadline = int(T0 * 1000) + 10_000
    held = Position(f"{HELD}:{M0 - MINUTE}", HELD, 2.0, 8.0, M0 - 50_000, 9.0, 7.0, deadline, 0.008)
    items = [
        (*at(1.0), [k1m(HELD, M0, 8.0, 8.1, 5.0, int(T0 * 1000) + 1000)]),  # a price, before the deadline
        (*at(1.1), None),
        (*at(9.9), None),  # an exit check (one a second): the deadline is 0.1 s away
        (*at(10.5), None),  # past the deadline, but no exit check is due before 10.9
    ]
    report = replay(write_recording(tmp_path, items, resumed=[held]))
    assert [p["exit_reason"] for p in report.positions] == [None]
    report = replay(write_recording(tmp_path / "later", [*items, (*at(10.95), None)], resumed=[held]))
    assert report.signals == []  # the resumed position's own signal was the run's, before it
    [position] = report.positions
    assert position["key"] == held.key and position["exit_reason"] == "max_hold"
    assert position["exit_price"] == pytest.approx(8.1 * 0.9995)


def test_a_loss_the_recorder_marked_is_warned_about(tmp_path: Path) -> None:
    rec_dir = write_recording(tmp_path, surge_session()[:2])
    report = replay(rec_dir)
    assert report.warnings == []
    other = check_record_dir(tmp_path / "lossy")
    rec = Recorder(other, max_backlog=0)
    rec.prepare(
        Header(FORMAT_VERSION, "20261130T120000", 0, 0, "sim", False, None, settings_sections(Settings()))
    )
    rec.tick(0.0, T0)  # dropped: the backlog is full
    rec.write_items([Start(0.0, T0, 0, [], Scan([], {}, [], 0), {}, []), (*at(1.0), None)])
    rec.stop(5)
    assert any("lost 1 item(s)" in w for w in replay(other).warnings)


def test_an_unusable_record_dir_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="--record: cannot write to"):
        check_record_dir(blocker / "sub")


def test_run_help_states_the_recordings_size_and_bound() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "surge", "run", "--help"], capture_output=True, text=True, timeout=60
    )
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0
    assert "--record DIR" in text and "MB/hour" in text and "--record-max-mb" in text and "OLDEST" in text


def test_a_missing_hour_in_the_middle_stops_the_replay_there_with_a_warning(tmp_path: Path) -> None:
    items = [(*at(h * 3600.0 + 1), None) for h in range(3)]
    directory = write_recording(tmp_path, items)
    files = sorted(directory.glob("*.srec"))
    assert len(files) == 3
    files[1].unlink()  # as --record-max-mb would not, but a hand might
    report = replay(directory)
    assert report.truncated and "hour files 1 to 1 are missing" in report.warnings[0]
