"""The last N decision latencies, in memory sized once at start.

Why not ``deque(maxlen=N)`` of floats: it grows for its first N samples (a float object and a deque
slot each, about 0.7 MB for 20,000), which in an hour-long soak cannot be told from a leak, and it
leaves pymalloc arenas behind when the floats are replaced. An array of doubles costs 8 bytes a
sample from the first second to the last.

Another thread (the ``--metrics-port`` server, :mod:`surge.metrics`) reads the samples the loop added
since it last looked, without a lock the loop could wait on: :attr:`LatencyWindow.total` counts every
sample ever added and is raised only *after* the sample is stored, so a reader that copies the ring
between two readings of it can tell which copied samples are whole and which the loop may have
overwritten meanwhile (see :meth:`LatencyWindow.since`). The loop pays one integer increment a sample.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from itertools import accumulate

#: Percentiles are read from counts per bin of this width (ms): exact to 10 µs, and reading them is
#: one pass over the counts in C, where sorting the 20,000 samples took the loop 3-4 ms at every
#: heartbeat (a stall that showed in the very p99 it reports).
BIN_MS = 0.01
#: Bins cover 0 .. 100 ms; the last one holds everything slower (read exactly, from the ring).
TOP_BIN = 10_000


class LatencyWindow:
    """A ring of the last ``size`` latencies (ms) with their median and 99th percentile."""

    __slots__ = ("_bins", "_buf", "_count", "_counts", "_next", "_size", "_total")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a latency window holds at least one sample")
        self._size = size
        self._buf = array("d", bytes(8 * size))
        self._bins = array("H", bytes(2 * size))  # each sample's bin, to take it out when overwritten
        self._counts = array("q", bytes(8 * (TOP_BIN + 1)))  # samples in the window per bin
        self._next = 0
        self._count = 0
        self._total = 0  # samples ever added; raised after the sample is stored (see since())

    def add(self, ms: float) -> None:
        i = self._next
        b = int(ms * 100.0)  # / BIN_MS
        if b > TOP_BIN:
            b = TOP_BIN
        elif b < 0:
            b = 0
        counts = self._counts
        if self._count == self._size:
            counts[self._bins[i]] -= 1
        else:
            self._count += 1
        counts[b] += 1
        self._bins[i] = b
        self._buf[i] = ms
        i += 1
        self._next = 0 if i == self._size else i
        self._total += 1  # last: a reader that sees the new total sees the sample

    @property
    def total(self) -> int:
        """How many samples were ever added (the window keeps only the last ``size``)."""
        return self._total

    @property
    def size(self) -> int:
        return self._size

    def since(self, mark: int) -> tuple[array[float], int, int]:
        """The samples added after the first ``mark`` ones, oldest first, as far as the ring still
        holds them: ``(samples, lost, new_mark)``, where ``lost`` counts those added since ``mark``
        that were overwritten before they could be copied, and ``new_mark`` is what to pass next time.

        Safe from another thread while one thread (the loop) adds, with no lock: sample ``k`` lives
        at ``k % size`` and is counted in :attr:`total` only once stored, so the samples below the
        total read *before* the copy are whole in it unless the loop overwrote them *during* the
        copy, and any it overwrote has a number at most ``total_after - size``, the total read
        *after* the copy. Those are dropped (and counted in ``lost``), never read half-written.
        """
        size = self._size
        end = self._total
        start = max(mark, end - size)
        i, j = start % size, end % size
        if start == end:
            data = array("d")
        elif i < j:
            data = self._buf[i:j]
        else:  # wraps (or the whole ring: i == j)
            data = self._buf[i:] + self._buf[:j]
        whole_from = self._total + 1 - size
        if whole_from > start:
            del data[: min(whole_from - start, len(data))]
        return data, (end - mark) - len(data), end

    def __len__(self) -> int:
        return self._count

    def percentiles(self) -> tuple[float | None, float | None]:
        """(p50, p99) of the window, or (None, None) before the first sample: the upper edge of the
        bin holding the sample of that rank (never below the sample, at most :data:`BIN_MS` above;
        0.01 for a negative sample, an exchange clock ahead of ours), the exact sample past 100 ms."""
        n = self._count
        if not n:
            return None, None
        cumulative = list(accumulate(self._counts))
        return self._ranked(cumulative, n // 2), self._ranked(cumulative, min(n - 1, int(n * 0.99)))

    def _ranked(self, cumulative: list[int], rank: int) -> float:
        b = bisect_right(cumulative, rank)
        if b < TOP_BIN:
            return round((b + 1) * BIN_MS, 2)
        n = self._count
        slow = sorted(v for v in (self._buf if n == self._size else self._buf[:n]) if v >= TOP_BIN * BIN_MS)
        return slow[rank - cumulative[TOP_BIN - 1]]
