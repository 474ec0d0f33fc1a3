"""Single-flight trigger: at most one run of a background job at a time, and no request ever lost.

Why this exists: the program surge replaces started one thread per ``subscribe_kline()`` call (and
died at 3,686 threads); its fix guarded the spawn with an "in progress" flag that the runner cleared
*after* applying its snapshot, so a subscription made between the snapshot and the clear found the
flag set, did nothing, and was never applied. Here a request always leaves a mark (``requested``),
and the worker clears that mark *before* it takes its snapshot, under the same lock. A request that
lands before the clear is covered by the snapshot that follows it; one that lands after it leaves
``requested`` set, so the worker's next :meth:`claim` returns at once. There is no interleaving in
which a request is neither in a snapshot nor pending.

The worker is one long-lived thread owned by the caller; :meth:`request` never starts a thread,
never sleeps and does no I/O (it takes one short lock), so it is safe from any thread at any rate.
"""

from __future__ import annotations

import threading
import time


class SingleFlight:
    """Coalescing wake-up flag for one worker.

    Worker protocol::

        while not flight.closed:
            took = flight.claim(timeout)  # True: a request was taken; False: timeout (or closed)
            snapshot = take_snapshot()    # strictly after claim() cleared ``requested``
            apply(snapshot)
            flight.finish()
    """

    def __init__(self, debounce_s: float = 0.0, max_debounce_s: float = 0.0) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._requested = False
        self._running = False
        self._closed = False
        self._last_request = 0.0
        self.debounce_s = debounce_s
        self.max_debounce_s = max(max_debounce_s, debounce_s)
        #: Requests made and runs claimed: ``runs`` far below ``requests`` is the coalescing at work.
        self.requests = 0
        self.runs = 0

    # ----------------------------------------------------------------- any thread

    def request(self) -> None:
        """Ask for a run. Cheap, non-blocking (one short lock), never lost."""
        with self._cond:
            self._requested = True
            self.requests += 1
            self._last_request = time.monotonic()
            self._cond.notify()

    def close(self) -> None:
        """Make the worker's current or next :meth:`claim` return False."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> bool:
        """A request that no run has claimed yet."""
        with self._cond:
            return self._requested

    @property
    def running(self) -> bool:
        with self._cond:
            return self._running

    # ----------------------------------------------------------------- worker side

    def claim(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` for a request, let a burst settle, then take it.

        Returns True when a request was taken, False when the timeout passed without one (the caller
        may still run its periodic housekeeping) or the flight is closed. The ``requested`` flag is
        cleared here, under the lock, *before* the caller snapshots its state.
        """
        with self._cond:
            if not self._requested and not self._closed:
                self._cond.wait(timeout)
            if self._closed:
                return False
            if self._requested and self.debounce_s > 0:
                # Coalesce a burst: wait until no request came for debounce_s, at most max_debounce_s.
                # Requests that arrive meanwhile only refresh the flag, which is cleared below.
                start = time.monotonic()
                while not self._closed:
                    now = time.monotonic()
                    quiet_left = self._last_request + self.debounce_s - now
                    cap_left = start + self.max_debounce_s - now
                    wait = min(quiet_left, cap_left)
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._closed:
                    return False
            if not self._requested:
                return False
            self.runs += 1
            self._requested = False
            self._running = True
            return True

    def finish(self) -> bool:
        """End a run. Returns True when a request arrived during it (the next claim will not wait)."""
        with self._cond:
            self._running = False
            return self._requested
