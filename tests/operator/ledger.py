"""A ledger written through the real Store API for the operator tests, with PnL a test states by hand,
and the commands run the way the ``surge`` group runs them (a SurgeError is one line and its exit code)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
from click.testing import CliRunner, Result

from surge.cli_shared import SurgeGroup
from surge.models import Position, Signal
from surge.operator.command import report_command, watch_command
from surge.store import Store

T0 = 1_764_115_200_000  # 2025-11-26 00:00:00 UTC
DAY = 86_400_000
HOUR = 3_600_000


def enter(
    store: Store, symbol: str, entry_ms: int, *, price: float = 100.0, qty: float = 2.0, venue: str = "sim"
) -> Position:
    """A signal and its open position, recorded as ``surge run`` records them."""
    signal = Signal(symbol, entry_ms, entry_ms - entry_ms % 60_000, 4.0, 5.0, 90_000.0, price)
    position = Position(
        signal.key, symbol, qty, price, entry_ms, price * 1.04, price * 0.975, entry_ms + HOUR, fees=0.05
    )
    assert store.record_entry(signal, position, venue=venue)
    return position


def trade(
    store: Store,
    symbol: str,
    entry_ms: int,
    exit_ms: int,
    pnl: float,
    *,
    fees: float = 0.1,
    venue: str = "sim",
) -> Position:
    """A closed position whose PnL (fees included) is ``pnl``: the figures a test computes by hand."""
    opened = enter(store, symbol, entry_ms, venue=venue)
    closed = replace(
        opened,
        exit_price=opened.entry_price + (pnl + fees) / opened.qty,
        exit_time=exit_ms,
        exit_reason="take_profit" if pnl > 0 else "stop_loss",
        fees=fees,
        pnl=pnl,
    )
    store.close_position(closed, venue=venue)
    return closed


def cli() -> click.Group:
    """The two commands on a group like ``surge``'s, as cli.py registers them."""
    group = SurgeGroup("surge")
    group.add_command(report_command)
    group.add_command(watch_command)
    return group


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli(), list(args), env={"SURGE_HOME": str(home), "SURGE_CONFIG": None})
