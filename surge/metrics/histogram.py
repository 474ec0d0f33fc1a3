"""The decision-latency histogram, folded off the loop from the loop's own ring of latencies.

Why not a ``prometheus_client.Histogram`` with ``observe()`` on the loop: that is a lock, a bucket
search and two float additions per decision, thousands a second, on the one thread whose latency is
being measured. The loop already writes every latency into :class:`~surge.latency.LatencyWindow` (a
ring of doubles); :class:`LatencyHistogram` reads what it added since the last look
(:meth:`LatencyWindow.since`, no lock) and folds it into cumulative bucket counts on the metrics
thread, at every scrape and between scrapes (the server folds whenever it is idle for
:data:`surge.metrics.server.IDLE_FOLD_S`), so the 20,000-sample ring (about 5 s of decisions at the
whole universe's 4,250 events a second) does not overflow between two scrapes 15 s apart.

Cost and the GIL: samples are folded in chunks of :data:`CHUNK`: each is sorted (one C call) and
every bucket's cumulative count is then one ``bisect_right`` into the sorted chunk, so a chunk holds
the interpreter for 0.1 to 0.2 ms (``sorted`` of 1,024 doubles: 55 us, measured on this project's 2-core
machine: see ``tests/metrics/test_histogram.py``) and the thread yields the GIL between chunks
(``time.sleep(0)``), so the loop waits at most about one chunk for its turn, not for the whole fold.
A full ring (20,000 samples) is about 3.5 ms of work in all, in 20 slices; copying it out of the
ring (:meth:`LatencyWindow.since`) is one memcpy-like slice of at most 160 kB, about 0.1 ms.

Honesty: a sample the ring overwrote before it could be folded (more than the ring's size arrived
between two folds) is not bucketed; it is counted in :attr:`LatencyHistogram.unbucketed`, exposed as
``surge_decision_latency_unbucketed_total``, so ``_count + unbucketed`` is every decision timed.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Sequence

from surge.latency import LatencyWindow

#: Bucket upper bounds in milliseconds (the window's unit); exposed in seconds. Dense around the
#: 5 ms p99 budget of a decision, then coarse up to the outliers a GC pause or a reconnect makes.
BOUNDS_MS: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 5000.0)
#: Samples sorted and bucketed per slice of the fold; the thread yields the GIL after each.
CHUNK = 1024


class LatencyHistogram:
    """Cumulative bucket counts of a :class:`LatencyWindow`'s samples, folded by one reader thread.

    Not thread-safe by itself: one thread folds and reads it (the metrics server's, which handles one
    request at a time and folds between them). The window may be written by another thread meanwhile.
    """

    def __init__(self, window: LatencyWindow, bounds_ms: Sequence[float] = BOUNDS_MS) -> None:
        if list(bounds_ms) != sorted(set(bounds_ms)) or not bounds_ms:
            raise ValueError("bucket bounds must be distinct and ascending")
        self.window = window
        self.bounds_ms = tuple(bounds_ms)
        self.cumulative = [0] * len(self.bounds_ms)  # samples <= each bound
        self.count = 0  # samples bucketed (the +Inf bucket)
        self.sum_ms = 0.0
        self.unbucketed = 0  # samples the ring overwrote before a fold could read them
        self._mark = 0  # the window's total at the last fold

    def fold(self) -> int:
        """Bucket what the window gained since the last fold; returns how many samples were bucketed."""
        data, lost, self._mark = self.window.since(self._mark)
        self.unbucketed += lost
        bounds, cumulative = self.bounds_ms, self.cumulative
        for at in range(0, len(data), CHUNK):
            chunk = sorted(data[at : at + CHUNK])
            for i, bound in enumerate(bounds):
                cumulative[i] += bisect_right(chunk, bound)
            self.count += len(chunk)
            self.sum_ms += sum(chunk)
            time.sleep(0)  # let the loop have the interpreter between two slices
        return len(data)

    def buckets(self) -> list[tuple[float, int]]:
        """``(upper bound in seconds, cumulative count)`` of every bucket, ``+Inf`` last."""
        return [(b / 1000.0, c) for b, c in zip(self.bounds_ms, self.cumulative, strict=True)] + [
            (float("inf"), self.count)
        ]


__all__ = ["BOUNDS_MS", "CHUNK", "LatencyHistogram"]
