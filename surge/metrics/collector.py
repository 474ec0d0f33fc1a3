"""What ``/metrics`` says: the bot's state, read at scrape time on the metrics thread.

Why a custom collector rather than counters the code increments: the loop and the stream threads
already keep every count (:meth:`MultiplexedKlineManager.stats`, the weight limiter's fields, the
position book, the latency ring) for the heartbeat; a scrape reads those, so the hot loop pays
nothing for being scraped and no number is kept twice. Each read is one the heartbeat already makes
from the loop, here from another thread: the manager's ``stats()`` takes only its own short lock, the
limiter's counters and the book's size are plain reads (a snapshot, as ``heartbeat._rest_weight``).

What is *not* read from the loop's objects: the ledger (signals, entries, realised PnL). The loop's
:class:`~surge.store.Store` serialises its connection with a lock the loop takes for every entry; a
scrape must never make the loop wait on it. So the collector opens the database a second time,
read-only (WAL: neither side waits for the other), on the metrics thread, and closes it at the stop.

A part that does not exist yet (the streams during the start's 4h scan) is left out of the scrape
rather than reported as zero; a ledger that cannot be read is logged once (a :class:`Spell`) and
its three metrics are left out until it can.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from surge import __version__
from surge.metrics.histogram import LatencyHistogram
from surge.runtime import Spell
from surge.store import Store, StoreError, read_store

if TYPE_CHECKING:
    from surge.app import Bot

log = logging.getLogger("surge.metrics")


class BotCollector:
    """A ``prometheus_client`` collector of one running :class:`~surge.app.Bot` (see the module
    docstring). Used by one thread: the metrics server's."""

    def __init__(self, bot: Bot, histogram: LatencyHistogram) -> None:
        self.bot = bot
        self.histogram = histogram
        self._ledger: Store | None = None
        self._ledger_spell = Spell(log, "reading the ledger for /metrics")

    def collect(self) -> Iterator[Metric]:
        yield from self._identity()
        yield from self._streams()
        yield from self._rest()
        yield from self._trading()
        yield from self._latency()

    def close(self) -> None:
        """Close the read-only ledger connection (the server's stop)."""
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    # ----------------------------------------------------------------- families

    def _identity(self) -> Iterator[Metric]:
        bot = self.bot
        info = InfoMetricFamily("surge_build", "The surge version and what this run trades.")
        info.add_metric([], {"version": __version__, "mode": bot.settings.trade.mode, "venue": bot.venue})
        yield info
        yield _gauge("surge_start_time_seconds", "When this run started (Unix time).", bot.started_at)
        if bot.ready_at is not None:
            yield _gauge(
                "surge_ready_time_seconds",
                "When every wanted stream was first confirmed by the exchange (Unix time).",
                bot.ready_at,
            )
        yield _gauge("surge_universe_symbols", "TRADING USDT perpetuals watched.", len(bot.filters.universe))
        yield _gauge("surge_passing_symbols", "Symbols passing the 4h filter now.", len(bot.passing))

    def _streams(self) -> Iterator[Metric]:
        manager = self.bot.manager
        if manager is None:
            return
        st: dict[str, Any] = manager.stats()
        yield _counter("surge_events", "Kline events received on every stream.", st["events"])
        yield _gauge("surge_connections", "WebSocket connections open now.", st["connections"])
        yield _gauge("surge_streams", "Streams confirmed by the exchange, every connection.", st["streams"])
        yield _gauge("surge_streams_wanted", "Streams the bot wants (confirmed or not).", st["wanted"])
        yield _counter(
            "surge_reconnects", "WebSocket connections replaced after a failure.", st["reconnects"]
        )
        yield _counter(
            "surge_stream_gaps", "Outages of a connection's streams (each backfilled).", st["gaps"]
        )
        age = st.get("last_message_age_s")
        if age is not None:
            yield _gauge(
                "surge_last_message_age_seconds", "Seconds since the last kline event on any stream.", age
            )

    def _rest(self) -> Iterator[Metric]:
        limiter = getattr(self.bot.rest, "limiter", None)
        if limiter is None:
            return
        yield _gauge(
            "surge_rest_weight_used",
            "REST request weight of this IP in the exchange's current minute (X-MBX-USED-WEIGHT-1M).",
            limiter.last_used_weight,
        )
        yield _gauge(
            "surge_rest_weight_peak", "Highest REST weight reported since the start.", limiter.max_used_weight
        )
        yield _gauge("surge_rest_weight_limit", "REST request weight allowed per minute.", limiter.limit)
        yield _counter(
            "surge_rest_rate_limited",
            "REST answers 429 (rate limited) or 418 (IP banned).",
            limiter.rate_limited,
        )

    def _trading(self) -> Iterator[Metric]:
        bot = self.bot
        yield _gauge("surge_open_positions", "Positions held now (paper or live).", len(bot.book))
        ledger = self._read_ledger()
        if ledger is None:
            return
        signals, entries, pnl = ledger
        yield _counter("surge_signals", "Surge signals recorded on this venue, entered or skipped.", signals)
        yield _counter("surge_entries", "Positions entered on this venue.", entries)
        yield _gauge(
            "surge_realised_pnl_usdt",
            "Realised PnL of every closed position on this venue, fees deducted.",
            pnl,
        )

    def _latency(self) -> Iterator[Metric]:
        h = self.histogram
        h.fold()
        yield HistogramMetricFamily(
            "surge_decision_latency_seconds",
            "Exchange event time to the decision taken on it (wire, parsing, queue, rule).",
            buckets=[(floatToGoString(le), count) for le, count in h.buckets()],
            sum_value=h.sum_ms / 1000.0,
        )
        yield _counter(
            "surge_decision_latency_unbucketed",
            "Decisions timed but not in the histogram: overwritten in the ring before it was read.",
            h.unbucketed,
        )

    # ----------------------------------------------------------------- the ledger

    def _read_ledger(self) -> tuple[int, int, float] | None:
        """(signals, entries, realised PnL) of the bot's venue from its own read-only connection."""
        venue = self.bot.venue
        try:
            if self._ledger is None:
                self._ledger = read_store(self.bot.settings.home)
                if self._ledger is None:
                    return None
            ledger = self._ledger
            values = (
                ledger.signal_count(venue=venue),
                ledger.position_count(venue=venue),
                ledger.realised_pnl(venue=venue),
            )
        except StoreError as exc:
            self._ledger_spell.failed(exc, "its metrics are left out of the scrapes meanwhile")
            self.close()
            return None
        self._ledger_spell.ok()
        return values


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


__all__ = ["BotCollector"]
