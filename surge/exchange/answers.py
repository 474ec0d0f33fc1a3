"""The signed answers surge reads, decoded straight from the body into typed structs.

Why structs: the order desk decides on a handful of fields (an order's status and fill, a position's
amount, an algo order's state). Decoding them here, the way :mod:`surge.exchange.wire` decodes the
stream, gives each field one name and one type, and turns an answer of the wrong shape into the same
thing a garbled body is: a malformed answer, which the transport treats as "outcome open" (retried
as unavailable, or "status unknown" for an order placement), never a crash further on. Only the
fields surge reads are declared; the exchange sends many more, which are skipped.

Binance sends quantities and prices as decimal strings (``"1.000"``): they decode to ``Decimal``
exactly, and one that is not a finite number makes the answer malformed.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from surge.exchange.transport import is_error_body
from surge.exchange.wire import WireError, loads

__all__ = [
    "AlgoOrder",
    "Balance",
    "OrderAnswer",
    "PositionMode",
    "PositionRisk",
    "typed",
]

ZERO = Decimal(0)


def _finite(*values: Decimal) -> None:
    """msgspec reads ``"NaN"`` as a Decimal; Binance never sends one, so it is a malformed answer."""
    for value in values:
        if not value.is_finite():
            raise ValueError(f"not a finite number: {value}")


class OrderAnswer(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    """``/fapi/v1/order`` (the placement's answer, and the order asked about by id). A placement's
    ``avgPrice`` may be ``"0.00"`` or absent before the fill is known: 0 here, read back later."""

    symbol: str = ""
    status: str = ""
    order_id: int = 0
    client_order_id: str = ""
    executed_qty: Decimal = ZERO
    avg_price: Decimal = ZERO
    cum_quote: Decimal = ZERO
    update_time: int = 0
    time: int = 0

    def __post_init__(self) -> None:
        _finite(self.executed_qty, self.avg_price, self.cum_quote)

    @property
    def filled(self) -> bool:
        """FILLED with a quantity: the order is done and its fill is in the answer."""
        return self.status == "FILLED" and self.executed_qty > 0

    @property
    def fill_price(self) -> Decimal:
        """``avgPrice``, else ``cumQuote / executedQty``; 0 when the answer carries neither."""
        if self.avg_price > 0:
            return self.avg_price
        if self.cum_quote > 0 and self.executed_qty > 0:
            return self.cum_quote / self.executed_qty
        return ZERO

    @property
    def stamp(self) -> int:
        """When it last changed (``updateTime``, else ``time``; 0 when neither is there)."""
        return self.update_time or self.time


class AlgoOrder(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    """``/fapi/v1/algoOrder`` and the rows of ``/fapi/v1/openAlgoOrders`` (the Algo Service's
    conditional orders). ``actualOrderId`` is ``""`` until the order fired."""

    algo_id: int = 0
    client_algo_id: str = ""
    algo_status: str = ""
    symbol: str = ""
    order_type: str = ""
    trigger_price: Decimal = ZERO
    actual_order_id: int | str = ""

    def __post_init__(self) -> None:
        _finite(self.trigger_price)

    @property
    def actual_id(self) -> int:
        """The id of the order it fired (0 before it did)."""
        value = self.actual_order_id
        if isinstance(value, int):
            return value
        return int(value) if value.isdigit() else 0


class PositionRisk(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    """One row of ``/fapi/v3/positionRisk``. ``positionAmt`` is required: a row without it says
    nothing about the position, so the answer is malformed. v3 rows carry no leverage (None)."""

    symbol: str
    position_amt: Decimal
    entry_price: Decimal = ZERO
    mark_price: Decimal = ZERO
    position_side: str = "BOTH"
    update_time: int = 0
    leverage: int | str | None = None

    def __post_init__(self) -> None:
        _finite(self.position_amt, self.entry_price, self.mark_price)


class Balance(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    """One asset of ``/fapi/v2/balance``."""

    asset: str = ""
    balance: Decimal = ZERO
    available_balance: Decimal = ZERO

    def __post_init__(self) -> None:
        _finite(self.balance, self.available_balance)


class PositionMode(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    """``GET /fapi/v1/positionSide/dual``: hedge mode on or off (a JSON boolean, nothing else)."""

    dual_side_position: bool


def typed(kind: Any) -> Callable[[bytes], Any]:
    """A body decoder for ``kind`` (a struct, or ``list[...]`` of one) for the transport.

    An error answer under a 2xx (``{"code": -1007, "msg": ...}``) is returned as plain JSON for the
    transport to judge; a body of any other shape raises :class:`WireError` (a malformed body).
    """
    decoder = msgspec.json.Decoder(kind)

    def decode(body: bytes) -> Any:
        if b'"msg"' in body:  # maybe Binance's error shape, which a struct of optional fields would accept
            data = loads(body)  # WireError when it is not JSON at all
            if is_error_body(data):
                return data
        try:
            return decoder.decode(body)
        except msgspec.DecodeError:  # ValidationError included
            data = loads(body)  # WireError when it is not JSON at all
            if is_error_body(data):
                return data
            raise WireError(f"not the answer's shape: {body[:120]!r}") from None

    return decode
