"""``surge backtest``: the rule, the 4h filter and the paper exits over stored history, or a sweep.

numpy and pyarrow (the ``history`` extra) are imported only when the command runs, so ``surge --help``
and the live bot work without them; missing, they are a usage error naming the extra to install.
Dates are UTC days and ``--to`` is inclusive; without them the range is the whole stored history.
``--json`` prints one object: the contract's single-run shape (plus ``exposure``, ``signals``,
``per_symbol`` and, with ``--split``, ``in_sample``/``out_of_sample``; ``to`` is the exclusive end),
or with ``--sweep`` the contract's ``combinations`` object.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from surge.cli_shared import (
    CONTEXT,
    config_option,
    number_text,
    settings_for,
    symbols_option,
    text_table,
)
from surge.errors import ConfigError
from surge.history import require_history_extra

if TYPE_CHECKING:
    from surge.backtest.engine import BacktestResult
    from surge.config import Settings

#: Sweep rows the text output lists (``--json`` has them all).
SHOWN_COMBINATIONS = 20


@click.command("backtest", context_settings=CONTEXT)
@click.option("--from", "date_from", metavar="YYYY-MM-DD", help="First UTC day (default: the first stored).")
@click.option(
    "--to", "date_to", metavar="YYYY-MM-DD", help="Last UTC day, inclusive (default: the last stored)."
)
@click.option(
    "--symbols", "symbols_text", metavar="A,B,...", help="Only these symbols (default: all stored)."
)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write the equity curve as a PNG.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write the trades as CSV.")
@click.option(
    "--sweep",
    "sweeps",
    multiple=True,
    metavar="KEY=V1,V2,...",
    help="Run the grid of these values of a numeric [surge], [trade] or [filter_4h] key (repeatable).",
)
@click.option(
    "--split",
    type=float,
    metavar="FRACTION",
    help="Also report the first FRACTION of the range (in-sample) and the rest (out-of-sample).",
)
@click.pass_context
def backtest_command(
    ctx: click.Context,
    date_from: str | None,
    date_to: str | None,
    symbols_text: str | None,
    config_path: str | None,
    as_json: bool,
    plot_path: str | None,
    csv_path: str | None,
    sweeps: tuple[str, ...],
    split: float | None,
) -> None:
    """Backtest the surge rule over stored 1m history (`surge history download` first).

    Signals on closed candles, entry at the close plus slippage, stop loss / take profit on the next
    candles' low / high (both in one candle: the stop), max hold, max_open_positions in time order.
    """
    start_ms, end_ms = day_range(date_from, date_to)
    symbols = symbols_option(symbols_text)
    if split is not None and not 0.0 < split < 1.0:
        raise ConfigError(f"--split must be a fraction between 0 and 1 (exclusive), got {split:g}")
    settings = settings_for(ctx, config_path)
    require_history_extra("surge backtest")
    from surge.backtest.engine import NoHistory, run_backtest
    from surge.history.store import HistoryStore

    store = HistoryStore.for_home(settings.home)
    progress = _progress if not as_json and sys.stderr.isatty() else None
    try:
        if sweeps:
            if plot_path or csv_path:
                raise click.UsageError("--plot and --csv show one run: not with --sweep")
            _sweep(store, settings, sweeps, start_ms, end_ms, symbols, split, as_json, progress)
            return
        result = run_backtest(store, settings, start_ms, end_ms, symbols, progress=progress)
    except NoHistory:
        raise NoHistory(_nothing_stored(store.root, date_from, date_to, symbols_text)) from None
    finally:
        if progress is not None:
            click.echo("", err=True)
    missing = sorted(set(symbols or ()) - set(result.symbols))
    if missing:
        click.echo(f"surge: warning: no candles stored in that range for {', '.join(missing)}", err=True)
    _single_output(result, split, as_json, plot_path, csv_path)


def _nothing_stored(root: Path, date_from: str | None, date_to: str | None, symbols_text: str | None) -> str:
    """Why the backtest has nothing to run on, and the download that would fix it."""
    wanted = []
    if date_from:
        wanted.append(f"--from {date_from}")
    if date_to:
        wanted.append(f"--to {date_to}")
    if symbols_text:
        wanted.append(f"--symbols {symbols_text}")
    asked = " ".join(wanted)
    return (
        f"no candles stored in {root}{' for ' + asked if asked else ''}: "
        f"run `surge history download{' ' + asked if asked else ''}` first"
    )


def day_range(date_from: str | None, date_to: str | None) -> tuple[int | None, int | None]:
    """``--from``/``--to`` as [start, end) in ms UTC; ``--to`` is inclusive, so end is the next midnight."""
    start = _day(date_from, "--from") if date_from is not None else None
    last = _day(date_to, "--to") if date_to is not None else None
    if start is not None and last is not None and last < start:
        raise ConfigError(f"--to ({date_to}) is before --from ({date_from})")
    return (
        None if start is None else _ms(start),
        None if last is None else _ms(last + timedelta(days=1)),
    )


def _day(text: str, flag: str) -> date:
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag} must be a date as YYYY-MM-DD, got {text!r:.40}") from None


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _progress(done: int, total: int) -> None:
    click.echo(f"\rloading {done}/{total} symbols", nl=False, err=True)


def _single_output(
    result: BacktestResult, split: float | None, as_json: bool, plot_path: str | None, csv_path: str | None
) -> None:
    from surge.backtest.report import format_report, per_symbol, totals, write_trades_csv

    summary = totals(result.trades, result.start_ms, result.end_ms)
    rows = per_symbol(result.trades)
    if csv_path:
        write_trades_csv(result.trades, Path(csv_path))
    if plot_path:
        from surge.backtest.plot import plot_equity

        plot_equity(result.trades, result.start_ms, result.end_ms, Path(plot_path))
    out = single_json(result, summary, rows, split)
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(format_report(summary, rows, result.trades))
    if split is not None:
        for part in ("in_sample", "out_of_sample"):
            figures = out[part]
            click.echo(
                f"{part.replace('_', '-')}: {_count(figures['trades'], 'trade')}, "
                f"win rate {figures['win_rate'] * 100:.1f} %, pnl {figures['pnl']:+,.2f} USDT"
            )
    click.echo(
        f"{_count(len(result.symbols), 'symbol')}, {_count(result.candles, 'candle')}, "
        f"{_count(result.signals, 'signal')} in {result.elapsed_s:.1f} s"
    )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def single_json(
    result: BacktestResult, summary: dict[str, Any], rows: list[dict[str, Any]], split: float | None
) -> dict[str, Any]:
    """The contract's ``surge backtest --json`` object of one run, with the allowed additions."""
    out: dict[str, Any] = {
        "from": result.start_ms,
        "to": result.end_ms,
        "symbols": len(result.symbols),
        "candles": result.candles,
        "elapsed_s": round(result.elapsed_s, 3),
        "totals": summary,
        "trades": [t.to_json() for t in result.trades],
        "signals": result.signals,
        "per_symbol": rows,
    }
    if split is not None:
        from surge.backtest.report import totals
        from surge.backtest.sweep import split_point

        at = split_point(result.start_ms, result.end_ms, split)
        out["in_sample"] = totals([t for t in result.trades if t.signal_time < at], result.start_ms, at)
        out["out_of_sample"] = totals([t for t in result.trades if t.signal_time >= at], at, result.end_ms)
    return out


def _sweep(
    store: Any,
    settings: Settings,
    sweeps: Sequence[str],
    start_ms: int | None,
    end_ms: int | None,
    symbols: list[str] | None,
    split: float | None,
    as_json: bool,
    progress: Callable[[int, int], None] | None,
) -> None:
    from surge.backtest.sweep import combinations, parse_sweeps, run_sweep

    combos = combinations(settings, parse_sweeps(sweeps))  # every value checked before any loading
    result = run_sweep(store, combos, start_ms, end_ms, symbols, split, progress=progress)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(format_sweep(result))


def format_sweep(result: dict[str, Any]) -> str:
    """The ranked grid as a table: the swept values, then the figures (and in/out of sample pnl)."""
    rows = result["combinations"]
    keys = list(rows[0]["params"]) if rows else []
    split = bool(rows) and rows[0]["in_sample"] is not None
    headers = ["#", *keys, "trades", "win rate", "pnl", "profit factor", "max dd"]
    if split:
        headers += ["in-sample pnl", "out-of-sample pnl"]
    table = []
    for rank, row in enumerate(rows[:SHOWN_COMBINATIONS], 1):
        t = row["totals"]
        pf = t["profit_factor"]
        cells = [str(rank), *(number_text(float(row["params"][k])) for k in keys)]
        cells += [
            str(t["trades"]),
            f"{t['win_rate'] * 100:.1f} %",
            f"{t['pnl']:+,.2f}",
            "-" if pf is None else f"{pf:.2f}",
            f"{t['max_drawdown']:,.2f}",
        ]
        if split:
            cells += [f"{row['in_sample']['pnl']:+,.2f}", f"{row['out_of_sample']['pnl']:+,.2f}"]
        table.append(cells)
    lines = [text_table(headers, table, numeric=set(range(len(headers))) - {0})]
    if len(rows) > SHOWN_COMBINATIONS:
        lines.append(f"... {len(rows) - SHOWN_COMBINATIONS} more combinations (--json lists them all)")
    lines.append(
        f"{len(rows)} combinations over {result['symbols']} symbols, {result['candles']:,} candles "
        f"in {result['elapsed_s']:.1f} s"
    )
    return "\n".join(lines)
