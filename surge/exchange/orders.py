"""Signed Binance USD-M endpoints (TRADE / USER_DATA): HMAC-SHA256, clock offset, safe retries.

Why it is shaped like this:

* It rides on :class:`~surge.exchange.rest.BinanceRest`: the same pooled ``requests.Session`` and,
  above all, the same :class:`~surge.exchange.ratelimit.WeightLimiter`, so signed calls and the 4h
  scan share one request-weight budget as they share one IP at the exchange.
* Signature: HMAC-SHA256 of the exact query string sent, hex, appended as ``signature``. Every
  parameter travels in the query string (Binance accepts that for POST and DELETE too), so what is
  signed is byte for byte what is sent.
* ``timestamp`` is local time plus an offset learnt from ``/fapi/v1/time``. A -1021 ("outside of
  the recvWindow") means our clock drifted: resync once and send again once (a new timestamp and
  signature); a second -1021 is an error.
* Order placement is **never** retried blindly: a POST whose answer was lost may have been
  executed. Binance says so of more than a lost answer: HTTP 5xx, HTTP 408, error -1006 ("unexpected
  response from the message bus") and -1007 ("timeout waiting for response from backend server"),
  under any HTTP status, even 200, all mean "execution status unknown", and so does a 2xx whose body
  does not decode. Such a request goes to the transport as not idempotent, which sends it once; every
  one of those answers raises :class:`OrderStatusUnknown`, and the caller asks the exchange about its
  client order id before sending anything again (see :mod:`surge.trading.desk`).
* Reads and cancels (GET, DELETE) and the POSTs that only set account state to a value
  (``/fapi/v1/leverage``, ``/fapi/v1/positionSide/dual``, ``/fapi/v1/marginType``) are idempotent:
  the transport retries the same answers a few times and ends with :class:`ExchangeUnavailable`.
  Sending those POSTs twice is harmless (a second dualSidePosition change may answer -4059 "No need
  to change", which then means done). Any other POST is treated as an order placement.
* Secrets stay secret: the key and secret live in a :class:`Credentials` whose ``repr`` shows
  neither; URLs in messages have ``signature`` redacted; exceptions from ``requests`` (whose text
  contains the full URL) are replaced by one redacted line.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from surge.exchange.answers import AlgoOrder, Balance, OrderAnswer, PositionMode, PositionRisk, typed
from surge.exchange.codes import STATUS_UNKNOWN, ErrorCode
from surge.exchange.precision import (
    SizeDecision,
    SymbolRules,
    ceil_to_step,
    floor_to_step,
    fmt_decimal,
    round_price,
    rules_from_exchange_info,
    size_order,
    to_decimal,
)
from surge.exchange.ratelimit import ORDER_PLACEMENTS
from surge.exchange.rest import BinanceRest
from surge.exchange.transport import (
    ExchangeError,
    ExchangeUnavailable,
    Request,
    StatusUnknown,
    is_error_body,
    redact,
)
from surge.exchange.wire import loads

__all__ = [
    "Credentials",
    "ExchangeError",
    "ExchangeUnavailable",
    "IDEMPOTENT_POSTS",
    "OrderStatusUnknown",
    "SIGNED_WEIGHTS",
    "STATUS_UNKNOWN_CODES",
    "SignedRest",
    "SizeDecision",
    "SymbolRules",
    "ceil_to_step",
    "floor_to_step",
    "fmt_decimal",
    "install_log_redaction",
    "redact",
    "round_price",
    "rules_from_exchange_info",
    "size_order",
    "to_decimal",
]

log = logging.getLogger(__name__)

#: -1021: "Timestamp for this request is outside of the recvWindow." (or "... ahead of the server's time.")
TIMESTAMP_OUTSIDE = ErrorCode.INVALID_TIMESTAMP
DEFAULT_RECV_WINDOW_MS = 5000

#: IP request weight of the signed endpoints this client calls (Binance USD-M, 2026). Placing an
#: order costs no IP weight (it counts against the ORDERS limits, which the exchange enforces).
SIGNED_WEIGHTS: dict[tuple[str, str], int] = {
    ("POST", "/fapi/v1/leverage"): 1,
    ("POST", "/fapi/v1/order"): 0,
    ("GET", "/fapi/v1/order"): 1,
    ("DELETE", "/fapi/v1/order"): 1,
    ("GET", "/fapi/v1/openOrders"): 1,
    ("POST", "/fapi/v1/algoOrder"): 0,
    ("GET", "/fapi/v1/algoOrder"): 1,
    ("DELETE", "/fapi/v1/algoOrder"): 1,
    ("GET", "/fapi/v1/openAlgoOrders"): 1,
    ("DELETE", "/fapi/v1/algoOpenOrders"): 1,
    ("GET", "/fapi/v2/positionRisk"): 5,
    ("GET", "/fapi/v3/positionRisk"): 5,
    ("GET", "/fapi/v2/balance"): 5,
    ("GET", "/fapi/v2/account"): 5,
    ("GET", "/fapi/v1/positionSide/dual"): 30,
    ("POST", "/fapi/v1/positionSide/dual"): 1,
}
_ALL_SYMBOLS_WEIGHT = 40  # openOrders / openAlgoOrders without a symbol
#: v3: rows only for symbols with a position or open orders (v2 listed flat symbols too)
POSITION_RISK_PATH = "/fapi/v3/positionRisk"

#: POSTs that set account state to a given value: resending one cannot do anything twice
IDEMPOTENT_POSTS = frozenset({"/fapi/v1/leverage", "/fapi/v1/positionSide/dual", "/fapi/v1/marginType"})
#: error codes after which Binance does not know whether the request was executed
STATUS_UNKNOWN_CODES = STATUS_UNKNOWN
#: the old name of :func:`surge.exchange.transport.is_error_body`
_is_error_body = is_error_body


def signed_weight(method: str, path: str, params: Mapping[str, Any]) -> int:
    if path in ("/fapi/v1/openOrders", "/fapi/v1/openAlgoOrders") and not params.get("symbol"):
        return _ALL_SYMBOLS_WEIGHT
    return SIGNED_WEIGHTS.get((method, path), 1)


class _RedactSignature(logging.Filter):
    """Rewrites urllib3's request lines ("GET /fapi/v1/order?...&signature=..."), logged at DEBUG,
    so no signature reaches a log file even with debug logging on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str) and "signature=" in record.msg:
            record.msg = redact(record.msg)
        return True


_REDACTOR = _RedactSignature()


def install_log_redaction() -> None:
    """Attach the signature redactor to the loggers that print request URLs (idempotent)."""
    for name in ("urllib3.connectionpool", "requests"):
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)


@dataclass(frozen=True, slots=True)
class Credentials:
    """An API key and secret; ``repr`` and ``str`` never show either (they end up in logs)."""

    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.api_key or not self.api_secret:
            raise ValueError("API key and secret are both required (SURGE_API_KEY, SURGE_API_SECRET)")

    def __repr__(self) -> str:
        return "Credentials(api_key=<redacted>, api_secret=<redacted>)"

    __str__ = __repr__

    def sign(self, payload: str) -> str:
        return hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class OrderStatusUnknown(ExchangeUnavailable):
    """An order placement whose answer was lost or said "execution status unknown" (5xx, 408, -1006,
    -1007, a garbled 2xx): the exchange may or may not have executed it.

    ``sent_at_ms`` is the request's ``timestamp`` (exchange time): once the exchange's clock passes
    ``sent_at_ms + recv_window_ms`` the request can no longer be accepted, so "not found" after that
    is final.
    """

    def __init__(self, message: str, *, sent_at_ms: int, recv_window_ms: int) -> None:
        super().__init__(message)
        self.sent_at_ms = sent_at_ms
        self.recv_window_ms = recv_window_ms


class SignedRest:
    """Signed calls over a :class:`BinanceRest` (its session, timeouts and weight limiter).

    Thread-safe. ``clock`` (seconds) is injectable so tests can make the local clock drift.
    """

    def __init__(
        self,
        rest: BinanceRest,
        credentials: Credentials,
        *,
        recv_window_ms: int = DEFAULT_RECV_WINDOW_MS,
        max_attempts: int = 3,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        logger: logging.Logger | None = None,
    ) -> None:
        self.rest = rest
        self._creds = credentials
        self.recv_window_ms = int(recv_window_ms)
        self.max_attempts = max(1, max_attempts)
        self._clock = clock
        self._sleep = sleep
        self.log = logger or log
        self._lock = threading.Lock()
        self._offset_ms: int | None = None
        #: how many times the clock offset was (re)learnt, and how many -1021 answers were retried
        self.resyncs = 0
        self.timestamp_retries = 0
        install_log_redaction()

    def __repr__(self) -> str:
        return f"SignedRest(base_url={self.rest.base_url!r}, recv_window_ms={self.recv_window_ms})"

    # ------------------------------------------------------------------ clock

    @property
    def offset_ms(self) -> int | None:
        """Exchange time minus local time, as last measured (None before the first sync)."""
        return self._offset_ms

    def sync_time(self) -> int:
        """Learn the offset between the exchange's clock and ours from ``/fapi/v1/time``.

        The local reference is the midpoint of the round trip, which halves the error a slow
        answer would otherwise add.
        """
        before = self._clock()
        server = self.rest.server_time()
        after = self._clock()
        offset = server - int((before + after) / 2 * 1000)
        with self._lock:
            self._offset_ms = offset
            self.resyncs += 1
        return offset

    def now_ms(self) -> int:
        """Exchange time as we believe it is (syncs on first use)."""
        if self._offset_ms is None:
            self.sync_time()
        return int(self._clock() * 1000) + (self._offset_ms or 0)

    # ------------------------------------------------------------------ the signed request path

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        decode: Callable[[bytes], Any] = loads,
    ) -> Any:
        """Send one signed request and return its body, decoded by ``decode`` (plain JSON by default,
        a typed answer of :mod:`surge.exchange.answers` for the endpoints surge reads).

        Raises ExchangeError (an error body), OrderStatusUnknown (an order placement whose answer was
        lost or said "execution status unknown"), ExchangeUnavailable (transport failure, 5xx, 408,
        -1006 / -1007 or a garbled body after the retries) or RateLimitBanned.
        """
        clean = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        weight = signed_weight(method, path, clean)
        resynced = False
        while True:
            try:
                return self._send(method, path, clean, weight, decode)
            except ExchangeError as exc:
                if exc.code != TIMESTAMP_OUTSIDE or resynced:
                    raise
                resynced = True
                self.timestamp_retries += 1
                self.log.warning(
                    "exchange clock drift (%s) on %s %s: resyncing and retrying once", exc.code, method, path
                )
                self.sync_time()

    def _send(
        self, method: str, path: str, params: dict[str, str], weight: int, decode: Callable[[bytes], Any]
    ) -> Any:
        """One signed request through the shared transport: a fresh timestamp and signature for each
        attempt; an order placement is not idempotent, so it is sent once and an open outcome is
        :class:`OrderStatusUnknown` with the timestamp the exchange judges it by."""
        sent_at: list[int] = []

        def signed_query() -> str:
            ts = self.now_ms()
            sent_at.append(ts)
            query = urlencode({**params, "recvWindow": self.recv_window_ms, "timestamp": ts})
            return f"{query}&signature={self._creds.sign(query)}"

        request = Request(
            method,
            path,
            signed_query,
            weight=weight,
            idempotent=method != "POST" or path in IDEMPOTENT_POSTS,
            order_placement=(method, path) in ORDER_PLACEMENTS,
            headers={"X-MBX-APIKEY": self._creds.api_key},
            decode=decode,
            label=f"{method} {path}",
            max_attempts=self.max_attempts,
            sleep=self._sleep,
            secrets=(self._creds.api_key,),
        )
        try:
            return self.rest.send(request)
        except StatusUnknown as exc:
            raise OrderStatusUnknown(
                f"{method} {path}: {exc.reason}; the exchange may have executed it",
                sent_at_ms=sent_at[-1] if sent_at else self.now_ms(),
                recv_window_ms=self.recv_window_ms,
            ) from None

    # ------------------------------------------------------------------ endpoints

    def set_leverage(self, symbol: str, leverage: int) -> dict[str, Any]:
        return self.request("POST", "/fapi/v1/leverage", {"symbol": symbol, "leverage": int(leverage)})

    def new_order(
        self,
        symbol: str,
        side: str,
        quantity: Any,
        *,
        client_order_id: str,
        order_type: str = "MARKET",
        reduce_only: bool = False,
        resp_type: str = "RESULT",
        **extra: Any,
    ) -> OrderAnswer:
        """``POST /fapi/v1/order`` (MARKET unless told otherwise). Never retried: see the module doc."""
        params: dict[str, Any] = {
            "symbol": symbol,
            "side": side,
            "type": order_type,
            "quantity": quantity,
            "newClientOrderId": client_order_id,
            "newOrderRespType": resp_type,
        }
        if reduce_only:
            params["reduceOnly"] = "true"
        params.update(extra)
        answer: OrderAnswer = self.request("POST", "/fapi/v1/order", params, decode=_ORDER)
        return answer

    def get_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> OrderAnswer | None:
        """The order, or None when the exchange does not know it (-2013)."""
        params: dict[str, Any] = {"symbol": symbol}
        if order_id is not None:
            params["orderId"] = order_id
        else:
            params["origClientOrderId"] = client_order_id
        try:
            answer: OrderAnswer = self.request("GET", "/fapi/v1/order", params, decode=_ORDER)
        except ExchangeError as exc:
            if exc.code == ErrorCode.NO_SUCH_ORDER:
                return None
            raise
        return answer

    def open_orders(self, symbol: str | None = None) -> list[OrderAnswer]:
        rows: list[OrderAnswer] = self.request(
            "GET", "/fapi/v1/openOrders", {"symbol": symbol}, decode=_ORDERS
        )
        return rows

    def new_algo_order(
        self,
        symbol: str,
        side: str,
        order_type: str,
        trigger_price: Any,
        *,
        client_algo_id: str,
        quantity: Any = None,
        reduce_only: bool = False,
        close_position: bool = False,
        working_type: str = "CONTRACT_PRICE",
    ) -> AlgoOrder:
        """``POST /fapi/v1/algoOrder`` with ``algoType=CONDITIONAL`` (STOP_MARKET, TAKE_PROFIT_MARKET)."""
        params: dict[str, Any] = {
            "algoType": "CONDITIONAL",
            "symbol": symbol,
            "side": side,
            "type": order_type,
            "triggerPrice": trigger_price,
            "workingType": working_type,
            "clientAlgoId": client_algo_id,
        }
        if close_position:
            params["closePosition"] = "true"
        else:
            params["quantity"] = quantity
            if reduce_only:
                params["reduceOnly"] = "true"
        answer: AlgoOrder = self.request("POST", "/fapi/v1/algoOrder", params, decode=_ALGO)
        return answer

    def get_algo_order(
        self, *, client_algo_id: str | None = None, algo_id: int | None = None
    ) -> AlgoOrder | None:
        """The algo order, or None when the exchange does not know it."""
        params = {"algoId": algo_id} if algo_id is not None else {"clientAlgoId": client_algo_id}
        try:
            answer: AlgoOrder = self.request("GET", "/fapi/v1/algoOrder", params, decode=_ALGO)
        except ExchangeError as exc:
            if exc.code in (ErrorCode.NO_SUCH_ORDER, ErrorCode.CANCEL_REJECTED):
                return None
            raise
        return answer

    def cancel_algo_order(self, *, client_algo_id: str | None = None, algo_id: int | None = None) -> bool:
        """Cancel one algo order; False when it was not open (already triggered, cancelled, unknown)."""
        params = {"algoId": algo_id} if algo_id is not None else {"clientAlgoId": client_algo_id}
        try:
            self.request("DELETE", "/fapi/v1/algoOrder", params)
            return True
        except ExchangeError as exc:
            if exc.code in (ErrorCode.CANCEL_REJECTED, ErrorCode.NO_SUCH_ORDER):
                return False
            raise

    def open_algo_orders(self, symbol: str | None = None) -> list[AlgoOrder]:
        rows: list[AlgoOrder] = self.request(
            "GET", "/fapi/v1/openAlgoOrders", {"symbol": symbol}, decode=_ALGOS
        )
        return rows

    def position_risk(self, symbol: str | None = None) -> list[PositionRisk]:
        """``GET /fapi/v3/positionRisk`` (weight 5). Only symbols with a position or open orders have a
        row: a flat symbol asked about by name answers ``[]``. Rows carry no leverage or marginType."""
        rows: list[PositionRisk] = self.request("GET", POSITION_RISK_PATH, {"symbol": symbol}, decode=_RISK)
        return rows

    def position_side_dual(self) -> bool:
        """Whether the account is in hedge mode (``dualSidePosition``; weight 30). The bot trades
        one-way positions only and asks once at start rather than meet -4061 on its first order."""
        data = self.request("GET", "/fapi/v1/positionSide/dual", decode=_MODE)
        if not isinstance(data, PositionMode):
            raise ExchangeUnavailable(f"/fapi/v1/positionSide/dual: unexpected body {data!r:.80}")
        return data.dual_side_position

    def balance(self) -> list[Balance]:
        rows: list[Balance] = self.request("GET", "/fapi/v2/balance", decode=_BALANCE)
        return rows


_ORDER = typed(OrderAnswer)
_ORDERS = typed(list[OrderAnswer])
_ALGO = typed(AlgoOrder)
_ALGOS = typed(list[AlgoOrder])
_RISK = typed(list[PositionRisk])
_MODE = typed(PositionMode)
_BALANCE = typed(list[Balance])


def _param(value: Any) -> str:
    """Parameter values as the exchange wants them: Decimals plain, bools lower-case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "as_tuple"):  # Decimal
        return fmt_decimal(value)
    return str(value)
