"""Map the difference between wanted streams and connection slots onto the fewest live changes.

Why a pure function: it is where "never close a healthy connection to apply a change" is decided,
so it is tested on its own, without sockets. Rules: streams that are no longer wanted leave their
connection; new streams fill open connections (oldest first) up to the capacity; a new connection is
planned only when every open one is full; a connection is closed only when it ends up empty. Streams
never move between connections (a move would be a gap).
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass, field


@dataclass
class Plan:
    """What to change: per slot id the streams to add and remove, new slots, slots to close."""

    add: dict[int, list[str]] = field(default_factory=dict)
    remove: dict[int, list[str]] = field(default_factory=dict)
    new_slots: list[list[str]] = field(default_factory=list)
    close: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.add or self.remove or self.new_slots or self.close)


def plan(wanted: Set[str], slots: Iterable[tuple[int, Set[str]]], capacity: int) -> Plan:
    """Plan the change from ``slots`` (slot id, assigned streams), in fill order, to ``wanted``.

    A stream assigned to two slots (never produced by this planner) is kept on the first one.
    """
    if capacity < 1:
        raise ValueError("capacity must be >= 1")
    result = Plan()
    placed: set[str] = set()
    kept_sizes: list[tuple[int, int]] = []
    for slot_id, assigned in slots:
        drop = [s for s in assigned if s not in wanted or s in placed]
        if drop:
            result.remove[slot_id] = sorted(drop)
        keep = len(assigned) - len(drop)
        placed.update(s for s in assigned if s in wanted)
        kept_sizes.append((slot_id, keep))
    missing = sorted(s for s in wanted if s not in placed)
    pos = 0
    for slot_id, keep in kept_sizes:
        free = capacity - keep
        if free > 0 and pos < len(missing):
            result.add[slot_id] = missing[pos : pos + free]
            pos += len(result.add[slot_id])
            keep += len(result.add[slot_id])
        if keep <= 0:
            result.close.append(slot_id)
    while pos < len(missing):
        result.new_slots.append(missing[pos : pos + capacity])
        pos += capacity
    return result
