"""The last N decision latencies, in memory sized once at start.

Why not ``deque(maxlen=N)`` of floats: it grows for its first N samples (a float object and a deque
slot each, about 0.7 MB for 20,000), which in an hour-long soak cannot be told from a leak, and it
leaves pymalloc arenas behind when the floats are replaced. An array of doubles costs 8 bytes a
sample from the first second to the last.

Another thread (the ``--metrics-port`` server, :mod:`surge.metrics`) reads the samples the loop added
since it last looked, without a lock the loop could wait on: :attr:`LatencyWindow.total` counts every
sample ever added and is raised only *after* the samples are stored, and a reservation is raised
*before* any slot is written, so a reader that copies the ring between reading the one and the other
can tell which copied samples are whole and which the loop may have overwritten meanwhile (see
:meth:`LatencyWindow.since`). The loop pays two integer stores per chunk of decisions.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from itertools import accumulate, groupby

#: Percentiles are read from counts per bin of this width (ms): exact to 10 µs, and reading them is
#: one pass over the counts in C, where sorting the 20,000 samples took the loop 3-4 ms at every
#: heartbeat (a stall that showed in the very p99 it reports).
BIN_MS = 0.01
#: Bins cover 0 .. 100 ms; the last one holds everything slower (read exactly, from the ring).
TOP_BIN = 10_000


class LatencyWindow:
    """A ring of the last ``size`` latencies (ms) with their median and 99th percentile."""

    __slots__ = ("_bins", "_buf", "_count", "_counts", "_reserved", "_size", "_total", "pending")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a latency window holds at least one sample")
        self._size = size
        self._buf = array("d", bytes(8 * size))
        self._bins = array("H", bytes(2 * size))  # each sample's bin, to take it out when overwritten
        self._counts = array("q", bytes(8 * (TOP_BIN + 1)))  # samples in the window per bin
        self._count = 0
        self._total = 0  # samples ever added; raised after the sample is stored (see since())
        self._reserved = 0  # raised before samples are stored: those below it minus size may be gone
        self.pending: list[int] = []  # event times of decisions taken, latency not added yet (stamp())

    def add(self, ms: float) -> None:
        self._add_run(ms, 1)

    def stamp(self, wall: Callable[[], float]) -> None:
        """The decisions noted in :attr:`pending` (their event times) were all taken by now (``wall``,
        seconds): add their latencies, and start over."""
        pending = self.pending
        if pending:
            self.add_decided(wall() * 1000, pending)
            pending.clear()

    def add_decided(self, now_ms: float, event_times: list[int]) -> None:
        """The latencies of decisions all taken by ``now_ms``, one per event time, in order: the same
        window as one :meth:`add` each, for a fraction of the cost.

        Why: the loop decides a connection's chunk (up to a hundred 1m updates) in one go, and the
        exchange stamps a burst as it sends it, so a chunk's event times are one run of equal
        values, or a few: each run is written with slice assignments in C. One :meth:`add` per event
        cost the loop about half a microsecond an event, as much as the rule itself. Stamping once a
        chunk counts each decision at most the chunk's own rule time late, never early."""
        first = event_times[0]
        if event_times.count(first) == len(event_times):
            self._add_run(now_ms - first, len(event_times))
        else:
            for e, run in groupby(event_times):
                self._add_run(now_ms - e, len(list(run)))

    def _add_run(self, ms: float, n: int) -> None:
        """``n`` samples of ``ms``, in at most two slices per array (the ring wraps once at most)."""
        size = self._size
        total = self._total
        self._reserved = total + n  # before any slot is written: see since()
        b = int(ms * 100.0)  # / BIN_MS
        if b > TOP_BIN:
            b = TOP_BIN
        elif b < 0:
            b = 0
        counts, bins = self._counts, self._bins
        i = total % size
        left = n if n <= size else size  # of a longer run only size samples stay, all equal
        while left:
            j = min(size, i + left)
            filled = min(j, self._count)  # the ring fills from slot 0: slots below count hold samples
            if filled > i:
                for old, c in Counter(bins[i:filled]).items():  # samples leaving the window
                    counts[old] -= c
            if j > self._count:
                self._count = j
            counts[b] += j - i
            bins[i:j] = array("H", (b,)) * (j - i)
            self._buf[i:j] = array("d", (ms,)) * (j - i)
            left -= j - i
            i = 0 if j == size else j
        self._total = total + n  # last: a reader that sees the new total sees the samples

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
        copy. A write reserves its numbers before it touches a slot, so any sample it overwrote has
        a number below ``reserved_after - size``, the reservation read *after* the copy. Those are
        dropped (and counted in ``lost``), never read half-written.
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
        whole_from = self._reserved - size  # read after the copy: a write under way reserved its slots
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
