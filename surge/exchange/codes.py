"""Binance USD-M error codes surge acts on, by the names Binance's API documentation gives them.

Why an enum: a refusal is decided on its number (retry later, "no such order", "would trigger at
once"), and a bare ``-2021`` in a condition says nothing to the reader. Only the codes the bot acts
on, or reasons about in a comment, are listed; an :class:`~surge.exchange.rest.ExchangeError` keeps
whatever number the exchange sent in ``code`` (a plain int when it is not one of these).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["API_KEY_ERRORS", "RETRY_LATER", "STATUS_UNKNOWN", "ErrorCode", "code_of"]


class ErrorCode(IntEnum):
    """Error codes of ``{"code": ..., "msg": ...}`` answers (10xx: general, 11xx: request, 20xx:
    processing, 40xx: filters and account state)."""

    #: not one of Binance's: an error answer whose body carried no code (an HTML 4xx, say)
    NONE = 0
    UNKNOWN = -1000
    DISCONNECTED = -1001
    TOO_MANY_REQUESTS = -1003
    #: "Unexpected response received from message bus. Execution status unknown."
    UNEXPECTED_RESP = -1006
    #: "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
    TIMEOUT = -1007
    #: "Server is currently overloaded with other requests. Please try again in a few minutes."
    SERVER_BUSY = -1008
    TOO_MANY_ORDERS = -1015
    #: "Timestamp for this request is outside of the recvWindow."
    INVALID_TIMESTAMP = -1021
    INVALID_SIGNATURE = -1022
    BAD_SYMBOL = -1121
    BAD_API_ID = -2008
    #: "Unknown order sent." (a cancel, or an algo order query, of an order that is not open)
    CANCEL_REJECTED = -2011
    #: "Order does not exist."
    NO_SUCH_ORDER = -2013
    BAD_API_KEY_FMT = -2014
    REJECTED_MBX_KEY = -2015
    MARGIN_NOT_SUFFICIENT = -2019
    #: "Order would immediately trigger."
    ORDER_WOULD_IMMEDIATELY_TRIGGER = -2021
    #: "ReduceOnly Order is rejected." (nothing left to reduce)
    REDUCE_ONLY_REJECT = -2022
    #: "No need to change position side." (the setting already had that value)
    NO_NEED_TO_CHANGE_POSITION_SIDE = -4059
    #: "Order's position side does not match user's setting." (a hedge-mode account)
    POSITION_SIDE_NOT_MATCH = -4061
    #: "ClientOrderId is duplicated." (on the Algo Service: the order exists already)
    DUPLICATED_CLIENT_ID = -4116
    #: "Order's notional must be no smaller than ..."
    MIN_NOTIONAL = -4164


#: After these the exchange does not know whether the request was executed (any HTTP status).
STATUS_UNKNOWN = frozenset({ErrorCode.UNEXPECTED_RESP, ErrorCode.TIMEOUT})
#: Refusals of an order that say nothing was executed and sending it later may work (rate limits).
RETRY_LATER = frozenset({ErrorCode.TOO_MANY_REQUESTS, ErrorCode.TOO_MANY_ORDERS, ErrorCode.SERVER_BUSY})
#: The key or secret is wrong, or lacks permission: what to tell the user for each.
API_KEY_ERRORS = {
    ErrorCode.INVALID_SIGNATURE: "SURGE_API_SECRET is not the secret of SURGE_API_KEY",
    ErrorCode.BAD_API_KEY_FMT: "SURGE_API_KEY is malformed",
    ErrorCode.REJECTED_MBX_KEY: (
        "SURGE_API_KEY is unknown, lacks Futures permission, or this IP is not whitelisted"
    ),
    ErrorCode.BAD_API_ID: "SURGE_API_KEY is unknown",
}


def code_of(value: int) -> ErrorCode | int:
    """``value`` as an :class:`ErrorCode` when it is one, else the plain int (never an error)."""
    try:
        return ErrorCode(value)
    except ValueError:
        return value
