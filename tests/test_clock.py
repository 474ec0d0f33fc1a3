"""The loop's clocks in one object: the system's by default, a virtual one for a replay."""

from __future__ import annotations

import time
from pathlib import Path

from surge.app import Bot
from surge.clock import SYSTEM_CLOCK, Clock
from surge.config import Settings


def test_the_system_clock_is_time_monotonic_and_time_time() -> None:
    assert SYSTEM_CLOCK.monotonic is time.monotonic and SYSTEM_CLOCK.wall is time.time


def test_the_bot_reads_its_times_from_the_clock_it_is_given(tmp_path: Path) -> None:
    virtual = Clock(monotonic=lambda: 5.0, wall=lambda: 1_700_000_000.25)
    bot = Bot(Settings(home=tmp_path), clock=virtual)
    assert bot.started_at == 1_700_000_000.25
    assert bot.now_ms() == 1_700_000_000_250
    bot.clock_offset_ms = -250  # the exchange's clock runs behind ours
    assert bot.now_ms() == 1_700_000_000_000
    assert Bot(Settings(home=tmp_path)).clock is SYSTEM_CLOCK
