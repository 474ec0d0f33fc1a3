"""A simulator on a hand-moved market clock, for the data-archive tests (the simulator's and the
download's): past days are then published, and "today" is whatever the test says."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from surge.sim import Simulator
from surge.sim.archive import Archive
from surge.sim.market import Market

MIN = 60_000
DAY = 86_400_000


def ms(text: str) -> int:
    """``2026-11-25T21:40:00`` (UTC) in milliseconds since the epoch."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


#: The archive tests' "now": late on a day, so the day before is published and today is not.
NOW = ms("2026-11-25T21:40:00")


class Clock:
    """The market clock, moved by hand."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@contextmanager
def archive_simulator(clock: Clock, seed: int) -> Iterator[Simulator]:
    """12 symbols, no periodic surges, on ``clock``; stopped on exit."""
    s = Simulator(market=Market(12, seed=seed, surge_interval_s=None, clock=clock)).start()
    try:
        yield s
    finally:
        s.stop()


def reset_archive(archive: Archive, clock: Clock) -> None:
    """No faults, no publishing lag, headers by date, milliseconds, zeroed stats, the clock at NOW."""
    clock.t = NOW / 1000
    archive.clear_faults()
    archive.configure(lag_s=0, header="auto", time_unit="ms")
    archive.reset_stats()
