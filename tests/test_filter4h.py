"""The 4h filter against the simulated exchange over real sockets on 127.0.0.1.

Every test asserts bounds and exact results, never wall-clock speed: the simulator's clock is
frozen so the arranged pass set holds for the whole module, and the simulator's own observations
(requests by path, max in-flight, max weight per minute, Retry-After windows, arrival times) are
the evidence.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from surge.exchange.ratelimit import RateLimitBanned, WeightLimiter
from surge.exchange.rest import BinanceRest, ExchangeUnavailable
from surge.filter4h import H4, Filter4h, Rule4h, ScanProgress
from surge.sim import Simulator
from surge.sim.market import Market
from surge.sim.rest import RestServer
from surge.store import Store

N_SYMBOLS = 120
RULE = Rule4h(-5.0, 10.0, 5e6)
#: A request may legitimately arrive just after a 429 went out (sent before the client read it).
RACE_SLACK_MS = 150.0


def window_of(t_ms: int) -> int:
    return t_ms - t_ms % H4


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = Simulator(n_symbols=N_SYMBOLS, seed=1, latency_ms=0, surge_interval_s=None).start()
    try:
        # a moment in the middle of a past 4h window: fixed, so every test sees the same market
        t = window_of(int(time.time() * 1000)) - H4 + 2 * 3600_000
        s.market.freeze(t)
        s.passing = sorted(s.market.tradable_symbols()[::5])  # type: ignore[attr-defined]
        s.market.arrange_4h(
            s.passing,
            min_change_pct=RULE.min_change_pct,
            max_change_pct=RULE.max_change_pct,
            min_quote_volume=RULE.min_quote_volume,
        )
        yield s
    finally:
        s.stop()


def client(url: str, workers: int = 3, **kw: object) -> BinanceRest:
    kw.setdefault("backoff_initial_s", 0.05)
    kw.setdefault("backoff_max_s", 0.2)
    kw.setdefault("limiter", WeightLimiter(max_ban_s=30))
    return BinanceRest(url, pool_size=workers, **kw)  # type: ignore[arg-type]


def scan(
    sim: Simulator,
    *,
    workers: int = 3,
    store: Store | None = None,
    symbols: list[str] | None = None,
    progress=None,
    **rest_kw: object,
) -> tuple:  # type: ignore[no-untyped-def]
    rest = client(sim.rest_url, workers, **rest_kw)
    try:
        f = Filter4h(rest, RULE, store=store, workers=workers, batch_size=25, progress=progress)
        return f.scan(symbols), rest
    finally:
        rest.close()


def assert_exact(sim: Simulator, result) -> None:  # type: ignore[no-untyped-def]
    tradable = sim.market.tradable_symbols()
    assert result.passed == sim.passing  # type: ignore[attr-defined]
    assert result.failed == sorted(set(tradable) - set(sim.passing))  # type: ignore[attr-defined]
    assert result.errors == {}
    assert result.checked == len(tradable)


# --------------------------------------------------------------------------- correctness


def test_result_is_exactly_the_arranged_pass_set(clean: Simulator) -> None:
    result, rest = scan(clean)
    assert_exact(clean, result)
    stats = clean.rest.stats()
    n = len(clean.market.tradable_symbols())
    assert stats["by_path"] == {"/fapi/v1/exchangeInfo": 1, "/fapi/v1/klines": n}
    assert result.requests == stats["requests"]
    assert stats["max_in_flight"] <= 3
    assert stats["connections"] <= 3  # keep-alive: no connection per request
    # The header is the weight of the minute a request is *answered* in: a request counted in the
    # last instant of a minute and answered in the next carries the new minute's figure, so at most
    # the requests in flight at that boundary (3) go unseen. Equal unless the scan spans one.
    in_flight = stats["max_in_flight"]
    assert stats["max_weight_1m"] - in_flight <= result.max_used_weight <= stats["max_weight_1m"]
    for d in result.decisions.values():
        assert d.reason and (
            d.passed
            == (
                RULE.min_change_pct <= d.change_pct <= RULE.max_change_pct
                and d.quote_volume >= RULE.min_quote_volume
            )
        )


def test_full_universe_of_531_is_exact() -> None:
    with Simulator(n_symbols=531, seed=7, latency_ms=0, surge_interval_s=None) as s:
        s.market.freeze(window_of(int(time.time() * 1000)) - H4 + 3600_000)
        passing = sorted(s.market.tradable_symbols()[3::9])
        s.market.arrange_4h(passing)
        rest = client(s.rest_url)
        result = Filter4h(rest, Rule4h(), workers=3).scan()
        rest.close()
        assert result.passed == passing
        assert result.checked == 531 and not result.errors
        assert s.rest.stats()["max_in_flight"] <= 3


@pytest.mark.parametrize("workers", [1, 2])
def test_in_flight_never_exceeds_workers_and_connections_are_reused(clean: Simulator, workers: int) -> None:
    clean.rest.set_latency(5)  # requests overlap for real
    result, _ = scan(clean, workers=workers)
    assert_exact(clean, result)
    stats = clean.rest.stats()
    assert 1 <= stats["max_in_flight"] <= workers
    assert stats["connections"] <= workers


def test_unknown_symbol_is_an_error_and_the_rest_is_checked(clean: Simulator) -> None:
    good = clean.passing[0]  # type: ignore[attr-defined]
    result, _ = scan(clean, symbols=[good, "NOPEUSDT"])
    assert result.passed == [good]
    assert list(result.errors) == ["NOPEUSDT"] and "-1121" in result.errors["NOPEUSDT"]
    assert result.checked == 2


def test_progress_counts_batches_and_passes(clean: Simulator) -> None:
    seen: list[ScanProgress] = []
    result, _ = scan(clean, progress=seen.append)
    total = len(clean.market.tradable_symbols())
    assert seen[-1].done == total and seen[-1].batches == -(-total // 25)
    assert seen[-1].batch == seen[-1].batches
    assert seen[-1].passed == len(result.passed)
    assert [p.done for p in seen] == sorted(p.done for p in seen)


# --------------------------------------------------------------------------- the cache


def test_warm_scan_asks_only_for_what_is_new(clean: Simulator, tmp_path: Path) -> None:
    with Store(tmp_path / "surge.db") as store:
        cold, _ = scan(clean, store=store)
        assert_exact(clean, cold)
        clean.rest.reset_stats()
        warm, _ = scan(clean, store=store)
    assert clean.rest.stats()["by_path"] == {"/fapi/v1/exchangeInfo": 1, "/fapi/v2/ticker/price": 1}
    assert warm.to_json() | {"elapsed_s": 0, "requests": 0, "max_used_weight": 0} == cold.to_json() | {
        "elapsed_s": 0,
        "requests": 0,
        "max_used_weight": 0,
    }
    assert warm.from_cache == warm.checked
    assert warm.weight <= 0.1 * cold.weight
    for sym, d in warm.decisions.items():  # same numbers, not just the same verdicts
        assert d.change_pct == cold.decisions[sym].change_pct
        assert d.quote_volume == cold.decisions[sym].quote_volume


def test_scan_across_a_4h_boundary_asks_for_the_new_candles_only(tmp_path: Path) -> None:
    with Simulator(n_symbols=40, seed=3, latency_ms=0, surge_interval_s=None) as s:
        w = window_of(int(time.time() * 1000)) - 2 * H4
        s.market.freeze(w + 3 * 3600_000)
        with Store(tmp_path / "surge.db") as store:
            rest = client(s.rest_url)
            f = Filter4h(rest, RULE, store=store)
            f.scan()
            s.market.freeze(w + H4 + 600_000)  # ten minutes into the next window
            passing = sorted(s.market.tradable_symbols()[1::4])
            s.market.arrange_4h(passing)
            s.rest.reset_stats()
            seen: list[str] = []
            orig = rest.session.request

            def spy(method, url, params=None, **kw):  # type: ignore[no-untyped-def]
                if url.endswith("/klines"):
                    seen.append(f"{params['limit']}:{params.get('startTime')}")
                return orig(method, url, params=params, **kw)

            rest.session.request = spy  # type: ignore[method-assign]
            crossed = f.scan()
            rest.close()
        assert crossed.passed == passing
        assert set(seen) == {f"2:{w}"}  # the window that just closed + the new one, nothing older
        fresh_rest = client(s.rest_url)
        fresh = Filter4h(fresh_rest, RULE).scan()  # cold, same moment
        fresh_rest.close()
        assert fresh.passed == crossed.passed and fresh.failed == crossed.failed


# --------------------------------------------------------------------------- faults


def once_done(
    done: int, fault: Callable[[], object]
) -> tuple[Callable[[ScanProgress], None], threading.Event]:
    """A scan progress callback that injects ``fault`` once, as soon as ``done`` symbols are checked
    (mid-scan faults), and the event that says it fired."""
    fired = threading.Event()

    def hook(p: ScanProgress) -> None:
        if p.done >= done and not fired.is_set():
            fired.set()
            fault()

    return hook, fired


def test_429_storm_mid_scan_is_honoured_and_the_scan_completes(clean: Simulator) -> None:
    clean.rest.set_latency(3)
    storm, fired = once_done(20, lambda: clean.rest.fail_next(3, 429, retry_after_s=1))
    result, rest = scan(clean, progress=storm)
    assert fired.is_set()
    assert_exact(clean, result)
    windows = clean.rest.retry_windows()
    arrivals = clean.rest.arrivals()
    assert windows and all(status == 429 for _, _, status in windows)
    for start, until, _ in windows:
        inside = [t for t, _, _ in arrivals if start + RACE_SLACK_MS < t < until]
        assert inside == [], f"requests sent inside a Retry-After window: {inside}"
    stats = clean.rest.stats()
    assert stats["bans"] == 0
    assert rest.limiter.rate_limited >= 3


def test_418_within_the_maximum_waits_then_completes(clean: Simulator) -> None:
    ban, _ = once_done(10, lambda: clean.rest.fail_next(1, 418, retry_after_s=1))
    result, rest = scan(clean, progress=ban)
    assert_exact(clean, result)
    assert rest.limiter.rate_limited >= 1
    for start, until, status in clean.rest.retry_windows():
        assert status == 418
        assert [t for t, _, _ in clean.rest.arrivals() if start + RACE_SLACK_MS < t < until] == []


def test_418_beyond_the_maximum_is_a_clear_error_not_a_hang(clean: Simulator) -> None:
    clean.rest.fail_next(1, 418, retry_after_s=600)
    t = time.monotonic()
    rest = client(clean.rest_url, limiter=WeightLimiter(max_ban_s=60))
    with pytest.raises(RateLimitBanned, match="600 s"):
        Filter4h(rest, RULE).scan()
    rest.close()
    assert time.monotonic() - t < 10


def test_418_mid_scan_beyond_the_maximum_stops_every_worker(clean: Simulator) -> None:
    ban, _ = once_done(10, lambda: clean.rest.fail_next(1, 418, retry_after_s=900))
    with pytest.raises(RateLimitBanned):
        scan(clean, progress=ban)
    # scan() joined its workers before raising: nothing may still be sending. (A short negative
    # observation window: there is no event to wait for when the property is that nothing happens.)
    before = clean.rest.stats()["requests"]
    time.sleep(0.2)
    assert clean.rest.stats()["requests"] == before


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_then_success(clean: Simulator, status: int) -> None:
    clean.rest.error_next(3, status)  # exchangeInfo and two klines fail once each (or one thrice)
    result, rest = scan(clean)
    assert_exact(clean, result)
    assert rest.retries >= 3
    assert clean.rest.stats()["by_status"].get(str(status)) == 3


def test_5xx_that_never_ends_is_exchange_unavailable(clean: Simulator) -> None:
    clean.rest.error_next(50, 503)
    with pytest.raises(ExchangeUnavailable, match="HTTP 503"):
        scan(clean, max_attempts=3)


def test_malformed_json_body_is_retried(clean: Simulator) -> None:
    clean.rest.malformed_next(2)
    result, rest = scan(clean)
    assert_exact(clean, result)
    assert rest.retries >= 2


def test_slow_server_hits_the_read_timeout_and_is_retried(clean: Simulator) -> None:
    stall, fired = once_done(5, lambda: clean.rest.stall_next(1, 30.0))
    t = time.monotonic()
    result, rest = scan(clean, workers=1, progress=stall, read_timeout=0.4)
    assert fired.is_set()
    assert_exact(clean, result)
    assert rest.retries == 1
    assert time.monotonic() - t < 25  # the stall cost a read timeout, not the 30 s stall


def test_a_symbol_that_keeps_timing_out_lands_in_errors(clean: Simulator) -> None:
    stall, _ = once_done(5, lambda: clean.rest.stall_next(2, 2.0))
    result, _ = scan(clean, workers=1, progress=stall, read_timeout=0.3, max_attempts=2)
    assert len(result.errors) == 1
    (msg,) = result.errors.values()
    assert "read timeout" in msg
    assert result.checked == len(clean.market.tradable_symbols()) - 1


def test_exchange_unreachable_is_exchange_unavailable() -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rest = client(f"http://127.0.0.1:{port}", max_attempts=2)
    with pytest.raises(ExchangeUnavailable, match="connection refused"):
        Filter4h(rest, RULE).scan()
    rest.close()


# --------------------------------------------------------------------------- the weight budget


def test_never_above_the_weight_budget_with_a_fast_minute() -> None:
    """The simulator's minute runs 60x fast (1 s) and its limit is 40: a 61-weight scan must pause
    for the window instead of earning a 429, and the header correction accounts for weight another
    client on the same IP spent."""
    t0 = time.time()

    def fast() -> float:
        return t0 + (time.time() - t0) * 60.0

    market = Market(60, seed=5, surge_interval_s=None)
    market.freeze()
    server = RestServer(market, weight_limit=40, wall_clock=fast).start()
    try:
        limiter = WeightLimiter(window_s=1.0, safety_margin=0.1, max_ban_s=30)
        rest = client(server.url, limiter=limiter)
        result = Filter4h(rest, RULE).scan()
        rest.close()
        assert result.checked == 60 and not result.errors
        stats = server.stats()
        assert stats["by_status"] == {"200": 61}
        assert stats["max_weight_1m"] <= 40
        # The scan books at most the budget in any 1 s of its own clock. The server counts by arrival in
        # its fixed minute, so requests sent late in one second and arriving in the next can put up to
        # the scan's 3 requests in flight into the same server minute, whose count the header
        # correction then adopts (37 > 36 once in CI, on a loaded machine): no 429 either way.
        assert limiter.budget == 36 and limiter.max_window_weight <= 36 + 3

        # another process on this IP spends 30 of the 40 in the current minute
        import requests

        server.unban()
        server.reset_stats()
        params = {"symbol": market.tradable_symbols()[0], "interval": "1m", "limit": 1000}  # weight 5
        requests.get(server.url + "/fapi/v1/klines", params=params, timeout=5)
        limiter2 = WeightLimiter(window_s=1.0, safety_margin=0.1, max_ban_s=30)
        rest2 = client(server.url, limiter=limiter2)
        result2 = Filter4h(rest2, RULE).scan(market.tradable_symbols()[:20])
        rest2.close()
        assert result2.checked == 20 and not result2.errors
        assert "429" not in server.stats()["by_status"]
    finally:
        server.stop()


def test_exchange_failing_mid_scan_stops_asking(clean: Simulator) -> None:
    """After a run of symbols that failed every attempt, the rest are not hammered: they are
    reported as not checked, and what was checked before stays."""

    outage, _ = once_done(10, lambda: clean.rest.error_next(10_000, 503))
    result, rest = scan(clean, progress=outage, max_attempts=2)
    n = len(clean.market.tradable_symbols())
    assert result.checked >= 10
    assert len(result.decisions) + len(result.errors) == n
    assert any("not checked" in m for m in result.errors.values())
    assert any("HTTP 503" in m for m in result.errors.values())
    # bounded: about `max_consecutive_failures` symbols x 2 attempts, not every symbol x 2
    assert clean.rest.stats()["by_status"].get("503", 0) <= 2 * (6 + 3)
