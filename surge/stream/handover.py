"""Dedupe between a connection being rotated out and its replacement, while both carry the same streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: How long after the old connection ended the replacement may still hold a late copy of an event
#: the old one delivered. Past it the replacement is far behind the exchange anyway (its silence
#: check is what deals with that), and a stream that went quiet must not keep the dedupe on.
CATCH_UP_S = 10.0


@dataclass
class Handover:
    """Shared by the old connection (``old_id``) and its replacement during a rotation.

    While both are subscribed to the same streams each event arrives twice. Until the old
    connection has seen this object (``old_acked``) it keeps delivering on its own and the new one
    drops everything; from then on both offer every event here and only a newer event per stream
    passes (see :meth:`offer`). Each connection admits and hands over a chunk in one :meth:`turn`,
    so the consumer sees each stream's events once and in order (admission alone under the lock let
    the other side deliver a newer event between one side's admit and its callback).

    The replacement keeps offering its events here after the old connection ended, until it has
    gone past everything the old one delivered (:meth:`caught_up`): a replacement running
    behind would otherwise hand a late copy of an event the old one already delivered to the
    consumer a second time, or an older update after a newer one.
    """

    old_id: int
    old_last_e: dict[str, int]  # the old connection's last event time per stream (its live dict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # held for a whole turn()
    last: dict[str, tuple[int, int]] = field(default_factory=dict)  # (E, candle open time) delivered last
    ahead: set[str] = field(default_factory=set)  # streams whose event in :attr:`last` is the replacement's
    old_acked: bool = False
    started: float = field(default_factory=time.monotonic)
    old_ended_at: float | None = None  # monotonic time the old connection's thread ended

    @contextmanager
    def turn(self, conn_id: int) -> Iterator[None]:
        """Connection ``conn_id`` admits (:meth:`admit`) and hands over one chunk, the other waiting."""
        with self.lock:
            self.ack_old(conn_id)
            yield

    def ack_old(self, conn_id: int) -> None:
        """Called by each connection before it delivers a chunk: the old one's first call means every
        event before it was delivered directly, so from now on both go through :meth:`admit`."""
        if conn_id == self.old_id and not self.old_acked:
            self.old_acked = True

    def old_ended(self) -> None:
        """The old connection is gone: from now on only the replacement offers events."""
        self.old_acked = True
        self.old_ended_at = time.monotonic()

    def caught_up(self, last_e: dict[str, int], deliver: set[str], now: float) -> bool:
        """Whether the replacement, whose last received event per stream is ``last_e``, may deliver
        on its own again: the old connection ended and on every stream still delivered it has gone
        past the last event the old one delivered (or delivered a newer one itself). Past, not up
        to: at an equal ``E`` the replacement may still hold the next candle's first update of that
        millisecond, which the old one delivered.
        Called by the replacement's own thread, the only writer of :attr:`last` once the old one
        ended. A stream that stays silent does not hold the rotation forever: :data:`CATCH_UP_S`
        after the old connection ended the handover is over anyway."""
        ended = self.old_ended_at
        if ended is None:
            return False
        if now - ended >= CATCH_UP_S:
            return True
        delivered = dict(self.old_last_e)
        delivered.update((s, e) for s, (e, _) in self.last.items())
        ahead = self.ahead
        return all(s in ahead or last_e.get(s, 0) > e for s, e in delivered.items() if s in deliver)

    def admit(self, conn_id: int, stream: str, event_time: int, open_time: int) -> bool:
        """Whether connection ``conn_id`` may deliver this event (False: the other one did, or will).
        Called within the connection's :meth:`turn`."""
        replacement = conn_id != self.old_id
        if (replacement and not self.old_acked) or not self.offer(stream, event_time, open_time):
            return False
        if replacement:
            self.ahead.add(stream)
        else:
            self.ahead.discard(stream)
        return True

    def offer(self, stream: str, event_time: int, open_time: int) -> bool:
        """An event passes if its (``E``, candle) is newer: a candle's final state and the next
        candle's first update can leave in the same millisecond, and the second is not a copy of the
        first. An equal ``E`` against the old side's own record (candle unknown) does not."""
        event = (event_time, open_time)
        prev = self.last.get(stream)
        if prev is None:
            prev = (self.old_last_e.get(stream, 0), open_time)
        if event <= prev:
            return False
        self.last[stream] = event
        return True
