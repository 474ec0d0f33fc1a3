"""Dedupe between a connection being rotated out and its replacement, while both carry the same streams."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Handover:
    """Shared by the old connection (``old_id``) and its replacement during a rotation.

    While both are subscribed to the same streams each event arrives twice. Until the old
    connection has seen this object (``old_acked``) it keeps delivering on its own and the new one
    drops everything; from then on both offer every event here and only a strictly newer ``E`` per
    stream passes, under one lock, so the consumer sees each stream's events once and in order.
    """

    old_id: int
    old_last_e: dict[str, int]  # the old connection's last event time per stream (its live dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: dict[str, int] = field(default_factory=dict)
    old_acked: bool = False
    started: float = field(default_factory=time.monotonic)

    def ack_old(self, conn_id: int) -> None:
        """Called by each connection before it delivers a chunk: the old one's first call means every
        event before it was delivered directly, so from now on both go through :meth:`admit`."""
        if conn_id == self.old_id and not self.old_acked:
            self.old_acked = True

    def admit(self, conn_id: int, stream: str, event_time: int) -> bool:
        """Whether connection ``conn_id`` may deliver this event (False: the other one did, or will)."""
        if conn_id != self.old_id and not self.old_acked:
            return False
        return self.offer(stream, event_time)

    def offer(self, stream: str, event_time: int) -> bool:
        with self.lock:
            prev = self.last.get(stream)
            if prev is None:
                prev = self.old_last_e.get(stream, 0)
            if event_time <= prev:
                return False
            self.last[stream] = event_time
            return True
