"""What the order desk holds in memory between steps, and the context all its parts share.

Why one state object: the desk's guarantee is that a single thread owns every live trade. Its parts
(entry, protection, closing, watching, reconciliation) are separate classes, but they all read and
write this one :class:`DeskState`, on the desk thread (or on the caller's thread in ``start()``,
before the desk thread runs). Nothing here matters across a restart: the ledger does.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from surge.config import TradeSettings
from surge.exchange.orders import SignedRest
from surge.models import INTENT, Position, Signal, Trade
from surge.store import Store
from surge.trading.account_reads import AccountReads
from surge.trading.desk_rules import LATE_FILL_WATCH_S, RETRY_S, UNRESOLVED_STATES
from surge.trading.ledger_writes import LedgerWriter
from surge.trading.outcomes import Outcome

__all__ = ["DeskContext", "DeskStart", "DeskState", "StepRetry"]


@dataclass(slots=True)
class DeskStart:
    """What the desk found at start: positions the book holds, entries whose outcome is pending."""

    open: list[Position] = field(default_factory=list)
    in_flight: dict[str, str] = field(default_factory=dict)  # key -> symbol
    adopted: int = 0
    resumed: int = 0


@dataclass(slots=True)
class StepRetry:
    """When a trade's next step is due, and how long it has been failing (for the ERROR reports)."""

    at: float = 0.0
    delay: float = RETRY_S[0]
    failing_since: float | None = None
    reported_at: float = 0.0


@dataclass(slots=True)
class DeskState:
    """Every live trade the desk works on, and what it knows about each beyond its ledger row."""

    trades: dict[str, Trade] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    signals: dict[str, Signal] = field(default_factory=dict)
    retry: dict[str, StepRetry] = field(default_factory=dict)
    #: keys whose protective orders may exist already (a placement must ask before it places)
    checked_protection: set[str] = field(default_factory=set)
    #: consecutive flat positionRisk reads with no fill of ours to explain them, per key
    flat_reads: dict[str, int] = field(default_factory=dict)
    #: symbol -> (key, watch until): an end not proven by a fill, watched for the position showing again
    voided_unknown: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: background work (the positions check, each symbol's protection check, leverage set ahead):
    #: one item between two rounds of trade steps, so it never holds an entry up for long
    chores: collections.deque[tuple[str, Callable[[], None]]] = field(default_factory=collections.deque)
    stopping: bool = False
    deadline: float | None = None

    def finish(self, key: str) -> None:
        """Forget a trade that is final (closed or void)."""
        self.trades.pop(key, None)
        self.positions.pop(key, None)
        self.signals.pop(key, None)
        self.retry.pop(key, None)
        self.flat_reads.pop(key, None)
        self.checked_protection.discard(key)

    def unresolved_keys(self) -> list[str]:
        return [k for k, t in self.trades.items() if t.state in UNRESOLVED_STATES or t.state == INTENT]

    def held_by_other(self, symbol: str, key: str) -> str | None:
        """The key of another trade on ``symbol``, if the desk has one."""
        return next((k for k, t in self.trades.items() if t.symbol == symbol and k != key), None)


@dataclass(slots=True)
class DeskContext:
    """What every part of the desk works with: its settings, the exchange, the ledger, the state."""

    settings: TradeSettings
    client: SignedRest
    store: Store
    venue: str
    post: Callable[[Outcome], None]
    log: logging.Logger
    clock: Callable[[], float]
    wall: Callable[[], float]
    state: DeskState
    ledger: LedgerWriter
    account: AccountReads

    def soon(self, key: str, seconds: float = 0.25) -> None:
        """Ask again shortly without growing the backoff (the answer is expected any moment)."""
        self.state.retry.setdefault(key, StepRetry()).at = self.clock() + seconds

    def watch_symbol(self, symbol: str, key: str) -> None:
        """An end not proven by a fill: watch ``symbol`` a while for the position showing again
        (it is then adopted under ``key``), and enter nothing new on it meanwhile."""
        self.state.voided_unknown[symbol] = (key, self.clock() + LATE_FILL_WATCH_S)
