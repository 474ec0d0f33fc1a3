"""``surge watch --once`` and ``surge report --json`` against a real ``surge run`` process's home.

The bot is ``python -m surge run`` on an in-process simulator where exactly the test's symbols pass the
4h filter and every surge is one the test injects: one position is stopped out (the report's trade) and
one stays open (the dashboard's unrealised PnL, from the last price the bot wrote in its heartbeat).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from surge.sim import Simulator
from tests.bot_harness import (
    BotProcess,
    baseline_ready,
    heartbeat,
    make_simulator,
    positions_of,
    wait_for,
    write_config,
)
from tests.operator.ledger import run

HELD, STOPPED = "BTCUSDT", "ETHUSDT"

pytestmark = pytest.mark.slow


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = make_simulator([HELD, STOPPED])
    yield simulator
    simulator.stop()


def test_watch_and_report_read_a_running_bot(sim: Simulator, tmp_path: Path) -> None:
    home = tmp_path / "home"
    bot = BotProcess(home, sim, [HELD, STOPPED], config=write_config(tmp_path / "surge.toml"))
    try:
        bot.wait_ready()
        wait_for(lambda: baseline_ready(home, 2), 90, "both symbols to have their volume baseline")
        sim.market.inject_surge(STOPPED, 5.0, 10.0)
        wait_for(lambda: positions_of(home, STOPPED), 60, f"a position on {STOPPED}")
        sim.market.inject_surge(STOPPED, -5.0, 0.0, min_quote_volume=0.0)  # below the 2.5 % stop loss
        [lost] = wait_for(
            lambda: [p for p in positions_of(home, STOPPED) if not p.is_open], 60, f"{STOPPED} to close"
        )
        sim.market.inject_surge(HELD, 5.0, 10.0)
        [held] = wait_for(lambda: positions_of(home, HELD), 60, f"a position on {HELD}")
        beat = wait_for(
            lambda: (hb := heartbeat(home)).get("last_prices", {}).get(HELD) and hb,
            30,
            "a last price of HELD",
        )
        assert beat["rest_weight"]["limit"] > 0 and beat["stream_connections"]

        screen = run(home, "watch", "--once")
        assert screen.exit_code == 0, screen.output
        assert f"running, pid {bot.pid} (paper, sim" in screen.stdout
        assert re.search(r"surge-ws-\S+\s+up\s+\d+\s+\d+\.\d s ago", screen.stdout), screen.stdout
        row = next(line for line in screen.stdout.splitlines() if line.strip().startswith(HELD + " "))
        assert re.search(rf"{HELD}\s+\S+\s+\S+\s+\S+\s+[+-]\d+\.\d\d\s+[+-]\d+\.\d{{4}}", row), row
        assert "realised today" in screen.stdout and "REST weight" in screen.stdout

        result = run(home, "report", "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["venues"] == ["sim"]
        assert (report["totals"]["trades"], report["totals"]["losses"]) == (1, 1)
        assert report["totals"]["pnl"] == pytest.approx(lost.pnl) and lost.pnl < 0
        assert report["totals"]["max_drawdown"] == pytest.approx(-lost.pnl)
        assert [r["symbol"] for r in report["per_symbol"]] == [STOPPED]  # the open one is not realised
        assert held.is_open
    finally:
        bot.ensure_stopped()


def test_watch_and_report_read_surge_run_sim(tmp_path: Path) -> None:
    """``surge run --sim`` exactly as a user starts it (its own simulator, in its process)."""
    home = tmp_path / "home"
    bot = BotProcess(home, None, [HELD, STOPPED], extra=["--sim"])
    try:
        bot.wait_ready()
        wait_for(lambda: heartbeat(home).get("stream_connections"), 30, "a heartbeat with its connections")
        screen = run(home, "watch", "--once")
        assert screen.exit_code == 0, screen.output
        assert f"running, pid {bot.pid} (paper, sim" in screen.stdout
        assert re.search(r"surge-ws-\S+\s+up\s+\d+\s+\d+\.\d s ago", screen.stdout), screen.stdout
        assert re.search(r"REST weight\s+\d+ / \d+ \(peak \d+", screen.stdout), screen.stdout
        lines = run(home, "watch", "--interval", "0.2", "--count", "2")
        assert lines.exit_code == 0 and len(lines.stdout.splitlines()) == 2
        assert all(f"running pid {bot.pid} | connections " in line for line in lines.stdout.splitlines())
        result = run(home, "report", "--json")
        assert result.exit_code == 0, result.output
        assert set(json.loads(result.stdout)) == {
            "since",
            "until",
            "venues",
            "totals",
            "per_day",
            "per_symbol",
            "per_venue",
        }
        assert bot.stop() == 0
    finally:
        bot.ensure_stopped()
    after = run(home, "watch", "--once")
    assert "NOT RUNNING (last heartbeat " in after.stdout
