"""Sliding-window budgets: message rate per connection and connection attempts per manager."""

from __future__ import annotations

import threading

import pytest

from surge.stream.throttle import SlidingWindow


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_at_most_limit_in_any_window() -> None:
    clock = _Clock()
    w = SlidingWindow(5, 1.0, clock)
    assert all(w.try_acquire() for _ in range(5))
    assert not w.try_acquire()
    assert w.wait_time() == pytest.approx(1.0)
    clock.now += 0.5
    assert not w.try_acquire()
    assert w.wait_time() == pytest.approx(0.5)
    clock.now += 0.5
    assert w.try_acquire()
    assert w.peak == 5


def test_recorded_events_take_room() -> None:
    clock = _Clock()
    w = SlidingWindow(3, 1.0, clock)
    w.record()
    w.record()
    assert w.try_acquire()
    assert not w.try_acquire()
    assert w.count() == 3


def test_acquire_blocks_until_room_or_stop() -> None:
    w = SlidingWindow(1, 0.05)
    stop = threading.Event()
    assert w.acquire(stop)
    assert w.acquire(stop)  # waits ~50 ms for the window to slide
    w2 = SlidingWindow(1, 60.0)
    assert w2.acquire(stop)
    stop.set()
    assert not w2.acquire(stop)


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        SlidingWindow(0, 1.0)
