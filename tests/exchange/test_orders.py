"""Signed REST against the simulator (signatures, clock offset and the one resync-and-retry on
-1021, the shared weight limiter, secrets kept out of repr, exceptions and logs) and the precision
helpers (tick and step rounding in exact decimals, MIN_NOTIONAL / minQty reasons)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from surge.exchange.orders import (
    Credentials,
    ExchangeError,
    ExchangeUnavailable,
    OrderStatusUnknown,
    SignedRest,
    SymbolRules,
    ceil_to_step,
    floor_to_step,
    fmt_decimal,
    redact,
    round_price,
    rules_from_exchange_info,
    size_order,
)
from surge.exchange.rest import BinanceRest
from surge.sim.account import DEFAULT_API_KEY, DEFAULT_API_SECRET
from surge.sim.simulator import Simulator
from tests.waiting import wait_for

SYMBOL = "SOLUSDT"


@pytest.fixture
def sim(small_sim: Simulator) -> Simulator:
    return small_sim


@pytest.fixture
def rest(sim: Simulator) -> Iterator[BinanceRest]:
    r = BinanceRest(sim.rest_url, read_timeout=1.0, max_attempts=2, backoff_initial_s=0.01)
    try:
        yield r
    finally:
        r.close()


class DriftingClock:
    """Local time plus a drift the test changes, as a badly synchronised machine's clock."""

    def __init__(self) -> None:
        self.drift_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.drift_s


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize(
    ("price", "tick", "expected"),
    [
        (0.1 + 0.2, "0.1", "0.3"),
        (96_123.456, "0.1", "96123.5"),
        (96_123.44, "0.1", "96123.4"),
        (3_400.005, "0.01", "3400.01"),
        (0.0105374999, "0.0000001", "0.0105375"),
        (0.000041234, "0.0000001", "0.0000412"),
        (187.1234, "0.005", "187.125"),
        (25.37, "0.5", "25.5"),
        (1234, "10", "1230"),
        (2.3, "0.00001", "2.3"),
    ],
)
def test_round_price_to_tick(price: float, tick: str, expected: str) -> None:
    got = round_price(price, tick)
    assert fmt_decimal(got) == expected
    assert got % Decimal(tick) == 0


@pytest.mark.parametrize(
    ("qty", "step", "expected"),
    [
        (0.1 + 0.2, "0.1", "0.3"),
        (0.0299999, "0.001", "0.029"),
        (100 / 3400.01, "0.001", "0.029"),
        (9490.99, "1", "9490"),
        (12.3456, "0.01", "12.34"),
        (0.7, "0.1", "0.7"),
        (5.99999999, "0.5", "5.5"),
        (123, "10", "120"),
        (0.0009, "0.001", "0"),
    ],
)
def test_quantity_down_to_step(qty: float, step: str, expected: str) -> None:
    assert fmt_decimal(floor_to_step(qty, step)) == expected


def test_ceil_and_formatting_have_no_float_artefacts() -> None:
    assert fmt_decimal(ceil_to_step(5 / 3, "0.001")) == "1.667"
    assert fmt_decimal(floor_to_step(Decimal("0.30000000000000004"), "0.001")) == "0.3"
    assert fmt_decimal(Decimal("100.000")) == "100" and fmt_decimal(Decimal("-0")) == "0"


def rules(
    tick: str = "0.01",
    step: str = "0.001",
    min_qty: str = "0.001",
    min_notional: str = "20",
    max_qty: str = "1000",
) -> SymbolRules:
    return SymbolRules(
        "ETHUSDT", Decimal(tick), Decimal(step), Decimal(min_qty), Decimal(max_qty), Decimal(min_notional)
    )


def test_size_order_within_the_filters() -> None:
    d = size_order(rules(), 100, 3400.01)
    assert d.ok and fmt_decimal(d.quantity) == "0.029" and d.notional <= 100


@pytest.mark.parametrize(
    ("budget", "price", "r", "words"),
    [
        (10, 3400.0, rules(), "below MIN_NOTIONAL 20"),
        (2, 3400.0, rules(), "below the minimum quantity"),
        (100, 95_000.0, rules(step="0.001", min_qty="0.001", min_notional="100"), "below MIN_NOTIONAL 100"),
        (10_000_000, 1.0, rules(max_qty="1000"), "exceeds the maximum"),
        (100, 0.0, rules(), "no usable price"),
    ],
)
def test_size_too_small_or_large_gives_a_reason(
    budget: float, price: float, r: SymbolRules, words: str
) -> None:
    d = size_order(r, budget, price)
    assert not d.ok and words in (d.reason or "")


def test_rules_from_the_simulated_exchange_info(rest: BinanceRest) -> None:
    table = rules_from_exchange_info(rest.exchange_info())
    sol = table[SYMBOL]
    assert (sol.tick_size, sol.step_size) == (Decimal("0.001"), Decimal("0.001"))
    assert sol.min_notional == Decimal("5")
    assert table["BTCUSDT"].min_notional == Decimal("100")


# --------------------------------------------------------------------------- signed requests


def test_signed_calls_share_the_weight_limiter(sim: Simulator, rest: BinanceRest) -> None:
    signed = SignedRest(rest, Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET))
    assert signed.set_leverage(SYMBOL, 3)["leverage"] == 3
    before = rest.limiter.total_weight
    signed.position_risk()
    signed.balance()
    signed.open_algo_orders()
    assert rest.limiter.total_weight - before == 5 + 5 + 40
    assert rest.limiter.last_used_weight >= 50  # the exchange's own count came back in the header
    assert signed.get_order(SYMBOL, client_order_id="never-sent") is None  # -2013 -> None


def test_position_risk_reads_v3_in_its_shape(sim: Simulator, rest: BinanceRest) -> None:
    """v3 (weight 5): no row for a flat symbol, rows with margins and no leverage / marginType."""
    signed = SignedRest(rest, Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET))
    signed.sync_time()
    sim.rest.reset_stats()
    before = rest.limiter.total_weight
    assert signed.position_risk(SYMBOL) == [] and signed.position_risk() == []
    signed.new_order(SYMBOL, "BUY", "1", client_order_id="v3-entry")
    [raw] = signed.request("GET", "/fapi/v3/positionRisk", {"symbol": SYMBOL})  # the wire shape
    assert {"initialMargin", "maintMargin", "marginAsset", "adl"} <= set(raw)
    assert not {"leverage", "marginType", "maxNotionalValue"} & set(raw)
    assert sim.rest.stats()["by_path"] == {"/fapi/v3/positionRisk": 3, "/fapi/v1/order": 1}
    assert rest.limiter.total_weight - before == 3 * 5
    [row] = signed.position_risk(SYMBOL)  # the typed answer
    assert row.symbol == SYMBOL and row.position_amt == Decimal("1.000") and row.position_side == "BOTH"
    assert row.leverage is None and row.entry_price > 0


def test_order_budget_follows_the_accounts_order_count(sim: Simulator, rest: BinanceRest) -> None:
    """The ORDERS limits count per account: orders another process placed on it (here a second client
    with its own limiter, and the account directly) come back in X-MBX-ORDER-COUNT-10S / -1M on our
    next order's answer, and our budget takes them, as X-MBX-USED-WEIGHT-1M does for weight."""
    rest.order_limiter.limits = ((10.0, 30), (60.0, 1200))  # budget 27 a 10 s window (margin 0.1)
    # the exchange's windows are fixed (10 s, 1 min): start early in both, so none ends mid-test
    wait_for(
        lambda: time.time() % 10 < 4 and time.time() % 60 < 54, 20.0, "the start of a 10 s window", poll=0.05
    )
    ours = SignedRest(rest, Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET))
    with BinanceRest(sim.rest_url, read_timeout=2.0) as other_rest:
        other = SignedRest(other_rest, Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET))
        for i in range(12):
            other.new_order(SYMBOL, "BUY" if i % 2 == 0 else "SELL", "0.1", client_order_id=f"other-{i}")
        assert other_rest.order_limiter.in_window(10.0) == 12
    for i in range(10):  # straight on the account: the web UI, another API key of the same account
        sim.rest.account.handle(
            "POST",
            "/fapi/v1/order",
            {
                "symbol": SYMBOL,
                "side": "BUY",
                "type": "MARKET",
                "quantity": "0.1",
                "newClientOrderId": f"ui-{i}",
            },
        )
    assert rest.order_limiter.in_window(10.0) == 0
    ours.new_order(SYMBOL, "SELL", "0.1", client_order_id="ours-1", reduce_only=True)
    lim = rest.order_limiter
    assert sim.rest.account.order_counts() == {"10S": 23, "1M": 23}
    assert lim.last_counts == {10.0: 23, 60.0: 23}  # what the answer said: 22 of them not ours
    assert lim.in_window(10.0) == lim.in_window(60.0) == 23 and lim.observed_extra == 22
    assert lim.wait_needed() == 0.0
    for _ in range(4):  # 23 + 4 = 27 fills the budget
        assert lim.acquire() == 0.0
    assert lim.wait_needed() > 0  # the next order waits for the window to slide


def test_wrong_secret_is_a_clear_1022_without_the_secret(sim: Simulator, rest: BinanceRest) -> None:
    wrong = "WrongSecret-" + "z" * 40
    signed = SignedRest(rest, Credentials(DEFAULT_API_KEY, wrong))
    with pytest.raises(ExchangeError) as info:
        signed.balance()
    assert info.value.code == -1022 and "-1022" in str(info.value)
    assert "Signature for this request is not valid." in str(info.value)
    for text in (str(info.value), repr(info.value), repr(signed), repr(signed._creds), str(signed._creds)):
        assert wrong not in text and DEFAULT_API_KEY not in text


def test_clock_drift_resyncs_and_retries_once(sim: Simulator, rest: BinanceRest) -> None:
    clock = DriftingClock()
    signed = SignedRest(rest, Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET), clock=clock)
    signed.sync_time()
    assert abs(signed.offset_ms or 0) < 1000
    clock.drift_s = -20.0  # the machine's clock falls 20 s behind: timestamps now look stale
    assert signed.balance()[0].asset == "USDT"
    assert signed.timestamp_retries == 1 and signed.resyncs == 2
    assert sim.rest.account.snapshot()["timestamp_failures"] == 1
    assert 19_000 < (signed.offset_ms or 0) < 21_000
    clock.drift_s = 30.0  # and now ahead: -1021 "ahead of the server's time", fixed the same way
    signed.position_risk()
    assert signed.timestamp_retries == 2


def test_second_1021_after_the_resync_is_an_error(sim: Simulator, rest: BinanceRest) -> None:
    calls = {"n": 0}

    def clock() -> float:  # right while syncing, 20 s behind whenever a request is signed
        calls["n"] += 1
        return time.time() - (20.0 if calls["n"] % 3 == 0 else 0.0)

    signed = SignedRest(rest, Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET), clock=clock)
    signed.sync_time()
    with pytest.raises(ExchangeError) as info:
        signed.balance()
    assert info.value.code == -1021 and signed.timestamp_retries == 1


def test_lost_order_answer_is_order_status_unknown_never_a_blind_resend(
    sim: Simulator, rest: BinanceRest
) -> None:
    signed = SignedRest(rest, Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET))
    sim.rest.account.delay_next_order(3.0)
    with pytest.raises(OrderStatusUnknown) as info:
        signed.new_order(SYMBOL, "BUY", Decimal("1"), client_order_id="lost-1")
    assert info.value.recv_window_ms == 5000 and info.value.sent_at_ms > 0
    assert "signature" not in str(info.value)
    assert signed.get_order(SYMBOL, client_order_id="lost-1").status == "FILLED"
    assert sim.rest.account.snapshot()["client_order_counts"] == {"lost-1": 1}


def test_conditional_type_on_order_endpoint_raises_4120(sim: Simulator, rest: BinanceRest) -> None:
    signed = SignedRest(rest, Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET))
    with pytest.raises(ExchangeError) as info:
        signed.new_order(
            SYMBOL, "SELL", Decimal("1"), client_order_id="c1", order_type="STOP_MARKET", stopPrice="1"
        )
    assert info.value.code == -4120


def test_no_secret_or_signature_in_debug_logs(
    sim: Simulator, rest: BinanceRest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = DriftingClock()
    good = SignedRest(rest, Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET), clock=clock)
    good.sync_time()
    clock.drift_s = -20.0
    good.balance()  # a -1021, a warning, a resync
    with pytest.raises(ExchangeError):
        SignedRest(rest, Credentials(DEFAULT_API_KEY, "bad-secret-value-123")).balance()
    text = caplog.text
    assert "/fapi/v2/balance?" in text  # debug logging really was on: urllib3 logged the request lines
    for secret in (DEFAULT_API_SECRET, DEFAULT_API_KEY, "bad-secret-value-123"):
        assert secret not in text
    assert "signature=<redacted>" in text and not re.search(r"signature=[0-9a-f]", text)
    assert redact("a?x=1&signature=abcdef0123", "x=1") == "a?<redacted>&signature=<redacted>"


# --------------------------------------------------------------------------- "execution status unknown"

UNKNOWN_KINDS = ["503", "408", "-1006", "-1007", "garbled", "error200"]


def client(rest: BinanceRest, **kw: Any) -> SignedRest:
    signed = SignedRest(rest, Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET), **kw)
    signed.sync_time()  # now, so a scripted fault on the next request is not spent on /fapi/v1/time
    return signed


@pytest.mark.parametrize("executed", [True, False], ids=["executed", "not-executed"])
@pytest.mark.parametrize("kind", UNKNOWN_KINDS)
def test_status_unknown_answer_to_an_order_is_order_status_unknown(
    sim: Simulator, rest: BinanceRest, kind: str, executed: bool
) -> None:
    signed = client(rest)
    sim.rest.account.answer_next_order(kind, executed=executed)
    with pytest.raises(OrderStatusUnknown) as info:
        signed.new_order(SYMBOL, "BUY", Decimal("1"), client_order_id="unk-1")
    assert info.value.recv_window_ms == 5000 and info.value.sent_at_ms > 0
    assert "signature" not in str(info.value) and DEFAULT_API_KEY not in str(info.value)
    found = signed.get_order(SYMBOL, client_order_id="unk-1")
    if executed:
        assert found is not None and found.status == "FILLED"
    else:
        assert found is None
    assert len(sim.rest.account.received) == (1 if executed else 0)
    assert sim.rest.stats()["by_path"]["/fapi/v1/order"] == 2  # the POST, never resent, and the lookup


@pytest.mark.parametrize("kind", UNKNOWN_KINDS)
def test_status_unknown_answer_to_an_algo_order_is_order_status_unknown(
    sim: Simulator, rest: BinanceRest, kind: str
) -> None:
    signed = client(rest)
    signed.new_order(SYMBOL, "BUY", Decimal("2"), client_order_id="e-1")
    mark = signed.position_risk(SYMBOL)[0].mark_price
    account = sim.rest.account
    for cid, executed, below in (("sl-1", True, "0.9"), ("sl-2", False, "0.8")):
        account.answer_next_order(kind, executed=executed)
        with pytest.raises(OrderStatusUnknown):
            signed.new_algo_order(
                SYMBOL,
                "SELL",
                "STOP_MARKET",
                round_price(mark * Decimal(below), "0.001"),
                client_algo_id=cid,
                quantity=Decimal("1"),
                reduce_only=True,
            )
    found = signed.get_algo_order(client_algo_id="sl-1")
    assert found is not None and found.algo_status == "NEW"
    assert signed.get_algo_order(client_algo_id="sl-2") is None


@pytest.mark.parametrize("kind", UNKNOWN_KINDS)
def test_reads_retry_status_unknown_answers_then_give_up_as_unavailable(
    sim: Simulator, rest: BinanceRest, kind: str
) -> None:
    sleeps: list[float] = []
    signed = client(rest, max_attempts=3, sleep=sleeps.append)
    sim.rest.answer_next(kind, count=2)
    assert signed.balance()[0].asset == "USDT"
    assert len(sleeps) == 2 and sim.rest.stats()["by_path"]["/fapi/v2/balance"] == 3
    sim.rest.answer_next(kind, count=3)
    with pytest.raises(ExchangeUnavailable) as info:
        signed.open_orders(SYMBOL)
    assert not isinstance(info.value, OrderStatusUnknown) and "after 3 attempts" in str(info.value)


def test_garbled_position_risk_is_read_again(sim: Simulator, rest: BinanceRest) -> None:
    signed = client(rest, sleep=lambda s: None)
    signed.new_order(SYMBOL, "BUY", Decimal("1"), client_order_id="e-1")
    sim.rest.account.position_risk_next("garbled")
    [row] = signed.position_risk(SYMBOL)
    assert row.position_amt == Decimal("1.000")


def test_state_setting_posts_are_retried_not_order_status_unknown(sim: Simulator, rest: BinanceRest) -> None:
    signed = client(rest, sleep=lambda s: None)
    sim.rest.answer_next("408")
    sim.rest.error_next(1, 503)
    assert signed.set_leverage(SYMBOL, 3)["leverage"] == 3
    assert sim.rest.stats()["by_path"]["/fapi/v1/leverage"] == 3
    assert sim.rest.account.snapshot()["leverage"] == {SYMBOL: 3}


def test_cancel_success_bodies_with_a_code_stay_successes(sim: Simulator, rest: BinanceRest) -> None:
    signed = client(rest, sleep=lambda s: None)
    signed.new_order(SYMBOL, "BUY", Decimal("1"), client_order_id="e-1")
    mark = signed.position_risk(SYMBOL)[0].mark_price
    for cid in ("sl-1", "sl-2", "sl-3"):
        signed.new_algo_order(
            SYMBOL,
            "SELL",
            "STOP_MARKET",
            round_price(mark * Decimal("0.9"), "0.001"),
            client_algo_id=cid,
            quantity=Decimal("1"),
            reduce_only=True,
        )
    body = signed.request("DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "sl-1"})
    assert body["code"] == "200" and body["clientAlgoId"] == "sl-1"  # "code" as a string: a success
    sim.rest.answer_next("-1006")  # a cancel is idempotent: retried
    assert signed.cancel_algo_order(client_algo_id="sl-2") is True
    assert signed.request("DELETE", "/fapi/v1/algoOpenOrders", {"symbol": SYMBOL})["code"] == 200
    assert signed.open_algo_orders(SYMBOL) == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"code": -2011, "msg": "Unknown order sent."}, True),
        ({"code": "200", "msg": "success", "algoId": 1}, False),
        ({"code": 200, "msg": "The operation of cancel all open order is done."}, False),
        ({"code": -1, "orderId": 5}, False),  # no msg: not Binance's error shape
        ({"code": True, "msg": "x"}, False),
        ([{"code": -1, "msg": "x"}], False),
    ],
)
def test_error_shape_under_a_2xx(body: object, error: bool) -> None:
    from surge.exchange.orders import _is_error_body

    assert _is_error_body(body) is error


def test_position_side_dual(sim: Simulator, rest: BinanceRest, monkeypatch: pytest.MonkeyPatch) -> None:
    signed = client(rest)
    before = rest.limiter.total_weight
    assert signed.position_side_dual() is False
    assert rest.limiter.total_weight - before == 30
    sim.rest.account.set_dual_side(True)
    assert signed.position_side_dual() is True
    with pytest.raises(ExchangeError) as info:
        signed.new_order(SYMBOL, "BUY", Decimal("1"), client_order_id="h-1")
    assert info.value.code == -4061
    monkeypatch.setattr(signed, "request", lambda *a, **k: {"dualSidePosition": "true"})
    with pytest.raises(ExchangeUnavailable):
        signed.position_side_dual()
