"""What a desk tells the strategy loop: one message type per outcome.

Why messages: the live desk works on its own thread and the loop must never wait for the exchange,
so a trade's outcome arrives on the loop's queue like a kline does. The paper desk hands the same
messages over at once. The loop only mirrors them in its book; the ledger in the store is the desk's.
"""

from __future__ import annotations

from dataclasses import dataclass

from surge.models import Position


@dataclass(frozen=True, slots=True)
class TradeOpened:
    """The entry filled (or reconciliation adopted a position): it is held, in the ledger, from now."""

    position: Position
    adopted: bool = False


@dataclass(frozen=True, slots=True)
class TradeVoid:
    """The entry never happened (too small, refused, proven never executed, shutting down)."""

    key: str
    symbol: str
    reason: str


@dataclass(frozen=True, slots=True)
class TradeClosed:
    """The position is flat on the exchange (proven) and recorded closed."""

    position: Position


Outcome = TradeOpened | TradeVoid | TradeClosed

__all__ = ["Outcome", "TradeClosed", "TradeOpened", "TradeVoid"]
