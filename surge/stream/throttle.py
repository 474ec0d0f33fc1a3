"""Sliding-window budgets: outgoing messages per connection, connection attempts per manager.

Why sliding and not per-second buckets: Binance disconnects a connection that sends more than 10
messages in a second, and a limit of N per *sliding* window also holds for any fixed window the
server might count in, so keeping at most 5 per sliding second leaves a 2x margin whatever the
server's bookkeeping. The same class caps reconnect storms (Binance treats ~300 connection attempts
per 5 minutes per IP as abuse).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class SlidingWindow:
    """At most ``limit`` events in any window of ``window_s`` seconds. Thread-safe."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()
        #: Highest number of events seen in one window (for stats and tests).
        self.peak = 0
        #: Threads blocked in :meth:`acquire` right now (a budget spent shows here, not as attempts).
        self.waiting = 0

    def _expire(self, now: float) -> None:
        stamps = self._stamps
        while stamps and now - stamps[0] >= self.window_s:
            stamps.popleft()

    def try_acquire(self) -> bool:
        """Take one slot if the window has room; never blocks."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            if len(self._stamps) >= self.limit:
                return False
            self._stamps.append(now)
            self.peak = max(self.peak, len(self._stamps))
            return True

    def record(self) -> None:
        """Count an event that must happen regardless (a pong): later acquisitions make room for it."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            self._stamps.append(now)
            self.peak = max(self.peak, len(self._stamps))

    def wait_time(self) -> float:
        """Seconds until :meth:`try_acquire` can succeed (0 when it can now)."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            if len(self._stamps) < self.limit:
                return 0.0
            return max(0.0, self._stamps[-self.limit] + self.window_s - now)

    def acquire(self, stop: threading.Event) -> bool:
        """Block until a slot is free (True) or ``stop`` is set (False)."""
        if self.try_acquire():
            return True
        with self._lock:
            self.waiting += 1
        try:
            while not stop.is_set():
                stop.wait(max(self.wait_time(), 0.005))
                if self.try_acquire():
                    return True
            return False
        finally:
            with self._lock:
                self.waiting -= 1

    def count(self) -> int:
        """Events in the current window."""
        with self._lock:
            self._expire(self._clock())
            return len(self._stamps)
