"""The 1m backfill scheduler: which symbols' closed 1m candles the strategy loop still waits for.

The volume baseline of a symbol needs its last ``volume_lookback`` closed minutes; after a start, a
new subscription or a stream gap they come over REST (weight 1 each), fetched on the housekeeping
thread with at most ``workers`` requests at once. The scheduler is owned by the loop's thread: it
records what is pending, and when the exchange is unreachable it asks again with a growing delay
(:data:`RETRY_S`), not only at the symbol's next closed candle, so an outage costs seconds of
blindness, not minutes.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from surge.clock import Clock
from surge.config import Settings
from surge.exchange.ratelimit import MAX_WEIGHT1_LIMIT
from surge.exchange.rest import BinanceRest, ExchangeError, RestError
from surge.jobs import Housekeeper
from surge.models import Kline

log = logging.getLogger("surge.app")

RETRY_S = (2.0, 60.0)  # first and longest wait before re-asking for a failed 1m backfill


@dataclass(frozen=True, slots=True)
class Backfilled:
    """A symbol's closed 1m candles, fetched: the loop seeds its baseline with them."""

    symbol: str
    klines: list[Kline]


@dataclass(frozen=True, slots=True)
class BackfillDeferred:
    """The exchange was unreachable: these symbols are asked for again after a growing delay."""

    symbols: tuple[str, ...]
    error: str


@dataclass(frozen=True, slots=True)
class BackfillAbandoned:
    """The exchange refused a symbol (delisted?) or the job failed: nothing is retried on a timer;
    the next closed candle that finds a hole in a baseline asks again."""

    job: str
    error: str


class BackfillScheduler:
    """Submits backfill jobs and keeps the pending and retry sets (used by the loop's thread only)."""

    def __init__(
        self,
        post: Callable[[Any], None],
        now_ms: Callable[[], int],
        monotonic: Callable[[], float],
        *,
        volume_lookback: int,
        workers: int,
    ) -> None:
        self._post = post
        self._now_ms = now_ms
        self._monotonic = monotonic
        self.limit = min(volume_lookback + 2, MAX_WEIGHT1_LIMIT)
        self.workers = workers
        self.pending: set[str] = set()  # asked for, no answer yet
        self.retry: set[str] = set()  # to ask again at ``retry_at`` (the exchange was down)
        self.retry_at = 0.0
        self._delay = RETRY_S[0]
        self.done = 0  # symbols whose 1m history was fetched (start, new in filter, gaps)
        self._rest: BinanceRest | None = None
        self._housekeeper: Housekeeper | None = None

    @classmethod
    def for_settings(
        cls, settings: Settings, post: Callable[[Any], None], now_ms: Callable[[], int], clock: Clock
    ) -> BackfillScheduler:
        """As ``surge run`` uses it: the baseline's lookback, the scan's worker count."""
        return cls(
            post,
            now_ms,
            clock.monotonic,
            volume_lookback=settings.surge.volume_lookback,
            workers=settings.filter_4h.workers,
        )

    def start(self, rest: BinanceRest, housekeeper: Housekeeper) -> None:
        self._rest, self._housekeeper = rest, housekeeper

    def submit(self, symbols: list[str]) -> None:
        """Fetch the closed 1m candles the volume baseline needs (before :meth:`start`: nothing)."""
        if self._housekeeper is None or self._rest is None or not symbols:
            return
        self.pending.update(symbols)
        job = _BackfillJob(self._rest, self._post, self._now_ms, list(symbols), self.limit, self.workers)
        self._housekeeper.submit(f"backfill of {len(symbols)}", job.run, BackfillAbandoned)

    def on_backfilled(self, item: Backfilled) -> None:
        self.pending.discard(item.symbol)
        self.done += 1
        self._delay = RETRY_S[0]

    def on_deferred(self, item: BackfillDeferred) -> None:
        self.pending.difference_update(item.symbols)
        self.retry.update(item.symbols)
        self.retry_at = self._monotonic() + self._delay
        log.warning(
            "backfill of %d failed: %s (trying again in %.0fs)", len(item.symbols), item.error, self._delay
        )
        self._delay = min(self._delay * 2, RETRY_S[1])

    def on_abandoned(self, item: BackfillAbandoned) -> None:
        log.warning("%s failed: %s (will try again)", item.job, item.error)
        self.pending.clear()  # the next closed candle of a hole re-requests it

    def due(self, now: float, streaming: set[str]) -> list[str]:
        """The symbols to ask for again now (still streamed, not already on their way)."""
        if not self.retry or now < self.retry_at:
            return []
        retry, self.retry = self.retry & streaming, set()
        return sorted(retry - self.pending)

    def next_due(self) -> float:
        return self.retry_at if self.retry else math.inf


class _BackfillJob:
    """One backfill on the housekeeping thread: each symbol's answer goes to the loop as it comes."""

    def __init__(
        self,
        rest: BinanceRest,
        post: Callable[[Any], None],
        now_ms: Callable[[], int],
        symbols: list[str],
        limit: int,
        workers: int,
    ) -> None:
        self.rest, self.post, self.now_ms = rest, post, now_ms
        self.symbols, self.limit, self.workers = symbols, limit, workers
        self.down = threading.Event()  # the exchange is unreachable: the rest of the job asks nothing
        self.failed: list[str] = []
        self.errors: list[str] = []

    def run(self) -> BackfillDeferred | None:
        if len(self.symbols) == 1:
            self.one(self.symbols[0])
        else:
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="surge-backfill") as pool:
                for fut in [pool.submit(self.one, s) for s in self.symbols]:
                    fut.result()
        if self.failed:
            return BackfillDeferred(tuple(self.failed), self.errors[0] if self.errors else "")
        return None

    def one(self, sym: str) -> None:
        if self.down.is_set():
            self.failed.append(sym)
            return
        try:
            self.post(Backfilled(sym, self.rest.klines(sym, "1m", limit=self.limit, now_ms=self.now_ms())))
        except ExchangeError as exc:  # about this symbol (e.g. delisted): not retried
            self.post(BackfillAbandoned(f"backfill {sym}", str(exc)))
        except RestError as exc:  # unreachable or banned: retried later, like every symbol after it
            self.down.set()
            self.failed.append(sym)
            self.errors.append(str(exc))


__all__ = ["RETRY_S", "BackfillAbandoned", "BackfillDeferred", "BackfillScheduler", "Backfilled"]
