"""The last N decision latencies, in memory sized once at start.

Why not ``deque(maxlen=N)`` of floats: it grows for its first N samples (a float object and a deque
slot each, about 0.7 MB for 20,000), which in an hour-long soak cannot be told from a leak, and it
leaves pymalloc arenas behind when the floats are replaced. An array of doubles costs 8 bytes a
sample from the first second to the last.
"""

from __future__ import annotations

from array import array


class LatencyWindow:
    """A ring of the last ``size`` latencies (ms) with their median and 99th percentile."""

    __slots__ = ("_buf", "_count", "_next", "_size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a latency window holds at least one sample")
        self._size = size
        self._buf = array("d", bytes(8 * size))
        self._next = 0
        self._count = 0

    def add(self, ms: float) -> None:
        i = self._next
        self._buf[i] = ms
        i += 1
        self._next = 0 if i == self._size else i
        if self._count < self._size:
            self._count += 1

    def __len__(self) -> int:
        return self._count

    def percentiles(self) -> tuple[float | None, float | None]:
        """(p50, p99) of the window, or (None, None) before the first sample."""
        n = self._count
        if not n:
            return None, None
        data = sorted(self._buf if n == self._size else self._buf[:n])
        return data[n // 2], data[min(n - 1, int(n * 0.99))]
