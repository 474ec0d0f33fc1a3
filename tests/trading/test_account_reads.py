"""The desk's checked reads: a positionRisk answer of the wrong shape is malformed, never believed."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest

from surge.config import TradeSettings
from surge.exchange.answers import PositionRisk
from surge.exchange.codes import ErrorCode
from surge.exchange.orders import ExchangeError
from surge.trading.account_reads import AccountReads, Malformed, listed


class Client:
    def __init__(self, rows: Any) -> None:
        self.rows = rows
        self.leverage: list[tuple[str, int]] = []

    def position_risk(self, symbol: str | None = None) -> Any:
        return self.rows

    def set_leverage(self, symbol: str, leverage: int) -> None:
        self.leverage.append((symbol, leverage))


def reads(rows: Any) -> tuple[AccountReads, Client]:
    client = Client(rows)
    fake: Any = client
    return AccountReads(TradeSettings(mode="live", leverage=3), fake, {}, logging.getLogger("test")), client


def test_amounts_and_entry_price() -> None:
    row = PositionRisk("XUSDT", Decimal("2"), entry_price=Decimal("10"))
    account, _ = reads([row])
    assert account.amount("XUSDT") == 2 and account.entry_price_from_position("XUSDT") == 10
    assert reads([])[0].amount("XUSDT") == 0  # no row: flat (one read of two)


@pytest.mark.parametrize(
    "answer",
    [
        {"symbol": "XUSDT"},
        [{"symbol": "XUSDT", "positionAmt": "1"}],
        [PositionRisk("X", Decimal(1), position_side="LONG")],
    ],
)
def test_an_answer_of_the_wrong_shape_is_malformed(answer: Any) -> None:
    with pytest.raises(Malformed):
        reads(answer)[0].risk_rows(None)


def test_listed() -> None:
    assert listed([1]) == [1]
    with pytest.raises(Malformed):
        listed({"rows": []})


def test_leverage_is_set_once_and_unknown_symbols_are_refused() -> None:
    account, client = reads([])
    account.ensure_leverage("XUSDT")
    account.ensure_leverage("XUSDT")
    assert client.leverage == [("XUSDT", 3)]
    account.client = type(
        "C", (), {"rest": type("R", (), {"exchange_info": staticmethod(lambda: {"symbols": []})})}
    )()
    with pytest.raises(ExchangeError) as info:
        account.rules_of("NOPEUSDT")
    assert info.value.code == ErrorCode.BAD_SYMBOL
