"""Binance USD-M public REST client: one pooled session, weight-aware, with a bounded retry policy.

Why it looks like this:

* **One** ``requests.Session`` whose pool holds ``pool_size`` (= filter workers) keep-alive
  connections and blocks rather than opening more: a scan of 531 symbols is 531 requests over at
  most 3 TCP connections, never a handshake per request.
* Explicit connect and read timeouts: a stalled exchange costs ``read_timeout`` per attempt, not
  forever.
* Transient failures (connection errors, timeouts, 5xx, a 200 whose body is not JSON) are retried
  by tenacity with exponential backoff plus jitter and a bounded number of attempts, then surface
  as :class:`ExchangeUnavailable`.
* Every request goes through the shared :class:`~surge.exchange.ratelimit.WeightLimiter` first;
  429/418 close its gate for every thread and the request is sent again once ``Retry-After`` has
  passed (bounded too). A 418 beyond the limiter's maximum raises ``RateLimitBanned``.
* Other 4xx bodies (``{"code": -1121, "msg": "Invalid symbol."}``) become :class:`ExchangeError`
  and are *not* retried: asking again gives the same answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from surge import __version__
from surge.errors import SurgeError
from surge.exchange.ratelimit import OrderRateLimiter, RateLimitBanned, WeightLimiter, endpoint_weight
from surge.exchange.wire import WireError, kline_from_rest_row, loads, loads_exchange_info, parse_error
from surge.models import Kline, SymbolInfo

log = logging.getLogger(__name__)

__all__ = [
    "BinanceRest",
    "ExchangeError",
    "ExchangeUnavailable",
    "RateLimitBanned",
    "RestError",
    "symbol_infos",
]


class RestError(SurgeError):
    """Base of every error this client raises (a runtime failure: exit 1 if it ends a command)."""


class ExchangeError(RestError):
    """The exchange answered with an error body (4xx): a definite "no" that retrying won't change."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        self.code = code
        self.msg = msg
        self.status = status
        super().__init__(f"code {code}: {msg}")


class ExchangeUnavailable(RestError):
    """The exchange could not be reached or kept failing (after every retry)."""


class _Transient(Exception):
    """A failure worth retrying (5xx, unparseable body); internal to the retry loop."""


class _RateLimited(Exception):
    """429/418 within the limits: the limiter's gate is closed, send again when it opens."""


#: Failures worth another attempt: the network, the server's 5xx, a body cut short or garbled.
_RETRYABLE = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    _Transient,
)

#: Error codes for a request the exchange rejected as too many (used when 429 retries run out).
TOO_MANY_REQUESTS = -1003

#: Binance USD-M's largest klines ``limit``; more is refused with -1130, not clamped.
MAX_KLINES_LIMIT = 1500

#: The last price of every symbol. ``/fapi/v1/ticker/price`` is deprecated; v2 has the same shape and
#: weight (1 with a symbol, 2 without).
TICKER_PRICE_PATH = "/fapi/v2/ticker/price"

#: Endpoints whose ``X-MBX-USED-WEIGHT-1M`` Binance documents as inaccurate ("please ignore").
UNRELIABLE_WEIGHT_PATHS = frozenset({TICKER_PRICE_PATH})


class BinanceRest:
    """Public (unsigned) endpoints of ``/fapi`` over one pooled session.

    Thread-safe: the filter's workers share one instance. ``requests`` counts every HTTP request
    sent (retries included); ``limiter.max_used_weight`` is the highest used weight the exchange
    reported.
    """

    def __init__(
        self,
        base_url: str,
        *,
        limiter: WeightLimiter | None = None,
        pool_size: int = 3,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_initial_s: float = 0.25,
        backoff_max_s: float = 4.0,
        max_rate_limit_retries: int = 20,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter if limiter is not None else WeightLimiter()
        self.order_limiter = OrderRateLimiter()  # signed order placements (surge.exchange.orders)
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max(1, max_attempts)
        self.max_rate_limit_retries = max_rate_limit_retries
        # exponential backoff plus full jitter, spelled so tenacity 8.2 and 9.x read it the same way
        self._backoff = wait_exponential(multiplier=backoff_initial_s, max=backoff_max_s) + wait_random(
            0, backoff_initial_s
        )
        self._sleep = sleep
        self.session = requests.Session()
        # pool_block: with more threads than connections a thread waits for a free connection
        # instead of opening (and then discarding) an extra one.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size), pool_block=True,
                              max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": f"surge/{__version__}", "Accept": "application/json"})
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> BinanceRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the one request path

    def get(self, path: str, params: Mapping[str, Any] | None = None, *, weight: int | None = None,
            decode: Callable[[bytes], Any] = loads) -> Any:
        """GET ``path`` and return the decoded JSON body.

        Raises ExchangeError (4xx body), ExchangeUnavailable (transport/5xx/bad body after all
        attempts) or RateLimitBanned (418 beyond the limiter's maximum).
        """
        params = dict(params or {})
        w = endpoint_weight(path, params) if weight is None else weight
        for _ in range(self.max_rate_limit_retries + 1):
            try:
                return self._with_retries(path, params, w, decode)
            except _RateLimited:
                continue  # the limiter's gate is closed until Retry-After; acquire() waits for it
        raise ExchangeError(TOO_MANY_REQUESTS,
                            f"still rate limited after {self.max_rate_limit_retries} retries", 429)

    def _with_retries(self, path: str, params: dict[str, Any], weight: int,
                      decode: Callable[[bytes], Any] = loads) -> Any:
        kwargs: dict[str, Any] = {}
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._backoff,
            retry=retry_if_exception_type(_RETRYABLE),
            before_sleep=self._count_retry,
            reraise=False,
            **kwargs,
        )
        try:
            return retrying(self._send_once, path, params, weight, decode)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise ExchangeUnavailable(
                f"exchange unavailable: {self.base_url}{path}: {describe_transport_error(last)} "
                f"(after {self.max_attempts} attempts)"
            ) from None
        except requests.RequestException as exc:  # not transient (e.g. a bad URL): one line, no traceback
            raise ExchangeUnavailable(f"exchange unavailable: {self.base_url}{path}: {exc}") from None

    def _count_retry(self, state: Any) -> None:
        """Count the retry and say why, so a slow scan or backfill is explained in the log (the path
        only: a signed request's query carries its signature)."""
        with self._lock:
            self.retries += 1
        failure = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info("%s%s: %s; attempt %d of %d, retrying in %.1fs", self.base_url, state.args[0] if state.args
                 else "", describe_transport_error(failure), state.attempt_number, self.max_attempts, wait)

    def _send_once(self, path: str, params: dict[str, Any], weight: int,
                   decode: Callable[[bytes], Any] = loads) -> Any:
        self.limiter.acquire(weight)
        with self._lock:
            self.requests += 1
        resp = self.session.get(self.base_url + path, params=params, timeout=self.timeout)
        try:
            body = resp.content  # read fully so the connection goes back to the pool
        finally:
            resp.close()
        status = resp.status_code
        # may raise RateLimitBanned; Binance: the used weight this one reports is not accurate, ignore it
        self.limiter.observe(status, resp.headers, used_weight=path not in UNRELIABLE_WEIGHT_PATHS)
        if status in (429, 418):
            raise _RateLimited(status)
        if status >= 500:
            raise _Transient(f"HTTP {status}")
        try:
            data = decode(body) if status < 400 else loads(body)  # an error body has its own shape
        except WireError as exc:
            if 400 <= status < 500:
                raise ExchangeError(0, f"HTTP {status} with a non-JSON body", status) from None
            raise _Transient(f"malformed response body ({exc})") from None
        if status >= 400:
            raise ExchangeError(*error_fields(data, status), status)
        return data

    # ------------------------------------------------------------------ endpoints

    def ping(self) -> None:
        self.get("/fapi/v1/ping")

    def server_time(self) -> int:
        """The exchange's clock in ms (the 4h window and "is this candle closed" are its time)."""
        data = self.get("/fapi/v1/time")
        try:
            return int(data["serverTime"])
        except (KeyError, TypeError, ValueError):
            raise ExchangeUnavailable(f"{self.base_url}/fapi/v1/time: unexpected body {data!r:.80}") from None

    def exchange_info(self, *, filters: bool = True) -> dict[str, Any]:
        """exchangeInfo; also teaches the limiter the exchange's REQUEST_WEIGHT limit.

        ``filters=False``: without each symbol's trading rules (enough for the universe).
        """
        decode = loads_exchange_info if filters else partial(loads_exchange_info, filters=False)
        data = self.get("/fapi/v1/exchangeInfo", decode=decode)
        if not isinstance(data, dict) or not isinstance(data.get("symbols"), list):
            raise ExchangeUnavailable(f"{self.base_url}/fapi/v1/exchangeInfo: body has no 'symbols' list")
        self.limiter.configure_from_exchange_info(data)
        self.order_limiter.configure_from_exchange_info(data)
        return data

    def klines(
        self,
        symbol: str,
        interval: str,
        *,
        limit: int,
        start_time: int | None = None,
        end_time: int | None = None,
        now_ms: int | None = None,
    ) -> list[Kline]:
        """Klines oldest first; ``closed`` is decided against ``now_ms`` (exchange time) when given.

        ``limit`` must be 1..1500: the exchange refuses more (-1130) rather than clamping, so asking
        for more is a bug of the caller, raised here before any weight is spent.
        """
        if not 1 <= limit <= MAX_KLINES_LIMIT:
            raise ValueError(f"klines limit must be between 1 and {MAX_KLINES_LIMIT}, got {limit}")
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start_time is not None:
            params["startTime"] = start_time
        if end_time is not None:
            params["endTime"] = end_time
        rows = self.get("/fapi/v1/klines", params)
        if not isinstance(rows, list):
            raise ExchangeUnavailable(f"klines {symbol}: body is not a list")
        try:
            return [kline_from_rest_row(symbol, interval, row, now_ms) for row in rows]
        except WireError as exc:
            raise ExchangeUnavailable(f"klines {symbol}: {exc}") from None

    def ticker_prices(self) -> dict[str, float]:
        """Every symbol's last price in one request (weight 2): the bulk half of a warm scan."""
        return self.ticker_price_snapshot()[0]

    def ticker_price_snapshot(self) -> tuple[dict[str, float], int]:
        """(last price per symbol, newest ``time`` stamp in the answer or 0) in one request.

        The stamp tells a warm scan whether a 4h boundary passed since it read the server's clock.
        """
        data = self.get(TICKER_PRICE_PATH)
        if not isinstance(data, list):
            raise ExchangeUnavailable(f"{self.base_url}{TICKER_PRICE_PATH}: body is not a list")
        prices: dict[str, float] = {}
        newest = 0
        for item in data:
            try:
                prices[str(item["symbol"])] = float(item["price"])
            except (KeyError, TypeError, ValueError):
                continue  # one odd entry must not cost every other symbol its price
            stamp = item.get("time")
            if isinstance(stamp, int) and stamp > newest:
                newest = stamp
        return prices, newest


def symbol_infos(info: Mapping[str, Any]) -> list[SymbolInfo]:
    """exchangeInfo body -> every symbol as SymbolInfo (unfiltered; see surge.universe)."""
    out: list[SymbolInfo] = []
    for s in info.get("symbols") or ():
        if not isinstance(s, dict) or not isinstance(s.get("symbol"), str):
            continue
        filters = {f.get("filterType"): f for f in s.get("filters") or () if isinstance(f, dict)}
        out.append(
            SymbolInfo(
                symbol=s["symbol"],
                status=str(s.get("status", "")),
                contract_type=str(s.get("contractType", "")),
                quote_asset=str(s.get("quoteAsset", "")),
                base_asset=str(s.get("baseAsset", "")),
                tick_size=_float(filters.get("PRICE_FILTER", {}).get("tickSize")),
                step_size=_float(filters.get("LOT_SIZE", {}).get("stepSize")),
                min_qty=_float(filters.get("LOT_SIZE", {}).get("minQty")),
                min_notional=_float(filters.get("MIN_NOTIONAL", {}).get("notional")),
            )
        )
    return out


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def error_fields(body: Any, status: int) -> tuple[int, str]:
    """(code, msg) of an error answer: Binance's own, or the HTTP status when the body is not one."""
    try:
        return parse_error(body)
    except WireError:
        return 0, f"HTTP {status}"


def describe_transport_error(exc: BaseException | None) -> str:
    """One readable line for a transport failure (no urllib3 pool repr soup)."""
    if exc is None:
        return "unknown failure"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timeout"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        if "Connection refused" in text or "Errno 111" in text:
            return "connection refused"
        if "Name or service not known" in text or "nodename nor servname" in text:
            return "host not found"
        if "RemoteDisconnected" in text or "Connection aborted" in text:
            return "connection closed by the server"
        return "connection error"
    return str(exc) or type(exc).__name__

