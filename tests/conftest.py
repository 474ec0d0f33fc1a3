"""Fixtures shared across test packages.

``clean`` works with whichever ``sim`` fixture the test module defines (each module picks the
market it needs): it gives every test a simulator with no scripted faults, no ban, no latency and
zeroed observations, and leaves it that way for the next test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from surge.sim import Simulator
from tests.waiting import wait_for


@pytest.fixture
def clean(sim: Simulator) -> Iterator[Simulator]:
    sim.rest.clear_faults()  # also answers the requests an earlier test left stalled
    sim.rest.unban()
    sim.rest.set_latency(0)
    # An earlier test's request still being answered would land in this test's logs: a read-timeout
    # test's stalled request once appeared among a 429 test's arrivals, inside its Retry-After window.
    wait_for(
        lambda: sim.rest.stats()["in_flight"] == 0,
        what="the previous test's requests to be answered",
        detail=lambda: sim.rest.stats(),
    )
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
