"""Signed answers decoded into structs: the fields surge reads, and every other shape malformed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from surge.exchange.answers import AlgoOrder, Balance, OrderAnswer, PositionMode, PositionRisk, typed
from surge.exchange.wire import WireError

ORDER = (
    b'{"orderId":42,"symbol":"BTCUSDT","status":"FILLED","clientOrderId":"sg-e-BTCUSDT-1",'
    b'"price":"0","avgPrice":"100.50","origQty":"2","executedQty":"2","cumQuote":"201.00",'
    b'"type":"MARKET","side":"BUY","updateTime":1700000000123}'
)


def test_order_fields() -> None:
    order = typed(OrderAnswer)(ORDER)
    assert isinstance(order, OrderAnswer) and order.filled and order.order_id == 42
    assert order.executed_qty == Decimal("2") and order.fill_price == Decimal("100.50")
    assert order.stamp == 1700000000123 and order.client_order_id == "sg-e-BTCUSDT-1"


def test_order_without_a_price_reads_cum_quote_then_nothing() -> None:
    no_avg = typed(OrderAnswer)(b'{"status":"FILLED","executedQty":"2","cumQuote":"201","time":5}')
    assert no_avg.fill_price == Decimal("100.5") and no_avg.stamp == 5
    bare = typed(OrderAnswer)(b'{"status":"NEW","avgPrice":"0.00"}')
    assert bare.fill_price == 0 and not bare.filled and bare.stamp == 0


def test_algo_order_actual_id_before_and_after_it_fired() -> None:
    waiting = typed(AlgoOrder)(
        b'{"algoId":7,"clientAlgoId":"sg-sl-X-1","algoStatus":"NEW","actualOrderId":""}'
    )
    fired = typed(AlgoOrder)(
        b'{"algoId":7,"algoStatus":"FINISHED","actualOrderId":"991","triggerPrice":"9.5"}'
    )
    assert waiting.actual_id == 0 and waiting.algo_id == 7
    assert fired.actual_id == 991 and fired.trigger_price == Decimal("9.5")
    assert typed(AlgoOrder)(b'{"actualOrderId":12}').actual_id == 12


def test_position_risk_rows() -> None:
    rows = typed(list[PositionRisk])(
        b'[{"symbol":"BTCUSDT","positionSide":"BOTH","positionAmt":"0.010","entryPrice":"100",'
        b'"markPrice":"101","updateTime":3,"initialMargin":"1"}]'
    )
    (row,) = rows
    assert row.position_amt == Decimal("0.010") and row.entry_price == 100 and row.leverage is None


@pytest.mark.parametrize(
    "body",
    [
        b'[{"symbol":"BTCUSDT"}]',  # no positionAmt: says nothing about the position
        b'[{"symbol":"BTCUSDT","positionAmt":"NaN"}]',
        b'[{"symbol":"BTCUSDT","positionAmt":"abc"}]',
        b'{"symbol":"BTCUSDT","positionAmt":"1"}',  # not a list
        b'[{"symbol":"BTCUSDT","positionAmt":"1"',  # cut short
    ],
)
def test_malformed_position_risk_is_a_wire_error(body: bytes) -> None:
    with pytest.raises(WireError):
        typed(list[PositionRisk])(body)


def test_an_error_answer_is_handed_back_as_json() -> None:
    """A 2xx carrying Binance's error shape must reach the transport's judgement (-1007: status
    unknown), not decode as an order of default fields."""
    body = b'{"code":-1007,"msg":"Timeout waiting for response from backend server."}'
    assert typed(OrderAnswer)(body) == {
        "code": -1007,
        "msg": "Timeout waiting for response from backend server.",
    }
    with pytest.raises(WireError):
        typed(OrderAnswer)(b'{"code":"200","msg":"success"')  # cut short: still malformed


def test_balance_and_position_mode() -> None:
    (usdt,) = typed(list[Balance])(b'[{"asset":"USDT","balance":"12.5","availableBalance":"10"}]')
    assert usdt.balance == Decimal("12.5") and usdt.available_balance == 10
    assert typed(PositionMode)(b'{"dualSidePosition":true}').dual_side_position is True
    with pytest.raises(WireError):
        typed(PositionMode)(b'{"dualSidePosition":"true"}')  # a string is not the boolean it must be
