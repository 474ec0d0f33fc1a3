"""What a backtest's trades add up to: the totals, the per-symbol table, the text report and the CSV.

The figures, as the README quotes them (money in USDT, times in ms UTC):

* ``pnl``: the sum of the trades' pnl, which is already after fees (both sides' taker fee and the
  slippage are in each trade's fill prices and ``fees``);
* a *win* is a trade with ``pnl > 0`` (a trade at exactly 0 is neither a win nor a loss);
  ``win_rate = wins / trades``, 0.0 when there is no trade;
* ``profit_factor = gross profit / gross loss`` (the sum of the winners' pnl over the absolute sum of
  the losers'), ``None`` when no trade lost: a ratio over nothing is not a number, and infinity is not
  JSON;
* ``max_drawdown``: the largest peak-to-trough fall of *realised* equity, i.e. the cumulative pnl
  with trades taken in exit-time order (ties by entry time, then symbol) starting from 0; reported as
  a positive amount, 0.0 when equity never fell below an earlier peak. Open positions are not marked
  to market: a backtest at 1m resolution has no price between candles to mark them with;
* ``exposure``: the fraction of ``[start_ms, end_ms)`` during which at least one position was open
  (each trade holds ``[entry_time, exit_time)``; overlapping positions count once).

Only plain :class:`Trade` values come in, so ``surge report`` can reuse these on the live ledger.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from surge.backtest.trades import Trade
from surge.cli_shared import number_text, text_table, utc_text
from surge.errors import SurgeError
from surge.runtime import replaced_atomically

#: The text report lists this many trades, the latest; ``--json`` and the CSV have them all.
SHOWN_TRADES = 20
TRADE_FIELDS = tuple(f.name for f in fields(Trade))
_INT_FIELDS = frozenset(f.name for f in fields(Trade) if f.type in (int, "int"))
_FLOAT_FIELDS = frozenset(f.name for f in fields(Trade) if f.type in (float, "float"))


def exit_order(trades: Sequence[Trade]) -> list[Trade]:
    """Trades in the order their pnl was realised (exit time, then entry time, then symbol): the
    order equity and drawdown are computed in, so ties never make the result depend on input order."""
    return sorted(trades, key=lambda t: (t.exit_time, t.entry_time, t.symbol))


def equity_points(trades: Sequence[Trade]) -> tuple[list[int], list[float]]:
    """Realised equity after each trade in exit order: (exit times, cumulative pnl). Shared with the
    plot so the curve drawn is the one the drawdown figure was computed from."""
    times: list[int] = []
    equity: list[float] = []
    running = 0.0
    for trade in exit_order(trades):
        running += trade.pnl
        times.append(trade.exit_time)
        equity.append(running)
    return times, equity


def max_drawdown(equity: Sequence[float]) -> float:
    """Largest fall from a running peak; the peak starts at 0 (the equity before the first trade)."""
    peak = 0.0
    worst = 0.0
    for value in equity:
        peak = max(peak, value)
        worst = max(worst, peak - value)
    return worst


def exposure(trades: Sequence[Trade], start_ms: int, end_ms: int) -> float:
    """Fraction of ``[start_ms, end_ms)`` covered by the union of the trades' ``[entry, exit)``."""
    span = end_ms - start_ms
    if span <= 0:
        return 0.0
    intervals = sorted(
        (max(t.entry_time, start_ms), min(t.exit_time, end_ms))
        for t in trades
        if min(t.exit_time, end_ms) > max(t.entry_time, start_ms)
    )
    covered = 0
    reach = start_ms  # the latest end of the intervals seen so far: time before it is counted already
    for lo, hi in intervals:
        covered += max(0, hi - max(lo, reach))
        reach = max(reach, hi)
    return covered / span


def totals(trades: Sequence[Trade], start_ms: int, end_ms: int) -> dict[str, Any]:
    """The totals block (definitions in the module docstring); the keys of ``--json`` ``totals``
    plus ``exposure``."""
    wins = sum(1 for t in trades if t.pnl > 0)
    # fsum: the same trades give the same figures bit for bit, whatever order they come in
    gross_profit = math.fsum(t.pnl for t in trades if t.pnl > 0)
    gross_loss = -math.fsum(t.pnl for t in trades if t.pnl < 0)
    _, equity = equity_points(trades)
    return {
        "trades": len(trades),
        "wins": wins,
        "win_rate": wins / len(trades) if trades else 0.0,
        "pnl": math.fsum(t.pnl for t in trades),
        "profit_factor": gross_profit / gross_loss if gross_loss > 0 else None,
        "max_drawdown": max_drawdown(equity),
        "exposure": exposure(trades, start_ms, end_ms),
    }


def per_symbol(trades: Sequence[Trade]) -> list[dict[str, Any]]:
    """One row per traded symbol (symbol, trades, wins, win_rate, pnl), best pnl first, ties by name."""
    rows: dict[str, dict[str, Any]] = {}
    for t in trades:
        row = rows.setdefault(t.symbol, {"symbol": t.symbol, "trades": 0, "wins": 0, "pnl": 0.0})
        row["trades"] += 1
        row["wins"] += t.pnl > 0
        row["pnl"] += t.pnl
    for row in rows.values():
        row["win_rate"] = row["wins"] / row["trades"]
    ordered = sorted(rows.values(), key=lambda r: (-r["pnl"], r["symbol"]))
    return [{k: r[k] for k in ("symbol", "trades", "wins", "win_rate", "pnl")} for r in ordered]


def _usdt(value: float, decimals: int = 2) -> str:
    return f"{value:+,.{decimals}f}" if value else f"{0.0:.{decimals}f}"


def _pct(fraction: float) -> str:
    return f"{fraction * 100.0:.1f} %"


def _totals_block(summary: dict[str, Any]) -> str:
    factor = summary.get("profit_factor")
    lines = [
        ("Trades", str(summary["trades"])),
        ("Wins", f"{summary['wins']} ({_pct(summary['win_rate'])})"),
        ("PnL after fees", f"{_usdt(summary['pnl'])} USDT"),
        ("Profit factor", "- (no losing trade)" if factor is None else f"{factor:.2f}"),
        ("Max drawdown", f"{summary['max_drawdown']:,.2f} USDT"),
    ]
    if "exposure" in summary:
        lines.append(("Exposure", f"{_pct(summary['exposure'])} of the period"))
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in lines)


def _symbol_table(rows: list[dict[str, Any]]) -> str:
    body = [
        [r["symbol"], str(r["trades"]), str(r["wins"]), _pct(r["win_rate"]), _usdt(r["pnl"])] for r in rows
    ]
    return text_table(["symbol", "trades", "wins", "win rate", "pnl USDT"], body, numeric={1, 2, 3, 4})


def _trade_table(trades: Sequence[Trade]) -> str:
    body = [
        [
            t.symbol,
            utc_text(t.entry_time),
            number_text(t.entry_price),
            number_text(t.qty),
            utc_text(t.exit_time),
            number_text(t.exit_price),
            t.exit_reason,
            f"{t.fees:.4f}",
            _usdt(t.pnl, 4),
        ]
        for t in trades
    ]
    headers = ["symbol", "entry (UTC)", "entry", "qty", "exit (UTC)", "exit", "reason", "fees", "pnl"]
    return text_table(headers, body, numeric={2, 3, 5, 7, 8})


def format_report(totals: dict[str, Any], per_symbol: list[dict[str, Any]], trades: Sequence[Trade]) -> str:
    """The plain-text report: totals, the per-symbol table, then the latest trades by entry time
    (the last :data:`SHOWN_TRADES`, with a note saying how many are left out and where they are)."""
    parts = [_totals_block(totals)]
    if not trades:
        parts.append("No trades.")
        return "\n\n".join(parts)
    parts.append(f"Per symbol\n{_symbol_table(per_symbol)}")
    ordered = sorted(trades, key=lambda t: (t.entry_time, t.symbol))
    shown = ordered[-SHOWN_TRADES:]
    if len(ordered) > len(shown):
        title = f"Trades (the last {len(shown)} of {len(ordered)}; --json lists them all)"
    else:
        title = "Trades"
    parts.append(f"{title}\n{_trade_table(shown)}")
    return "\n\n".join(parts)


def write_trades_csv(trades: Sequence[Trade], path: Path) -> None:
    """One row per trade under a header of the :class:`Trade` field names; times stay integer ms and
    floats are written in full (``repr``), so reading the file back gives the same trades. Written to a
    temporary file and renamed: an interrupted run never leaves half a CSV under the wanted name."""
    path = Path(path)
    try:
        with (
            replaced_atomically(path, mode=0o644) as tmp,
            open(tmp, "w", newline="", encoding="utf-8") as out,
        ):
            writer = csv.writer(out)
            writer.writerow(TRADE_FIELDS)
            for t in trades:
                writer.writerow([getattr(t, name) for name in TRADE_FIELDS])
    except OSError as exc:
        raise SurgeError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_trades_csv(path: Path) -> list[Trade]:
    """The trades of a file :func:`write_trades_csv` wrote (for tests and for reloading a run)."""
    with Path(path).open(newline="", encoding="utf-8") as src:
        rows = list(csv.DictReader(src))
    return [Trade(**{name: _typed(name, row[name]) for name in TRADE_FIELDS}) for row in rows]


def _typed(name: str, text: str) -> Any:
    if name in _INT_FIELDS:
        return int(text)
    if name in _FLOAT_FIELDS:
        return float(text)
    return text


__all__ = [
    "SHOWN_TRADES",
    "TRADE_FIELDS",
    "equity_points",
    "exit_order",
    "exposure",
    "format_report",
    "max_drawdown",
    "per_symbol",
    "read_trades_csv",
    "totals",
    "write_trades_csv",
]
