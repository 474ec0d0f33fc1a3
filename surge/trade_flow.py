"""The strategy loop's side of trading: signals into entries, the book it mirrors, closes on their way.

The desk (:class:`~surge.trading.paper.PaperDesk`, or the live
:class:`~surge.trading.desk.OrderDesk`) owns every order; this class keeps what the loop must know
to decide without waiting for it: the open positions (a :class:`~surge.trading.book.PositionBook`
updated from the desk's outcome messages), the entries on their way (they count as held: no second
entry on the symbol, none past ``max_open_positions``) and the positions being closed (never closed
twice). Used by the loop's thread only, so it needs no lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from surge.models import Position, Signal, Trade
from surge.notify.messages import SignalSeen
from surge.runtime import Spell
from surge.store import Store, StoreWriteError
from surge.strategy import SurgeRule
from surge.trading import PaperDesk, PositionBook, TradeClosed, TradeOpened, TradeVoid
from surge.trading.desk import OrderDesk
from surge.trading.live import ENTRY, EXIT, client_id

if TYPE_CHECKING:
    from surge.notify.wiring import Notifications

log = logging.getLogger("surge.app")

#: What the bot does while the database refuses writes (a full disk), said once per spell.
NO_ENTRY_WHILE_FULL = "no new entry meanwhile (it could not be recorded); held positions are still closed"


class TradeFlow:
    """Entries, outcomes and closes between the loop and its desk (see the module docstring)."""

    def __init__(self, book: PositionBook, rule: SurgeRule, venue: str, store_spell: Spell) -> None:
        self.book = book
        self.rule = rule
        self.venue = venue
        self.store_spell = store_spell
        self.desk: PaperDesk | OrderDesk | None = None
        self.store: Store | None = None
        # an entry on its way counts as held (key -> symbol), a position being closed is not closed
        # twice; both end with the desk's outcome message
        self.entering: dict[str, str] = {}
        self.closing: set[str] = set()
        self.entries_open = True
        self.signals_seen = 0
        # [notify] urls set: the bot's notifications (surge.notify.wiring, started by surge.startup);
        # the loop's part is one non-blocking post per signal, entry and exit
        self.notifications: Notifications | None = None

    def start(self, desk: PaperDesk | OrderDesk, store: Store) -> None:
        self.desk, self.store = desk, store

    def on_signal(self, signal: Signal) -> None:
        assert self.store is not None and self.desk is not None
        self.signals_seen += 1
        if self.store.has_signal(signal.key, venue=self.venue):  # the same candle again: entered once
            return
        refusal = None if self.entries_open else "shutting down"
        refusal = refusal or self.book.refusal(signal.symbol) or self._entering_refusal(signal.symbol)
        if refusal is not None:
            self._record_refusal(signal, refusal)
            return
        self.entering[signal.key] = signal.symbol  # before enter(): a paper outcome comes back inside it
        try:
            entered = self.desk.enter(signal)
        except StoreWriteError as exc:
            # the ledger comes first: an entry that cannot be recorded is not made (nor sent, live);
            # closes and protection of what is held go on (the desks keep those in memory meanwhile)
            self.entering.pop(signal.key, None)
            self.store_spell.failed(exc, NO_ENTRY_WHILE_FULL)
            self._signalled(signal, "the database cannot record it")
            return
        self.store_spell.ok()
        if not entered:
            self.entering.pop(signal.key, None)
            log.info("signal %s was already recorded: not entering twice", signal.key)
            return
        self._signalled(signal, None)

    def _signalled(self, signal: Signal, refusal: str | None) -> None:
        log_signal(signal, refusal)
        if self.notifications is not None and self.notifications.notifier.wants("signal"):
            self.notifications.notifier.post("signal", SignalSeen(signal, refusal))

    def _record_refusal(self, signal: Signal, refusal: str) -> None:
        assert self.store is not None
        try:
            recorded = self.store.record_entry(signal, None, skip_reason=refusal, venue=self.venue)
        except StoreWriteError as exc:
            self.store_spell.failed(exc, NO_ENTRY_WHILE_FULL)
            recorded = True
        else:
            self.store_spell.ok()
        if recorded:
            self._signalled(signal, refusal)

    def _entering_refusal(self, symbol: str) -> str | None:
        """Entries on their way count as held: none more on the symbol, none past the limit."""
        if not self.entering:
            return None
        if symbol in self.entering.values():
            return f"an entry on {symbol} is still unconfirmed"
        if len(self.book) + len(self.entering) >= self.book.max_open:
            return f"max_open_positions ({self.book.max_open}) reached"
        return None

    def on_outcome(self, outcome: TradeOpened | TradeVoid | TradeClosed) -> bool:
        """Mirror the desk's outcome in the book. True when the set of held symbols changed."""
        if isinstance(outcome, TradeOpened):
            return self._opened(outcome)
        if isinstance(outcome, TradeVoid):
            self.entering.pop(outcome.key, None)
            return False
        closed = outcome.position
        self.closing.discard(closed.key)
        held = self.book.get(closed.symbol)
        if held is None or held.key != closed.key:
            return False
        self.book.remove(closed.symbol)
        log.info(
            "EXIT %s %s at %g, PnL %+.4f USDT",
            closed.symbol,
            closed.exit_reason,
            closed.exit_price,
            closed.pnl,
        )
        if self.notifications is not None:
            self.notifications.notifier.post("exit", closed)
        return True

    def _opened(self, outcome: TradeOpened) -> bool:
        position = outcome.position
        self.entering.pop(position.key, None)
        if self.book.get(position.symbol) is not None:
            return False  # known already (resumed at start)
        self.book.add(position)
        if outcome.adopted:
            assert self.store is not None  # its signal row is new: no second signal on it at once
            self.rule.restore_cooldowns(self.store.last_signal_times(venue=self.venue))
        log.info(
            "ENTER %s qty %.6g at %g, take profit %g, stop loss %g, max hold until %s",
            position.symbol,
            position.qty,
            position.entry_price,
            position.take_profit,
            position.stop_loss,
            time.strftime("%H:%M:%S", time.gmtime(position.deadline / 1000)),
        )
        if self.notifications is not None:
            self.notifications.notifier.post("entry", position)
        return True  # an adopted position needs its prices too

    def close(self, position: Position, price: float | None, now_ms: int, reason: str) -> None:
        assert self.desk is not None
        if position.key in self.closing:
            return  # on its way
        self.closing.add(position.key)
        self.desk.close(position, reason, price, now_ms)

    def check_max_hold(self, now_ms: int, last_price: Callable[[str], float | None], live: bool) -> None:
        for p in self.book.positions():
            if now_ms >= p.deadline and p.key not in self.closing:
                price = last_price(p.symbol)
                if price is None and not live:
                    log.warning(
                        "max hold of %s reached but no price yet: closing on the next update", p.symbol
                    )
                    continue
                self.close(p, price, now_ms, "max_hold")  # live: a market order needs no price of ours

    def stop(self) -> list[Trade]:
        """Stop entries and the desk; the live trades it could not resolve (each logged)."""
        self.entries_open = False
        if self.desk is None:
            return []
        # an order on its way is never abandoned half way: an entry gets its fill and its
        # protective orders (bounded); what is still unresolved then is resumed by the next start
        unresolved = [t for t in self.desk.stop() if isinstance(t, Trade)]
        for t in unresolved:
            side = EXIT if t.state == "closing" else ENTRY
            log.error(
                "stopping with the live %s of %s unresolved (trade %s is %s, client order id %s): "
                "the next start reconciles it",
                "close" if t.state == "closing" else "entry",
                t.symbol,
                t.key,
                t.state,
                client_id(t.key, side),
            )
        return unresolved


def log_signal(signal: Signal, refusal: str | None) -> None:
    log.info(
        "SIGNAL %s %+.2f%% volume x%.1f quote %.0f at %g%s",
        signal.symbol,
        signal.change_pct,
        signal.volume_multiple,
        signal.quote_volume,
        signal.price,
        f" (not entered: {refusal})" if refusal else "",
    )


__all__ = ["NO_ENTRY_WHILE_FULL", "TradeFlow", "log_signal"]
