"""The simulated account over real sockets: Binance's signature, timestamp and key checks, the order
and Algo Service endpoints with their errors and weights, protective orders triggering on the
simulated price, faults and observations. Requests are signed by hand here, independent of the bot's
client, so the simulator is checked against Binance's rules rather than against our own code."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from surge.sim.account import DEFAULT_API_KEY, DEFAULT_API_SECRET
from surge.sim.simulator import Simulator
from tests.waiting import wait_for

SYMBOL = "SOLUSDT"  # tick 0.001, step 0.001, MIN_NOTIONAL 5 in the seeded market


@pytest.fixture
def sim(small_sim: Simulator) -> Simulator:
    return small_sim



class Client:
    """A minimal hand-rolled signed client: every knob a test needs to get something wrong."""

    def __init__(self, sim: Simulator, key: str | None = DEFAULT_API_KEY, secret: str = DEFAULT_API_SECRET):
        self.sim, self.key, self.secret = sim, key, secret
        self.http = requests.Session()

    def now(self) -> int:
        return self.sim.market.now_ms()

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, *, in_body: bool = False,
             ts_shift_ms: int = 0, secret: str | None = None, timeout: float = 5.0) -> requests.Response:
        p = dict(params or {})
        p["timestamp"] = self.now() + ts_shift_ms
        text = urlencode(p)
        sig = hmac.new((secret or self.secret).encode(), text.encode(), hashlib.sha256).hexdigest()
        headers = {"X-MBX-APIKEY": self.key} if self.key is not None else {}
        url = self.sim.rest_url + path
        if in_body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return self.http.request(method, url, data=f"{text}&signature={sig}", headers=headers,
                                     timeout=timeout)
        return self.http.request(method, f"{url}?{text}&signature={sig}", headers=headers, timeout=timeout)

    def ok(self, method: str, path: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        r = self.call(method, path, params, **kw)
        assert r.status_code == 200, r.text
        return r.json()

    def err(self, method: str, path: str, params: dict[str, Any] | None = None,
            **kw: Any) -> tuple[int, int, str]:
        r = self.call(method, path, params, **kw)
        body = r.json()
        return r.status_code, body["code"], body["msg"]

    def price(self) -> float:
        return float(self.http.get(f"{self.sim.rest_url}/fapi/v1/ticker/price", params={"symbol": SYMBOL})
                     .json()["price"])

    def buy(self, qty: str, cid: str = "b1") -> Any:
        return self.ok("POST", "/fapi/v1/order", {"symbol": SYMBOL, "side": "BUY", "type": "MARKET",
                                                   "quantity": qty, "newClientOrderId": cid,
                                                   "newOrderRespType": "RESULT"})


def test_signature_in_query_in_body_and_split_between_both(sim: Simulator) -> None:
    c = Client(sim)
    assert c.ok("POST", "/fapi/v1/leverage", {"symbol": SYMBOL, "leverage": 3})["leverage"] == 3
    assert c.ok("POST", "/fapi/v1/leverage", {"symbol": SYMBOL, "leverage": 4}, in_body=True)["leverage"] == 4
    # Binance signs query string + body concatenated: part of the parameters in each
    query = urlencode({"symbol": SYMBOL})
    body = urlencode({"leverage": 5, "timestamp": c.now()})
    sig = hmac.new(DEFAULT_API_SECRET.encode(), (query + body).encode(), hashlib.sha256).hexdigest()
    r = c.http.post(f"{sim.rest_url}/fapi/v1/leverage?{query}", data=f"{body}&signature={sig}",
                    headers={"X-MBX-APIKEY": DEFAULT_API_KEY,
                             "Content-Type": "application/x-www-form-urlencoded"}, timeout=5)
    assert r.status_code == 200 and r.json()["leverage"] == 5
    assert sim.rest.account.snapshot()["leverage"] == {SYMBOL: 5}


def test_authentication_errors_as_binance(sim: Simulator) -> None:
    c = Client(sim)
    status, code, msg = c.err("GET", "/fapi/v2/balance", secret="not-the-secret")
    assert (status, code, msg) == (400, -1022, "Signature for this request is not valid.")
    status, code, msg = c.err("GET", "/fapi/v2/balance", ts_shift_ms=-10_000)
    assert (status, code, msg) == (400, -1021, "Timestamp for this request is outside of the recvWindow.")
    assert c.call("GET", "/fapi/v2/balance", {"recvWindow": 20_000}, ts_shift_ms=-10_000).ok  # a wider window
    status, code, _ = c.err("GET", "/fapi/v2/balance", ts_shift_ms=5_000)
    assert (status, code) == (400, -1021)
    assert Client(sim, key=None).err("GET", "/fapi/v2/balance") == (401, -2014, "API-key format invalid.")
    status, code, _ = Client(sim, key="x" * 64).err("GET", "/fapi/v2/balance")
    assert (status, code) == (401, -2015)
    r = c.http.get(f"{sim.rest_url}/fapi/v2/balance", params={"timestamp": c.now()},
                   headers={"X-MBX-APIKEY": DEFAULT_API_KEY}, timeout=5)
    assert r.status_code == 400 and r.json()["code"] == -1102  # signature missing
    snap = sim.rest.account.snapshot()
    assert snap["signature_failures"] == 1 and snap["timestamp_failures"] == 2


def test_conditional_types_refused_on_order_endpoint_with_4120(sim: Simulator) -> None:
    c = Client(sim)
    for otype in ("STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"):
        status, code, msg = c.err("POST", "/fapi/v1/order", {"symbol": SYMBOL, "side": "SELL", "type": otype,
                                                            "quantity": "1", "stopPrice": "100"})
        assert (status, code) == (400, -4120)
        assert msg == ("Order type not supported for this endpoint. Please use the Algo Order API "
                       "endpoints instead.")
    assert sim.rest.account.snapshot()["orders"] == 0


def test_market_order_fills_at_the_simulated_price_and_is_queryable(sim: Simulator) -> None:
    c = Client(sim)
    order = c.buy("0.5", cid="entry-1")
    assert order["status"] == "FILLED" and order["executedQty"] == "0.500"
    assert order["clientOrderId"] == "entry-1"
    assert abs(float(order["avgPrice"]) / c.price() - 1) < 0.01
    by_cid = c.ok("GET", "/fapi/v1/order", {"symbol": SYMBOL, "origClientOrderId": "entry-1"})
    by_id = c.ok("GET", "/fapi/v1/order", {"symbol": SYMBOL, "orderId": order["orderId"]})
    assert by_cid == by_id and by_cid["status"] == "FILLED"
    assert c.err("GET", "/fapi/v1/order", {"symbol": SYMBOL, "origClientOrderId": "nope"}) == \
        (400, -2013, "Order does not exist.")
    risk = c.ok("GET", "/fapi/v2/positionRisk", {"symbol": SYMBOL})
    assert risk[0]["positionAmt"] == "0.500" and risk[0]["entryPrice"] == order["avgPrice"]
    assert c.ok("GET", "/fapi/v1/openOrders") == []
    bal = c.ok("GET", "/fapi/v2/balance")[0]
    assert bal["asset"] == "USDT" and float(bal["balance"]) < 10_000  # the taker fee
    assert float(c.ok("GET", "/fapi/v2/account")["totalWalletBalance"]) == float(bal["balance"])
    # reduce-only closes, and a second reduce-only finds nothing to reduce
    sell = {"symbol": SYMBOL, "side": "SELL", "type": "MARKET", "quantity": "0.5", "reduceOnly": "true"}
    assert c.ok("POST", "/fapi/v1/order", sell | {"newClientOrderId": "x-1"})["status"] == "NEW"  # ACK
    assert c.err("POST", "/fapi/v1/order", sell)[1] == -2022
    assert sim.rest.account.snapshot()["client_order_counts"] == {"entry-1": 1, "x-1": 1}


def test_precision_notional_and_margin_checks(sim: Simulator) -> None:
    c = Client(sim)
    base = {"symbol": SYMBOL, "side": "BUY", "type": "MARKET"}
    assert c.err("POST", "/fapi/v1/order", base | {"quantity": "0.0005"})[:2] == (400, -1111)
    assert c.err("POST", "/fapi/v1/order", base | {"quantity": "0.001"})[:2] == (400, -4164)  # ~0.2 USDT
    sim.rest.account.set_balance("1")
    assert c.err("POST", "/fapi/v1/order", base | {"quantity": "1"}) == (400, -2019,
                                                                         "Margin is insufficient.")
    sim.rest.account.set_balance("10000")
    sim.rest.account.reject_next_order(-4164)
    assert c.err("POST", "/fapi/v1/order", base | {"quantity": "1"})[1] == -4164
    sim.rest.account.reject_next_order(-2019)
    assert c.err("POST", "/fapi/v1/order", base | {"quantity": "1"})[1] == -2019
    assert c.buy("1")["status"] == "FILLED"


def test_algo_order_lifecycle_and_weights(sim: Simulator) -> None:
    c = Client(sim)
    c.buy("1")
    px = c.price()
    algo = {"algoType": "CONDITIONAL", "symbol": SYMBOL, "side": "SELL", "type": "STOP_MARKET",
            "triggerPrice": f"{px * 0.9:.3f}", "quantity": "1", "reduceOnly": "true", "clientAlgoId": "sl-1"}
    placed = c.ok("POST", "/fapi/v1/algoOrder", algo)
    assert placed["algoStatus"] == "NEW" and placed["clientAlgoId"] == "sl-1"
    assert placed["algoType"] == "CONDITIONAL" and placed["orderType"] == "STOP_MARKET"
    assert c.err("POST", "/fapi/v1/algoOrder", algo)[1] == -4116  # the id is open
    assert c.err("POST", "/fapi/v1/algoOrder", algo | {"clientAlgoId": "sl-2",
                                                       "triggerPrice": f"{px * 0.9:.5f}1"})[1] == -1111
    assert c.err("POST", "/fapi/v1/algoOrder", algo | {"clientAlgoId": "sl-3",
                                                       "triggerPrice": f"{px * 1.1:.3f}"})[1] == -2021
    tp = algo | {"type": "TAKE_PROFIT_MARKET", "triggerPrice": f"{px * 1.1:.3f}", "clientAlgoId": "tp-1"}
    c.ok("POST", "/fapi/v1/algoOrder", tp)
    assert c.ok("GET", "/fapi/v1/algoOrder", {"clientAlgoId": "sl-1"})["algoId"] == placed["algoId"]
    r = c.call("GET", "/fapi/v1/openAlgoOrders", {"symbol": SYMBOL})
    assert {a["clientAlgoId"] for a in r.json()} == {"sl-1", "tp-1"}
    before = int(r.headers["X-MBX-USED-WEIGHT-1M"])
    r = c.call("GET", "/fapi/v2/positionRisk")
    assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) - before == 5
    r = c.call("GET", "/fapi/v1/openAlgoOrders")
    assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) - before == 45  # 40 without a symbol
    cancel = c.ok("DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "sl-1"})
    assert cancel["clientAlgoId"] == "sl-1"
    assert c.ok("GET", "/fapi/v1/algoOrder", {"algoId": placed["algoId"]})["algoStatus"] == "CANCELED"
    assert c.err("DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "sl-1"})[1] == -2011
    c.ok("DELETE", "/fapi/v1/algoOpenOrders", {"symbol": SYMBOL})
    assert c.ok("GET", "/fapi/v1/openAlgoOrders") == []


def test_protective_order_triggers_when_the_price_crosses_it(sim: Simulator) -> None:
    c = Client(sim)
    c.buy("1")
    px = c.price()
    c.ok("POST", "/fapi/v1/algoOrder", {"algoType": "CONDITIONAL", "symbol": SYMBOL, "side": "SELL",
                                        "type": "STOP_MARKET", "triggerPrice": f"{px * 0.97:.3f}",
                                        "quantity": "1", "reduceOnly": "true", "clientAlgoId": "sl-9"})
    sim.market.inject_surge(SYMBOL, -6.0, 1.0)
    # no request needed: the simulator's housekeeping thread fires it
    wait_for(lambda: sim.rest.account.position(SYMBOL).amount == 0)
    done = c.ok("GET", "/fapi/v1/algoOrder", {"clientAlgoId": "sl-9"})
    assert done["algoStatus"] == "FINISHED" and done["actualOrderId"]
    fill = c.ok("GET", "/fapi/v1/order", {"symbol": SYMBOL, "orderId": done["actualOrderId"]})
    assert fill["status"] == "FILLED" and float(fill["avgPrice"]) <= px * 0.97


def test_order_accepted_then_answered_too_late(sim: Simulator) -> None:
    c = Client(sim)
    sim.rest.account.delay_next_order(3.0)
    with pytest.raises(requests.ReadTimeout):
        c.call("POST", "/fapi/v1/order", {"symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quantity": "1",
                                          "newClientOrderId": "late-1"}, timeout=0.5)
    # the exchange has it although the client saw a timeout
    found = c.ok("GET", "/fapi/v1/order", {"symbol": SYMBOL, "origClientOrderId": "late-1"})
    assert found["status"] == "FILLED"
    assert sim.rest.account.snapshot()["client_order_counts"] == {"late-1": 1}


def test_account_controls_over_http(sim: Simulator) -> None:
    c = Client(sim)
    c.buy("1", cid="h-1")
    snap = requests.get(f"{sim.rest_url}/_sim/account", timeout=5).json()["result"]
    assert snap["positions"][SYMBOL]["amount"] == "1" and snap["client_order_counts"] == {"h-1": 1}
    assert requests.get(f"{sim.rest_url}/_sim/account/reject_next_order?code=-2019", timeout=5).ok
    assert c.err("POST", "/fapi/v1/order", {"symbol": SYMBOL, "side": "BUY", "type": "MARKET",
                                            "quantity": "1"})[1] == -2019
    assert requests.get(f"{sim.rest_url}/_sim/account/balance?amount=123", timeout=5).ok
    assert c.ok("GET", "/fapi/v2/balance")[0]["balance"].startswith("123")
