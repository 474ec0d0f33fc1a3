"""Fixtures shared across test packages.

``clean`` works with whichever ``sim`` fixture the test module defines (each module picks the
market it needs): it gives every test a simulator with no scripted faults, no ban, no latency and
zeroed observations, and leaves it that way for the next test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from surge.sim import Simulator


@pytest.fixture
def clean(sim: Simulator) -> Iterator[Simulator]:
    sim.rest.clear_faults()
    sim.rest.unban()
    sim.rest.set_latency(0)
    sim.rest.reset_stats()
    yield sim
    sim.rest.clear_faults()
    sim.rest.unban()
    sim.rest.set_latency(0)


@pytest.fixture
def small_sim() -> Iterator[Simulator]:
    """40 symbols, seed 5, no periodic surges: SOLUSDT there has tick 0.001, step 0.001, MIN_NOTIONAL 5."""
    s = Simulator(n_symbols=40, seed=5, surge_interval_s=None).start()
    try:
        yield s
    finally:
        s.stop()
