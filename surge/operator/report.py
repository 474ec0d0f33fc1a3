"""``surge report``: the realised PnL of the ledger's closed positions over a period.

The figures are the backtest's (:mod:`surge.backtest.report`), computed by the same functions on the
ledger's closed positions turned into backtest :class:`~surge.backtest.trades.Trade` values, so a
live report and a backtest of the same trades agree to the cent and ``--plot`` draws the same picture:

* a position counts in the period when it *exited* in it (``exit_time >= since``): realised PnL is
  realised at the exit; open positions are not in the report (``surge watch`` marks them to market);
* ``pnl`` is after fees (the ledger's pnl already is); a *win* is pnl > 0, ``win_rate = wins /
  trades``; ``profit_factor = gross profit / gross loss``, None when no trade lost;
* ``max_drawdown``: the largest peak-to-trough fall of realised equity (cumulative pnl in exit-time
  order, starting at 0 at ``since``), a positive amount in USDT;
* days are UTC days of the exit time.

Venues as in ``surge positions``: every venue of the ledger counts (the JSON lists them, and a
per-venue table appears when there is more than one, so a simulator demo is never silently mixed with
real trading).

``--json`` prints one object::

    {"since": ms | null,            # start of the --since UTC day; null: the whole ledger
     "until": ms,                   # when the report was made (exits before it count)
     "venues": [str, ...],
     "totals": {"trades", "wins", "losses", "win_rate", "pnl", "fees", "profit_factor": float | null,
                "max_drawdown", "exposure"},
     "per_day": [{"day": "YYYY-MM-DD", "trades", "wins", "losses", "win_rate", "pnl", "fees",
                  "profit_factor"}, ...],          # oldest day first, days without exits left out
     "per_symbol": [{"symbol": str, ...same...}],   # best pnl first, ties by name
     "per_venue": [{"venue": str, ...same...}]}     # best pnl first

Money in USDT, times in ms since the epoch (UTC). ``exposure`` is the fraction of ``[since, until)``
(from the first entry without ``--since``) during which at least one reported position was open.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from surge.backtest.report import totals
from surge.backtest.trades import Trade
from surge.cli_shared import text_table, utc_text
from surge.store.reports import ClosedPosition

DAY_MS = 86_400_000
#: The keys of one row of ``per_day``, ``per_symbol`` and ``per_venue`` after its name.
ROW_KEYS = ("trades", "wins", "losses", "win_rate", "pnl", "fees", "profit_factor")


@dataclass(frozen=True, slots=True)
class PnlReport:
    """The report of one period: what ``--json`` prints (see :meth:`to_json`) and the trades to plot."""

    since_ms: int | None
    until_ms: int
    trades: list[Trade]
    venues: list[str]
    totals: dict[str, Any]
    per_day: list[dict[str, Any]]
    per_symbol: list[dict[str, Any]]
    per_venue: list[dict[str, Any]]

    @property
    def start_ms(self) -> int:
        """Where the period starts for exposure and the plot: ``since``, else the first entry."""
        if self.since_ms is not None:
            return self.since_ms
        return min((t.entry_time for t in self.trades), default=self.until_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since_ms,
            "until": self.until_ms,
            "venues": self.venues,
            "totals": self.totals,
            "per_day": self.per_day,
            "per_symbol": self.per_symbol,
            "per_venue": self.per_venue,
        }


def day_start_ms(day: str) -> int:
    """``YYYY-MM-DD`` as the ms of its UTC midnight; ValueError when it is not such a date."""
    parsed = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def day_of(ms: int) -> str:
    """The UTC day (``YYYY-MM-DD``) of a time in ms."""
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).strftime("%Y-%m-%d")


def as_trade(closed: ClosedPosition) -> Trade:
    """A closed ledger position as the backtest's :class:`Trade`, so its report and plot apply."""
    p = closed.position
    assert p.exit_time is not None and p.exit_price is not None, "only closed positions are reported"
    pnl = p.pnl if p.pnl is not None else (p.exit_price - p.entry_price) * p.qty - p.fees
    return Trade(
        symbol=p.symbol,
        signal_time=closed.signal_time,
        entry_time=p.entry_time,
        entry_price=p.entry_price,
        qty=p.qty,
        exit_time=p.exit_time,
        exit_price=p.exit_price,
        exit_reason=p.exit_reason or "-",
        fees=p.fees,
        pnl=pnl,
    )


def build_report(closed: Sequence[ClosedPosition], since_ms: int | None, until_ms: int) -> PnlReport:
    """The figures of the positions in ``closed`` (those that exited in the period), by day, symbol
    and venue."""
    trades = [as_trade(c) for c in closed]
    start = since_ms if since_ms is not None else min((t.entry_time for t in trades), default=until_ms)
    overall = totals(trades, start, until_ms)
    overall = {
        "trades": overall["trades"],
        "wins": overall["wins"],
        "losses": _losses(trades),
        "win_rate": overall["win_rate"],
        "pnl": overall["pnl"],
        "fees": sum(t.fees for t in trades),
        "profit_factor": overall["profit_factor"],
        "max_drawdown": overall["max_drawdown"],
        "exposure": overall["exposure"],
    }
    return PnlReport(
        since_ms=since_ms,
        until_ms=until_ms,
        trades=trades,
        venues=sorted({c.venue for c in closed}),
        totals=overall,
        per_day=sorted(_rows("day", [(day_of(t.exit_time), t) for t in trades]), key=lambda r: r["day"]),
        per_symbol=_rows("symbol", [(t.symbol, t) for t in trades]),
        per_venue=_rows("venue", [(c.venue, t) for c, t in zip(closed, trades, strict=True)]),
    )


def _losses(trades: Sequence[Trade]) -> int:
    return sum(1 for t in trades if t.pnl < 0)


def _rows(name: str, grouped: Sequence[tuple[str, Trade]]) -> list[dict[str, Any]]:
    """One row per group (``{name: group, **ROW_KEYS}``), figures as in the totals; best pnl first,
    ties by name."""
    groups: dict[str, list[Trade]] = {}
    for group, trade in grouped:
        groups.setdefault(group, []).append(trade)
    rows = []
    for group, members in groups.items():
        figures = totals(members, 0, 0)  # exposure over an empty span: not used per group
        rows.append(
            {
                name: group,
                "trades": figures["trades"],
                "wins": figures["wins"],
                "losses": _losses(members),
                "win_rate": figures["win_rate"],
                "pnl": figures["pnl"],
                "fees": sum(t.fees for t in members),
                "profit_factor": figures["profit_factor"],
            }
        )
    return sorted(rows, key=lambda row: (-row["pnl"], row[name]))


# --------------------------------------------------------------------------- text


def _usdt(value: float) -> str:
    return f"{value:+,.4f}" if value else "0.0000"


def _factor(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def period_text(since_ms: int | None, until_ms: int) -> str:
    if since_ms is None:
        return f"the whole ledger, up to {utc_text(until_ms)} UTC"
    return f"from {day_of(since_ms)} to {utc_text(until_ms)} UTC"


def format_report(report: PnlReport) -> str:
    """Totals, then the per-day and per-symbol tables (and per-venue with more than one venue)."""
    t = report.totals
    lines = [
        ("Realised PnL", f"{_usdt(t['pnl'])} USDT ({period_text(report.since_ms, report.until_ms)})"),
        ("Trades", f"{t['trades']} ({t['wins']} won, {t['losses']} lost)"),
        ("Win rate", f"{t['win_rate'] * 100:.1f} %"),
        (
            "Profit factor",
            "- (no losing trade)" if t["profit_factor"] is None else _factor(t["profit_factor"]),
        ),
        ("Max drawdown", f"{t['max_drawdown']:,.4f} USDT"),
        ("Fees", f"{t['fees']:,.4f} USDT (included in the PnL)"),
        ("Venues", ", ".join(report.venues)),
    ]
    width = max(len(label) for label, _ in lines)
    parts = ["\n".join(f"{label.ljust(width)}  {value}" for label, value in lines)]
    parts.append(f"Per day (UTC, by exit)\n{_table('day', report.per_day)}")
    parts.append(f"Per symbol\n{_table('symbol', report.per_symbol)}")
    if len(report.venues) > 1:
        parts.append(f"Per venue\n{_table('venue', report.per_venue)}")
    return "\n\n".join(parts)


def _table(name: str, rows: list[dict[str, Any]]) -> str:
    body = [
        [
            str(r[name]),
            str(r["trades"]),
            str(r["wins"]),
            f"{r['win_rate'] * 100:.1f} %",
            _factor(r["profit_factor"]),
            f"{r['fees']:.4f}",
            _usdt(r["pnl"]),
        ]
        for r in rows
    ]
    headers = [name, "trades", "wins", "win rate", "profit factor", "fees", "pnl USDT"]
    return text_table(headers, body, numeric={1, 2, 3, 4, 5, 6})


__all__ = [
    "DAY_MS",
    "ROW_KEYS",
    "PnlReport",
    "as_trade",
    "build_report",
    "day_of",
    "day_start_ms",
    "format_report",
]
