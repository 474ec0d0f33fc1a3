"""The simulated REST API over real sockets: Binance shapes, weights, errors, the limiter (429 /
418), fault controls, observations, keep-alive, the /_sim namespace and clean shutdown."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
import requests

from surge.models import INTERVAL_MS
from surge.sim.account import DEFAULT_API_KEY, DEFAULT_API_SECRET, sign
from surge.sim.market import Market
from surge.sim.rest import RestServer, klines_weight
from tests.waiting import wait_for

T0 = 1_795_650_000.0  # fixed market clock: 2026-11-25 21:40 UTC
H4 = INTERVAL_MS["4h"]
MIN = 60_000


class Wall:
    """A wall clock the test moves by hand, so limiter windows are exact (no minute rollover races)."""

    def __init__(self, t: float = 1_800_000_010.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def rest_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("surge-sim-rest")]


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(seed=21, surge_interval_s=None, clock=lambda: T0)


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
def server(market: Market, wall: Wall) -> Iterator[RestServer]:
    srv = RestServer(market, wall_clock=wall).start()
    try:
        yield srv
    finally:
        srv.stop()
    assert rest_threads() == []


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def get(http: requests.Session, srv: RestServer, path: str, **params) -> requests.Response:
    return http.get(srv.url + path, params=params, timeout=10)


# --------------------------------------------------------------------------- endpoints


def test_ping_time_and_headers(server: RestServer, http: requests.Session, market: Market) -> None:
    r = get(http, server, "/fapi/v1/ping")
    assert r.status_code == 200 and r.json() == {}
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "1" and r.headers["X-MBX-USED-WEIGHT"] == "1"
    r = get(http, server, "/fapi/v1/time")
    assert r.json() == {"serverTime": market.now_ms()} and r.headers["X-MBX-USED-WEIGHT-1M"] == "2"


def test_exchange_info_shape(server: RestServer, http: requests.Session, market: Market) -> None:
    info = get(http, server, "/fapi/v1/exchangeInfo").json()
    assert info["timezone"] == "UTC" and info["serverTime"] == market.now_ms()
    limits = {(x["rateLimitType"], x["interval"], x["intervalNum"]): x["limit"] for x in info["rateLimits"]}
    assert limits[("REQUEST_WEIGHT", "MINUTE", 1)] == 2400 and ("ORDERS", "MINUTE", 1) in limits
    by_name = {s["symbol"]: s for s in info["symbols"]}
    btc = by_name["BTCUSDT"]
    for key in (
        "pair",
        "contractType",
        "deliveryDate",
        "onboardDate",
        "status",
        "baseAsset",
        "quoteAsset",
        "marginAsset",
        "pricePrecision",
        "quantityPrecision",
        "filters",
        "orderTypes",
        "timeInForce",
    ):
        assert key in btc
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.1" and filters["LOT_SIZE"]["stepSize"] == "0.001"
    assert "MARKET_LOT_SIZE" in filters and float(filters["MIN_NOTIONAL"]["notional"]) > 0
    kept = sorted(
        s["symbol"]
        for s in info["symbols"]
        if (s["status"], s["contractType"], s["quoteAsset"]) == ("TRADING", "PERPETUAL", "USDT")
    )
    assert kept == market.tradable_symbols() and len(info["symbols"]) > len(kept)


@pytest.mark.parametrize(
    ("limit", "weight"),
    [(None, 5), (1, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10), (1500, 10)],
)
def test_klines_rows_and_weight_by_limit(
    server: RestServer, http: requests.Session, market: Market, limit: int | None, weight: int
) -> None:
    params = {"symbol": "ETHUSDT", "interval": "1m"} | ({"limit": limit} if limit else {})
    r = get(http, server, "/fapi/v1/klines", **params)
    assert r.status_code == 200
    assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) == weight == klines_weight(limit or 500)
    rows = r.json()
    assert len(rows) == (limit or 500)
    pd, qd = market.decimals("ETHUSDT")
    for row in rows:
        assert len(row) == 12 and all(isinstance(row[i], int) for i in (0, 6, 8))
        assert all(isinstance(row[i], str) for i in (1, 2, 3, 4, 5, 7, 9, 10, 11))
        assert len(row[1].split(".")[1]) == pd and row[6] == row[0] + MIN - 1
    assert [row[0] for row in rows] == sorted(row[0] for row in rows)
    assert rows[-1][0] == market.now_ms() // MIN * MIN


def test_klines_limit_above_1500_is_refused_not_clamped(server: RestServer, http: requests.Session) -> None:
    """Binance answers -1130 to a limit above 1500 (the old simulator clamped it and answered 1500 rows,
    so a client asking too much went unnoticed here and failed live)."""
    r = get(http, server, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=1500)
    assert r.status_code == 200 and len(r.json()) == 1500 and r.headers["X-MBX-USED-WEIGHT-1M"] == "10"
    for limit in (1501, 5000):
        r = get(http, server, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=limit)
        assert r.status_code == 400
        assert r.json() == {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}


def test_ticker_price_v2_answers_as_v1(server: RestServer, http: requests.Session, market: Market) -> None:
    """The client reads /fapi/v2/ticker/price (v1 is deprecated): same shape, weight 1 / 2."""
    now = market.now_ms()
    one = get(http, server, "/fapi/v2/ticker/price", symbol="ETHUSDT")
    assert one.status_code == 200 and one.headers["X-MBX-USED-WEIGHT-1M"] == "1"
    assert one.json() == get(http, server, "/fapi/v1/ticker/price", symbol="ETHUSDT").json()
    assert one.json()["time"] == now
    every = get(http, server, "/fapi/v2/ticker/price")
    assert every.headers["X-MBX-USED-WEIGHT-1M"] == "4"
    assert every.json() == get(http, server, "/fapi/v1/ticker/price").json()
    assert get(http, server, "/fapi/v2/ticker/price", symbol="NOPE").json()["code"] == -1121


def test_exchange_info_has_no_max_num_algo_orders_filter(server: RestServer, http: requests.Session) -> None:
    """Binance removed MAX_NUM_ALGO_ORDERS on 2025-12-29; the filters it still sends stay."""
    symbols = get(http, server, "/fapi/v1/exchangeInfo").json()["symbols"]
    for s in symbols:
        kinds = [f["filterType"] for f in s["filters"]]
        assert "MAX_NUM_ALGO_ORDERS" not in kinds, s["symbol"]
        assert {"PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "MAX_NUM_ORDERS", "MIN_NOTIONAL"} <= set(kinds)


def test_klines_time_range(server: RestServer, http: requests.Session, market: Market) -> None:
    now = market.now_ms()
    cur = now // H4 * H4
    rows = get(
        http,
        server,
        "/fapi/v1/klines",
        symbol="SOLUSDT",
        interval="4h",
        startTime=cur - 3 * H4 + 1,
        endTime=cur - 1,
    ).json()
    assert [r[0] for r in rows] == [cur - 2 * H4, cur - H4]
    rows = get(
        http, server, "/fapi/v1/klines", symbol="SOLUSDT", interval="4h", endTime=cur - 1, limit=2
    ).json()
    assert [r[0] for r in rows] == [cur - 2 * H4, cur - H4]
    listing = market.listing_ms("SOLUSDT")
    r = get(http, server, "/fapi/v1/klines", symbol="SOLUSDT", interval="1h", endTime=listing - 1)
    assert r.status_code == 200 and r.json() == []
    rows = get(http, server, "/fapi/v1/klines", symbol="SOLUSDT", interval="1h", startTime=0, limit=3).json()
    assert rows[0][0] == listing
    direct = market.klines("SOLUSDT", "4h", limit=6, now_ms=now)
    rows = get(http, server, "/fapi/v1/klines", symbol="SOLUSDT", interval="4h", limit=6).json()
    assert [r[4] for r in rows] == [f"{k.close:.{market.decimals('SOLUSDT')[0]}f}" for k in direct]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "NOPEUSDT", "interval": "1m"}, -1121),
        ({"symbol": "BTCUSDT", "interval": "7m"}, -1120),
        ({"interval": "1m"}, -1102),
        ({"symbol": "BTCUSDT"}, -1102),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": "ten"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": "-5"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": 10, "endTime": 5}, -1023),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": 0}, -1130),
        ({"symbol": "BTCUSDT", "interval": "1m", "foo": "bar"}, -1104),
    ],
)
def test_klines_errors_are_binance_errors(
    server: RestServer, http: requests.Session, params: dict, code: int
) -> None:
    r = get(http, server, "/fapi/v1/klines", **params)
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == code and isinstance(body["msg"], str) and body["msg"]
    assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) >= 1
    if code == -1121:
        assert body == {"code": -1121, "msg": "Invalid symbol."}
    if code == -1120:
        assert body == {"code": -1120, "msg": "Invalid interval."}


def test_unknown_path_is_404(server: RestServer, http: requests.Session) -> None:
    r = get(http, server, "/fapi/v1/nothingHere")
    assert r.status_code == 404 and r.json()["code"] == -5000
    assert http.post(server.url + "/fapi/v1/klines", timeout=10).status_code == 404


def test_tickers(wall: Wall, http: requests.Session) -> None:
    # a small market: the all-symbols ticker aggregates a day of minutes per symbol
    market = Market(60, seed=24, surge_interval_s=None, clock=lambda: T0)
    server = RestServer(market, wall_clock=wall).start()
    try:
        check_tickers(server, http, market)
    finally:
        server.stop()


def check_tickers(server: RestServer, http: requests.Session, market: Market) -> None:
    now = market.now_ms()
    r = get(http, server, "/fapi/v1/ticker/24hr", symbol="BTCUSDT")
    t = r.json()
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "1"
    for key in (
        "priceChange",
        "priceChangePercent",
        "weightedAvgPrice",
        "lastPrice",
        "lastQty",
        "openPrice",
        "highPrice",
        "lowPrice",
        "volume",
        "quoteVolume",
        "openTime",
        "closeTime",
        "firstId",
        "lastId",
        "count",
    ):
        assert key in t
    last = market.current_kline("BTCUSDT", "1m", now).close
    assert float(t["lastPrice"]) == last and t["closeTime"] == now and t["openTime"] == (now - 86_400_000)
    assert float(t["lowPrice"]) <= float(t["openPrice"]) <= float(t["highPrice"])
    day = market.klines("BTCUSDT", "1m", start_ms=now - 86_400_000, limit=1500, now_ms=now)
    assert float(t["quoteVolume"]) == pytest.approx(sum(k.quote_volume for k in day), rel=1e-9)
    r = get(http, server, "/fapi/v1/ticker/24hr")
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "41" and len(r.json()) >= 60
    r = get(http, server, "/fapi/v1/ticker/price", symbol="ETHUSDT")
    price = market.current_kline("ETHUSDT", "1m", now).close
    assert r.json() == {"symbol": "ETHUSDT", "price": f"{price:.2f}", "time": now}
    r = get(http, server, "/fapi/v1/ticker/price")
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "44" and {x["symbol"] for x in r.json()} >= {"BTCUSDT"}
    assert get(http, server, "/fapi/v1/ticker/price", symbol="NOPE").json()["code"] == -1121


# --------------------------------------------------------------------------- the limiter


def test_weight_limit_429_then_418_when_ignored(market: Market, wall: Wall, http: requests.Session) -> None:
    with RestServer(market, wall_clock=wall, weight_limit=10, ban_s=300, ban_grace=2) as srv:
        wall.t = 1_800_000_000.0 + 45.0  # 45 s into a clock minute: the window ends in 15 s
        codes = [get(http, srv, "/fapi/v1/ping").status_code for _ in range(10)]
        assert codes == [200] * 10
        r = get(http, srv, "/fapi/v1/ping")
        assert r.status_code == 429 and r.json()["code"] == -1003
        assert r.json()["msg"].startswith("Too many requests")
        assert r.headers["Retry-After"] == "15" and r.headers["X-MBX-USED-WEIGHT-1M"] == "11"
        # ignoring Retry-After: tolerated twice (requests already in flight), then banned
        assert [get(http, srv, "/fapi/v1/ping").status_code for _ in range(2)] == [429, 429]
        r = get(http, srv, "/fapi/v1/ping")
        assert r.status_code == 418 and r.headers["Retry-After"] == "300" and r.json()["code"] == -1003
        wall.t += 100
        r = get(http, srv, "/fapi/v1/ping")
        assert r.status_code == 418 and r.headers["Retry-After"] == "200"
        wall.t += 200
        assert get(http, srv, "/fapi/v1/ping").status_code == 200
        stats = srv.stats()
        assert stats["bans"] == 1 and stats["violations"] == 3 and stats["max_weight_1m"] == 11
        assert stats["by_status"] == {"200": 11, "429": 3, "418": 2}


def test_a_client_that_honours_retry_after_is_never_banned(
    market: Market, wall: Wall, http: requests.Session
) -> None:
    with RestServer(market, wall_clock=wall, weight_limit=5, ban_grace=0) as srv:
        for _ in range(30):
            r = get(http, srv, "/fapi/v1/time")
            assert r.status_code in (200, 429)
            wall.t += int(r.headers["Retry-After"]) if r.status_code == 429 else 0.5
        assert srv.stats()["bans"] == 0 and srv.stats()["violations"] == 0
        arrivals = [a for a, _, _ in srv.arrivals()]
        windows = srv.retry_windows()
        assert windows and not any(start < a < end for a in arrivals for start, end, _ in windows)


def test_fail_next_429_and_418(server: RestServer, http: requests.Session, wall: Wall) -> None:
    server.fail_next(2, 429, retry_after_s=3)
    r = get(http, server, "/fapi/v1/ping")
    assert r.status_code == 429 and r.headers["Retry-After"] == "3" and r.json()["code"] == -1003
    wall.t += 3
    assert get(http, server, "/fapi/v1/ping").status_code == 429  # the second scripted one
    wall.t += 3
    assert get(http, server, "/fapi/v1/ping").status_code == 200
    server.fail_next(1, 418, retry_after_s=7)
    r = get(http, server, "/fapi/v1/ping")
    assert r.status_code == 418 and r.headers["Retry-After"] == "7"
    wall.t += 2
    r = get(http, server, "/fapi/v1/ping")
    assert r.status_code == 418 and r.headers["Retry-After"] == "5"  # still banned
    wall.t += 5
    assert get(http, server, "/fapi/v1/ping").status_code == 200
    assert [w[2] for w in server.retry_windows()] == [429, 429, 418]


def test_5xx_malformed_and_stall(server: RestServer, http: requests.Session) -> None:
    server.error_next(1, 503)
    r = get(http, server, "/fapi/v1/time")
    assert r.status_code == 503 and r.json()["code"] == -1001
    server.error_next(1, 502)
    r = get(http, server, "/fapi/v1/time")
    assert r.status_code == 502 and r.headers["Content-Type"].startswith("text/html")
    server.malformed_next(1)
    r = get(http, server, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=5)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    server.stall_next(1, 1.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.get(server.url + "/fapi/v1/time", timeout=0.3)
    assert get(http, server, "/fapi/v1/time").status_code == 200  # next one is normal
    assert server.stats()["pending_faults"] == 0


def test_clear_faults_answers_stalled_requests_and_in_flight_covers_the_logs(
    server: RestServer, http: requests.Session
) -> None:
    """A stall scripted by one test must not land in the next one's logs: clear_faults answers it,
    and once ``in_flight`` reads 0 the request is already in the arrivals."""
    server.stall_next(1, 60)
    answers: list[int] = []
    client = threading.Thread(
        target=lambda: answers.append(http.get(server.url + "/fapi/v1/time", timeout=30).status_code),
        name="test-stalled-client",
    )
    client.start()
    wait_for(lambda: server.stats()["in_flight"] == 1, what="the request to stall")
    assert server.arrivals() == []
    server.clear_faults()
    client.join(20)
    assert answers == [200]  # answered when released, long before the 60 s stall
    assert server.stats()["in_flight"] == 0
    assert [(path, status) for _, path, status in server.arrivals()] == [("/fapi/v1/time", 200)]


def signed(http: requests.Session, srv: RestServer, method: str, path: str, **params) -> requests.Response:
    """A signed request by hand (the market's clock is the server's: the timestamp is always fresh)."""
    text = urlencode({**params, "timestamp": srv.market.now_ms()})
    return http.request(
        method,
        f"{srv.url}{path}?{text}&signature={sign(DEFAULT_API_SECRET, text)}",
        headers={"X-MBX-APIKEY": DEFAULT_API_KEY},
        timeout=10,
    )


def test_error_for_is_a_timed_spell_on_public_and_signed_requests(
    server: RestServer, http: requests.Session, wall: Wall
) -> None:
    server.error_for(61)
    r = get(http, server, "/fapi/v1/time")
    assert r.status_code == 503 and r.json()["code"] == -1001
    r = signed(
        http,
        server,
        "POST",
        "/fapi/v1/order",
        symbol="SOLUSDT",
        side="BUY",
        type="MARKET",
        quantity="1",
        newClientOrderId="spell-1",
    )
    assert r.status_code == 503 and server.account.received == []  # answered before it was executed
    wall.t += 60
    assert get(http, server, "/fapi/v1/ping").status_code == 503
    assert server.stats()["error_spell_s"] == pytest.approx(1.0)
    wall.t += 1.5
    assert get(http, server, "/fapi/v1/ping").status_code == 200
    assert signed(http, server, "GET", "/fapi/v2/balance").status_code == 200
    assert server.stats()["error_spell_s"] == 0
    # over HTTP: seconds makes it a spell, count keeps the count; clear_faults ends a spell
    assert http.post(server.url + "/_sim/error", params={"seconds": 30, "status": 502}, timeout=10).ok
    for _ in range(3):
        r = get(http, server, "/fapi/v1/ping")
        assert r.status_code == 502 and r.headers["Content-Type"].startswith("text/html")
    assert http.post(server.url + "/_sim/clear_faults", timeout=10).ok
    assert get(http, server, "/fapi/v1/ping").status_code == 200
    assert http.post(server.url + "/_sim/error", params={"count": 1}, timeout=10).ok
    assert [get(http, server, "/fapi/v1/ping").status_code for _ in range(2)] == [503, 200]
    with pytest.raises(ValueError):
        server.error_for(5, 404)


def test_answer_next_gives_status_unknown_answers_on_any_request(
    server: RestServer, http: requests.Session
) -> None:
    expected = {
        "503": (503, -1001),
        "408": (408, -1007),
        "-1006": (400, -1006),
        "-1007": (400, -1007),
        "garbled": (200, None),
        "error200": (200, -1007),
    }
    for kind, (status, code) in expected.items():
        server.answer_next(kind)
        r = get(http, server, "/fapi/v1/time")
        assert r.status_code == status, kind
        if code is None:
            with pytest.raises(ValueError):
                r.json()
        else:
            assert r.json()["code"] == code
    assert get(http, server, "/fapi/v1/time").status_code == 200
    r = http.post(server.url + "/_sim/answer_next", params={"kind": "408", "count": 2}, timeout=10)
    assert r.ok
    assert signed(http, server, "GET", "/fapi/v2/balance").status_code == 408
    r = signed(
        http,
        server,
        "POST",
        "/fapi/v1/order",
        symbol="SOLUSDT",
        side="BUY",
        type="MARKET",
        quantity="1",
        newClientOrderId="u-1",
    )
    assert r.status_code == 408 and server.account.received == []
    assert http.post(server.url + "/_sim/answer_next", params={"kind": "x"}, timeout=10).status_code == 400


def test_latency_is_concurrent_and_in_flight_is_observed(server: RestServer) -> None:
    server.set_latency(800)
    barrier = threading.Barrier(3)
    results: list[float] = []

    def one() -> None:
        with requests.Session() as s:
            barrier.wait(5)
            t = time.monotonic()
            assert s.get(server.url + "/fapi/v1/ping", timeout=10).status_code == 200
            results.append(time.monotonic() - t)

    threads = [threading.Thread(target=one, name=f"test-client-{i}") for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert len(results) == 3 and min(results) >= 0.79
    stats = server.stats()
    assert stats["max_in_flight"] == 3 and stats["in_flight"] == 0 and stats["connections"] == 3


def test_keep_alive_one_connection_for_many_requests(server: RestServer, http: requests.Session) -> None:
    for _ in range(25):
        r = get(http, server, "/fapi/v1/klines", symbol="BTCUSDT", interval="4h", limit=6)
        assert r.status_code == 200
    stats = server.stats()
    assert stats["connections"] == 1 and stats["requests"] == 25 and stats["open_connections"] == 1
    assert stats["by_path"] == {"/fapi/v1/klines": 25} and stats["max_weight_1m"] == 25
    server.reset_stats()
    assert server.stats()["requests"] == 0 and server.arrivals() == []


def test_stop_joins_every_thread_even_with_open_and_stalled_connections(market: Market) -> None:
    srv = RestServer(market).start()
    idle = requests.Session()
    assert idle.get(srv.url + "/fapi/v1/ping", timeout=5).status_code == 200  # keep-alive, left open
    srv.stall_next(1, 60)
    stalled = threading.Thread(
        target=lambda: requests.get(srv.url + "/fapi/v1/ping", timeout=30), name="test-stalled-client"
    )
    stalled.start()
    wait_for(lambda: srv.stats()["in_flight"] == 1)
    assert any(name.startswith("surge-sim-rest-conn-") for name in rest_threads())
    t = time.monotonic()
    srv.stop()
    assert time.monotonic() - t < 8 and rest_threads() == []
    stalled.join(10)
    idle.close()
    srv.stop()  # idempotent


# --------------------------------------------------------------------------- rules computed from REST


def four_hour_passes(
    http: requests.Session, srv: RestServer, symbol: str, lo: float, hi: float, min_qv: float
) -> bool:
    """The contract's 4h rule, computed here from REST rows only (independent of the market model)."""
    rows = get(http, srv, "/fapi/v1/klines", symbol=symbol, interval="4h", limit=2).json()
    prev, cur = rows
    change = (float(cur[4]) - float(cur[1])) / float(cur[1]) * 100
    return lo <= change <= hi and float(prev[7]) >= min_qv


def test_arrange_4h_over_http_gives_exactly_the_chosen_set(wall: Wall, http: requests.Session) -> None:
    market = Market(120, seed=22, surge_interval_s=None, clock=lambda: T0)
    with RestServer(market, wall_clock=wall, weight_limit=100_000) as srv:
        symbols = market.tradable_symbols()
        wanted = sorted(random.Random(9).sample(symbols, 17))
        r = http.post(srv.url + "/_sim/arrange_4h", params={"passing": ",".join(wanted)}, timeout=30)
        assert r.status_code == 200 and r.json()["ok"]
        assert [s for s in symbols if four_hour_passes(http, srv, s, -5.0, 10.0, 5e6)] == wanted
        body = {
            "passing": ["BTCUSDT", "ETHUSDT"],
            "min_change_pct": -2,
            "max_change_pct": 2,
            "min_quote_volume": 1e7,
        }
        r = http.post(srv.url + "/_sim/arrange_4h", json=body, timeout=30)
        assert r.status_code == 200
        passed = [s for s in symbols if four_hour_passes(http, srv, s, -2.0, 2.0, 1e7)]
        assert passed == ["BTCUSDT", "ETHUSDT"]


def test_injected_surge_satisfies_the_surge_rule_over_rest(wall: Wall, http: requests.Session) -> None:
    market = Market(seed=23, surge_interval_s=None, clock=lambda: T0 + 12.5)
    with RestServer(market, wall_clock=wall) as srv:
        assert http.post(srv.url + "/_sim/surge", params={"symbol": "LINKUSDT"}, timeout=10).json()["ok"]
        rows = get(http, srv, "/fapi/v1/klines", symbol="LINKUSDT", interval="1m", limit=21).json()
        *closed, cur = rows
        mean = sum(float(r[5]) for r in closed) / 20
        assert (float(cur[4]) - float(cur[1])) / float(cur[1]) * 100 >= 3.0
        assert float(cur[5]) >= 5 * mean and float(cur[7]) >= 50_000


# --------------------------------------------------------------------------- /_sim controls


def test_sim_controls_over_http(server: RestServer, http: requests.Session, market: Market) -> None:
    def ctl(name: str, **params) -> dict:
        r = http.post(f"{server.url}/_sim/{name}", params=params, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["result"]

    ctl("latency", ms=5)
    assert server.latency_ms == 5
    ctl("fail", count=1, status=429, retry_after=2)
    assert get(http, server, "/fapi/v1/ping").status_code == 429
    ctl("unban")
    ctl("error", count=1, status=500)
    assert get(http, server, "/fapi/v1/ping").status_code == 500
    ctl("malformed", count=1)
    ctl("stall", count=1, seconds=0.01)
    ctl("clear_faults")
    assert get(http, server, "/fapi/v1/ping").status_code == 200
    try:
        ctl("freeze", at_ms=1_790_000_000_000)
        assert get(http, server, "/fapi/v1/time").json() == {"serverTime": 1_790_000_000_000}
    finally:
        ctl("unfreeze")
    assert get(http, server, "/fapi/v1/time").json() == {"serverTime": int(T0 * 1000)}
    stats = ctl("stats", arrivals=1)
    assert stats["requests"] == 5 and stats["by_status"]["429"] == 1 and len(stats["arrivals"]) == 5
    assert stats["by_path"] == {"/fapi/v1/ping": 3, "/fapi/v1/time": 2}
    ctl("reset")
    assert ctl("stats")["requests"] == 0
    assert http.get(server.url + "/_sim/nope", timeout=10).status_code == 404
    # no WebSocket server attached to a bare RestServer
    assert http.get(server.url + "/_sim/ws/stats", timeout=10).status_code == 400
    assert http.get(server.url + "/_sim/latency", timeout=10).status_code == 400  # missing ms
    assert ctl("tradable") == market.tradable_symbols()
    assert json.loads(http.get(server.url + "/_sim/stats", timeout=10).content)["ok"] is True


def test_python_controls_reach_the_market(wall: Wall, http: requests.Session) -> None:
    market = Market(40, seed=25, surge_interval_s=None, clock=lambda: T0 + 5)
    with RestServer(market, wall_clock=wall) as srv:
        srv.freeze(1_795_000_000_000)
        assert get(http, srv, "/fapi/v1/time").json() == {"serverTime": 1_795_000_000_000}
        srv.unfreeze()
        assert get(http, srv, "/fapi/v1/time").json() == {"serverTime": int((T0 + 5) * 1000)}
        srv.inject_surge("BTCUSDT", change_pct=6.0)
        assert market.surges == [(int((T0 + 5) * 1000), "BTCUSDT")]
        row = get(http, srv, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=1).json()[0]
        assert (float(row[4]) - float(row[1])) / float(row[1]) * 100 >= 5.0
        srv.arrange_4h(["ETHUSDT", "SOLUSDT"])
        passed = [s for s in market.tradable_symbols() if four_hour_passes(http, srv, s, -5.0, 10.0, 5e6)]
        assert passed == ["ETHUSDT", "SOLUSDT"]
