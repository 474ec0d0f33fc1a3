"""BinanceRest against the simulated exchange: pooled keep-alive session, weights, retry policy.

Real sockets on 127.0.0.1; the simulator's observations are the evidence.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from surge.exchange.ratelimit import RateLimitBanned, WeightLimiter
from surge.exchange.rest import BinanceRest, ExchangeError, ExchangeUnavailable
from surge.sim import Simulator


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(n_symbols=30, seed=2, latency_ms=0, surge_interval_s=None) as s:
        s.market.freeze()
        yield s


def make(sim: Simulator, **kw: object) -> BinanceRest:
    kw.setdefault("backoff_initial_s", 0.02)
    kw.setdefault("backoff_max_s", 0.1)
    kw.setdefault("limiter", WeightLimiter(max_ban_s=30))
    return BinanceRest(sim.rest_url, **kw)  # type: ignore[arg-type]


def test_endpoints_and_weight_accounting(clean: Simulator) -> None:
    with make(clean) as rest:
        info = rest.exchange_info()
        assert rest.limiter.limit == 2400 and rest.limiter.budget == 2160
        assert info["serverTime"] == rest.server_time() == clean.market.now_ms()
        sym = clean.market.tradable_symbols()[0]
        kl = rest.klines(sym, "4h", limit=6, now_ms=clean.market.now_ms())
        assert len(kl) == 6 and [k.closed for k in kl] == [True] * 5 + [False]
        prices = rest.ticker_prices()
        assert prices[sym] == kl[-1].close  # the bulk price is the current candle's close
        assert set(clean.market.tradable_symbols()) <= set(prices)
        rest.ping()
        assert rest.requests == 5
        # exchangeInfo 1 + time 1 + klines(limit 6) 1 + ticker/price (all) 2 + ping 1
        assert rest.limiter.total_weight == 6
        # The header is the weight of the minute a request is answered in (as on Binance): 6 after
        # the last request, unless the five cross a minute boundary, where the minute split the 6
        # and the request answered across it can carry the new minute's figure (at most its own
        # weight, 2, unseen). Exact equality failed whenever a run crossed the minute.
        top = clean.rest.stats()["max_weight_1m"]
        assert top <= 6 and top - 2 <= rest.limiter.max_used_weight <= top


def test_klines_weight_follows_limit(clean: Simulator) -> None:
    with make(clean) as rest:
        sym = clean.market.tradable_symbols()[0]
        rest.klines(sym, "1m", limit=150)
        rest.klines(sym, "1m", limit=99)
        assert rest.limiter.total_weight == 3
        assert rest.limiter.last_used_weight == 3


def test_exchange_error_is_not_retried(clean: Simulator) -> None:
    with make(clean) as rest:
        with pytest.raises(ExchangeError) as err:
            rest.klines("NOPEUSDT", "4h", limit=6)
        assert err.value.code == -1121 and err.value.msg == "Invalid symbol." and err.value.status == 400
        with pytest.raises(ExchangeError) as err2:
            rest.klines(clean.market.tradable_symbols()[0], "7h", limit=6)
        assert err2.value.code == -1120
        assert rest.requests == 2 and rest.retries == 0
        assert clean.rest.stats()["requests"] == 2


def test_unknown_path_is_an_exchange_error(clean: Simulator) -> None:
    with make(clean) as rest, pytest.raises(ExchangeError, match="-5000"):
        rest.get("/fapi/v1/nothingHere")


def test_session_pool_keeps_connections_alive_and_bounded(clean: Simulator) -> None:
    clean.rest.set_latency(5)
    sym = clean.market.tradable_symbols()[0]
    with make(clean, pool_size=2) as rest:

        def work() -> None:
            for _ in range(10):
                rest.klines(sym, "4h", limit=2)

        threads = [threading.Thread(target=work) for _ in range(4)]  # more threads than connections
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    stats = clean.rest.stats()
    assert stats["requests"] == 40
    assert stats["connections"] <= 2  # pool_block: threads wait for a connection, none is opened extra
    assert stats["max_in_flight"] <= 2


def test_5xx_retried_with_backoff_then_success(clean: Simulator) -> None:
    clean.rest.error_next(2, 502)
    with make(clean) as rest:
        assert rest.server_time() > 0
        assert rest.retries == 2 and rest.requests == 3


def test_attempts_are_bounded(clean: Simulator) -> None:
    clean.rest.error_next(10, 500)
    with make(clean, max_attempts=3) as rest:
        with pytest.raises(ExchangeUnavailable, match=r"HTTP 500.*after 3 attempts"):
            rest.server_time()
        assert rest.requests == 3
    clean.rest.clear_faults()


def test_malformed_body_retried(clean: Simulator) -> None:
    clean.rest.malformed_next(1)
    with make(clean) as rest:
        assert isinstance(rest.exchange_info()["symbols"], list)
        assert rest.retries == 1


def test_read_timeout_retried(clean: Simulator) -> None:
    clean.rest.stall_next(1, 6.0)
    with make(clean, read_timeout=0.3) as rest:
        t = time.monotonic()
        assert rest.server_time() > 0
        assert rest.retries == 1
        assert time.monotonic() - t < 5.0  # it gave up on the stalled answer instead of waiting it out


def test_read_timeout_every_attempt_is_unavailable(clean: Simulator) -> None:
    clean.rest.stall_next(2, 1.5)
    with (
        make(clean, read_timeout=0.2, max_attempts=2) as rest,
        pytest.raises(ExchangeUnavailable, match="read timeout"),
    ):
        rest.server_time()


def test_429_waits_for_retry_after_then_resends(clean: Simulator) -> None:
    clean.rest.fail_next(1, 429, retry_after_s=1)
    with make(clean) as rest:
        t = time.monotonic()
        assert rest.server_time() > 0
        assert time.monotonic() - t >= 0.95
        assert rest.limiter.rate_limited == 1
    ((start, until, status),) = clean.rest.retry_windows()
    arrivals = [a for a, _, _ in clean.rest.arrivals()]
    assert status == 429 and len(arrivals) == 2 and arrivals[1] >= until


def test_429_forever_gives_up_after_the_bound(clean: Simulator) -> None:
    clean.rest.fail_next(3, 429, retry_after_s=0.01)  # Retry-After rounds up to 1 s at the sim
    with make(clean, max_rate_limit_retries=1) as rest, pytest.raises(ExchangeError) as err:
        rest.server_time()
    assert err.value.code == -1003


def test_418_beyond_the_maximum(clean: Simulator) -> None:
    clean.rest.fail_next(1, 418, retry_after_s=3600)
    with make(clean, limiter=WeightLimiter(max_ban_s=120)) as rest:
        with pytest.raises(RateLimitBanned, match="3600 s.*120 s"):
            rest.server_time()
        with pytest.raises(RateLimitBanned):  # every later call fails fast too
            rest.ping()
    assert clean.rest.stats()["requests"] == 1


def test_connection_refused_is_unavailable_quickly() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rest = BinanceRest(f"http://127.0.0.1:{port}", max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.05)
    with pytest.raises(ExchangeUnavailable, match="connection refused.*after 3 attempts"):
        rest.ping()
    assert rest.requests == 3 and rest.retries == 2
    rest.close()


def test_last_prices_come_from_ticker_price_v2(clean: Simulator) -> None:
    """``/fapi/v1/ticker/price`` is deprecated: every bulk price read goes to v2 (same shape, weight 2
    for every symbol), whose used-weight header Binance says to ignore (it is not accurate)."""
    with make(clean) as rest:
        prices, stamp = rest.ticker_price_snapshot()
        assert stamp == clean.market.now_ms() and set(clean.market.tradable_symbols()) <= set(prices)
        assert rest.ticker_prices() == prices
        assert clean.rest.stats()["by_path"] == {"/fapi/v2/ticker/price": 2}
        assert rest.limiter.total_weight == 4  # our own booking, 2 a request
        assert rest.limiter.last_used_weight == 0 and rest.limiter.max_used_weight == 0
        rest.ping()  # any other answer's header is taken as before
        assert rest.limiter.last_used_weight == 5


def test_klines_limit_above_1500_is_refused_before_anything_is_sent(clean: Simulator) -> None:
    """The exchange answers -1130 to a limit above 1500 (it does not clamp): the client refuses it
    itself, so a caller's bug costs no request and no weight."""
    with make(clean) as rest:
        sym = clean.market.tradable_symbols()[0]
        assert len(rest.klines(sym, "1m", limit=1500)) == 1500
        for bad in (1501, 5000, 0):
            with pytest.raises(ValueError, match="1500"):
                rest.klines(sym, "1m", limit=bad)
        assert rest.requests == 1 and clean.rest.stats()["requests"] == 1
        assert rest.limiter.total_weight == 10
