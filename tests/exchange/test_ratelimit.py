"""WeightLimiter: budget, sliding window, header correction, 429/418 gate, ban ceiling.

Driven by a fake clock so the tests check the arithmetic, not the machine's speed; the few
threaded tests wait on conditions with deadlines.
"""

from __future__ import annotations

import threading
import time

import pytest

from surge.exchange.ratelimit import (
    RateLimitBanned,
    WeightLimiter,
    endpoint_weight,
    klines_weight,
    parse_retry_after,
)
from tests.waiting import wait_for as wait_until


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.t

    def advance(self, dt: float) -> None:
        with self.lock:
            self.t += dt


@pytest.mark.parametrize(
    ("limit", "weight"),
    [(1, 1), (6, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10), (1500, 10), (None, 5)],
)
def test_klines_weight_by_limit(limit: int | None, weight: int) -> None:
    assert klines_weight(limit) == weight


def test_endpoint_weights() -> None:
    assert endpoint_weight("/fapi/v1/klines", {"symbol": "BTCUSDT", "limit": 6}) == 1
    assert endpoint_weight("/fapi/v1/klines", {"symbol": "BTCUSDT", "limit": 150}) == 2
    assert endpoint_weight("/fapi/v1/exchangeInfo") == 1
    assert endpoint_weight("/fapi/v1/ticker/price") == 2
    assert endpoint_weight("/fapi/v1/ticker/price", {"symbol": "BTCUSDT"}) == 1
    assert endpoint_weight("/fapi/v1/ticker/24hr") == 40
    assert endpoint_weight("/fapi/v1/ticker/24hr", {"symbol": "BTCUSDT"}) == 1
    assert endpoint_weight("/fapi/v1/time") == 1


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) == 1.0
    assert parse_retry_after("soon") == 1.0
    assert parse_retry_after("-3") == 1.0


def test_budget_has_safety_margin_and_follows_exchange_info() -> None:
    lim = WeightLimiter(safety_margin=0.1)
    assert lim.budget == 2160
    lim.configure_from_exchange_info(
        {
            "rateLimits": [
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 1000},
            ]
        }
    )
    assert lim.limit == 1000 and lim.budget == 900 and lim.window_s == 60.0
    lim.configure_from_exchange_info({"rateLimits": "junk"})  # ignored, not a crash
    lim.configure_from_exchange_info(  # not a per-minute limit: ignored rather than misread
        {
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "SECOND", "intervalNum": 10, "limit": 50}
            ]
        }
    )
    assert lim.limit == 1000
    with pytest.raises(ValueError):
        WeightLimiter(safety_margin=1.0)


def test_acquire_blocks_until_old_weight_leaves_the_window() -> None:
    clock = FakeClock()
    lim = WeightLimiter(limit=10, safety_margin=0.0, window_s=60.0, clock=clock)
    for _ in range(10):
        assert lim.acquire(1) == 0.0
    assert lim.window_weight == 10
    got = threading.Event()
    t = threading.Thread(target=lambda: (lim.acquire(1), got.set()), daemon=True)
    t.start()
    assert not got.wait(0.1)  # budget full: it must wait
    clock.advance(59.0)
    lim.wake()
    assert not got.wait(0.05)
    clock.advance(1.0)  # the first request is now a minute old
    lim.wake()
    assert got.wait(2.0)
    t.join(2.0)
    assert lim.max_window_weight == 10


def test_oversized_request_goes_alone_instead_of_deadlocking() -> None:
    lim = WeightLimiter(limit=5, safety_margin=0.0, clock=FakeClock())
    assert lim.acquire(40) == 0.0


def test_used_weight_header_corrects_the_window_upwards_only() -> None:
    clock = FakeClock()
    lim = WeightLimiter(limit=100, safety_margin=0.0, clock=clock)
    lim.acquire(1)
    lim.observe(200, {"X-MBX-USED-WEIGHT-1M": "95"})  # another process on this IP spent 94
    assert lim.window_weight == 95 and lim.max_used_weight == 95 and lim.last_used_weight == 95
    lim.observe(200, {"X-MBX-USED-WEIGHT-1M": "3"})  # lower: never loosens what we booked
    assert lim.window_weight == 95
    for _ in range(5):
        lim.acquire(1)
    got = threading.Event()
    threading.Thread(target=lambda: (lim.acquire(1), got.set()), daemon=True).start()
    assert not got.wait(0.1)
    clock.advance(60.0)
    lim.wake()
    assert got.wait(2.0)


def test_429_closes_the_gate_for_every_thread_until_retry_after() -> None:
    clock = FakeClock()
    lim = WeightLimiter(clock=clock)
    lim.observe(429, {"Retry-After": "5"})
    assert lim.gate_open_in == 5.0 and lim.rate_limited == 1
    released = []
    threads = [
        threading.Thread(target=lambda i=i: (lim.acquire(1), released.append(i)), daemon=True)
        for i in range(3)
    ]
    for t in threads:
        t.start()
    wait_until(lambda: lim.waiting == 3)  # every thread is blocked on the gate
    clock.advance(4.9)
    lim.wake()
    # a short negative observation: there is no event to wait for when the property is that no
    # thread goes through 0.1 s before the gate opens
    time.sleep(0.05)
    assert released == []
    clock.advance(0.1)
    lim.wake()
    wait_until(lambda: len(released) == 3)
    # a later, shorter Retry-After never shortens a longer gate
    lim.observe(429, {"Retry-After": "10"})
    lim.observe(429, {"Retry-After": "1"})
    assert lim.gate_open_in == 10.0


def test_418_within_the_maximum_waits() -> None:
    clock = FakeClock()
    lim = WeightLimiter(max_ban_s=120, clock=clock)
    lim.observe(418, {"Retry-After": "120"})
    assert lim.gate_open_in == 120.0 and lim.banned is None


def test_418_beyond_the_maximum_is_an_error_for_every_thread() -> None:
    clock = FakeClock()
    lim = WeightLimiter(max_ban_s=300, clock=clock)
    with pytest.raises(RateLimitBanned, match="3600 s"):
        lim.observe(418, {"Retry-After": "3600"})
    with pytest.raises(RateLimitBanned):
        lim.acquire(1)
    # a thread already waiting on the gate is woken and fails too
    lim2 = WeightLimiter(max_ban_s=300, clock=clock)
    lim2.observe(429, {"Retry-After": "30"})
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            lim2.acquire(1)
        except RateLimitBanned as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    wait_until(lambda: lim2.waiting == 1)  # the thread is blocked on the gate
    with pytest.raises(RateLimitBanned):
        lim2.observe(418, {"Retry-After": "86400"})
    t.join(2.0)
    assert len(errors) == 1 and "86400" in str(errors[0])


def test_threads_never_exceed_the_budget() -> None:
    """Many threads, real clock, small window: the booked weight never passes the budget."""
    lim = WeightLimiter(limit=20, safety_margin=0.0, window_s=0.3)
    stop = time.monotonic() + 0.8

    def worker() -> None:
        while time.monotonic() < stop:
            lim.acquire(1)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5.0)
    assert lim.max_window_weight <= 20
    assert lim.total_weight >= 40  # it did let requests through window after window


# --------------------------------------------------------------------------- ORDERS limits


def test_order_limiter_blocks_at_the_budget_and_resumes_when_the_window_slides() -> None:
    from surge.exchange.ratelimit import OrderRateLimiter

    clock = FakeClock()
    lim = OrderRateLimiter(((10.0, 10), (60.0, 1000)), safety_margin=0.1, clock=clock)
    assert lim.budgets() == [(10.0, 9), (60.0, 900)]
    for _ in range(9):
        assert lim.acquire() == 0.0
    done = threading.Event()
    t = threading.Thread(target=lambda: (lim.acquire(), done.set()), name="test-order-acquire")
    t.start()
    assert not done.wait(0.2)  # the tenth order in 10 s must wait
    clock.advance(10.0)  # the window slides past the first orders
    with lim._cond:
        lim._cond.notify_all()
    assert done.wait(30)
    t.join(30)
    assert lim.total == 10


def test_order_limiter_reads_exchange_info() -> None:
    from surge.exchange.ratelimit import OrderRateLimiter

    lim = OrderRateLimiter()
    lim.configure_from_exchange_info(
        {
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ]
        }
    )
    assert lim.limits == ((10.0, 300), (60.0, 1200))
    lim.configure_from_exchange_info({"rateLimits": [{"rateLimitType": "ORDERS", "limit": "x"}]})
    assert lim.limits == ((10.0, 300), (60.0, 1200))  # nothing usable: unchanged


def test_order_limiter_takes_the_accounts_counts_from_the_headers() -> None:
    """X-MBX-ORDER-COUNT-<n><unit> (any case) books the orders the account placed beyond ours; a count
    below ours, or an odd value, books nothing (the exchange's windows are fixed, ours slide)."""
    from surge.exchange.ratelimit import OrderRateLimiter

    clock = FakeClock()
    lim = OrderRateLimiter(((10.0, 10), (60.0, 1000)), safety_margin=0.1, clock=clock)
    lim.acquire()
    lim.observe({"X-MBX-ORDER-COUNT-10S": "6", "x-mbx-order-count-1m": "8", "X-MBX-USED-WEIGHT-1M": "50"})
    assert lim.last_counts == {10.0: 6, 60.0: 8}
    assert lim.in_window(10.0) == 6 and lim.in_window(60.0) == 8 and lim.observed_extra == 7
    lim.observe({"X-MBX-ORDER-COUNT-10S": "2", "X-MBX-ORDER-COUNT-1M": "junk"})  # fewer: nothing booked
    assert lim.in_window(60.0) == 8 and lim.observed_extra == 7
    for _ in range(3):  # 6 + 3 = 9, the 10 s budget
        assert lim.acquire() == 0.0
    assert lim.wait_needed() == pytest.approx(10.0)  # every one of them was booked now
    clock.advance(10.0)
    assert lim.wait_needed() == 0.0 and lim.in_window(10.0) == 0 and lim.in_window(60.0) == 11
    lim.observe({})
    assert lim.in_window(60.0) == 11
