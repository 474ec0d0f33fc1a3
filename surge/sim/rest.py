"""Simulated Binance USD-M futures REST API on loopback, with fault controls and observations.

Why it is shaped like this:

* Real HTTP/1.1 with keep-alive over real sockets, one named thread per connection, so the bot's
  connection pool, timeouts and concurrency are exercised as they are against Binance; latency,
  stalls and faults are applied inside the handler thread, so concurrency stays real.
* Paths, parameters, JSON shapes, headers (``X-MBX-USED-WEIGHT-1M``, ``Retry-After``, the account's
  ``X-MBX-ORDER-COUNT-10S`` / ``-1M`` on order answers), weights
  and error bodies follow Binance USD-M; third-party Binance clients are tested against it.
* Every response is written with one ``send`` (headers + body) and ``TCP_NODELAY``: a split write
  meets the client's delayed ACK and costs 40 ms per request.
* Test controls live under ``/_sim/...`` (never a Binance path) as well as Python methods, so a
  simulator in another process can be driven by benchmarks. Rate limits and Retry-After windows use
  the wall clock, not the market clock, so freezing the market does not freeze the limiter.
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from surge.exchange.wire import fmt, kline_to_rest_row
from surge.models import INTERVALS
from surge.sim.account import (
    SIGNED_PATHS,
    UNKNOWN_ANSWERS,
    Account,
    AccountError,
    RawAnswer,
    signed_weight,
    unknown_answer,
)
from surge.sim.archive import Archive
from surge.sim.market import MINUTE_MS, Market

WEIGHT_LIMIT_1M = 2400
ORDERS_LIMIT_1M = 1200
DEFAULT_KLINES_LIMIT = 500
MAX_KLINES_LIMIT = 1500
_INTERVALS = frozenset(INTERVALS)
_ARRIVALS_KEPT = 200_000
_JSON = "application/json;charset=UTF-8"
_WS_CONTROL_BLOCKLIST = frozenset({"start", "stop"})

Response = tuple[int, bytes, dict[str, str]]


class ApiError(Exception):
    """A Binance error answer: HTTP status plus ``{"code": ..., "msg": ...}``."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg


def _mandatory(name: str) -> ApiError:
    return ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _illegal(name: str) -> ApiError:
    msg = f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
    return ApiError(400, -1100, msg)


def klines_weight(limit: int) -> int:
    """Binance USD-M weight of ``GET /fapi/v1/klines`` by ``limit``."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(slots=True)
class _Fault:
    """One scripted answer for the next Binance request."""

    kind: str  # "429", "418", "5xx", "malformed", "stall", "unknown"
    status: int = 0
    seconds: float = 0.0
    answer: str = ""  # for "unknown": one of UNKNOWN_ANSWERS


@dataclass(slots=True)
class _IpState:
    """Per-IP limiter state, as Binance keeps it: weight per clock minute, Retry-After and bans."""

    minute: int = -1
    used: int = 0
    retry_until_ms: float = 0.0
    ban_until_ms: float = 0.0
    violations: int = 0


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer whose connection threads are named, tracked and joined on stop."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], owner: RestServer) -> None:
        self.owner = owner
        self._conn_ids = itertools.count(1)
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        n = next(self._conn_ids)
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"surge-sim-rest-conn-{n}",
            daemon=True,
        )
        with self._conns_lock:
            self._conns[request] = thread
        self.owner._count_connection()
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.pop(request, None)

    def close_connections(self, timeout: float) -> list[threading.Thread]:
        """Shut every open connection's socket (wakes its thread) and join; returns threads still alive."""
        with self._conns_lock:
            items = list(self._conns.items())
        for sock, _ in items:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for _, thread in items:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t for _, t in items if t.is_alive()]

    def open_connections(self) -> int:
        with self._conns_lock:
            return len(self._conns)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "surge-sim"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    server: _Server
    #: the base class's pending header lines (it sets it in send_header; typeshed does not declare it)
    _headers_buffer: list[bytes]

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log: tests and the CLI keep their own output."""

    def do_GET(self) -> None:  # http.server's naming
        self.server.owner._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.owner._handle(self, "POST")

    def do_PUT(self) -> None:
        self.server.owner._handle(self, "PUT")

    def do_DELETE(self) -> None:
        self.server.owner._handle(self, "DELETE")

    def send_all(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        """Status line, headers and body in one write (see the module docstring: delayed ACK)."""
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        self.send_header("Content-Type", headers.pop("Content-Type", _JSON))
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")
        data = b"".join(self._headers_buffer) + body
        self._headers_buffer = []
        self.wfile.write(data)


class RestServer:
    """Binance USD-M futures REST endpoints over a :class:`Market`, plus controls and observations.

    Endpoints: ``/fapi/v1/ping``, ``/time``, ``/exchangeInfo``, ``/klines``, ``/ticker/24hr``,
    ``/ticker/price`` (v1, deprecated, and v2). Controls: :meth:`set_latency`, :meth:`fail_next` (429 / 418),
    :meth:`error_next` (5xx), :meth:`error_for` (a 5xx spell), :meth:`answer_next` (408, -1006,
    -1007, ...), :meth:`malformed_next`, :meth:`stall_next`, :meth:`clear_faults`,
    :meth:`unban`, :meth:`freeze` / :meth:`unfreeze`, :meth:`inject_surge`, :meth:`arrange_4h`; the
    same under ``/_sim/...`` over HTTP. Observations: :meth:`stats`,
    :meth:`arrivals`, :meth:`retry_windows`, :meth:`reset_stats`.
    """

    def __init__(
        self,
        market: Market,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency_ms: float = 0.0,
        weight_limit: int = WEIGHT_LIMIT_1M,
        ban_s: float = 120.0,
        ban_grace: int = 2,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.market = market
        self.host = host
        self._requested_port = port
        self.port = 0
        self.url = ""
        self.latency_ms = float(latency_ms)
        self.weight_limit = int(weight_limit)
        #: seconds of IP ban (HTTP 418) for a client that keeps sending inside a Retry-After window
        self.ban_s = float(ban_s)
        #: requests tolerated inside an open Retry-After window before the ban (requests already in
        #: flight when the 429 went out are not the client's fault)
        self.ban_grace = int(ban_grace)
        #: the WebSocket server whose controls ``/_sim/ws/<method>`` reaches (set by Simulator)
        self.ws_controls: Any = None
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._faults: collections.deque[_Fault] = collections.deque()
        self._spell_until_ms = 0.0  # wall time until which every Binance request answers _spell_status
        self._spell_status = 503
        self._ips: dict[str, _IpState] = {}
        self._stop = threading.Event()
        self._release = threading.Event()  # set (and replaced) by clear_faults: ends the stalls under way
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._info_cache: bytes | None = None
        #: the signed side (keys, orders, algo orders, positions); see surge.sim.account
        self.account = Account(
            lambda s, now: market.current_kline(s, "1m", now).close,
            market.now_ms,
            market.exchange_symbols(),
            wall=wall_clock,
        )
        #: how often the housekeeping thread lets protective (algo) orders trigger between requests
        self.account_tick_s = 0.1
        self._account_thread: threading.Thread | None = None
        #: Binance's public data archive (``/data/...``) over the same market: see surge.sim.archive
        self.archive = Archive(market)
        self._reset_counters()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> RestServer:
        """Bind, start the serving thread and return once the port is known and listening."""
        if self._httpd is not None:
            raise RuntimeError("RestServer already started")
        self._stop.clear()
        with self._lock:
            self._release = threading.Event()
        httpd = _Server((self.host, self._requested_port), self)
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="surge-sim-rest", daemon=True
        )
        self._thread.start()
        self._account_thread = threading.Thread(
            target=self._account_loop, name="surge-sim-rest-account", daemon=True
        )
        self._account_thread.start()
        return self

    def _account_loop(self) -> None:
        """Trigger crossed algo orders even when no signed request arrives (one thread, cheap check)."""
        while not self._stop.wait(self.account_tick_s):
            try:
                self.account.tick()
            except Exception:  # noqa: BLE001 - a market lookup failing must not end the loop
                continue

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, close every connection, join every thread; idempotent."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stop.set()  # wakes handlers sleeping in latency
        with self._lock:
            self._release.set()  # and in stalls
        httpd.shutdown()
        if thread is not None:
            thread.join(timeout)
        left = httpd.close_connections(timeout)
        httpd.server_close()
        account_thread, self._account_thread = self._account_thread, None
        if account_thread is not None:
            account_thread.join(timeout)
            if account_thread.is_alive():
                left.append(account_thread)
        self._httpd = None
        self._thread = None
        if left or (thread is not None and thread.is_alive()):
            raise RuntimeError(f"RestServer threads did not stop: {[t.name for t in left]}")

    def __enter__(self) -> RestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ controls

    def set_latency(self, ms: float) -> None:
        """Every Binance request waits ``ms`` in its handler thread before it is answered."""
        self.latency_ms = max(0.0, float(ms))

    def fail_next(self, count: int, status: int = 429, retry_after_s: float = 1.0) -> None:
        """The next ``count`` requests answer 429 (-1003, Retry-After) or 418 (ban for the same time)."""
        if status not in (429, 418):
            raise ValueError("status must be 429 or 418")
        self._push(count, _Fault(str(status), status, float(retry_after_s)))

    def error_next(self, count: int, status: int = 503) -> None:
        """The next ``count`` requests answer a server error (500, 502, 503 or 504) as Binance's edge does."""
        if not 500 <= status <= 599:
            raise ValueError("status must be 5xx")
        self._push(count, _Fault("5xx", status))

    def error_for(self, seconds: float, status: int = 503) -> None:
        """Every Binance request (public and signed) answers a server error until ``seconds`` of wall
        time have passed: an outage longer than any retry budget, which count-based faults cannot
        express without guessing how many requests the client will send. Signed requests are not
        executed meanwhile. :meth:`clear_faults` ends it early."""
        if not 500 <= status <= 599:
            raise ValueError("status must be 5xx")
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._lock:
            self._spell_until_ms = self._wall() * 1000.0 + float(seconds) * 1000.0
            self._spell_status = int(status)

    def answer_next(self, kind: str, count: int = 1) -> None:
        """The next ``count`` Binance requests (any path; not executed) get one of the "execution
        status unknown" answers of :meth:`Account.answer_next_order` (``"503"``, ``"408"``,
        ``"-1006"``, ``"-1007"``, ``"garbled"``, ``"error200"``): how a client treats them on reads
        and cancels, where they are safe to retry, is as much a part of the contract as on orders."""
        if kind not in UNKNOWN_ANSWERS:
            raise ValueError(f"kind must be one of {', '.join(UNKNOWN_ANSWERS)}")
        self._push(count, _Fault("unknown", answer=kind))

    def malformed_next(self, count: int) -> None:
        """The next ``count`` requests answer 200 with a truncated JSON body."""
        self._push(count, _Fault("malformed"))

    def stall_next(self, count: int, seconds: float) -> None:
        """The next ``count`` requests sleep ``seconds`` before answering (to hit client read timeouts)."""
        self._push(count, _Fault("stall", seconds=float(seconds)))

    def clear_faults(self) -> None:
        """Forget the scripted faults, end a 5xx spell and answer the stalled requests now (so a
        stall scripted for one test does not land in the next one's logs); the account's faults are
        its own."""
        with self._lock:
            self._faults.clear()
            self._spell_until_ms = 0.0
            released, self._release = self._release, threading.Event()
        released.set()

    def unban(self) -> None:
        """Forget every Retry-After window, ban and weight used (a fresh minute for every IP)."""
        with self._lock:
            self._ips.clear()

    def freeze(self, at_ms: int | None = None) -> None:
        """Stop the market clock (``/fapi/v1/time`` and every candle); the limiter keeps wall time."""
        self.market.freeze(at_ms)

    def unfreeze(self) -> None:
        self.market.unfreeze()

    def inject_surge(self, symbol: str, change_pct: float = 5.0, volume_multiple: float = 10.0) -> None:
        """A surge on ``symbol`` now (see :meth:`Market.inject_surge`)."""
        self.market.inject_surge(symbol, change_pct, volume_multiple)

    def arrange_4h(
        self,
        passing: Iterable[str],
        *,
        min_change_pct: float = -5.0,
        max_change_pct: float = 10.0,
        min_quote_volume: float = 5e6,
    ) -> None:
        """Exactly ``passing`` satisfies the 4h rule now (see :meth:`Market.arrange_4h`)."""
        self.market.arrange_4h(
            passing,
            min_change_pct=min_change_pct,
            max_change_pct=max_change_pct,
            min_quote_volume=min_quote_volume,
        )

    def _push(self, count: int, fault: _Fault) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._faults.extend(fault for _ in range(count))

    # ------------------------------------------------------------------ observations

    def stats(self) -> dict[str, Any]:
        """Counters since the last :meth:`reset_stats` (requests on ``/_sim`` are not counted)."""
        with self._lock:
            now_min = int(self._wall() * 1000) // MINUTE_MS
            used_now = sum(ip.used for ip in self._ips.values() if ip.minute == now_min)
            return {
                "requests": self._requests,
                "by_path": dict(self._by_path),
                "by_status": {str(k): v for k, v in self._by_status.items()},
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "used_weight_1m": used_now,
                "max_weight_1m": self._max_weight,
                "connections": self._connections,
                "open_connections": self._httpd.open_connections() if self._httpd else 0,
                "violations": self._violations,
                "bans": self._bans,
                "pending_faults": len(self._faults),
                "error_spell_s": max(0.0, (self._spell_until_ms - self._wall() * 1000.0) / 1000.0),
                "latency_ms": self.latency_ms,
                "weight_limit": self.weight_limit,
            }

    def arrivals(self) -> list[tuple[float, str, int]]:
        """(wall time ms at arrival, path, HTTP status) of every Binance request, oldest first."""
        with self._lock:
            return list(self._arrivals)

    def retry_windows(self) -> list[tuple[float, float, int]]:
        """(from ms, until ms, status) of every Retry-After this server handed out (429 and 418).

        A client that honours Retry-After sends nothing whose arrival lies strictly inside one.
        """
        with self._lock:
            return list(self._windows)

    def reset_stats(self) -> None:
        """Zero the counters and logs (not the faults, latency or limiter state)."""
        with self._lock:
            self._reset_counters()

    def _reset_counters(self) -> None:
        self._requests = 0
        self._by_path: collections.Counter[str] = collections.Counter()
        self._by_status: collections.Counter[int] = collections.Counter()
        self._in_flight = getattr(self, "_in_flight", 0)
        self._max_in_flight = self._in_flight
        self._max_weight = 0
        self._connections = 0
        self._violations = 0
        self._bans = 0
        self._arrivals: collections.deque[tuple[float, str, int]] = collections.deque(maxlen=_ARRIVALS_KEPT)
        self._windows: collections.deque[tuple[float, float, int]] = collections.deque(maxlen=_ARRIVALS_KEPT)

    def _count_connection(self) -> None:
        with self._lock:
            self._connections += 1

    # ------------------------------------------------------------------ request handling

    def _handle(self, h: _Handler, method: str) -> None:
        arrival = self._wall() * 1000.0
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length > 0 else b""
        url = urlsplit(h.path)
        if url.path.startswith("/_sim/") or url.path == "/_sim":
            status, payload, headers = self._control(url.path, url.query, body)
            h.send_all(status, payload, headers)
            return
        if url.path.startswith("/data/"):  # the archive is another host in production: no limiter
            if method == "GET":
                status, payload, headers = self.archive.get(url.path)
            else:
                status, payload, headers = 405, b"", {"Content-Type": "application/xml"}
            h.send_all(status, payload, headers)
            return
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        status = 500
        try:
            ip = h.client_address[0]
            if url.path in SIGNED_PATHS:
                status, payload, headers = self._signed(h, method, url.path, url.query, body, ip, arrival)
            else:
                status, payload, headers = self._binance(method, url.path, url.query, ip, arrival)
        finally:
            with self._lock:  # one step: once in_flight reads 0, every request is in the logs
                self._in_flight -= 1
                self._requests += 1
                self._by_path[url.path] += 1
                self._by_status[status] += 1
                self._arrivals.append((arrival, url.path, status))
        h.send_all(status, payload, headers)

    def _binance(self, method: str, path: str, query: str, ip: str, arrival: float) -> Response:
        """Limiter, scripted faults, latency, then the endpoint itself."""
        handler = self._routes().get(path) if method == "GET" else None
        if handler is None:
            return 404, _dumps({"code": -5000, "msg": f"Path {path}, Method {method} is invalid"}), {}
        try:
            params = self._params(query)
        except ApiError as exc:
            return self._error(exc, ip, 1)
        refusal = self._admit(ip, arrival, self._weight(path, params))
        if refusal is not None:
            return refusal
        try:
            return 200, handler(params), self._weight_headers(ip)
        except ApiError as exc:
            return exc.status, _dumps({"code": exc.code, "msg": exc.msg}), self._weight_headers(ip)

    def _signed(
        self, h: _Handler, method: str, path: str, query: str, body: bytes, ip: str, arrival: float
    ) -> Response:
        """A signed (USER_DATA / TRADE) request: limiter, faults, latency, authentication, the account.

        An order placement with a scripted delay is executed first and answered late, so the client
        times out on an order that exists (the case idempotent retries must survive).
        """
        try:
            weight = signed_weight(method, path, dict(parse_qsl(query, keep_blank_values=True)))
        except ValueError:
            weight = 1
        refusal = self._admit(ip, arrival, weight)
        if refusal is not None:
            return refusal
        try:
            params = self.account.authenticate(h.headers.get("X-MBX-APIKEY"), query, body)
            result = self.account.handle(method, path, params)
        except AccountError as exc:
            return exc.status, _dumps({"code": exc.code, "msg": exc.msg}), self._weight_headers(ip)
        except Exception:  # noqa: BLE001 - answer as Binance does rather than drop the connection
            unknown = {"code": -1000, "msg": "An unknown error occurred while processing the request."}
            return 500, _dumps(unknown), self._weight_headers(ip)
        headers = self._weight_headers(ip)
        if method == "POST" and path in ("/fapi/v1/order", "/fapi/v1/algoOrder"):
            # the account's order count (every key, every process), as of this placement
            counts = {f"X-MBX-ORDER-COUNT-{k}": str(v) for k, v in self.account.order_counts().items()}
            delay = self.account.take_delay()
            if delay > 0:
                self._stop.wait(delay)
        else:
            counts = {}
        if isinstance(result, RawAnswer):  # a scripted "status unknown" or garbled answer
            return result.status, result.body, headers
        return 200, _dumps(result), headers | counts

    def _routes(self) -> dict[str, Callable[[dict[str, str]], bytes]]:
        return {
            "/fapi/v1/ping": self._ping,
            "/fapi/v1/time": self._time,
            "/fapi/v1/exchangeInfo": self._exchange_info,
            "/fapi/v1/klines": self._klines,
            "/fapi/v1/ticker/24hr": self._ticker_24hr,
            "/fapi/v1/ticker/price": self._ticker_price,  # deprecated by Binance; kept for other clients
            "/fapi/v2/ticker/price": self._ticker_price,
        }

    @staticmethod
    def _params(query: str) -> dict[str, str]:
        params: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key in params:
                raise ApiError(400, -1101, f"Duplicate values for a parameter detected: '{key}'.")
            params[key] = value
        return params

    @staticmethod
    def _weight(path: str, params: dict[str, str]) -> int:
        if path == "/fapi/v1/klines":
            try:
                limit = int(params.get("limit") or DEFAULT_KLINES_LIMIT)
            except ValueError:
                limit = DEFAULT_KLINES_LIMIT
            return klines_weight(min(max(limit, 1), MAX_KLINES_LIMIT))
        if path == "/fapi/v1/ticker/24hr":
            return 1 if params.get("symbol") else 40
        if path in ("/fapi/v1/ticker/price", "/fapi/v2/ticker/price"):
            return 1 if params.get("symbol") else 2
        return 1

    def _ip(self, ip: str, now_ms: float) -> _IpState:
        st = self._ips.get(ip)
        if st is None:
            st = self._ips[ip] = _IpState()
        minute = int(now_ms) // MINUTE_MS
        if st.minute != minute:
            st.minute, st.used = minute, 0
        return st

    def _admit(self, ip: str, arrival: float, weight: int) -> Response | None:
        """What every Binance request goes through before its endpoint runs: the weight limiter,
        the scripted faults and the latency. Returns the response that replaces the endpoint's
        (429/418, 5xx, malformed body), or None to go on."""
        gate = self._gate(ip, arrival, weight)
        if gate is not None:
            return gate
        with self._lock:
            spell = self._spell_status if arrival < self._spell_until_ms else 0
        if spell:
            if self.latency_ms > 0:
                self._stop.wait(self.latency_ms / 1000.0)
            return self._fault_response(_Fault("5xx", spell), ip)
        fault = self._next_fault()
        if self.latency_ms > 0:
            self._stop.wait(self.latency_ms / 1000.0)
        if fault is not None and fault.kind == "stall":
            with self._lock:
                release = self._release
            if not self._stop.is_set():
                release.wait(fault.seconds)
            fault = None
        if fault is not None:
            return self._fault_response(fault, ip)
        return None

    def _gate(self, ip: str, now_ms: float, weight: int) -> Response | None:
        """Bans, Retry-After windows and the per-minute weight limit, in Binance's order."""
        with self._lock:
            st = self._ip(ip, now_ms)
            if now_ms < st.ban_until_ms:
                return self._ban_response(st, now_ms, ip)
            if now_ms < st.retry_until_ms:
                self._violations += 1
                st.violations += 1
                if st.violations > self.ban_grace:
                    st.ban_until_ms = now_ms + self.ban_s * 1000.0
                    st.violations = 0
                    self._bans += 1
                    self._windows.append((now_ms, st.ban_until_ms, 418))
                    return self._ban_response(st, now_ms, ip)
                return self._too_many(st, now_ms, st.retry_until_ms, ip)
            st.used += weight
            self._max_weight = max(self._max_weight, st.used)
            if st.used > self.weight_limit:
                until = (st.minute + 1) * MINUTE_MS
                st.retry_until_ms = until
                st.violations = 0
                self._windows.append((now_ms, until, 429))
                return self._too_many(st, now_ms, until, ip)
            return None

    def _too_many(self, st: _IpState, now_ms: float, until_ms: float, ip: str) -> Response:
        body = _dumps(
            {
                "code": -1003,
                "msg": f"Too many requests; current limit of IP({ip}) is "
                f"{self.weight_limit} requests per minute. Please use the websocket for live updates "
                "to avoid polling the API.",
            }
        )
        headers = self._weight_headers_locked(st)
        headers["Retry-After"] = str(max(1, math.ceil((until_ms - now_ms) / 1000.0)))
        return 429, body, headers

    def _ban_response(self, st: _IpState, now_ms: float, ip: str) -> Response:
        body = _dumps(
            {
                "code": -1003,
                "msg": f"Way too many requests; IP({ip}) banned until "
                f"{int(st.ban_until_ms)}. Please use the websocket for live updates to avoid bans.",
            }
        )
        headers = self._weight_headers_locked(st)
        headers["Retry-After"] = str(max(1, math.ceil((st.ban_until_ms - now_ms) / 1000.0)))
        return 418, body, headers

    def _next_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _fault_response(self, fault: _Fault, ip: str) -> Response:
        now_ms = self._wall() * 1000.0
        if fault.kind in ("429", "418"):
            with self._lock:
                st = self._ip(ip, now_ms)
                until = now_ms + fault.seconds * 1000.0
                if fault.kind == "429":
                    st.retry_until_ms = until
                    st.violations = 0
                    self._windows.append((now_ms, until, 429))
                    return self._too_many(st, now_ms, until, ip)
                st.ban_until_ms = until
                self._bans += 1
                self._windows.append((now_ms, until, 418))
                return self._ban_response(st, now_ms, ip)
        if fault.kind == "malformed":
            return 200, b'[[1700000000000,"1.0","1.1",', self._weight_headers(ip)
        if fault.kind == "unknown":
            raw = unknown_answer(fault.answer)
            return raw.status, raw.body, self._weight_headers(ip)
        if fault.status in (502, 504):  # the edge in front of Binance answers these with HTML
            text = "Bad Gateway" if fault.status == 502 else "Gateway Time-out"
            html = f"<html><head><title>{fault.status} {text}</title></head><body>{text}</body></html>"
            return fault.status, html.encode(), {"Content-Type": "text/html"}
        msg = {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
        return fault.status, _dumps(msg), self._weight_headers(ip)

    def _weight_headers(self, ip: str) -> dict[str, str]:
        with self._lock:
            return self._weight_headers_locked(self._ip(ip, self._wall() * 1000.0))

    @staticmethod
    def _weight_headers_locked(st: _IpState) -> dict[str, str]:
        used = str(st.used)
        return {"X-MBX-USED-WEIGHT-1M": used, "X-MBX-USED-WEIGHT": used}

    def _error(self, exc: ApiError, ip: str, weight: int) -> Response:
        gate = self._gate(ip, self._wall() * 1000.0, weight)
        if gate is not None:
            return gate
        return exc.status, _dumps({"code": exc.code, "msg": exc.msg}), self._weight_headers(ip)

    # ------------------------------------------------------------------ endpoints

    def _ping(self, params: dict[str, str]) -> bytes:
        self._only(params)
        return b"{}"

    def _time(self, params: dict[str, str]) -> bytes:
        self._only(params)
        return _dumps({"serverTime": self.market.now_ms()})

    def _exchange_info(self, params: dict[str, str]) -> bytes:
        self._only(params)
        if self._info_cache is None:
            self._info_cache = _dumps(self.market.exchange_symbols())
        head = {
            "timezone": "UTC",
            "serverTime": self.market.now_ms(),
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.weight_limit,
                },
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": ORDERS_LIMIT_1M},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ],
            "exchangeFilters": [],
            "assets": [
                {"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"},
                {"asset": "USDC", "marginAvailable": True, "autoAssetExchange": "-10000"},
                {"asset": "BTC", "marginAvailable": True, "autoAssetExchange": "0"},
            ],
        }
        return _dumps(head)[:-1] + b',"symbols":' + self._info_cache + b"}"

    def _symbol(self, params: dict[str, str], required: bool = True) -> str | None:
        symbol = params.get("symbol")
        if not symbol:
            if required:
                raise _mandatory("symbol")
            return None
        if not self.market.has_symbol(symbol):
            raise ApiError(400, -1121, "Invalid symbol.")
        return symbol

    @staticmethod
    def _only(params: dict[str, str], *allowed: str) -> None:
        extra = [k for k in params if k not in allowed]
        if extra:
            read = len(params) - len(extra)
            raise ApiError(
                400,
                -1104,
                f"Not all sent parameters were read; read '{read}' "
                f"parameter(s) but was sent '{len(params)}'.",
            )

    @staticmethod
    def _int_param(params: dict[str, str], name: str) -> int | None:
        raw = params.get(name)
        if raw is None or raw == "":
            return None
        if not raw.isdigit() or len(raw) > 20:
            raise _illegal(name)
        return int(raw)

    def _klines(self, params: dict[str, str]) -> bytes:
        self._only(params, "symbol", "interval", "limit", "startTime", "endTime")
        symbol = self._symbol(params)
        interval = params.get("interval")
        if not interval:
            raise _mandatory("interval")
        if interval not in _INTERVALS:
            raise ApiError(400, -1120, "Invalid interval.")
        limit = self._int_param(params, "limit")
        if limit is None:
            limit = DEFAULT_KLINES_LIMIT
        elif limit == 0 or limit > MAX_KLINES_LIMIT:  # refused, not clamped, as Binance does
            raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        start = self._int_param(params, "startTime")
        end = self._int_param(params, "endTime")
        if start is not None and end is not None and start > end:
            raise ApiError(400, -1023, "Start time is greater than end time.")
        assert symbol is not None
        now = self.market.now_ms()
        rows = self.market.klines(symbol, interval, start_ms=start, end_ms=end, limit=limit, now_ms=now)
        pd, qd = self.market.decimals(symbol)
        return _dumps([kline_to_rest_row(k, pd, qd) for k in rows])

    def _ticker(self, symbol: str, now: int) -> dict[str, Any]:
        """Rolling 24 h statistics from the market's own minutes (so they agree with the klines)."""
        pd, qd = self.market.decimals(symbol)
        day = self.market.rolling(symbol, now - 86_400_000, now)
        change = day.close - day.open
        avg = day.quote_volume / day.volume if day.volume else day.close
        last_id = now // 10
        return {
            "symbol": symbol,
            "priceChange": fmt(change, pd),
            "priceChangePercent": fmt(change / day.open * 100.0 if day.open else 0.0, 3),
            "weightedAvgPrice": fmt(avg, pd),
            "lastPrice": fmt(day.close, pd),
            "lastQty": fmt(10.0**-qd * 7, qd),
            "openPrice": fmt(day.open, pd),
            "highPrice": fmt(day.high, pd),
            "lowPrice": fmt(day.low, pd),
            "volume": fmt(day.volume, qd),
            "quoteVolume": fmt(day.quote_volume, 2),
            "openTime": day.open_time,
            "closeTime": now,
            "firstId": max(0, last_id - day.trades + 1),
            "lastId": last_id,
            "count": day.trades,
        }

    def _symbols_for(self, params: dict[str, str]) -> list[str] | None:
        symbol = self._symbol(params, required=False)
        return [symbol] if symbol else None

    def _all_symbols(self) -> list[str]:
        return [s["symbol"] for s in self.market.exchange_symbols() if s["status"] == "TRADING"]

    def _ticker_24hr(self, params: dict[str, str]) -> bytes:
        self._only(params, "symbol")
        now = self.market.now_ms()
        one = self._symbols_for(params)
        if one:
            return _dumps(self._ticker(one[0], now))
        return _dumps([self._ticker(s, now) for s in self._all_symbols()])

    def _ticker_price(self, params: dict[str, str]) -> bytes:
        self._only(params, "symbol")
        now = self.market.now_ms()
        one = self._symbols_for(params)

        def entry(symbol: str) -> dict[str, Any]:
            pd, _ = self.market.decimals(symbol)
            price = self.market.current_kline(symbol, "1m", now).close
            return {"symbol": symbol, "price": fmt(price, pd), "time": now}

        if one:
            return _dumps(entry(one[0]))
        return _dumps([entry(s) for s in self._all_symbols()])

    # ------------------------------------------------------------------ /_sim controls over HTTP

    def _control(self, path: str, query: str, body: bytes) -> Response:
        """``/_sim/<name>?args``: the Python controls for a simulator in another process."""
        args = dict(parse_qsl(query, keep_blank_values=True))
        if body:
            try:
                extra = json.loads(body)
                if isinstance(extra, dict):
                    args.update(
                        {
                            k: str(v) if not isinstance(v, list) else ",".join(map(str, v))
                            for k, v in extra.items()
                        }
                    )
            except ValueError:
                return 400, _dumps({"error": "body must be a JSON object"}), {}
        name = path[len("/_sim/") :].strip("/")
        try:
            if name.startswith("ws/"):
                result = self._ws_control(name[3:], args)
            elif name.startswith("archive/"):
                result = self.archive.control(name[len("archive/") :], args)
            else:
                action = self._controls().get(name)
                if action is None:
                    known = sorted(self._controls())
                    return 404, _dumps({"error": f"unknown control {name!r}", "controls": known}), {}
                result = action(args)
        except (KeyError, ValueError, TypeError) as exc:
            return 400, _dumps({"error": str(exc)}), {}
        answer = json.dumps({"ok": True, "result": result}, separators=(",", ":"), default=_jsonable)
        return 200, answer.encode(), {}

    def _controls(self) -> dict[str, Callable[[dict[str, str]], Any]]:
        m = self.market
        return {
            "stats": lambda a: (
                self.stats() | ({"arrivals": self.arrivals()} if _flag(a.get("arrivals")) else {})
            ),
            "arrivals": lambda a: self.arrivals(),
            "retry_windows": lambda a: self.retry_windows(),
            "reset": lambda a: self.reset_stats(),
            "latency": lambda a: self.set_latency(float(a["ms"])),
            "fail": lambda a: self.fail_next(
                int(a.get("count", 1)), int(a.get("status", 429)), float(a.get("retry_after", 1))
            ),
            "error": self._error_control,
            "malformed": lambda a: self.malformed_next(int(a.get("count", 1))),
            "answer_next": lambda a: self.answer_next(a["kind"], int(a.get("count", 1))),
            "stall": lambda a: self.stall_next(int(a.get("count", 1)), float(a["seconds"])),
            "clear_faults": lambda a: self.clear_faults(),
            "unban": lambda a: self.unban(),
            "weight_limit": lambda a: setattr(self, "weight_limit", int(a["limit"])),
            "ban": lambda a: setattr(self, "ban_s", float(a["seconds"])),
            "freeze": lambda a: m.freeze(int(a["at_ms"]) if a.get("at_ms") else None),
            "unfreeze": lambda a: m.unfreeze(),
            "surge": lambda a: m.inject_surge(
                a["symbol"], float(a.get("change_pct", 5.0)), float(a.get("volume_multiple", 10.0))
            ),
            "arrange_4h": lambda a: m.arrange_4h(
                [s for s in a.get("passing", "").split(",") if s],
                min_change_pct=float(a.get("min_change_pct", -5.0)),
                max_change_pct=float(a.get("max_change_pct", 10.0)),
                min_quote_volume=float(a.get("min_quote_volume", 5e6)),
            ),
            "tradable": lambda a: m.tradable_symbols(),
            "account": lambda a: self.account.snapshot(),
            "account/delay_next_order": lambda a: self.account.delay_next_order(
                float(a["seconds"]), int(a.get("count", 1))
            ),
            "account/reject_next_order": lambda a: self.account.reject_next_order(
                int(a["code"]), int(a.get("count", 1))
            ),
            "account/balance": lambda a: self.account.set_balance(a["amount"]),
            "account/cancel_algo": lambda a: self.account.cancel_algo(a["clientAlgoId"]),
            "account/clear_faults": lambda a: self.account.clear_faults(),
            "account/answer_next_order": lambda a: self.account.answer_next_order(
                a["kind"], int(a.get("count", 1)), _bool_arg(a.get("executed", "true"))
            ),
            "account/avg_price_mode": lambda a: self.account.set_avg_price_mode(a["mode"]),
            "account/position_risk_next": lambda a: self.account.position_risk_next(
                a["kind"], int(a.get("count", 1))
            ),
            "account/dual_side": lambda a: self.account.set_dual_side(_bool_arg(a["enabled"])),
            "account/triggering_hold": lambda a: self.account.set_triggering_hold_s(float(a["seconds"])),
            "market": lambda a: m.stats(),
        }

    def _error_control(self, args: dict[str, str]) -> None:
        """``/_sim/error``: ``seconds`` makes it a spell (:meth:`error_for`), else ``count`` requests."""
        status = int(args.get("status", 503))
        if "seconds" in args:
            self.error_for(float(args["seconds"]), status)
        else:
            self.error_next(int(args.get("count", 1)), status)

    def _ws_control(self, name: str, args: dict[str, str]) -> Any:
        ws = self.ws_controls
        if ws is None:
            raise KeyError("no WebSocket server attached")
        method = getattr(ws, name, None)
        if name.startswith("_") or name in _WS_CONTROL_BLOCKLIST or not callable(method):
            raise KeyError(f"unknown WebSocket control {name!r}")
        return method(**{k: _coerce(v) for k, v in args.items()})


def _jsonable(value: Any) -> Any:
    """Sets, tuples and other objects in control results (e.g. WebSocket stats) as JSON values."""
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
    return str(value)


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes", "on")


def _bool_arg(value: str) -> bool:
    """A control's true/false argument; anything else is a 400 rather than a silent False."""
    low = value.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _coerce(value: str) -> Any:
    """Query-string value -> int, float, bool or str, for the WebSocket controls' keyword arguments."""
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
