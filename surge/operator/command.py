"""The ``surge report`` and ``surge watch`` click commands (registered on the ``surge`` group by cli.py).

Both only read ``$SURGE_HOME``: they never create it, never migrate the database and never wait on a
running bot's transaction, so they are safe from cron or a second terminal while ``surge run`` trades.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from surge.cli_shared import CONTEXT, config_option, settings_for
from surge.errors import EXIT_OK, ConfigError

if TYPE_CHECKING:
    from surge.backtest.trades import Trade

#: Width of ``surge watch --once`` when stdout is not a terminal (a pipe has no width to ask).
PIPE_WIDTH = 110


def _since_ms(since: str | None) -> int | None:
    from surge.operator.report import day_start_ms

    if since is None:
        return None
    try:
        return day_start_ms(since)
    except ValueError:
        raise click.BadParameter(f"{since!r} is not a date like 2026-11-01", param_hint="--since") from None


@click.command("report", context_settings=CONTEXT)
@click.option(
    "--since", default=None, metavar="YYYY-MM-DD", help="From this UTC day on (default: everything)."
)
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    metavar="FILE.png",
    help="Also draw the realised equity curve and its drawdown to this PNG (needs matplotlib).",
)
@config_option
@click.pass_context
def report_command(
    ctx: click.Context, since: str | None, as_json: bool, plot_path: str | None, config_path: str | None
) -> None:
    """Realised PnL of the closed positions, per UTC day and per symbol, with win rate, profit
    factor and max drawdown (fees included; a position counts on the day it exited).

    Every venue of the ledger counts (a per-venue table appears when there are several). The figures
    are the backtest's, and --plot draws the backtest's picture of them. Read-only: safe while
    `surge run` trades.

    \b
    JSON: {"since": ms|null, "until": ms, "venues": [...],
      "totals": {"trades", "wins", "losses", "win_rate", "pnl", "fees", "profit_factor",
                 "max_drawdown", "exposure"},
      "per_day": [{"day": "YYYY-MM-DD", "trades", ...}], "per_symbol": [{"symbol", ...}],
      "per_venue": [{"venue", ...}]}
    """
    import json

    from surge.operator.report import build_report, day_of, format_report
    from surge.store import read_store
    from surge.store.reports import closed_positions

    settings = settings_for(ctx, config_path)
    since_ms = _since_ms(since)
    until_ms = int(time.time() * 1000)
    closed = []
    store = read_store(settings.home)
    if store is not None:
        with store:
            closed = closed_positions(store, since_ms, until_ms + 1)
    report = build_report(closed, since_ms, until_ms)
    if plot_path is not None and report.trades:
        _plot(report.trades, report.start_ms, until_ms, Path(plot_path))
    if as_json:
        click.echo(json.dumps(report.to_json()))
    elif report.trades:
        click.echo(format_report(report))
    else:
        click.echo(
            f"no closed positions since {day_of(since_ms)}"
            if since_ms is not None
            else "no closed positions yet"
        )
    if plot_path is not None and not report.trades:
        click.echo(f"nothing to plot: {plot_path} not written", err=True)
    sys.exit(EXIT_OK)


def _plot(trades: Sequence[Trade], start_ms: int, end_ms: int, path: Path) -> None:
    """The backtest's equity picture of the report's trades (matplotlib is an optional extra)."""
    try:
        from surge.backtest.plot import plot_equity

        plot_equity(trades, start_ms, end_ms, path)  # imports matplotlib on its first call
    except ImportError as exc:
        raise ConfigError(
            f"--plot needs matplotlib and numpy: pip install 'surge[history]' ({exc})"
        ) from None


@click.command("watch", context_settings=CONTEXT)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between refreshes (the bot writes its heartbeat every 2 s).",
)
@click.option("--once", is_flag=True, help="Print one screen and exit (scripts, a quick look).")
@click.option(
    "--count", type=click.IntRange(min=1), default=None, metavar="N", help="Stop after N refreshes."
)
@config_option
@click.pass_context
def watch_command(
    ctx: click.Context, interval: float, once: bool, count: int | None, config_path: str | None
) -> None:
    """Live dashboard of the bot running on this SURGE_HOME (Ctrl+C to leave).

    Running or stale, each WebSocket connection's streams, last message and reconnects, the open
    positions with their unrealised PnL at the last price, the last signals, the REST weight and the
    realised PnL of the UTC day. Reads $SURGE_HOME only (heartbeat and database, read-only), like
    `surge status`. On a terminal the screen refreshes in place; piped or redirected, one plain line
    per refresh.
    """
    import shutil

    from rich.console import Console

    from surge.operator.watch import collect_snapshot, render, watch_live, watch_plain

    settings = settings_for(ctx, config_path)

    tty = sys.stdout.isatty()
    try:
        if once:
            width = shutil.get_terminal_size((PIPE_WIDTH, 40)).columns if tty else PIPE_WIDTH
            click.echo(render(collect_snapshot(settings.home), width), nl=False)
        elif tty:
            watch_live(lambda: collect_snapshot(settings.home), Console(), interval, count)
        else:
            watch_plain(lambda: collect_snapshot(settings.home), sys.stdout, interval, count)
    except KeyboardInterrupt:
        pass  # Ctrl+C is how a person leaves a dashboard: not a failure
    sys.exit(EXIT_OK)


__all__ = ["report_command", "watch_command"]
