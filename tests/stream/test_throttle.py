"""Sliding-window budgets: message rate per connection and connection attempts per manager."""

from __future__ import annotations

import threading

import pytest

from surge.stream.throttle import SlidingWindow
from tests.stream.conftest import wait_until


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


def test_waiting_counts_the_threads_blocked_on_a_spent_window() -> None:
    now = [0.0]
    w = SlidingWindow(1, 60.0, lambda: now[0])  # a fake clock that never moves: the window stays spent
    stop = threading.Event()
    assert w.acquire(stop) and w.waiting == 0  # room: no wait
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(w.acquire(stop)), daemon=True) for _ in range(2)
    ]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: w.waiting == 2, 10, "two threads blocked")
        assert results == []
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert results == [False, False] and w.waiting == 0
