"""Refused or timed-out SUBSCRIBE requests, per connection, waiting to be sent again.

Why halves: a refused batch is split in two, so one bad stream is isolated in log2(n) rounds instead
of failing its 199 neighbours forever; a single stream waits longer after each failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from surge.stream.subscriptions import Request


@dataclass
class RetryGroup:
    """Streams re-sent together, not before ``not_before`` (monotonic)."""

    streams: tuple[str, ...]
    not_before: float
    failures: int


class Retries:
    """Retry groups per connection id. The manager calls every method under its lock."""

    def __init__(self, delay_s: float, max_delay_s: float) -> None:
        self.delay_s = delay_s
        self.max_delay_s = max_delay_s
        self._groups: dict[int, list[RetryGroup]] = {}

    def add_failed(self, conn_id: int, failed: Iterable[Request], now: float) -> None:
        """Turn refused / timed-out requests into retry groups."""
        groups = self._groups.setdefault(conn_id, [])
        for req in failed:
            failures = req.failures + 1
            if req.method != "SUBSCRIBE":
                continue  # an UNSUBSCRIBE is simply re-derived from server - assigned next pass
            if len(req.streams) > 1:
                half = len(req.streams) // 2
                for part in (req.streams[:half], req.streams[half:]):
                    groups.append(RetryGroup(part, now + self.delay_s, failures))
            else:
                delay = min(self.max_delay_s, self.delay_s * 2 ** (failures - 1))
                groups.append(RetryGroup(req.streams, now + delay, failures))

    def take_due(self, conn_id: int, now: float) -> tuple[list[RetryGroup], set[str], float]:
        """(groups due now, removed here; every stream waiting for a retry, due or not; seconds
        until the next group is due, ``inf`` if none waits)."""
        groups = self._groups.get(conn_id, [])
        blocked: set[str] = set()
        due: list[RetryGroup] = []
        wait = float("inf")
        for g in groups:
            if g.not_before <= now:
                due.append(g)
            else:
                wait = min(wait, g.not_before - now)
            blocked.update(g.streams)
        for g in due:
            groups.remove(g)
        return due, blocked, wait

    def keep(self, conn_id: int, group: RetryGroup) -> None:
        """Put back a group that could not be sent yet (rate budget)."""
        self._groups.setdefault(conn_id, []).append(group)

    def forget(self, conn_id: int) -> None:
        self._groups.pop(conn_id, None)

    def move(self, old_id: int, new_id: int) -> None:
        """A rotation's replacement inherits the old connection's retries."""
        if old_id in self._groups:
            self._groups[new_id] = self._groups.pop(old_id)
