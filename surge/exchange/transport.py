"""The one HTTP path to Binance USD-M: pooled session, weight limits, one retry policy, one decode path.

Why it looks like this:

* **One** ``requests.Session`` whose pool holds ``pool_size`` (= filter workers) keep-alive
  connections and blocks rather than opening more: a scan of 531 symbols is 531 requests over at
  most 3 TCP connections, never a handshake per request. Public and signed calls share it, and share
  the :class:`~surge.exchange.ratelimit.WeightLimiter`, as they share one IP at the exchange.
* Explicit connect and read timeouts: a stalled exchange costs ``read_timeout`` per attempt, not
  forever.
* **Idempotent or not.** A request that is safe to send twice (every GET and DELETE, a POST that sets
  account state to a value) is retried by tenacity, with exponential backoff plus jitter and a bounded
  number of attempts, on the answers that leave its outcome open, then surfaces as
  :class:`ExchangeUnavailable`. A request that is not (an order placement) is sent once: such an
  answer raises :class:`StatusUnknown`, since the exchange may have executed it.
* "Outcome open" is Binance's own list: a transport failure, HTTP 5xx, HTTP 408, error -1006 or -1007
  under any HTTP status (even 200), and a 2xx whose body does not decode.
* 429/418 close the limiter's gate for every thread and the request is sent again once ``Retry-After``
  has passed (bounded too; an unprocessed request is safe to resend, placement or not). A 418 beyond
  the limiter's maximum raises ``RateLimitBanned``.
* Other error answers (``{"code": -1121, "msg": "Invalid symbol."}``, under a 4xx or a 2xx) become
  :class:`ExchangeError` carrying the numeric code, and are *not* retried: asking again gives the same
  answer. Success bodies that carry a code (``{"code": 200, ...}``, DELETE algoOrder's ``"code": "200"``
  as a string) stay successes.
* No signature reaches a message: text that may hold a URL is passed through :func:`redact`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryError,
    Retrying,
    nap,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from surge import __version__
from surge.errors import SurgeError
from surge.exchange.codes import STATUS_UNKNOWN, ErrorCode, code_of
from surge.exchange.ratelimit import OrderRateLimiter, WeightLimiter
from surge.exchange.wire import WireError, loads, parse_error

log = logging.getLogger("surge.exchange.rest")

__all__ = [
    "ExchangeError",
    "ExchangeUnavailable",
    "Request",
    "RestError",
    "StatusUnknown",
    "Transport",
    "describe_transport_error",
    "error_fields",
    "is_error_body",
    "redact",
]


class RestError(SurgeError):
    """Base of every error this client raises (a runtime failure: exit 1 if it ends a command)."""


class ExchangeError(RestError):
    """The exchange answered with an error body: a definite "no" that retrying won't change.

    ``code`` is the exchange's number (an :class:`~surge.exchange.codes.ErrorCode` when it is one of
    those): decide on it, never on the message text.
    """

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        self.code: ErrorCode | int = code_of(code)
        self.msg = msg
        self.status = status
        super().__init__(f"code {int(code)}: {msg}")


class ExchangeUnavailable(RestError):
    """The exchange could not be reached or kept failing (after every retry)."""


class StatusUnknown(ExchangeUnavailable):
    """A request that is not safe to resend got an answer that leaves its execution open; ``reason``
    says which (``"read timeout"``, ``"HTTP 408"``, ``"HTTP 400 code -1007: ..."``)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Transient(Exception):
    """An answer that leaves the outcome open (5xx, 408, -1006/-1007, a garbled 2xx): internal."""


class _RateLimited(Exception):
    """429/418 within the limits: the limiter's gate is closed, send again when it opens."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


#: Failures worth another attempt: the network, the server's 5xx, a body cut short or garbled.
_RETRYABLE = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    _Transient,
)
_SIGNATURE = re.compile(r"(signature=)[0-9A-Fa-f]+")


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every ``signature=...`` value and every given secret replaced by ``<redacted>``."""
    out = _SIGNATURE.sub(r"\1<redacted>", text)
    for secret in secrets:
        if secret:
            out = out.replace(secret, "<redacted>")
    return out


@dataclass(frozen=True, slots=True)
class Request:
    """One request as :meth:`Transport.send` sends it.

    ``query`` is called for every attempt (a signed request needs a fresh timestamp and signature);
    ``label`` names the request in messages and logs (never with its query: it may be signed).
    """

    method: str
    path: str
    query: Callable[[], str] | Mapping[str, Any] | None = None
    weight: int = 1
    idempotent: bool = True
    order_placement: bool = False
    headers: Mapping[str, str] | None = None
    decode: Callable[[bytes], Any] = loads
    used_weight: bool = True
    label: str = ""
    max_attempts: int | None = None
    sleep: Callable[[float], None] | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)


class Transport:
    """The session, the limiters and the retry policy every request to the exchange goes through.

    Thread-safe. ``requests`` counts every HTTP request sent (retries included), ``retries`` the
    retries; ``limiter.max_used_weight`` is the highest used weight the exchange reported.
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
        adapter = HTTPAdapter(
            pool_connections=1, pool_maxsize=max(1, pool_size), pool_block=True, max_retries=0
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": f"surge/{__version__}", "Accept": "application/json"})
        self._lock = threading.Lock()
        self._closed = False
        self.requests = 0
        self.retries = 0

    def close(self) -> None:
        """Send nothing more: a request after this fails at once, before anything leaves.

        Why: at a stop, a housekeeping job (a backfill, a scan) may still be running, and a worker
        of ``concurrent.futures`` is joined when the interpreter exits. Without this it would go
        on through its hundreds of requests on a fresh connection pool and hold the exit (and the
        lock cron waits for) until it had finished. With it, the job's next request fails and the
        job ends within the one request in flight.
        """
        self._closed = True
        self.session.close()

    # ------------------------------------------------------------------ the one request path

    def send(self, req: Request) -> Any:
        """Send ``req`` and return its decoded body.

        Raises ExchangeError (an error answer), StatusUnknown (a non-idempotent request whose outcome
        is open), ExchangeUnavailable (transport failure, 5xx, 408, -1006 / -1007 or a garbled body
        after the retries) or RateLimitBanned (418 beyond the limiter's maximum).
        """
        status = 429
        for _ in range(self.max_rate_limit_retries + 1):
            try:
                return self._with_retries(req)
            except _RateLimited as exc:  # the gate is closed until Retry-After; acquire() waits for it
                status = exc.status
        raise ExchangeError(
            ErrorCode.TOO_MANY_REQUESTS,
            f"still rate limited after {self.max_rate_limit_retries} retries",
            status,
        )

    def _label(self, req: Request) -> str:
        return req.label or f"{self.base_url}{req.path}"

    def _with_retries(self, req: Request) -> Any:
        attempts = (req.max_attempts or self.max_attempts) if req.idempotent else 1
        sleep = req.sleep or self._sleep
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=self._backoff,
            retry=retry_if_exception_type(_RETRYABLE),
            before_sleep=lambda state: self._count_retry(state, req, attempts),
            reraise=False,
            sleep=sleep if sleep is not None else nap.sleep,
        )
        try:
            return retrying(self._send_once, req)
        except RetryError as exc:
            what = redact(describe_transport_error(exc.last_attempt.exception()), *req.secrets)
            if not req.idempotent:
                raise StatusUnknown(f"{self._label(req)}: {what}", what) from None
            raise ExchangeUnavailable(
                f"exchange unavailable: {self._label(req)}: {what} (after {attempts} attempts)"
            ) from None
        except requests.RequestException as exc:  # not transient (e.g. a bad URL): one line, no traceback
            text = redact(str(exc), *req.secrets)
            raise ExchangeUnavailable(f"exchange unavailable: {self._label(req)}: {text}") from None

    def _count_retry(self, state: Any, req: Request, attempts: int) -> None:
        """Count the retry and say why, so a slow scan or backfill is explained in the log."""
        with self._lock:
            self.retries += 1
        failure = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info(
            "%s: %s; attempt %d of %d, retrying in %.1fs",
            self._label(req),
            redact(describe_transport_error(failure), *req.secrets),
            state.attempt_number,
            attempts,
            wait,
        )

    def _send_once(self, req: Request) -> Any:
        if self._closed:  # checked before every attempt, so a retry loop ends at the close too
            raise ExchangeUnavailable(f"{self._label(req)}: not sent, the client is closed (stopping)")
        self.limiter.acquire(req.weight)
        if req.order_placement:
            self.order_limiter.acquire()
        with self._lock:
            self.requests += 1
        query = req.query() if callable(req.query) else req.query
        url = f"{self.base_url}{req.path}?{query}" if isinstance(query, str) else self.base_url + req.path
        resp = self.session.request(
            req.method,
            url,
            params=None if isinstance(query, str) else query,
            headers=req.headers,
            timeout=self.timeout,
        )
        try:
            body = resp.content  # read fully so the connection goes back to the pool
        finally:
            resp.close()
        status = resp.status_code
        self.limiter.observe(status, resp.headers, used_weight=req.used_weight)  # may raise RateLimitBanned
        if req.order_placement:
            self.order_limiter.observe(resp.headers)  # the account's count, all its clients
        if status in (429, 418):
            raise _RateLimited(status)
        return _decode_answer(status, body, req)


def _decode_answer(status: int, body: bytes, req: Request) -> Any:
    """The body of a definite answer; ExchangeError for an error answer, _Transient for an open one."""
    decode = req.decode if 200 <= status < 300 else loads  # an error body has its own shape
    try:
        data: Any = decode(body)
        decoded = True
    except WireError:
        data, decoded = None, False
    unknown = status_unknown_reason(status, data, decoded)
    if unknown is not None:
        raise _Transient(redact(unknown, *req.secrets))
    if not decoded:  # a 4xx with an HTML or empty body (2xx and 5xx were handled above)
        raise ExchangeError(ErrorCode.NONE, f"HTTP {status} with a non-JSON body", status)
    if status >= 400:
        code, msg = error_fields(data, status)
        raise ExchangeError(code, redact(msg, *req.secrets), status)
    if is_error_body(data):
        raise ExchangeError(data["code"], redact(str(data["msg"]), *req.secrets), status)
    return data


def is_error_body(data: Any) -> bool:
    """``{"code": <int below 0>, "msg": ...}``: Binance's error shape, whatever the HTTP status.

    The code must be a real int: DELETE algoOrder's success carries ``"code": "200"`` (a string) and
    the cancel-all answer ``"code": 200``; neither is an error.
    """
    if not isinstance(data, dict) or "msg" not in data:
        return False
    code = data.get("code")
    return isinstance(code, int) and not isinstance(code, bool) and code < 0


def status_unknown_reason(status: int, data: Any, decoded: bool) -> str | None:
    """Why an answer leaves the request's execution unknown (Binance: 5xx, 408, -1006 / -1007 under
    any status, a 2xx that does not decode), or None when it is a definite answer."""
    code = data.get("code") if is_error_body(data) else None
    if code in STATUS_UNKNOWN:
        return f"HTTP {status} code {code}: {data['msg']}"
    if status >= 500 or status == 408:
        return f"HTTP {status}" + (f" code {code}" if code is not None else "")
    if 200 <= status < 300 and not decoded:
        return f"HTTP {status} with a malformed body"
    return None


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
