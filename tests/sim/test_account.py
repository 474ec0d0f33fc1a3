"""The simulated account over real sockets: Binance's signature, timestamp and key checks, the order
and Algo Service endpoints with their errors and weights, protective orders triggering on the
simulated price, faults and observations. Requests are signed by hand here, independent of the bot's
client, so the simulator is checked against Binance's rules rather than against our own code."""

from __future__ import annotations

import hashlib
import hmac
import time
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

    def call(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        in_body: bool = False,
        ts_shift_ms: int = 0,
        secret: str | None = None,
        timeout: float = 5.0,
    ) -> requests.Response:
        p = dict(params or {})
        p["timestamp"] = self.now() + ts_shift_ms
        text = urlencode(p)
        sig = hmac.new((secret or self.secret).encode(), text.encode(), hashlib.sha256).hexdigest()
        headers = {"X-MBX-APIKEY": self.key} if self.key is not None else {}
        url = self.sim.rest_url + path
        if in_body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return self.http.request(
                method, url, data=f"{text}&signature={sig}", headers=headers, timeout=timeout
            )
        return self.http.request(method, f"{url}?{text}&signature={sig}", headers=headers, timeout=timeout)

    def ok(self, method: str, path: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        r = self.call(method, path, params, **kw)
        assert r.status_code == 200, r.text
        return r.json()

    def err(
        self, method: str, path: str, params: dict[str, Any] | None = None, **kw: Any
    ) -> tuple[int, int, str]:
        r = self.call(method, path, params, **kw)
        body = r.json()
        return r.status_code, body["code"], body["msg"]

    def price(self) -> float:
        return float(
            self.http.get(f"{self.sim.rest_url}/fapi/v1/ticker/price", params={"symbol": SYMBOL}).json()[
                "price"
            ]
        )

    def buy(self, qty: str, cid: str = "b1") -> Any:
        return self.ok(
            "POST",
            "/fapi/v1/order",
            {
                "symbol": SYMBOL,
                "side": "BUY",
                "type": "MARKET",
                "quantity": qty,
                "newClientOrderId": cid,
                "newOrderRespType": "RESULT",
            },
        )


def test_signature_in_query_in_body_and_split_between_both(sim: Simulator) -> None:
    c = Client(sim)
    assert c.ok("POST", "/fapi/v1/leverage", {"symbol": SYMBOL, "leverage": 3})["leverage"] == 3
    assert c.ok("POST", "/fapi/v1/leverage", {"symbol": SYMBOL, "leverage": 4}, in_body=True)["leverage"] == 4
    # Binance signs query string + body concatenated: part of the parameters in each
    query = urlencode({"symbol": SYMBOL})
    body = urlencode({"leverage": 5, "timestamp": c.now()})
    sig = hmac.new(DEFAULT_API_SECRET.encode(), (query + body).encode(), hashlib.sha256).hexdigest()
    r = c.http.post(
        f"{sim.rest_url}/fapi/v1/leverage?{query}",
        data=f"{body}&signature={sig}",
        headers={"X-MBX-APIKEY": DEFAULT_API_KEY, "Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )
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
    r = c.http.get(
        f"{sim.rest_url}/fapi/v2/balance",
        params={"timestamp": c.now()},
        headers={"X-MBX-APIKEY": DEFAULT_API_KEY},
        timeout=5,
    )
    assert r.status_code == 400 and r.json()["code"] == -1102  # signature missing
    snap = sim.rest.account.snapshot()
    assert snap["signature_failures"] == 1 and snap["timestamp_failures"] == 2


def test_conditional_types_refused_on_order_endpoint_with_4120(sim: Simulator) -> None:
    c = Client(sim)
    for otype in ("STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"):
        status, code, msg = c.err(
            "POST",
            "/fapi/v1/order",
            {"symbol": SYMBOL, "side": "SELL", "type": otype, "quantity": "1", "stopPrice": "100"},
        )
        assert (status, code) == (400, -4120)
        assert msg == (
            "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."
        )
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
    assert c.err("GET", "/fapi/v1/order", {"symbol": SYMBOL, "origClientOrderId": "nope"}) == (
        400,
        -2013,
        "Order does not exist.",
    )
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
    assert c.err("POST", "/fapi/v1/order", base | {"quantity": "1"}) == (
        400,
        -2019,
        "Margin is insufficient.",
    )
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
    algo = {
        "algoType": "CONDITIONAL",
        "symbol": SYMBOL,
        "side": "SELL",
        "type": "STOP_MARKET",
        "triggerPrice": f"{px * 0.9:.3f}",
        "quantity": "1",
        "reduceOnly": "true",
        "clientAlgoId": "sl-1",
    }
    placed = c.ok("POST", "/fapi/v1/algoOrder", algo)
    assert placed["algoStatus"] == "NEW" and placed["clientAlgoId"] == "sl-1"
    assert placed["algoType"] == "CONDITIONAL" and placed["orderType"] == "STOP_MARKET"
    assert c.err("POST", "/fapi/v1/algoOrder", algo)[1] == -4116  # the id is open
    assert (
        c.err(
            "POST", "/fapi/v1/algoOrder", algo | {"clientAlgoId": "sl-2", "triggerPrice": f"{px * 0.9:.5f}1"}
        )[1]
        == -1111
    )
    assert (
        c.err(
            "POST", "/fapi/v1/algoOrder", algo | {"clientAlgoId": "sl-3", "triggerPrice": f"{px * 1.1:.3f}"}
        )[1]
        == -2021
    )
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
    c.ok(
        "POST",
        "/fapi/v1/algoOrder",
        {
            "algoType": "CONDITIONAL",
            "symbol": SYMBOL,
            "side": "SELL",
            "type": "STOP_MARKET",
            "triggerPrice": f"{px * 0.97:.3f}",
            "quantity": "1",
            "reduceOnly": "true",
            "clientAlgoId": "sl-9",
        },
    )
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
        c.call(
            "POST",
            "/fapi/v1/order",
            {
                "symbol": SYMBOL,
                "side": "BUY",
                "type": "MARKET",
                "quantity": "1",
                "newClientOrderId": "late-1",
            },
            timeout=0.5,
        )
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
    assert (
        c.err("POST", "/fapi/v1/order", {"symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quantity": "1"})[
            1
        ]
        == -2019
    )
    assert requests.get(f"{sim.rest_url}/_sim/account/balance?amount=123", timeout=5).ok
    assert c.ok("GET", "/fapi/v2/balance")[0]["balance"].startswith("123")


# --------------------------------------------------------------------------- "execution status unknown"

MSG_1007 = "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
UNKNOWN = {  # kind -> (HTTP status, Binance error body or None for a truncated 200)
    "503": (503, {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}),
    "408": (408, {"code": -1007, "msg": MSG_1007}),
    "-1006": (
        400,
        {
            "code": -1006,
            "msg": "An unexpected response was received from the message bus. Execution status unknown.",
        },
    ),
    "-1007": (400, {"code": -1007, "msg": MSG_1007}),
    "garbled": (200, None),
    "error200": (200, {"code": -1007, "msg": MSG_1007}),
}


def order(cid: str, qty: str = "1") -> dict[str, Any]:
    return {
        "symbol": SYMBOL,
        "side": "BUY",
        "type": "MARKET",
        "quantity": qty,
        "newClientOrderId": cid,
        "newOrderRespType": "RESULT",
    }


def stop_loss(cid: str, trigger: float, **extra: Any) -> dict[str, Any]:
    return {
        "algoType": "CONDITIONAL",
        "symbol": SYMBOL,
        "side": "SELL",
        "type": "STOP_MARKET",
        "triggerPrice": f"{trigger:.3f}",
        "quantity": "1",
        "reduceOnly": "true",
        "clientAlgoId": cid,
        **extra,
    }


def assert_answer(r: requests.Response, kind: str) -> None:
    status, body = UNKNOWN[kind]
    assert r.status_code == status, r.text
    if body is None:
        with pytest.raises(ValueError):
            r.json()
    else:
        assert r.json() == body


@pytest.mark.parametrize("kind", list(UNKNOWN))
def test_unknown_answers_to_an_executed_and_an_unexecuted_order(sim: Simulator, kind: str) -> None:
    c = Client(sim)
    account = sim.rest.account
    account.answer_next_order(kind, count=1, executed=True)
    assert_answer(c.call("POST", "/fapi/v1/order", order("done-1")), kind)
    found = c.ok("GET", "/fapi/v1/order", {"symbol": SYMBOL, "origClientOrderId": "done-1"})
    assert found["status"] == "FILLED"
    account.answer_next_order(kind, count=1, executed=False)
    assert_answer(c.call("POST", "/fapi/v1/order", order("lost-1")), kind)
    assert c.err("GET", "/fapi/v1/order", {"symbol": SYMBOL, "origClientOrderId": "lost-1"})[1] == -2013
    assert account.snapshot()["client_order_counts"] == {"done-1": 1}
    assert account.position(SYMBOL).amount == 1
    # algo placements too; the next placement after the scripted ones is answered normally
    px = c.price()
    account.answer_next_order(kind, count=2, executed=True)
    assert_answer(c.call("POST", "/fapi/v1/algoOrder", stop_loss("sl-u1", px * 0.9)), kind)
    assert_answer(c.call("POST", "/fapi/v1/order", order("done-2")), kind)
    assert c.ok("GET", "/fapi/v1/algoOrder", {"clientAlgoId": "sl-u1"})["algoStatus"] == "NEW"
    account.answer_next_order(kind, executed=False)
    assert_answer(c.call("POST", "/fapi/v1/algoOrder", stop_loss("sl-u2", px * 0.8)), kind)
    assert c.err("GET", "/fapi/v1/algoOrder", {"clientAlgoId": "sl-u2"})[1] == -2013
    assert c.buy("1", cid="normal-1")["status"] == "FILLED"
    assert account.snapshot()["client_order_counts"] == {"done-1": 1, "done-2": 1, "normal-1": 1}


def test_unknown_answer_faults_are_cleared_and_checked(sim: Simulator) -> None:
    account = sim.rest.account
    with pytest.raises(ValueError):
        account.answer_next_order("504")
    account.answer_next_order("503", count=3)
    account.clear_faults()
    assert Client(sim).buy("1", cid="after-clear")["status"] == "FILLED"


def test_avg_price_mode_changes_only_the_placement_answer(sim: Simulator) -> None:
    c = Client(sim)
    account = sim.rest.account
    account.set_avg_price_mode("missing")
    placed = c.buy("1", cid="m-1")
    assert "avgPrice" not in placed and "cumQuote" not in placed and placed["status"] == "FILLED"
    true = c.ok("GET", "/fapi/v1/order", {"symbol": SYMBOL, "origClientOrderId": "m-1"})
    assert float(true["avgPrice"]) > 0 and float(true["cumQuote"]) > 0
    account.set_avg_price_mode("zero")
    placed = c.buy("1", cid="z-1")
    assert (placed["avgPrice"], placed["cumQuote"], placed["executedQty"]) == ("0.00", "0", "1.000")
    true = c.ok("GET", "/fapi/v1/order", {"symbol": SYMBOL, "origClientOrderId": "z-1"})
    assert float(true["avgPrice"]) > 0
    account.set_avg_price_mode("normal")
    assert float(c.buy("1", cid="n-1")["avgPrice"]) > 0
    with pytest.raises(ValueError):
        account.set_avg_price_mode("absent")


@pytest.mark.parametrize("path", ["/fapi/v2/positionRisk", "/fapi/v3/positionRisk"])
def test_position_risk_faults(sim: Simulator, path: str) -> None:
    c = Client(sim)
    account = sim.rest.account
    c.ok("POST", "/fapi/v1/leverage", {"symbol": "ETHUSDT", "leverage": 2})  # a flat row (v2 only)
    c.buy("1")
    v2 = path.startswith("/fapi/v2/")
    rows = {r["symbol"]: r["positionAmt"] for r in c.ok("GET", path)}
    assert rows == ({SYMBOL: "1.000", "ETHUSDT": "0.000"} if v2 else {SYMBOL: "1.000"})
    account.position_risk_next("empty", count=2)
    assert c.ok("GET", path) == [] and c.ok("GET", path, {"symbol": SYMBOL}) == []
    account.position_risk_next("garbled")
    r = c.call("GET", path)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    account.position_risk_next("missing_rows")
    assert [r["symbol"] for r in c.ok("GET", path)] == (["ETHUSDT"] if v2 else [])
    account.position_risk_next("zero")
    assert {r["symbol"]: r["positionAmt"] for r in c.ok("GET", path)} == {s: "0.000" for s in rows}
    assert {r["symbol"]: r["positionAmt"] for r in c.ok("GET", path)} == rows  # faults used up
    with pytest.raises(ValueError):
        account.position_risk_next("wrong")


#: the fields of a positionRisk v3 row (Binance "Position Information V3"); v2's leverage, marginType,
#: maxNotionalValue and isAutoAddMargin are gone
V3_FIELDS = {
    "symbol",
    "positionSide",
    "positionAmt",
    "entryPrice",
    "breakEvenPrice",
    "markPrice",
    "unRealizedProfit",
    "liquidationPrice",
    "isolatedMargin",
    "notional",
    "marginAsset",
    "isolatedWallet",
    "initialMargin",
    "maintMargin",
    "positionInitialMargin",
    "openOrderInitialMargin",
    "adl",
    "bidNotional",
    "askNotional",
    "updateTime",
}
V2_FIELDS = {
    "symbol",
    "positionAmt",
    "entryPrice",
    "breakEvenPrice",
    "markPrice",
    "unRealizedProfit",
    "liquidationPrice",
    "leverage",
    "maxNotionalValue",
    "marginType",
    "isolatedMargin",
    "isAutoAddMargin",
    "positionSide",
    "notional",
    "isolatedWallet",
    "updateTime",
}


def test_position_risk_v2_and_v3_each_in_their_own_shape(sim: Simulator) -> None:
    """v3 lists only symbols with a position or open orders (a flat symbol asked about by name answers
    ``[]``) and its rows have margins, no leverage; v2 keeps a row per touched symbol, flat or not."""
    c = Client(sim)
    c.ok("POST", "/fapi/v1/leverage", {"symbol": SYMBOL, "leverage": 5})
    assert c.ok("GET", "/fapi/v3/positionRisk", {"symbol": SYMBOL}) == []
    assert c.ok("GET", "/fapi/v3/positionRisk") == []
    [flat] = c.ok("GET", "/fapi/v2/positionRisk", {"symbol": SYMBOL})
    assert set(flat) == V2_FIELDS and flat["positionAmt"] == "0.000" and flat["leverage"] == "5"
    c.buy("2")
    [row] = c.ok("GET", "/fapi/v3/positionRisk", {"symbol": SYMBOL})
    assert set(row) == V3_FIELDS
    assert row["symbol"] == SYMBOL and row["positionSide"] == "BOTH" and row["positionAmt"] == "2.000"
    assert row["marginAsset"] == "USDT" and isinstance(row["adl"], int) and isinstance(row["updateTime"], int)
    notional = float(row["notional"])
    assert notional == pytest.approx(2 * float(row["markPrice"]))
    assert float(row["initialMargin"]) == pytest.approx(notional / 5, rel=1e-6)
    assert float(row["positionInitialMargin"]) == float(row["initialMargin"])
    assert [r["symbol"] for r in c.ok("GET", "/fapi/v3/positionRisk")] == [SYMBOL]
    [row2] = c.ok("GET", "/fapi/v2/positionRisk", {"symbol": SYMBOL})
    assert set(row2) == V2_FIELDS and row2["positionAmt"] == "2.000"
    c.ok(
        "POST",
        "/fapi/v1/order",
        {"symbol": SYMBOL, "side": "SELL", "type": "MARKET", "quantity": "2", "reduceOnly": "true"},
    )
    assert c.ok("GET", "/fapi/v3/positionRisk", {"symbol": SYMBOL}) == []  # flat again: no row
    assert c.ok("GET", "/fapi/v2/positionRisk", {"symbol": SYMBOL})[0]["positionAmt"] == "0.000"


def test_order_answers_carry_the_accounts_order_counts(sim: Simulator) -> None:
    """``X-MBX-ORDER-COUNT-10S`` / ``-1M`` on every order placement's answer (order and algoOrder POST),
    counting every placement of the account whoever sent it; other answers carry none."""
    c = Client(sim)
    account = sim.rest.account

    def counts(r: requests.Response) -> tuple[int, int]:
        return int(r.headers["X-MBX-ORDER-COUNT-10S"]), int(r.headers["X-MBX-ORDER-COUNT-1M"])

    first = c.call("POST", "/fapi/v1/order", order("oc-1"))
    assert first.status_code == 200
    ten, minute = counts(first)
    assert ten >= 1 and minute >= ten
    # two placements that reach the account without this connection (another process, the web UI)
    for cid in ("oc-x1", "oc-x2"):
        assert account.handle("POST", "/fapi/v1/order", order(cid))["status"] == "FILLED"
    second = c.call("POST", "/fapi/v1/order", order("oc-2") | {"side": "SELL", "reduceOnly": "true"})
    assert second.status_code == 200
    ten2, minute2 = counts(second)
    # fixed windows: unless a new one began in between, the count went up by exactly three
    assert minute2 == minute + 3 or minute2 <= 3
    assert ten2 == ten + 3 or ten2 <= 3
    algo = c.call("POST", "/fapi/v1/algoOrder", stop_loss("oc-sl", c.price() * 0.9))
    assert algo.status_code == 200 and counts(algo)[1] in (minute2 + 1, 1)
    other = c.call("GET", "/fapi/v1/openOrders", {"symbol": SYMBOL})
    assert other.status_code == 200
    assert not any(h.lower().startswith("x-mbx-order-count") for h in other.headers)


def test_hedge_mode_endpoints_orders_and_rows(sim: Simulator) -> None:
    c = Client(sim)
    account = sim.rest.account
    r = c.call("GET", "/fapi/v1/positionSide/dual")
    before = int(r.headers["X-MBX-USED-WEIGHT-1M"])
    assert r.json() == {"dualSidePosition": False}
    r = c.call("GET", "/fapi/v1/positionSide/dual")
    assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) - before == 30
    # one-way mode: LONG / SHORT do not fit
    assert c.err("POST", "/fapi/v1/order", order("w-1") | {"positionSide": "LONG"}) == (
        400,
        -4061,
        "Order's position side does not match user's setting.",
    )
    assert c.err("POST", "/fapi/v1/positionSide/dual", {"dualSidePosition": "false"}) == (
        400,
        -4059,
        "No need to change position side.",
    )
    assert c.ok("POST", "/fapi/v1/positionSide/dual", {"dualSidePosition": "true"}) == {
        "code": 200,
        "msg": "success",
    }
    assert account.dual_side and c.ok("GET", "/fapi/v1/positionSide/dual") == {"dualSidePosition": True}
    px = c.price()
    for extra in ({}, {"positionSide": "BOTH"}):
        assert c.err("POST", "/fapi/v1/order", order("h-1") | extra)[:2] == (400, -4061)
        assert c.err("POST", "/fapi/v1/algoOrder", stop_loss("h-sl", px * 0.9) | extra)[:2] == (400, -4061)
    assert c.err("POST", "/fapi/v1/order", order("h-2") | {"positionSide": "LONG"})[:2] == (400, -4000)
    assert account.snapshot()["orders"] == 0
    # a position opened in one-way mode, the account switched behind the bot's back
    assert c.ok("POST", "/fapi/v1/positionSide/dual", {"dualSidePosition": "false"})["code"] == 200
    c.buy("2")
    account.set_dual_side(True)
    rows = c.ok("GET", "/fapi/v2/positionRisk", {"symbol": SYMBOL})
    assert [(r["positionSide"], r["positionAmt"]) for r in rows] == [("LONG", "2.000"), ("SHORT", "0.000")]
    assert c.err("POST", "/fapi/v1/positionSide/dual", {"dualSidePosition": "false"}) == (
        400,
        -4068,
        "Position side cannot be changed if there exists position.",
    )
    account.set_dual_side(False)
    c.ok("POST", "/fapi/v1/order", {"symbol": SYMBOL, "side": "SELL", "type": "MARKET", "quantity": "5"})
    account.set_dual_side(True)
    rows = c.ok("GET", "/fapi/v2/positionRisk", {"symbol": SYMBOL})
    assert [(r["positionSide"], r["positionAmt"]) for r in rows] == [("LONG", "0.000"), ("SHORT", "-3.000")]
    rows = c.ok("GET", "/fapi/v3/positionRisk", {"symbol": SYMBOL})  # v3: the side that holds one only
    assert [(r["positionSide"], r["positionAmt"]) for r in rows] == [("SHORT", "-3.000")]
    assert c.ok("GET", "/fapi/v2/account")["positions"][0]["positionSide"] == "SHORT"


def test_triggering_algo_order_is_held_listed_and_not_cancellable(sim: Simulator) -> None:
    c = Client(sim)
    account = sim.rest.account
    c.buy("1")
    px = c.price()
    c.ok("POST", "/fapi/v1/algoOrder", stop_loss("sl-t", px * 0.97))
    account.set_triggering_hold_s(3.0)
    sim.market.inject_surge(SYMBOL, -6.0, 1.0)

    def algo() -> dict[str, Any]:
        return c.ok("GET", "/fapi/v1/algoOrder", {"clientAlgoId": "sl-t"})

    wait_for(lambda: algo()["algoStatus"] == "TRIGGERING", what="the stop loss TRIGGERING")
    seen = time.monotonic()
    listed = c.ok("GET", "/fapi/v1/openAlgoOrders", {"symbol": SYMBOL})
    assert [(a["clientAlgoId"], a["algoStatus"]) for a in listed] == [("sl-t", "TRIGGERING")]
    assert c.err("DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "sl-t"})[:2] == (400, -2011)
    assert account.position(SYMBOL).amount == 1
    done = wait_for(lambda: (a := algo())["algoStatus"] == "FINISHED" and a, what="the stop loss FINISHED")
    assert time.monotonic() - seen > 1.0  # held (about 3 s from the crossing), not filled at once
    assert done["actualOrderId"] and account.position(SYMBOL).amount == 0
    assert c.ok("GET", "/fapi/v1/openAlgoOrders") == []


def test_new_account_controls_over_http(sim: Simulator) -> None:
    c = Client(sim)
    account = sim.rest.account

    def ctl(name: str, **params: Any) -> requests.Response:
        return requests.get(f"{sim.rest_url}/_sim/account/{name}", params=params, timeout=5)

    assert ctl("answer_next_order", kind="408", count=1, executed="false").ok
    assert c.call("POST", "/fapi/v1/order", order("x-1")).status_code == 408
    assert c.err("GET", "/fapi/v1/order", {"symbol": SYMBOL, "origClientOrderId": "x-1"})[1] == -2013
    assert ctl("answer_next_order", kind="nope").status_code == 400
    assert ctl("answer_next_order", kind="503", executed="maybe").status_code == 400
    assert ctl("avg_price_mode", mode="missing").ok
    assert "avgPrice" not in c.buy("1", cid="x-2")
    assert ctl("position_risk_next", kind="empty", count=1).ok
    assert c.ok("GET", "/fapi/v2/positionRisk") == []
    assert ctl("triggering_hold", seconds=3).ok
    assert ctl("clear_faults").ok
    assert "avgPrice" in c.buy("1", cid="x-3")
    assert ctl("dual_side", enabled="true").ok and account.dual_side
    assert requests.get(f"{sim.rest_url}/_sim/account", timeout=5).json()["result"]["dual_side"] is True
    assert ctl("dual_side", enabled="false").ok and not account.dual_side
