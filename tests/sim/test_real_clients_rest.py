"""Proof of fidelity: Binance clients written by others (binance-futures-connector, ccxt) talk to
the simulator's REST side as if it were Binance. Also the Simulator's own lifecycle."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import ccxt
import pytest
import requests
from binance.error import ClientError
from binance.um_futures import UMFutures

from surge.sim import Market, Simulator
from tests.waiting import wait_for

MIN = 60_000
H4 = 4 * 60 * MIN


def sim_threads(ignore: set[threading.Thread] | frozenset = frozenset()) -> list[str]:
    """Simulator threads alive now, except ``ignore`` (the module's shared simulator)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("surge-sim") and t not in ignore]


def wait_no_sim_threads(ignore: set[threading.Thread]) -> None:
    wait_for(
        lambda: sim_threads(ignore) == [],
        5,
        "every simulator thread to end",
        detail=lambda: f"still alive: {sim_threads(ignore)}",
    )


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = Simulator(n_symbols=120, seed=31, surge_interval_s=None).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def fresh(sim: Simulator) -> Simulator:
    sim.rest.clear_faults()
    sim.rest.unban()
    sim.rest.reset_stats()
    return sim


# --------------------------------------------------------------------------- binance-futures-connector


def test_connector_exchange_info_klines_and_ticker(fresh: Simulator) -> None:
    client = UMFutures(base_url=fresh.rest_url, timeout=10)
    info = client.exchange_info()
    usdt_perps = sorted(
        s["symbol"]
        for s in info["symbols"]
        if s["status"] == "TRADING" and s["contractType"] == "PERPETUAL" and s["quoteAsset"] == "USDT"
    )
    assert usdt_perps == fresh.market.tradable_symbols() and len(usdt_perps) == 120
    rows = client.klines("BTCUSDT", "4h", limit=6)
    assert len(rows) == 6 and all(len(r) == 12 for r in rows)
    assert rows[-1][0] == fresh.market.now_ms() // H4 * H4
    ticker = client.ticker_24hr_price_change("ETHUSDT")
    assert ticker["symbol"] == "ETHUSDT" and float(ticker["lastPrice"]) > 0
    assert isinstance(client.ticker_24hr_price_change(), list)
    assert client.time()["serverTime"] > 0 and client.ping() == {}
    stats = fresh.rest.stats()
    assert stats["by_path"]["/fapi/v1/klines"] == 1
    assert stats["connections"] == 1  # the connector keeps its connection alive


def test_connector_reads_the_weight_header_and_binance_errors(fresh: Simulator) -> None:
    client = UMFutures(base_url=fresh.rest_url, timeout=10, show_limit_usage=True)
    answer = client.klines("SOLUSDT", "1m", limit=150)
    assert len(answer["data"]) == 150
    usage = {k.lower(): v for k, v in answer["limit_usage"].items()}
    assert int(usage["x-mbx-used-weight-1m"]) >= 2
    plain = UMFutures(base_url=fresh.rest_url, timeout=10)
    with pytest.raises(ClientError) as bad_symbol:
        plain.klines("NOPEUSDT", "1m")
    assert (bad_symbol.value.status_code, bad_symbol.value.error_code) == (400, -1121)
    with pytest.raises(ClientError) as bad_interval:
        plain.klines("BTCUSDT", "2m")
    assert bad_interval.value.error_code == -1120
    fresh.rest.fail_next(1, 429, retry_after_s=2)
    with pytest.raises(ClientError) as limited:
        plain.klines("BTCUSDT", "1m", limit=5)
    assert (limited.value.status_code, limited.value.error_code) == (429, -1003)
    assert limited.value.header["Retry-After"] == "2"


# --------------------------------------------------------------------------- ccxt


def pointed_ccxt(url: str) -> ccxt.binanceusdm:
    options = {"fetchMarkets": {"types": ["linear"]}, "fetchCurrencies": False}
    exchange = ccxt.binanceusdm({"timeout": 10_000, "enableRateLimit": False, "options": options})
    for key in ("fapiPublic", "fapiPublicV2", "fapiPublicV3"):
        exchange.urls["api"][key] = url + "/fapi/" + exchange.urls["api"][key].rsplit("/", 1)[-1]
    return exchange


def test_ccxt_load_markets_and_fetch_ohlcv(fresh: Simulator) -> None:
    exchange = pointed_ccxt(fresh.rest_url)
    markets = exchange.load_markets()
    linear = [m for m in markets.values() if m["linear"] and m["swap"] and m["quote"] == "USDT"]
    assert "BTC/USDT:USDT" in markets and len(linear) >= 120
    assert markets["BTC/USDT:USDT"]["precision"]["price"] == pytest.approx(0.1)
    candles = exchange.fetch_ohlcv("BTC/USDT:USDT", "4h", limit=6)
    assert len(candles) == 6
    now = fresh.market.now_ms()
    expected = fresh.market.klines("BTCUSDT", "4h", limit=6, now_ms=fresh.market.now_ms())
    assert [c[0] for c in candles] == [k.open_time for k in expected]
    assert [c[1] for c in candles] == [k.open for k in expected]  # opens never change
    assert candles[-1][0] == now // H4 * H4
    assert set(fresh.rest.stats()["by_path"]) == {"/fapi/v1/exchangeInfo", "/fapi/v1/klines"}


def test_ccxt_maps_simulator_errors_like_binance_ones(fresh: Simulator) -> None:
    exchange = pointed_ccxt(fresh.rest_url)
    exchange.load_markets()
    fresh.rest.fail_next(1, 429, retry_after_s=1)
    with pytest.raises(ccxt.DDoSProtection):
        exchange.fetch_ohlcv("ETH/USDT:USDT", "1m", limit=3)
    fresh.rest.unban()  # forget that Retry-After window: the next request is not a violation
    fresh.rest.fail_next(1, 418, retry_after_s=1)
    with pytest.raises(ccxt.DDoSProtection) as banned:
        exchange.fetch_ohlcv("ETH/USDT:USDT", "1m", limit=3)
    assert "418" in str(banned.value)
    fresh.rest.unban()
    fresh.rest.error_next(1, 503)  # Binance's -1001 "Internal error" body: ccxt's OperationFailed
    with pytest.raises(ccxt.OperationFailed):
        exchange.fetch_ohlcv("ETH/USDT:USDT", "1m", limit=3)
    fresh.rest.error_next(1, 502)  # the edge's HTML page
    with pytest.raises(ccxt.ExchangeNotAvailable):
        exchange.fetch_ohlcv("ETH/USDT:USDT", "1m", limit=3)
    assert len(exchange.fetch_ohlcv("ETH/USDT:USDT", "1m", limit=3)) == 3


# --------------------------------------------------------------------------- the Simulator itself


def test_simulator_lifecycle_urls_and_ws_controls_over_http() -> None:
    before = set(threading.enumerate())
    with Simulator(n_symbols=20, seed=3, surge_interval_s=None) as s:
        assert s.rest_url.startswith("http://127.0.0.1:") and s.ws_url.startswith("ws://127.0.0.1:")
        assert s.rest.port != s.ws.port and s.market is s.rest.market
        assert isinstance(s.market, Market) and len(s.market.tradable_symbols()) == 20
        r = requests.get(s.rest_url + "/_sim/ws/stats", timeout=10)
        assert r.status_code == 200 and isinstance(r.json()["result"], dict)
        assert requests.get(s.rest_url + "/_sim/ws/stop", timeout=10).status_code == 400  # not a control
        assert set(s.stats()) == {"rest", "ws", "market", "archive"}
    wait_no_sim_threads(before)


def test_simulator_fixed_port_puts_the_websocket_on_the_next_one() -> None:
    import socket

    with socket.socket() as probe:  # find two free neighbouring ports
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port + 1))
        except OSError:
            pytest.skip("neighbouring port busy")
    before = set(threading.enumerate())
    s = Simulator(n_symbols=10, seed=1, port=port, surge_interval_s=None)
    try:
        s.start()
        assert s.rest_url == f"http://127.0.0.1:{port}" and s.ws_url == f"ws://127.0.0.1:{port + 1}/market"
    finally:
        s.stop()
    wait_no_sim_threads(before)
