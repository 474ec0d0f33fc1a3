"""``Notifier``: the one thread that sends notifications, fed by a bounded queue that never blocks.

Why it looks like this: events come from the strategy loop (signals, entries, exits), from any
thread's log records (errors) and from the loop's periodic checks; none of them may ever wait on a
phone service. So :meth:`Notifier.post` only appends to a bounded deque under a lock held for a
few hundred nanoseconds, and returns. When the deque is full, what does not fit is counted per event
kind and said in the next message sent ("... and 12 more signals"), never lost silently. The thread
formats and sends each message to every URL in turn (:class:`~surge.notify.service.Service`: one
apprise object per URL, failures logged once per period, a failing one backed off). ``stop`` drains
what it can within its bound, every socket wait shortened to fit it, then joins the thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from surge.notify.messages import Message, more_text, render
from surge.notify.service import LOG_PERIOD_S, RETRY_S, Service

log = logging.getLogger("surge.notify")

CAPACITY = 64
#: Connect and read timeout of each send (seconds): a hanging service holds the thread this long,
#: so it also bounds how long a stop may wait for a send already under way.
SEND_TIMEOUT_S = 4.0
#: Counts of a queue that stays full are said at least this often, even mid-flow.
MORE_EVERY_S = 30.0
THREAD_NAME = "surge-notify"


class Notifier:
    """Sends posted events to every URL from one thread (see the module docstring)."""

    def __init__(
        self,
        urls: Iterable[str],
        events: Iterable[str],
        *,
        capacity: int = CAPACITY,
        send_timeout_s: float = SEND_TIMEOUT_S,
        log_period_s: float = LOG_PERIOD_S,
        retry_s: tuple[float, float] = RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kinds = frozenset(events)
        self.capacity = capacity
        self.send_timeout_s = send_timeout_s
        self.clock = clock
        self.services = [Service(u, log_period_s=log_period_s, retry_s=retry_s, clock=clock) for u in urls]
        self._items: deque[tuple[str, object]] = deque()
        self._dropped: dict[str, int] = {}
        self._dropped_since = 0.0
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._drain_until = math.inf
        self._thread: threading.Thread | None = None
        self.posted = 0  # accepted into the queue
        self.dropped = 0  # counted instead (queue full)
        self.sent = 0  # messages the thread handled (each to every ready service)

    # ----------------------------------------------------------------- producers (any thread)

    def wants(self, kind: str) -> bool:
        return kind in self.kinds

    def post(self, kind: str, event: object) -> bool:
        """Queue ``event`` of ``kind`` (formatted later, on the notifier's thread). Never blocks,
        never raises; False when the kind is not enabled, the notifier is stopping, or the queue is
        full (then the event is counted and said in the next message)."""
        if kind not in self.kinds or self._closing:
            return False
        try:
            with self._cond:
                if len(self._items) < self.capacity:
                    self._items.append((kind, event))
                    self.posted += 1
                    self._cond.notify()
                    return True
                if not self._dropped:
                    self._dropped_since = self.clock()
                self._dropped[kind] = self._dropped.get(kind, 0) + 1
                self.dropped += 1
        except Exception:  # noqa: BLE001 - a notification must never break its producer
            pass
        return False

    def queued(self) -> int:
        return len(self._items)

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Notifier:
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, drain_s: float) -> None:
        """Take no more events; send what is queued for at most ``drain_s`` more seconds."""
        with self._cond:
            self._closing = True
            self._drain_until = min(self._drain_until, self.clock() + max(0.0, drain_s))
            self._cond.notify()

    def stop(self, timeout: float = SEND_TIMEOUT_S + 1.0) -> bool:
        """Drain within ``timeout`` (the timeouts of each send from now on cut to fit), join the
        thread; True when it ended in time. A send already under way keeps its ``send_timeout_s``:
        with a shorter ``timeout`` the thread may outlive this call by that much (it is a daemon)."""
        deadline = time.monotonic() + timeout
        self.close(timeout * 0.8)
        return self.join(max(0.0, deadline - time.monotonic()))

    def join(self, timeout: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the notifier did not end within %.1fs (a send still waiting)", timeout)
                return False
        return True

    # ----------------------------------------------------------------- the thread

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            kind, event, note = taken
            try:
                message = render(kind, event)
            except Exception as exc:  # noqa: BLE001 - one bad event must not end the thread
                message = Message(f"surge: {kind}", f"(could not format this {kind}: {type(exc).__name__})")
            if note:
                message = Message(message.title, f"{message.body}\n{note}", message.type)
            self._deliver(message)

    def _take(self) -> tuple[str, object, str] | None:
        """The next event and the note of what was dropped (when due), or None: time to end."""
        with self._cond:
            while not self._items and not self._closing:
                self._cond.wait()
            now = self.clock()
            left = 0
            if self._closing and (not self._items or now >= self._drain_until):
                left = len(self._items) + sum(self._dropped.values())
                self._items.clear()
                self._dropped.clear()
            else:
                kind, event = self._items.popleft()
                note = ""
                if self._dropped and (not self._items or now - self._dropped_since >= MORE_EVERY_S):
                    note = more_text(self._dropped)
                    self._dropped = {}
                return kind, event, note
        if left:
            log.info("stopping: %d notification(s) not sent", left)
        return None

    def _deliver(self, message: Message) -> None:
        for service in self.services:
            timeout = self.send_timeout_s
            if self._closing:
                left = self._drain_until - self.clock()
                if left <= 0.05:
                    break
                timeout = min(timeout, left / 2)  # connect, then read: both fit what is left
            if service.ready():
                service.send(message, timeout)
        self.sent += 1


__all__ = ["CAPACITY", "SEND_TIMEOUT_S", "THREAD_NAME", "Notifier"]
