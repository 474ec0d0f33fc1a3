"""Paper trading: fills at the last price with slippage against you and the taker fee both ways.

A paper fill is only useful if it is not flattering: entries pay ``slippage_pct`` above the signal
price, exits receive ``slippage_pct`` below the trigger price, and each side pays ``taker_fee_pct``
of its notional. Exits are checked on the last price (the candle's close), never on the candle's
high or low, which may have been printed before the entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace

from surge.config import TradeSettings
from surge.models import Position, Signal
from surge.runtime import Spell
from surge.store import Store, StoreWriteError
from surge.trading.outcomes import Outcome, TradeClosed, TradeOpened

TAKE_PROFIT = "take_profit"
STOP_LOSS = "stop_loss"
MAX_HOLD = "max_hold"


class PaperBroker:
    """Opens and closes simulated long positions under the ``[trade]`` settings."""

    def __init__(self, settings: TradeSettings) -> None:
        self.settings = settings
        self._slip = settings.slippage_pct / 100.0
        self._fee = settings.taker_fee_pct / 100.0

    def open(self, signal: Signal, now_ms: int | None = None) -> Position:
        s = self.settings
        entry = signal.price * (1.0 + self._slip)
        qty = s.position_usdt / entry
        entered = signal.time if now_ms is None else now_ms
        return Position(
            key=signal.key,
            symbol=signal.symbol,
            qty=qty,
            entry_price=entry,
            entry_time=entered,
            take_profit=entry * (1.0 + s.take_profit_pct / 100.0),
            stop_loss=entry * (1.0 - s.stop_loss_pct / 100.0),
            deadline=entered + int(s.max_hold_s * 1000),
            fees=s.position_usdt * self._fee,
        )

    @staticmethod
    def exit_reason(position: Position, price: float, now_ms: int) -> str | None:
        """Which exit, if any, the last price (or the clock) triggers for an open position."""
        if price >= position.take_profit:
            return TAKE_PROFIT
        if price <= position.stop_loss:
            return STOP_LOSS
        if now_ms >= position.deadline:
            return MAX_HOLD
        return None

    def close(self, position: Position, price: float, now_ms: int, reason: str) -> Position:
        exit_price = price * (1.0 - self._slip)
        fees = position.fees + exit_price * position.qty * self._fee
        pnl = (exit_price - position.entry_price) * position.qty - fees
        return replace(
            position, exit_price=exit_price, exit_time=now_ms, exit_reason=reason, fees=fees, pnl=pnl
        )


class PaperDesk:
    """Paper trading behind the same interface as the live :class:`~surge.trading.desk.OrderDesk`.

    A paper fill cannot fail or be late, so every call is made at once on the caller's thread and its
    outcome handed to ``post`` before the call returns; the signal and its position are written in one
    transaction (:meth:`Store.record_entry`), so a replayed signal never enters twice.
    """

    def __init__(
        self, settings: TradeSettings, store: Store, venue: str, post: Callable[[Outcome], None]
    ) -> None:
        self.broker = PaperBroker(settings)
        self.store = store
        self.venue = venue
        self._post = post
        self.exit_reason = self.broker.exit_reason
        self._unsaved: list[Position] = []
        self._spell = Spell(logging.getLogger(__name__), "recording a paper close")

    def start(self) -> list[Position]:
        """The open positions to resume (paper has no exchange to reconcile with)."""
        return self.store.open_positions(venue=self.venue)

    def prepare(self, symbols: Iterable[str]) -> None:
        """Nothing to set up ahead on paper (live: the leverage of symbols that may signal)."""

    def enter(self, signal: Signal) -> bool:
        """Fill ``signal`` on paper and record it; False (nothing written) if it was recorded before."""
        position = self.broker.open(signal)
        if not self.store.record_entry(signal, position, venue=self.venue):
            return False
        self._post(TradeOpened(position))
        return True

    def close(
        self, position: Position, reason: str, price: float | None = None, now_ms: int | None = None
    ) -> None:
        if price is None or now_ms is None:
            raise ValueError("a paper close needs the price and the time")
        closed = self.broker.close(position, price, now_ms, reason)
        self._unsaved.append(closed)  # a position held is closed even if the disk is full: written later
        self.flush_unsaved()
        self._post(TradeClosed(closed))

    def flush_unsaved(self) -> None:
        """Write the closes the database refused (disk full): at each close and each heartbeat. A stop
        before the disk has room again leaves them open in the database, resumed at the next start."""
        while self._unsaved:
            try:
                self.store.close_position(self._unsaved[0], venue=self.venue)
            except StoreWriteError as exc:
                self._spell.failed(exc, f"{len(self._unsaved)} paper close(s) kept in memory, written later")
                return
            except ValueError as exc:  # no such position (a bug): never retried at every heartbeat
                logging.getLogger(__name__).error("paper close not recorded: %s", exc)
            self._unsaved.pop(0)
            self._spell.ok()

    def stop(self, timeout: float | None = None) -> list[object]:
        """Nothing is ever in flight on paper; a last try at the closes a full disk held back."""
        self.flush_unsaved()
        if self._unsaved:
            logging.getLogger(__name__).error(
                "%d paper close(s) could not be recorded (%s): they resume open at the next start",
                len(self._unsaved),
                ", ".join(p.key for p in self._unsaved),
            )
        return []
