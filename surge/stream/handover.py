"""Dedupe between a connection being rotated out and its replacement, while both carry the same streams."""

from __future__ import annotations

import threading
import time
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
    passes (see :meth:`offer`). Each connection holds :attr:`lock` while it admits and hands over a
    chunk, so the consumer sees each stream's events once and in order (admission alone under the
    lock let the other side deliver a newer event between one side's admit and its callback).

    The replacement keeps offering its events here after the old connection ended, until it has
    itself received everything the old one delivered (:meth:`caught_up`): a replacement running
    behind would otherwise hand a late copy of an event the old one already delivered to the
    consumer a second time, or an older update after a newer one.
    """

    old_id: int
    old_last_e: dict[str, int]  # the old connection's last event time per stream (its live dict)
    lock: threading.RLock = field(default_factory=threading.RLock)  # deliver() holds it, offer() retakes it
    last: dict[str, int] = field(default_factory=dict)
    last_open: dict[str, int] = field(default_factory=dict)  # open time of the candle of ``last``'s event
    old_acked: bool = False
    started: float = field(default_factory=time.monotonic)
    old_ended_at: float | None = None  # monotonic time the old connection's thread ended

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
        on its own again: the old connection ended and every stream still delivered has reached the
        last event the old one delivered. Called by the replacement's own thread, the only writer of
        :attr:`last` once the old one ended. A stream that stays silent does not hold the rotation
        forever: :data:`CATCH_UP_S` after the old connection ended the handover is over anyway."""
        ended = self.old_ended_at
        if ended is None:
            return False
        if now - ended >= CATCH_UP_S:
            return True
        delivered = dict(self.old_last_e)
        delivered.update(self.last)
        return all(last_e.get(s, 0) >= e for s, e in delivered.items() if s in deliver)

    def admit(self, conn_id: int, stream: str, event_time: int, open_time: int) -> bool:
        """Whether connection ``conn_id`` may deliver this event (False: the other one did, or will)."""
        if conn_id != self.old_id and not self.old_acked:
            return False
        return self.offer(stream, event_time, open_time)

    def offer(self, stream: str, event_time: int, open_time: int) -> bool:
        """An event passes if its ``E`` is newer, or equal with a newer candle: a candle's final state
        and the next candle's first update can leave in the same millisecond, and the second is not a
        copy of the first. An equal ``E`` against the old side's own record (candle unknown) does not."""
        with self.lock:
            prev = self.last.get(stream)
            if prev is None:
                prev = self.old_last_e.get(stream, 0)
            if event_time < prev or (
                event_time == prev and open_time <= self.last_open.get(stream, open_time)
            ):
                return False
            self.last[stream] = event_time
            self.last_open[stream] = open_time
            return True
