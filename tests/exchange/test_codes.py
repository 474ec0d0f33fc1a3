"""Error codes by name: the enum, the sets the bot decides on, and errors that keep the number."""

from __future__ import annotations

from surge.exchange.codes import API_KEY_ERRORS, RETRY_LATER, STATUS_UNKNOWN, ErrorCode, code_of
from surge.exchange.rest import ExchangeError


def test_codes_are_binance_numbers() -> None:
    assert ErrorCode.TIMEOUT == -1007 and ErrorCode.UNEXPECTED_RESP == -1006
    assert ErrorCode.NO_SUCH_ORDER == -2013 and ErrorCode.CANCEL_REJECTED == -2011
    assert ErrorCode.ORDER_WOULD_IMMEDIATELY_TRIGGER == -2021 and ErrorCode.POSITION_SIDE_NOT_MATCH == -4061
    assert set(STATUS_UNKNOWN) == {-1006, -1007}
    assert set(RETRY_LATER) == {-1003, -1015, -1008}
    assert set(API_KEY_ERRORS) == {-1022, -2014, -2015, -2008}


def test_code_of_keeps_unknown_numbers() -> None:
    assert code_of(-2013) is ErrorCode.NO_SUCH_ORDER
    assert code_of(-9999) == -9999 and not isinstance(code_of(-9999), ErrorCode)


def test_exchange_error_keeps_the_number_and_its_message() -> None:
    err = ExchangeError(-1121, "Invalid symbol.")
    assert err.code == ErrorCode.BAD_SYMBOL and err.code == -1121 and err.msg == "Invalid symbol."
    assert str(err) == "code -1121: Invalid symbol."  # the same text as before the enum
    other = ExchangeError(-4999, "new code")
    assert other.code == -4999 and str(other) == "code -4999: new code"
    assert f"{ExchangeError(ErrorCode.TOO_MANY_REQUESTS, 'x').code}" == "-1003"
