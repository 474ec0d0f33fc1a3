"""The order desk's writes of its ledger: persist first, then believe, and ride out a full disk.

Why it is shaped like this: the row is what a restart will find, so a trade's new state is written
before the desk acts on it. Except when the disk refuses a row of a position already held (filled,
protected, closing): its protection and its close must not wait for disk space, so the write is kept
in memory and made, in order, when the database takes writes again. An entry is never sent
unrecorded: a refused write of any other state raises :class:`~surge.store.StoreWriteError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from surge.models import Trade
from surge.store import Store, StoreWriteError
from surge.trading.desk_rules import HELD

__all__ = ["LedgerWriter"]


class LedgerWriter:
    """The desk thread's ledger writes; ``trades`` (the desk's in-memory rows) follows each save."""

    def __init__(
        self,
        store: Store,
        venue: str,
        trades: dict[str, Trade],
        log: logging.Logger,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.venue = venue
        self._trades = trades
        self.log = log
        self._clock = clock
        #: writes of held positions a full disk refused, oldest first
        self.pending: list[Callable[[], None]] = []
        #: when the pending writes are tried again (the disk is not asked more than once a second)
        self.retry_at = 0.0
        #: the disk refuses writes (said once when it began, once when it ended)
        self.failing = False

    def save(self, trade: Trade) -> Trade:
        """Write ``trade``'s row, then hold it as the desk's current state of that trade."""
        self.write(lambda: self.store.save_trade(trade, venue=self.venue), held=trade.state in HELD)
        self._trades[trade.key] = trade
        return trade

    def write(self, write: Callable[[], None], *, held: bool) -> None:
        """Run a ledger write after those still waiting; a refused one waits too if ``held``, else
        :class:`StoreWriteError` is raised (and nothing that depends on it may be sent)."""
        self.pending.append(write)
        try:
            self.flush()
        except StoreWriteError:
            if not held:
                self.pending.remove(write)  # not written (it, or an older one, was refused)
                raise

    def flush(self) -> None:
        """The ledger writes a full disk held back, oldest first; raises StoreWriteError if it still
        refuses them. A write made stale meanwhile (its trade became final) is dropped."""
        while self.pending:
            try:
                self.pending[0]()
            except StoreWriteError as exc:
                self.retry_at = self._clock() + 1.0
                if not self.failing:
                    self.failing = True
                    self.log.error(
                        "the ledger cannot be written (%s): no new entry is sent; positions held "
                        "are still protected and closed, their rows kept in memory until it can "
                        "(logged once until then)",
                        exc,
                    )
                raise
            except ValueError as exc:
                self.log.warning("dropped a stale ledger write: %s", exc)
            except Exception:
                # not a full disk (a bug, a constraint): writing it again cannot help, and left queued it
                # would fail every later write; the step that made it fails and is retried from its row
                self.pending.pop(0)
                raise
            self.pending.pop(0)
        if self.failing:
            self.failing = False
            self.log.warning("the ledger is written again")
