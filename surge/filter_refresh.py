"""The 4h filter while ``surge run`` runs: the universe, the live verdicts, rescans and refreshes.

After the start's scan the ``kline_4h`` streams keep every listed symbol's verdict current with no
REST (:class:`~surge.filter4h.LiveFilter4h`). REST is needed only for what a stream cannot say: a 4h
close a stream gap may have hidden (a rescan of those symbols), and once an hour who joined or left
the universe. Owned by the strategy loop's thread; the REST work runs as housekeeping jobs whose
:class:`Rescanned` answers come back on the loop's queue.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from surge.exchange.rest import BinanceRest
from surge.filter4h import LiveFilter4h, Rule4h, ScanResult
from surge.jobs import Housekeeper
from surge.models import Kline
from surge.runtime import Spell
from surge.store import Store, StoreWriteError
from surge.stream import MultiplexedKlineManager
from surge.trade_flow import NO_ENTRY_WHILE_FULL
from surge.universe import universe_from_exchange_info

log = logging.getLogger("surge.app")

FILTER_SETTLE_S = 5.0  # after 4h candles close, wait this long for the rest before re-evaluating

#: ``scan(symbols, info)``: a 4h scan of ``symbols`` (None: the whole universe) with an
#: exchangeInfo body already read (None: the scan reads it).
Scan = Callable[[Sequence[str] | None, Mapping[str, Any] | None], ScanResult]


@dataclass(frozen=True, slots=True)
class Rescanned:
    """A rescan's verdicts, and the universe when the job refreshed it too."""

    result: ScanResult
    universe: frozenset[str] | None


class FilterRefresh:
    """The universe and the live 4h verdicts, and the REST jobs that complete them."""

    def __init__(self, rule: Rule4h, only: set[str] | None, store_spell: Spell) -> None:
        self.rule = rule
        self.live = LiveFilter4h(rule)
        self.only = only
        self.universe: set[str] = set()
        self._store_spell = store_spell  # a full disk: said once per spell
        # closed 4h candles for the cache, written in one transaction when the filter settles: at a
        # 4h close all 531 arrive at once, and 531 commits would hold up the strategy loop
        self.closed_4h: list[Kline] = []
        self.dirty_at: float | None = None  # monotonic time of the first 4h close not yet evaluated
        self._monotonic: Callable[[], float] = lambda: 0.0
        self._store: Store | None = None
        self._housekeeper: Housekeeper | None = None
        self._rest: BinanceRest | None = None
        self._manager: MultiplexedKlineManager | None = None

    def seed(self, universe: set[str], result: ScanResult) -> None:
        """The start's scan: the universe (what the exchange did not refuse) and its verdicts."""
        self.universe = universe
        self.live.seed(result)

    def start(
        self,
        rest: BinanceRest | None,
        store: Store,
        housekeeper: Housekeeper | None,
        manager: MultiplexedKlineManager,
        monotonic: Callable[[], float],
    ) -> None:
        """Without ``rest`` and ``housekeeper`` (a replay) nothing is asked of the exchange: the
        recorded answers stand in for the rescans."""
        self._rest, self._store, self._housekeeper = rest, store, housekeeper
        self._manager, self._monotonic = manager, monotonic

    def on_4h(self, k: Kline) -> None:
        """A 4h event (on the hot path: every chunk carries some)."""
        if k.interval == "4h" and self.live.on_kline(k):
            self.closed_4h.append(k)
            if self.dirty_at is None:
                self.dirty_at = self._monotonic()

    def settled(self, now: float) -> bool:
        """True once, :data:`FILTER_SETTLE_S` after 4h candles closed: cache them, re-evaluate."""
        if self.dirty_at is None or now - self.dirty_at < FILTER_SETTLE_S:
            return False
        self.dirty_at = None
        self.flush_closed_4h()
        return True

    def next_due(self) -> float:
        return math.inf if self.dirty_at is None else self.dirty_at + FILTER_SETTLE_S

    def flush_closed_4h(self) -> None:
        if self.closed_4h and self._store is not None:
            closed, self.closed_4h = self.closed_4h, []
            try:
                self._store.put_candles(closed)
            except StoreWriteError as exc:  # only the cache: the next scan asks the exchange for them
                self._store_spell.failed(exc, NO_ENTRY_WHILE_FULL)

    def submit_rescan(self, symbols: list[str], scan: Scan) -> None:
        if self._housekeeper is not None:
            self._housekeeper.submit(
                f"4h rescan of {len(symbols)}", lambda: Rescanned(scan(symbols, None), None)
            )

    def submit_universe_refresh(self, now_ms: int, scan: Scan) -> None:
        """Hourly: who joined or left the universe, and a scan of only what the streams cannot say.

        The kline_4h streams keep every listed symbol's verdict current, so the scan covers the
        symbols that joined and those whose current 4h candle no event has told about (no trade
        since the boundary). exchangeInfo is read once, without the trading rules: a full decode
        and a full scan every hour set the process's memory high-water about 3.5 MB above the
        steady state, for nothing the streams did not already know.
        """
        known = frozenset(self.universe)
        stale = frozenset(self.live.stale(known, now_ms))
        rest, only = self._rest, self.only

        def job() -> Rescanned:
            assert rest is not None
            info = rest.exchange_info(filters=False)
            names = {s.symbol for s in universe_from_exchange_info(info)}
            if only is not None:
                names &= only
            todo = sorted((names - known) | (stale & names))
            if not todo:
                return Rescanned(ScanResult(), frozenset(names))
            return Rescanned(scan(todo, info), frozenset(names))

        if self._housekeeper is not None:
            self._housekeeper.submit("universe refresh", job)

    def on_rescanned(self, item: Rescanned) -> None:
        """Take a rescan's verdicts, and its universe: kline_4h streams follow who joined or left."""
        if item.universe is not None:
            assert self._manager is not None
            for sym in self.universe - item.universe:
                log.info("%s left the universe", sym)
                self.live.forget(sym)
                self._manager.unsubscribe_kline(sym, "4h")
            for sym in item.universe - self.universe:
                log.info("%s joined the universe", sym)
                self._manager.subscribe_kline(sym, "4h")
            self.universe = set(item.universe)
        self.live.seed(item.result)


__all__ = ["FILTER_SETTLE_S", "FilterRefresh", "Rescanned", "Scan"]
