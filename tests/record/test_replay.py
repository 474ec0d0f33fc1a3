"""Record -> replay on a real ``surge run --sim --record DIR`` session, and ``surge replay``'s errors.

One recorded session serves the module: a bot on four symbols (a 4h filter every symbol passes) into
which the test injects surges through the simulator's ``/_sim`` controls, so that it enters three
paper positions and leaves them by stop loss, take profit and max hold (the last by the loop's
periodic work, on its clock). The replay, with the recording's config, must give back exactly the
signals and positions the run's database holds; with the backfill records taken out it must not (the
test can tell a replay that ignores what the volume baseline came from); with another config it
answers "what if".
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from surge.record.format import FRAME_LENGTH, MAGIC, Backfill, encode_frame, read_frames, recording_files
from surge.record.replay import replay
from tests.bot_harness import (
    BotProcess,
    baseline_ready,
    cli_json,
    heartbeat,
    positions_of,
    surge_cli,
    wait_for,
    write_config,
)

#: Liquid symbols: an injected move shows in their klines at once. The --sim market's own surges
#: (one every 20 s, on liquid symbols) may add signals: the parity covers whatever happened.
HELD, STOPPED, TAKEN, LATE = "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"
SYMBOLS = [HELD, STOPPED, TAKEN, LATE]
#: Every symbol passes the 4h filter (the --sim market decides nothing here); a short max hold.
OVERRIDES: dict[str, dict[str, Any]] = {
    "filter_4h": {"min_change_pct": -100.0, "max_change_pct": 1000.0, "min_quote_volume": 0.0},
    "trade": {"max_hold_s": 12},
}


@dataclass(frozen=True)
class Session:
    home: Path
    recording: Path
    root: Path


def control(rest_url: str, name: str, **args: Any) -> None:
    answer = requests.get(f"{rest_url}/_sim/{name}", params=args, timeout=30)
    assert answer.status_code == 200, answer.text


def closed(home: Path, symbol: str) -> bool:
    return any(not p.is_open for p in positions_of(home, symbol))


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    root = tmp_path_factory.mktemp("record")
    home, recording = root / "home", root / "recording"
    config = write_config(root / "surge.toml", OVERRIDES)
    bot = BotProcess(home, None, SYMBOLS, config=config, extra=["--sim", "--record", str(recording)])
    try:
        text = bot.wait_log("simulated exchange on", 90)
        found = re.search(r"simulated exchange on (http://\S+)", text)
        assert found is not None, text
        rest_url = found.group(1)
        bot.wait_ready(90)
        wait_for(lambda: baseline_ready(home, len(SYMBOLS)), 90, "every volume baseline")
        for symbol in (HELD, STOPPED, TAKEN):
            control(rest_url, "surge", symbol=symbol, change_pct=5.0, volume_multiple=10.0)
        wait_for(
            lambda: all(positions_of(home, s) for s in (HELD, STOPPED, TAKEN)), 60, "three paper positions"
        )
        control(rest_url, "surge", symbol=STOPPED, change_pct=-5.0, volume_multiple=0.0)  # below its stop
        control(rest_url, "surge", symbol=TAKEN, change_pct=6.0, volume_multiple=0.0)  # above its target
        wait_for(lambda: closed(home, STOPPED) and closed(home, TAKEN), 60, "the exits on prices")
        assert not closed(home, HELD), "its max hold must end while the streams are silent"
        # no kline for a while (the connections go silent, then are replaced: a gap and its backfill):
        # HELD's max hold is then ended by the loop's periodic check, on its clock, not by a kline
        control(rest_url, "ws/stall", seconds=20)
        wait_for(lambda: closed(home, HELD), 60, "the exit by max hold")
        # the silent connection is replaced: a stream gap, its backfill, then a surge after them
        bot.wait_log("stream gap on", 60)
        gap_seen = time.time()
        wait_for(
            lambda: heartbeat(home).get("written_at", 0) > gap_seen and baseline_ready(home, len(SYMBOLS)),
            60,
            "every baseline after the gap",
        )
        control(rest_url, "surge", symbol=LATE, change_pct=5.0, volume_multiple=10.0)
        wait_for(lambda: positions_of(home, LATE), 60, "a position after the gap")
        assert bot.stop() == 0
        assert "recording:" in bot.log() and "NOT recorded" not in bot.log()
        yield Session(home, recording, root)
    finally:
        bot.ensure_stopped()


def replay_json(session: Session, *args: str, recording: Path | None = None) -> tuple[int, Any, str]:
    """``surge replay --json`` with a home that must stay untouched (never the user's database)."""
    elsewhere = session.root / "untouched-home"
    proc = surge_cli(elsewhere, "replay", str(recording or session.recording), "--json", *args, timeout=120)
    assert not elsewhere.exists()
    assert "Traceback" not in proc.stderr
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None, proc.stderr


def run_signals(home: Path) -> list[tuple[str, int, float]]:
    return sorted((s["symbol"], s["time"], s["price"]) for s in cli_json(home, "signals"))


def run_positions(home: Path) -> list[tuple[Any, ...]]:
    keys = ("key", "symbol", "entry_price", "exit_price", "exit_reason", "pnl")
    return sorted(tuple(p[k] for k in keys) for p in cli_json(home, "positions", "--all"))


def replayed_positions(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    keys = ("key", "symbol", "entry_price", "exit_price", "exit_reason", "pnl")
    return sorted(tuple(p[k] for k in keys) for p in report["positions"])


def test_the_replay_yields_exactly_the_runs_signals_and_positions(session: Session) -> None:
    code, report, stderr = replay_json(session)
    assert code == 0, stderr
    assert report["frames"] > 10 and report["elapsed_s"] >= 0
    reasons = {p[4] for p in run_positions(session.home)}
    assert {"stop_loss", "take_profit", "max_hold"} <= reasons  # the exits of klines and of the clock
    assert sorted((s["symbol"], s["time"], s["price"]) for s in report["signals"]) == run_signals(
        session.home
    )
    assert all(s["key"] == f"{s['symbol']}:{s['key'].split(':')[1]}" for s in report["signals"])
    assert replayed_positions(report) == run_positions(session.home)


def without_backfills(source: Path, target: Path) -> Path:
    """A copy of a recording without its 1m backfill answers (what a frames-only recording holds)."""
    target.mkdir()
    for path in recording_files(source):
        with (target / path.name).open("wb") as out:
            out.write(MAGIC)
            for frame in read_frames(path):
                out.write(encode_frame([r for r in frame if not isinstance(r, Backfill)]))
    return target


def test_without_the_backfill_answers_the_replay_would_not_match(session: Session) -> None:
    stripped = without_backfills(session.recording, session.root / "no-backfills")
    report = replay(stripped)
    assert report.frames > 10
    signals = sorted((s["symbol"], s["time"], s["price"]) for s in report.signals)
    assert signals != run_signals(session.home)  # so the parity test would catch a recording without them


def test_another_config_answers_what_if(session: Session) -> None:
    wide = write_config(
        session.root / "wide.toml", OVERRIDES | {"trade": {"max_hold_s": 12, "stop_loss_pct": 20.0}}
    )
    code, report, stderr = replay_json(session, "--config", str(wide))
    assert code == 0, stderr
    assert sorted((s["symbol"], s["time"], s["price"]) for s in report["signals"]) == run_signals(
        session.home
    )
    by_symbol = {p["symbol"]: p for p in report["positions"]}
    assert by_symbol[STOPPED]["exit_reason"] in (None, "max_hold")  # 5 % down is no stop at 20 %
    assert by_symbol[TAKEN]["exit_reason"] == "take_profit"

    strict = write_config(session.root / "strict.toml", OVERRIDES | {"surge": {"min_change_pct": 50.0}})
    code, report, stderr = replay_json(session, "--config", str(strict))
    assert code == 0, stderr
    assert report["signals"] == [] and report["positions"] == []


def test_text_output_names_the_signals_and_positions(session: Session) -> None:
    proc = surge_cli(session.root / "untouched-home", "replay", str(session.recording), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "signal(s)" in proc.stdout and f"{STOPPED}:" in proc.stdout and "stop_loss" in proc.stdout


def test_a_file_cut_part_way_replays_what_precedes_it_and_exits_1(session: Session) -> None:
    cut = session.root / "cut"
    shutil.copytree(session.recording, cut)
    first = recording_files(cut)[0]
    data = first.read_bytes()
    first.write_bytes(data[: inside_a_frame(data, len(data) * 2 // 3)])
    for later in recording_files(cut)[1:]:
        later.unlink()
    code, report, stderr = replay_json(session, recording=cut)
    assert code == 1
    [line] = [x for x in stderr.splitlines() if x.startswith("surge: warning:")]
    assert "unreadable from byte" in line and first.name in line
    assert report["frames"] > 0


def inside_a_frame(data: bytes, near: int) -> int:
    """An offset halfway through the frame that holds byte ``near`` (never between two frames)."""
    offset = len(MAGIC)
    while True:
        size = FRAME_LENGTH.unpack_from(data, offset)[0]
        end = offset + FRAME_LENGTH.size + size
        if end > near:
            return offset + FRAME_LENGTH.size + size // 2
        offset = end


@pytest.mark.parametrize("case", ["missing", "empty", "junk"])
def test_nothing_to_replay_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    target = tmp_path / "rec"
    if case != "missing":
        target.mkdir()
    if case == "junk":
        (target / "20260101T000000-20260101T00.srec").write_bytes(b"not a recording")
    proc = surge_cli(tmp_path / "home", "replay", str(target), "--json")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("surge: error:") and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == "" and not (tmp_path / "home").exists()


def test_run_with_an_unusable_record_dir_exits_2_before_anything_starts(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    home = tmp_path / "home"
    proc = surge_cli(home, "run", "--record", str(blocker / "rec"), "--duration", "5")
    assert proc.returncode == 2, proc.stderr
    assert (
        proc.stderr.startswith("surge: error: --record: cannot write to") and "Traceback" not in proc.stderr
    )
    assert len(proc.stderr.strip().splitlines()) == 1 and not home.exists()
