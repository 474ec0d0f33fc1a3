"""The clocks the strategy loop reads, in one object, so a replay can run the loop on virtual time.

``monotonic`` times the loop's periodic work (heartbeat, exit checks, refreshes, retries);
``wall`` is seconds since the epoch (heartbeat stamps, decision latency, the exchange-clock
estimate). The order desk takes the same two callables one by one; :data:`SYSTEM_CLOCK` is the
real pair and the default everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Clock:
    """A monotonic clock and a wall clock, both in seconds (``time.monotonic`` / ``time.time``)."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


SYSTEM_CLOCK = Clock()

__all__ = ["SYSTEM_CLOCK", "Clock"]
