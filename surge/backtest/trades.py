"""One backtest trade: what the engine produces and what the report, the plot and ``--json`` read.

The field names are the contract's ``--json`` keys (``surge backtest --json``: ``trades``), so a trade
prints as it is stored; times are milliseconds since the epoch (UTC), money is USDT.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from surge.trading.paper import MAX_HOLD, STOP_LOSS, TAKE_PROFIT

#: A position still open when the data ends, closed at the last close (the contract's reason).
END_OF_DATA = "end_of_data"
EXIT_REASONS = (TAKE_PROFIT, STOP_LOSS, MAX_HOLD, END_OF_DATA)


@dataclass(frozen=True, slots=True)
class Trade:
    """A closed long position of the backtest (a position still open when the data ends is closed at
    the last close with ``end_of_data``)."""

    symbol: str
    signal_time: int
    entry_time: int
    entry_price: float
    qty: float
    exit_time: int
    exit_price: float
    exit_reason: str
    fees: float
    pnl: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["END_OF_DATA", "EXIT_REASONS", "MAX_HOLD", "STOP_LOSS", "TAKE_PROFIT", "Trade"]
