"""Prometheus metrics and a health check for ``surge run --metrics-port N`` (off by default).

* :mod:`surge.metrics.server`: the one ``surge-metrics`` thread serving ``/metrics`` and ``/health``.
* :mod:`surge.metrics.collector`: what a scrape reads from the running bot, at scrape time.
* :mod:`surge.metrics.histogram`: the decision-latency histogram, folded off the loop from its ring.

Why it costs the strategy loop nothing: no metric is incremented or observed on the loop; every
number is one the bot keeps anyway, read by the metrics thread when asked (see each module).
"""

from __future__ import annotations

from surge.metrics.collector import BotCollector
from surge.metrics.histogram import BOUNDS_MS, LatencyHistogram
from surge.metrics.server import DEFAULT_HOST, STALE_AFTER_S, Health, MetricsServer

__all__ = [
    "BOUNDS_MS",
    "DEFAULT_HOST",
    "STALE_AFTER_S",
    "BotCollector",
    "Health",
    "LatencyHistogram",
    "MetricsServer",
]
