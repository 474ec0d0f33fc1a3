"""The desk tests' shared fixtures: the small simulator and an :class:`~tests.trading.test_desk.Env`
(a desk's store, clients and outcome log on it), closed after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from surge.sim import Simulator
from tests.trading.test_desk import Env


@pytest.fixture
def sim(small_sim: Simulator) -> Simulator:
    return small_sim


@pytest.fixture
def env(sim: Simulator, tmp_path: Path) -> Iterator[Env]:
    e = Env(sim, tmp_path)
    try:
        yield e
    finally:
        e.close()
