"""Read-only queries of the trade ledger for the operator's views (``surge report``, ``surge watch``).

Why a module of its own: the ledger's own readers serve the bot (what to resume, what to dedupe), and
these serve a person looking back over a period. They only read, so they work on a database opened
read-only while ``surge run`` writes it (WAL: no waiting on its transactions).
"""

from __future__ import annotations

from dataclasses import dataclass

from surge.models import Position
from surge.store.ledger import _POSITION_COLUMNS, TradeLedger


@dataclass(frozen=True, slots=True)
class ClosedPosition:
    """A closed position, the venue it traded on and its signal's time (the backtest's ``signal_time``;
    the entry time when the signal row is missing, as in a file from before foreign keys)."""

    position: Position
    venue: str
    signal_time: int


def closed_positions(
    ledger: TradeLedger, since_ms: int | None = None, until_ms: int | None = None, *, venue: str | None = None
) -> list[ClosedPosition]:
    """Positions that exited in ``[since_ms, until_ms)`` (either bound open when None), in exit order.

    Exit order (ties: the order they were recorded) because that is the order the realised equity moved
    in: a drawdown is measured along it. ``venue=None``: every venue.
    """
    where = "WHERE p.exit_time IS NOT NULL"
    params: list[object] = []
    if since_ms is not None:
        where += " AND p.exit_time >= ?"
        params.append(since_ms)
    if until_ms is not None:
        where += " AND p.exit_time < ?"
        params.append(until_ms)
    if venue is not None:
        where += " AND p.venue = ?"
        params.append(venue)
    columns = ", ".join(f"p.{c.strip()}" for c in _POSITION_COLUMNS.split(","))
    rows = ledger._read(
        f"SELECT {columns}, p.venue, s.time FROM positions p "
        "LEFT JOIN signals s ON s.venue = p.venue AND s.key = p.key "
        f"{where} ORDER BY p.exit_time, p.rowid",
        params,
    )
    out = []
    for r in rows:
        position = Position(*r[:13])
        out.append(ClosedPosition(position, r[13], int(r[14]) if r[14] is not None else position.entry_time))
    return out


__all__ = ["ClosedPosition", "closed_positions"]
