"""The simulated Binance USD-M market-stream WebSocket server.

Why it exists: every stream test of the bot (reconnects, resubscribes, 1,000+ streams, latency)
needs a server that behaves like ``fstream.binance.com`` on 127.0.0.1: same paths, same replies
and error codes, same per-connection limits, kline events every 250 ms, and faults on demand.
Real third-party clients (binance-futures-connector) must accept it as Binance.

How it behaves like Binance, and the sources (API stable for the client's tests):

* ``push_mode="on_change"`` (default): a kline stream is pushed at most every 250 ms and only if there
  is something new (Binance's USD-M docs, Kline/Candlestick Streams, "Update Speed: 250ms"; for the
  spot equivalent users report "it pushes data every 2s if there is anything new (which is not the
  case for a lot of pairs)", ccxt/node-binance-api#509): a frame only
  when the candle changed since the last push, never for a candle without a trade (a thin symbol,
  :meth:`surge.sim.market.Market.thin_symbols`, is silent for as long as it does not trade, minutes
  for a connection of thin symbols). Nothing is sent when a stream is subscribed (Binance documents
  no snapshot; the next change comes as usual). When a candle that
  had trades closes, its final state (``"x": true``) is pushed once, before the next candle's first
  frame (Binance's ``x`` flag exists for that; its docs do not say more, so this follows what clients
  rely on); a candle without any trade is never pushed, at its close either: REST klines still return
  it (open = high = low = close = previous close, volume 0). ``"every_tick"`` pushes every subscribed
  stream at every tick whatever changed (the pre-2026 simulator; benchmarks of the client's throughput).
* ``require_market_route=True`` (default): since 2026-04-23 kline streams are served on the
  ``/market`` route only; an unrouted connection (``/stream``, ``/ws``) acknowledges SUBSCRIBE and then
  never sends a kline. ``url`` is therefore ``ws://HOST:PORT/market`` (like ``SURGE_WS_URL``'s default
  ``wss://fstream.binance.com/market``); ``root_url`` is ``ws://HOST:PORT`` for unrouted tests.
* Replies are only the documented ones ("Error Messages" of the WebSocket market streams docs:
  code 0 ``Unknown property``, 1 ``Invalid value type: expected Boolean``, 2 ``Invalid request: ...``
  (property name, request ID, unknown variant, too many parameters, missing field `method`), 3
  ``Invalid JSON: ...``). Limits are enforced by closing the connection, as Binance is reported to:
  more than ``max_streams`` (1024) streams ("Binance will just close the socket without telling you
  anything", JKorf/Binance.Net#1108), more than 10 incoming messages per second (docs: "A connection
  that goes beyond the limit will be disconnected"), a malformed stream name in SUBSCRIBE, UNSUBSCRIBE
  or the URL (a 2021 spot report, ctubio/Krypto-trading-bot#1121, shows the connection dropped right
  after such a request; the ``code 2 "invalid stream"`` text it also shows is not documented, so it is
  not sent). Close code 1008 with a short reason. A well-formed stream of a symbol that does not
  exist is acknowledged and silent ("It doesn't return an error if you try to subscribe" to an
  invalid symbol, JKorf/Binance.Net#620).

Shape: one asyncio loop in one named thread (``surge-sim-ws``) runs a ``websockets`` server.
One push task refreshes a pre-serialised frame per subscribed stream and writes each connection's
events every ``push_interval_s`` as one batched ``transport.write``; each event is stamped with its own
``E`` at the moment it is serialised for sending (see :mod:`surge.sim.ws_frames`). Each connection
pushes at its own phase of the interval, as connections served by different Binance edge servers
would (``push_phases="per_connection"``, the default; Binance does not document the phase);
``"aligned"`` pushes every connection in the same instant, the worst case for a client that spreads
its streams over several connections.
Test controls are plain methods, callable from any thread: they are marshalled onto the loop.

Served paths, under any base prefix (``/market/stream``, ``/public/ws/x``, ...):
``/stream?streams=a/b``, ``/stream`` (combined envelope ``{"stream": ..., "data": ...}``) and
``/ws/<a>/<b>``, ``/ws`` (bare events). Only kline streams exist in this simulator.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import http
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from surge.exchange import wire
from surge.models import INTERVALS, Kline
from surge.sim.ws_frames import KlineTemplates, dumps, kline_templates, text_frame

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Disconnect reasons counted in ``stats()["disconnects"]``.
REASONS = (
    "rate_limit",
    "pong_timeout",
    "lifetime",
    "dropped",
    "slow_consumer",
    "too_many_streams",
    "invalid_stream",
    "client",
    "server_stop",
)
#: ``push_mode`` values: Binance's "every 250 ms if existing" (only a candle that changed, never one
#: without a trade), or every subscribed stream at every tick (benchmarks of the client's throughput).
PUSH_MODES = ("on_change", "every_tick")
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_METHODS_TEXT = ", ".join(f"`{m}`" for m in METHODS)
_MAX_ID = 2**64 - 1
_COUNTED_OPCODES = frozenset((Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.PONG))
_FIREHOSE_BATCH = 512  # frames per transport.write in firehose mode
_WRITE_LIMIT = 1 << 20  # transport high-water mark: big batches, few pauses
_CLOSED_KEPT = 256  # closed connections remembered for stats()
_PHASE_SLOTS = 25  # push phases per interval (10 ms apart at Binance's 250 ms)
_GOLDEN = 0.6180339887498949  # connection n's phase: frac(n * golden ratio), well spread for any n
PUSH_PHASES = ("per_connection", "aligned")
_SLOW_CONSUMER_BYTES = 16 << 20  # unread bytes after which a connection that does not read is cut off
_CLOSE_INVALID_STREAM = (1008, "Invalid stream")  # close code and reason (Binance sends no reply)
_CLOSE_TOO_MANY_STREAMS = (1008, "Too many streams")


class Market(Protocol):
    """What the server needs from the market model (``surge.sim.market``)."""

    def now_ms(self) -> int: ...
    def tradable_symbols(self) -> list[str]: ...
    def has_symbol(self, symbol: str) -> bool: ...
    def decimals(self, symbol: str) -> tuple[int, int]: ...
    def current_kline(self, symbol: str, interval: str, now_ms: int) -> Kline: ...
    def kline_at(self, symbol: str, interval: str, open_time: int, now_ms: int) -> Kline: ...


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Route:
    """What a request path asks for: envelope, streams named in the URL, ``/market`` routing."""

    combined: bool
    streams: tuple[str, ...]
    routed: bool


def parse_ws_path(path: str) -> Route | None:
    """Map a request target to a :class:`Route`; None when it is no market-stream endpoint.

    The first ``stream`` or ``ws`` segment decides; whatever precedes it is a base prefix
    (Binance serves ``/market/stream`` and ``/public/...`` routes, older clients use the bare ones).
    """
    parts = urlsplit(path)
    segments = [unquote(s) for s in parts.path.split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()
    for i, seg in enumerate(segments):
        if seg not in ("stream", "ws"):
            continue
        routed = "market" in segments[:i]
        rest = segments[i + 1 :]
        if seg == "stream":
            if rest:
                return None
            query = parse_qs(parts.query).get("streams", [""])[-1]
            return Route(True, tuple(s for s in query.split("/") if s), routed)
        return Route(False, tuple(s for s in rest if s), routed)
    return None


class _Stream:
    """One kline stream shared by every connection subscribed to it."""

    __slots__ = (
        "name",
        "symbol",
        "interval",
        "decimals",
        "live",
        "tpl",
        "closing",
        "refreshed",
        "refs",
        "failed",
        "version",
    )

    def __init__(self, name: str, symbol: str, interval: str, decimals: tuple[int, int], live: bool) -> None:
        self.name = name
        self.symbol = symbol
        self.interval = interval
        self.decimals = decimals
        self.live = live  # False for a symbol the market does not know: acknowledged, never sent
        self.tpl: KlineTemplates | None = None
        self.closing: KlineTemplates | None = None  # the last candle that closed (its final state)
        self.refreshed = -1  # push tick of the last refresh: one per tick however many connections
        self.refs = 0
        self.failed = False
        self.version = 0  # bumped whenever tpl is replaced: what on-change pushing compares


class _Conn:
    """Server-side state of one client connection."""

    __slots__ = (
        "id",
        "ws",
        "path",
        "combined",
        "routed",
        "url_streams",
        "subs",
        "messages_in",
        "messages_out",
        "pongs",
        "opened_at",
        "opened_loop",
        "incoming",
        "max_in_window",
        "stall_until",
        "awaiting_since",
        "next_ping",
        "close_reason",
        "closing",
        "closed",
        "firehose_task",
        "tasks",
        "sent_open",
        "sent_ver",
        "closed_sent",
        "sub_ms",
        "refusal",
    )

    def __init__(self, conn_id: int, ws: ServerConnection, path: str, route: Route) -> None:
        self.id = conn_id
        self.ws = ws
        self.path = path
        self.combined = route.combined
        self.routed = route.routed
        self.url_streams = route.streams
        self.subs: dict[str, _Stream] = {}
        self.messages_in = 0
        self.messages_out = 0
        self.pongs = 0
        self.opened_at = time.time()
        self.opened_loop = 0.0
        self.incoming: collections.deque[float] = collections.deque()
        self.max_in_window = 0
        self.stall_until = 0.0
        self.awaiting_since: float | None = None  # loop time of the oldest ping not yet ponged
        self.next_ping = 0.0
        self.close_reason: str | None = None
        self.closing = False
        self.closed = False
        self.firehose_task: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.sent_open: dict[str, int] = {}  # stream -> open time of the candle last pushed here
        self.sent_ver: dict[str, int] = {}  # on_change: stream -> version of the state last pushed (or seen)
        self.closed_sent: dict[str, int] = {}  # on_change: stream -> open time of the last final (x) push
        self.sub_ms: dict[str, int] = {}  # on_change: stream -> market time of the subscription
        self.refusal: tuple[str, int, str] | None = None  # a URL Binance refuses: (reason, code, text)

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "combined": self.combined,
            "routed": self.routed,
            "subscriptions": list(self.subs),
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "pongs_received": self.pongs,
            "opened_at": self.opened_at,
            "max_incoming_per_s": self.max_in_window,
            "close_reason": self.close_reason,
        }


class _SimConnection(ServerConnection):
    """ServerConnection that reports every incoming frame (rate limit, pong accounting)."""

    surge_conn: _Conn | None = None
    surge_owner: WsServer | None = None

    def process_event(self, event: Any) -> None:
        conn = self.surge_conn
        if conn is not None and isinstance(event, Frame) and self.surge_owner is not None:
            self.surge_owner._on_frame(conn, event)
        super().process_event(event)


class RequestError(Exception):
    """A live request Binance would refuse: becomes ``{"error": {"code", "msg"}, "id"}``."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class _NoReply(Exception):
    """A request Binance answers by closing the connection (the close is already under way)."""


class WsServer:
    """Binance USD-M market-stream server on loopback, with fault controls and observations.

    Limits (per connection, as Binance): ``max_streams`` streams (a SUBSCRIBE or URL beyond it closes
    the connection), ``max_incoming_per_s`` incoming frames in any one-second window (exceeding it
    closes the connection), a ping every ``ping_interval_s`` that must be answered by a pong within
    ``pong_timeout_s`` (any pong counts, as on Binance, so clients that pong with an empty payload
    pass), and a forced close after ``connection_lifetime_s``. A malformed stream name (SUBSCRIBE,
    UNSUBSCRIBE or URL) closes the connection. A well-formed name of a symbol the market does not list
    is acknowledged and stays silent, as Binance does; ``refuse_unknown_symbols=True`` treats it as
    malformed instead.

    ``push_mode`` (:data:`PUSH_MODES`): ``"on_change"`` (default, Binance) or ``"every_tick"``.
    ``require_market_route`` (default True, Binance since 2026-04-23): a connection whose path lacks
    ``/market`` gets its replies but never a kline. ``url`` is the ``/market`` base
    (``ws://127.0.0.1:PORT/market``, what ``SURGE_WS_URL`` takes); ``root_url`` the bare address.
    ``record_sent=True`` keeps every distinct candle state pushed per stream (:meth:`sent_klines`):
    what a test needs to prove a client lost nothing, whatever the machine's stalls did to ``E``.
    """

    def __init__(
        self,
        market: Market,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ping_interval_s: float = 180.0,
        pong_timeout_s: float = 600.0,
        connection_lifetime_s: float = 86400.0,
        max_streams: int = 1024,
        max_incoming_per_s: int = 10,
        push_interval_s: float = 0.25,
        push_phases: str = "per_connection",
        refuse_unknown_symbols: bool = False,
        push_mode: str = "on_change",
        require_market_route: bool = True,
        record_sent: bool = False,
    ) -> None:
        self._market = market
        self.host = host
        self._requested_port = port
        self.port = 0
        self.url = ""
        self.root_url = ""
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s
        self.connection_lifetime_s = connection_lifetime_s
        self.max_streams = max_streams
        self.max_incoming_per_s = max_incoming_per_s
        self.push_interval_s = push_interval_s
        if push_phases not in PUSH_PHASES:
            raise ValueError(f"push_phases must be one of {PUSH_PHASES}")
        self.push_phases = push_phases  # read on the loop at every tick: a test may switch it
        if push_mode not in PUSH_MODES:
            raise ValueError(f"push_mode must be one of {PUSH_MODES}")
        self.push_mode = push_mode  # read on the loop at every tick (set_push_mode)
        self.refuse_unknown_symbols = refuse_unknown_symbols

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._lifecycle = threading.Lock()
        self._final: dict[str, Any] | None = None

        # everything below is touched only on the loop thread
        self._conns: dict[int, _Conn] = {}
        self._closed: collections.deque[dict[str, Any]] = collections.deque(maxlen=_CLOSED_KEPT)
        self._streams: dict[str, _Stream] = {}
        self._next_id = 1
        self._accepted = 0
        self._disconnects: collections.Counter[str] = collections.Counter()
        self._tick = 0
        self._offset_ms = 0  # market clock - wall clock, so E follows the market's clock
        self._require_route = bool(require_market_route)
        self._firehose = False
        self._events_sent = 0
        self._malformed_sent = 0
        self._unknown_sent = 0
        #: stream -> every distinct kline event it was pushed (E zeroed), with ``record_sent``
        self._sent: dict[str, set[bytes]] | None = {} if record_sent else None
        #: clock for E; a test may replace it to prove every event is stamped separately
        self.clock_ms: Callable[[], int] = _wall_ms

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the loop thread and return once the server is listening (port and url set)."""
        with self._lifecycle:
            if self._thread is not None:
                raise RuntimeError("WsServer already started")
            self._ready.clear()
            self._thread = threading.Thread(target=self._run, name="surge-sim-ws", daemon=True)
            self._thread.start()
            if not self._ready.wait(10.0):
                raise RuntimeError("WsServer did not start within 10 s")
            if self._start_error is not None:
                self._thread.join(5.0)
                self._thread = None
                raise RuntimeError(f"WsServer failed to start: {self._start_error}") from self._start_error

    def stop(self) -> None:
        """Close every connection, stop the loop and join its thread; idempotent."""
        with self._lifecycle:
            thread, loop, stop_event = self._thread, self._loop, self._stop_event
            if thread is None:
                return
            if loop is not None and stop_event is not None and thread.is_alive():
                try:
                    loop.call_soon_threadsafe(stop_event.set)
                except RuntimeError:  # loop already closed
                    pass
            thread.join(15.0)
            if thread.is_alive():  # pragma: no cover - would be a bug; say so loudly
                raise RuntimeError("WsServer thread did not stop within 15 s")
            self._thread = None

    @property
    def thread_name(self) -> str:
        """Name of the loop thread once listening (``surge-sim-ws:PORT``), so leaks are attributable."""
        return f"surge-sim-ws:{self.port}"

    def __enter__(self) -> WsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # pragma: no cover - surfaced through start()
            if not self._ready.is_set():
                self._start_error = exc
                self._ready.set()
            else:
                log.exception("WsServer loop crashed")
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        try:
            server = await serve(
                self._handle,
                self.host,
                self._requested_port,
                compression=None,  # Binance does not negotiate permessage-deflate for these streams
                ping_interval=None,  # our own keepalive: any pong counts, stalls suspend pings
                ping_timeout=None,
                close_timeout=1.0,
                max_size=1 << 20,
                max_queue=64,
                write_limit=_WRITE_LIMIT,
                process_request=self._process_request,
                create_connection=_SimConnection,
                server_header=None,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it in the caller
            self._start_error = exc
            self._ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self.root_url = f"ws://{self.host}:{self.port}"
        self.url = self.root_url + "/market"
        threading.current_thread().name = self.thread_name
        pusher = asyncio.create_task(self._push_loop(), name="surge-sim-ws-push")
        self._ready.set()
        await self._stop_event.wait()
        pusher.cancel()
        for conn in list(self._conns.values()):
            if conn.close_reason is None:
                conn.close_reason = "server_stop"
            conn.closing = True
            conn.ws.transport.abort()
        server.close(close_connections=False)
        try:
            await asyncio.wait_for(server.wait_closed(), 5.0)
        except TimeoutError:  # pragma: no cover
            log.warning("WsServer: handlers did not finish within 5 s")
        self._final = self._snapshot()

    # ------------------------------------------------------------------ thread-safe controls

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the loop thread and return its result (controls come from test threads)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive() or not self._ready.is_set():
            raise RuntimeError("WsServer is not running")
        if threading.current_thread() is thread:
            return fn(*args)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - re-raised by fut.result() in the caller
                    fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(10.0)

    def drop_all(self) -> int:
        """Abruptly close every connection (TCP abort, no close frame); returns how many."""
        return self._call(self._drop_all)

    def stall(self, seconds: float, conn_id: int | None = None) -> int:
        """Send nothing (no events, replies or pings) and read nothing for ``seconds`` on one or all
        connections; they stay open. Returns the number of connections stalled."""
        return self._call(self._stall, seconds, conn_id)

    def send_malformed(self, n: int, conn_id: int | None = None) -> int:
        """Send ``n`` frames that are not JSON or not a kline event's shape to one or all connections."""
        return self._call(self._send_malformed, n, conn_id)

    def send_unknown_stream(self, n: int, conn_id: int | None = None) -> int:
        """Send ``n`` well-formed kline events for streams the connection did not subscribe."""
        return self._call(self._send_unknown, n, conn_id)

    def require_market_route(self, on: bool) -> None:
        """When on (the default), connections whose path lacks ``/market`` get SUBSCRIBE acks but no
        klines (Binance's behaviour since 2026-04-23 for unrouted connections)."""
        self._call(setattr, self, "_require_route", bool(on))

    def set_push_mode(self, mode: str) -> None:
        """``"on_change"`` (a stream is pushed only when its candle changed) or ``"every_tick"``."""
        if mode not in PUSH_MODES:
            raise ValueError(f"push_mode must be one of {PUSH_MODES}")
        self._call(self._set_push_mode, mode)

    def set_push_phases(self, mode: str) -> None:
        """``"per_connection"`` (each connection at its own phase) or ``"aligned"`` (all at once)."""
        if mode not in PUSH_PHASES:
            raise ValueError(f"push_phases must be one of {PUSH_PHASES}")
        self._call(setattr, self, "push_phases", mode)

    def firehose(self, on: bool) -> None:
        """Push events back to back, as fast as the socket takes them, instead of every 250 ms."""
        self._call(self._set_firehose, bool(on))

    def stats(self) -> dict[str, Any]:
        """Observations, as one dict (after stop(): the final snapshot).

        ``connections``: open ones, each ``{id, path, combined, routed, subscriptions, messages_in,
        messages_out, pongs_received, opened_at (epoch s), max_incoming_per_s, close_reason}``;
        ``closed_connections``: the last 256 closed, same shape, ``close_reason`` set;
        ``connections_accepted``; ``open_connections``; ``subscriptions`` ``{conn id: [stream, ...]}``
        (server side); ``max_incoming_per_s`` ``{conn id: most frames in any 1 s window}`` (open and
        recently closed); ``disconnects`` ``{reason: count}`` over :data:`REASONS`; ``streams``
        (distinct streams subscribed); ``events_sent``, ``malformed_sent``, ``unknown_stream_sent``;
        ``firehose`` and ``require_market_route`` flags; ``push_mode``; ``push_ticks`` (push rounds so
        far, ``push_interval_s / 25`` apart: a test waits on it to see that nothing was pushed).
        """
        try:
            return self._call(self._snapshot)
        except RuntimeError:
            if self._final is not None:
                return self._final
            raise

    def sent_klines(self) -> dict[str, set[Kline]]:
        """Every distinct candle state pushed so far per stream, on any connection, ``event_time`` 0
        (the server was made with ``record_sent=True``). Decoded with the client's wire format, so a
        test compares it with what a client delivered, its ``E`` zeroed."""
        sent = self._sent
        if sent is None:
            raise RuntimeError("WsServer was not made with record_sent=True")
        payloads = self._call(lambda: {name: set(events) for name, events in sent.items()})
        return {
            name: {wire.kline_from_event(wire.loads(p), name) for p in events}
            for name, events in payloads.items()
        }

    # ------------------------------------------------------------------ loop-side implementations

    def _targets(self, conn_id: int | None) -> list[_Conn]:
        if conn_id is None:
            return [c for c in self._conns.values() if not c.closing]
        conn = self._conns.get(conn_id)
        if conn is None:
            raise KeyError(f"no open connection with id {conn_id}")
        return [conn]

    def _drop_all(self) -> int:
        conns = [c for c in self._conns.values() if not c.closed]
        for conn in conns:
            if conn.close_reason is None:
                conn.close_reason = "dropped"
            conn.closing = True
            conn.ws.transport.abort()
        return len(conns)

    def _stall(self, seconds: float, conn_id: int | None) -> int:
        loop = asyncio.get_running_loop()
        conns = self._targets(conn_id)
        until = loop.time() + seconds
        for conn in conns:
            conn.stall_until = max(conn.stall_until, until)
            conn.awaiting_since = None  # pongs cannot be read while stalled: do not count against it
            conn.ws.transport.pause_reading()
            loop.call_at(conn.stall_until, self._end_stall, conn)
        return len(conns)

    def _end_stall(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        if conn.closed or loop.time() < conn.stall_until - 1e-6:
            return  # closed, or a later stall extended this one
        conn.ws.transport.resume_reading()

    def _stalled(self, conn: _Conn, now: float) -> bool:
        return conn.stall_until > now

    def _send_malformed(self, n: int, conn_id: int | None) -> int:
        sent = 0
        for conn in self._targets(conn_id):
            name = next(iter(conn.subs), "btcusdt@kline_1m")
            variants = (
                b'{"stream":"' + name.encode() + b'","data":{"e":"kline","E":',  # truncated JSON
                b"this is not json",
                b"[]",
                b"null",
                b'{"stream":"' + name.encode() + b'","data":{"e":"kline","E":1}}',  # no "k"
                b'{"stream":"' + name.encode() + b'","data":{"e":"kline","E":1,"s":"X","k":{"t":"x"}}}',
                b'{"e":"kline","E":"soon","k":[]}',
            )
            frames = [text_frame(variants[i % len(variants)]) for i in range(n)]
            if self._write(conn, b"".join(frames), len(frames)):
                sent += len(frames)
        self._malformed_sent += sent
        return sent

    def _send_unknown(self, n: int, conn_id: int | None) -> int:
        sent = 0
        market = self._market
        now = market.now_ms()
        symbols = market.tradable_symbols()
        for conn in self._targets(conn_id):
            frames: list[bytes] = []
            for symbol in symbols:
                for interval in ("1m", "4h", "5m", "1h"):
                    name = wire.stream_name(symbol, interval)
                    if name in conn.subs:
                        continue
                    try:
                        kline = market.current_kline(symbol, interval, now)
                    except ValueError:  # not listed yet
                        continue
                    tpl = kline_templates(name, kline, *market.decimals(symbol))
                    frames.append((tpl.combined if conn.combined else tpl.raw).frame(self._event_time()))
                    if len(frames) >= n:
                        break
                if len(frames) >= n:
                    break
            if self._write(conn, b"".join(frames), len(frames)):
                sent += len(frames)
        self._unknown_sent += sent
        return sent

    def _set_push_mode(self, mode: str) -> None:
        if mode == "on_change" and self.push_mode != mode:
            now = self._market.now_ms()  # from here on, only what changes after the switch
            for conn in self._conns.values():
                self._mark_seen(conn, conn.subs, now)
        self.push_mode = mode

    def _set_firehose(self, on: bool) -> None:
        self._firehose = on
        if on:
            for conn in self._conns.values():
                self._start_firehose(conn)

    def _snapshot(self) -> dict[str, Any]:
        open_conns = [c.info() for c in self._conns.values()]
        closed = list(self._closed)
        disconnects = {reason: self._disconnects.get(reason, 0) for reason in REASONS}
        return {
            "url": self.url,
            "connections": open_conns,
            "open_connections": len(open_conns),
            "connections_accepted": self._accepted,
            "subscriptions": {c["id"]: list(c["subscriptions"]) for c in open_conns},
            "max_incoming_per_s": {c["id"]: c["max_incoming_per_s"] for c in closed + open_conns},
            "disconnects": disconnects,
            "closed_connections": closed,
            "streams": len(self._streams),
            "events_sent": self._events_sent,
            "malformed_sent": self._malformed_sent,
            "unknown_stream_sent": self._unknown_sent,
            "firehose": self._firehose,
            "require_market_route": self._require_route,
            "push_mode": self.push_mode,
            "push_ticks": self._tick,
        }

    # ------------------------------------------------------------------ connections

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        route = parse_ws_path(request.path)
        if route is None:
            return ws.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        names = list(dict.fromkeys(route.streams))
        refusal = None
        if any(not self._valid_stream(name) for name in names):
            refusal = ("invalid_stream", *_CLOSE_INVALID_STREAM)
        elif len(names) > self.max_streams:
            refusal = ("too_many_streams", *_CLOSE_TOO_MANY_STREAMS)
        if refusal is not None:  # the handshake succeeds, then the connection is closed: no reply text
            route = Route(route.combined, (), route.routed)
        conn = _Conn(self._next_id, ws, request.path, route)
        conn.refusal = refusal
        self._next_id += 1
        assert isinstance(ws, _SimConnection)
        ws.surge_owner = self
        ws.surge_conn = conn
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        conn = getattr(ws, "surge_conn", None)
        if conn is None:  # pragma: no cover - process_request always attaches one
            return
        loop = asyncio.get_running_loop()
        self._conns[conn.id] = conn
        self._accepted += 1
        conn.opened_loop = loop.time()
        conn.next_ping = conn.opened_loop + self.ping_interval_s
        ws.transport.set_write_buffer_limits(high=_WRITE_LIMIT)
        if conn.refusal is not None:
            self._close(conn, *conn.refusal)
        self._subscribe(conn, conn.url_streams)
        watcher = asyncio.create_task(self._watch(conn), name=f"surge-sim-ws-watch-{conn.id}")
        if self._firehose:
            self._start_firehose(conn)
        try:
            async for message in ws:
                if not conn.closing:  # once closing, drain quietly: our close code must go out first
                    self._on_request(conn, message)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            conn.closing = True
            watcher.cancel()
            if conn.firehose_task is not None:
                conn.firehose_task.cancel()
            for task in list(conn.tasks):
                task.cancel()
            self._unregister(conn)

    def _unregister(self, conn: _Conn) -> None:
        if self._conns.pop(conn.id, None) is None:
            return
        for name in list(conn.subs):
            self._release(conn, name)
        reason = conn.close_reason or "client"
        conn.close_reason = reason
        self._disconnects[reason] += 1
        self._closed.append(conn.info())

    def _spawn(self, conn: _Conn, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    def _close(self, conn: _Conn, reason: str, code: int, text: str) -> None:
        """Start closing ``conn`` for ``reason`` (counted once); the close handshake runs as a task."""
        if conn.closing:
            return
        conn.closing = True
        conn.close_reason = reason
        self._spawn(conn, self._close_task(conn, code, text))

    async def _close_task(self, conn: _Conn, code: int, text: str) -> None:
        try:
            await asyncio.wait_for(conn.ws.close(code, text), 3.0)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - a failed close ends in an abort anyway
            pass
        finally:
            if not conn.closed:
                conn.ws.transport.abort()

    def _on_frame(self, conn: _Conn, frame: Frame) -> None:
        """Every incoming frame: message/pong counters and the per-second rate limit."""
        opcode = frame.opcode
        if opcode not in _COUNTED_OPCODES:
            return
        if opcode is Opcode.PONG:
            conn.pongs += 1
            conn.awaiting_since = None
        elif opcode is not Opcode.PING:
            conn.messages_in += 1
        now = asyncio.get_running_loop().time()
        window = conn.incoming
        window.append(now)
        while window and window[0] <= now - 1.0:
            window.popleft()
        count = len(window)
        if count > conn.max_in_window:
            conn.max_in_window = count
        if count > self.max_incoming_per_s:
            self._close(conn, "rate_limit", 1008, "Too many requests")

    async def _watch(self, conn: _Conn) -> None:
        """Lifetime, server pings and the pong deadline of one connection."""
        loop = asyncio.get_running_loop()
        deadline = conn.opened_loop + self.connection_lifetime_s
        while not conn.closing:
            now = loop.time()
            if now >= deadline:
                self._close(conn, "lifetime", 1001, "Connection lifetime exceeded")
                return
            stalled = self._stalled(conn, now)
            if not stalled:
                if conn.awaiting_since is not None and now >= conn.awaiting_since + self.pong_timeout_s:
                    self._close(conn, "pong_timeout", 1008, "Pong timeout")
                    return
                if now >= conn.next_ping:
                    self._ping(conn, now)
            wake = [deadline, conn.next_ping]
            if stalled:
                wake.append(conn.stall_until)
            elif conn.awaiting_since is not None:
                wake.append(conn.awaiting_since + self.pong_timeout_s)
            await asyncio.sleep(max(0.0, min(wake) - loop.time()) + 0.001)

    def _ping(self, conn: _Conn, now: float) -> None:
        ws = conn.ws
        conn.next_ping = now + self.ping_interval_s
        if ws.protocol.state is not State.OPEN:
            return
        ws.protocol.send_ping(str(self._event_time()).encode())
        ws.send_data()
        if conn.awaiting_since is None:
            conn.awaiting_since = now

    @staticmethod
    def _writable(conn: _Conn) -> bool:
        ws = conn.ws
        return not conn.closing and ws.protocol.state is State.OPEN and not ws.transport.is_closing()

    def _write(self, conn: _Conn, data: bytes, count: int) -> bool:
        """Write complete frames to the socket; False when the connection cannot take them."""
        if not self._writable(conn):
            return False
        conn.ws.transport.write(data)
        conn.messages_out += count
        return True

    # ------------------------------------------------------------------ live requests

    def _on_request(self, conn: _Conn, message: str | bytes) -> None:
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        req_id: int | None = None
        try:
            try:
                req = json.loads(text)
            except json.JSONDecodeError as exc:
                what = "expected value" if exc.msg == "Expecting value" else exc.msg[:1].lower() + exc.msg[1:]
                where = f"at line {exc.lineno} column {exc.colno}"
                raise RequestError(3, f"Invalid JSON: {what} {where}") from None
            if not isinstance(req, dict):
                kind = type(req).__name__
                raise RequestError(2, f"Invalid request: invalid type: {kind}, expected an object")
            rid = req.get("id")
            id_ok = isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid <= _MAX_ID
            if id_ok:
                req_id = rid
            if "method" not in req:
                raise RequestError(2, f"Invalid request: missing field `method` at line 1 column {len(text)}")
            method = req["method"]
            if method not in METHODS:
                token = json.dumps(method)
                column = text.find(token) + len(token) if isinstance(method, str) else len(text)
                raise RequestError(
                    2,
                    f"Invalid request: unknown variant `{method}`, expected one of "
                    f"{_METHODS_TEXT} at line 1 column {column}",
                )
            if not id_ok:
                raise RequestError(2, "Invalid request: request ID must be an unsigned integer")
            result = self._dispatch(conn, method, req)
            self._reply(conn, {"result": result, "id": req_id})
        except _NoReply:
            pass
        except RequestError as err:
            self._reply(conn, {"error": {"code": err.code, "msg": err.msg}, "id": req_id})

    def _reply(self, conn: _Conn, obj: dict[str, Any]) -> None:
        self._write(conn, text_frame(dumps(obj)), 1)

    def _dispatch(self, conn: _Conn, method: str, req: dict[str, Any]) -> Any:
        params = req.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if "params" not in req:
                raise RequestError(2, "Invalid request: missing field `params`")
            if not isinstance(params, list):
                raise RequestError(2, "Invalid request: invalid type for `params`, expected a sequence")
            names = list(dict.fromkeys(params))
            # unsubscribing from a well-formed name nobody serves is harmless: acknowledged
            known = method == "SUBSCRIBE"
            if any(not isinstance(n, str) or not self._valid_stream(n, known) for n in names):
                self._close(conn, "invalid_stream", *_CLOSE_INVALID_STREAM)
                raise _NoReply
            if method == "SUBSCRIBE":
                if len(conn.subs.keys() | set(names)) > self.max_streams:
                    self._close(conn, "too_many_streams", *_CLOSE_TOO_MANY_STREAMS)
                    raise _NoReply
                self._subscribe(conn, names)
            else:
                for name in names:
                    self._release(conn, name)
            return None
        if not isinstance(params, list):
            raise RequestError(2, "Invalid request: invalid type for `params`, expected a sequence")
        if method == "LIST_SUBSCRIPTIONS":
            if params:
                raise RequestError(2, "Invalid request: too many parameters")
            return list(conn.subs)
        expected = 2 if method == "SET_PROPERTY" else 1
        if len(params) > expected:
            raise RequestError(2, "Invalid request: too many parameters")
        if not params or not isinstance(params[0], str):
            raise RequestError(2, "Invalid request: property name must be a string")
        if params[0] != "combined":
            raise RequestError(0, "Unknown property")
        if method == "GET_PROPERTY":
            return conn.combined
        if len(params) < 2 or not isinstance(params[1], bool):
            raise RequestError(1, "Invalid value type: expected Boolean")
        conn.combined = params[1]
        return None

    def _valid_stream(self, name: str, known_symbol: bool = True) -> bool:
        """A lower-case kline stream of a known interval (and, if asked and so configured, a symbol
        the market lists)."""
        try:
            symbol, interval = wire.parse_stream_name(name)
        except wire.WireError:
            return False
        if name != f"{symbol.lower()}@kline_{interval}" or interval not in INTERVALS:
            return False
        return not (known_symbol and self.refuse_unknown_symbols) or self._market.has_symbol(symbol)

    def _subscribe(self, conn: _Conn, names: Iterable[str]) -> None:
        added: list[str] = []
        for name in names:
            if name in conn.subs:
                continue
            added.append(name)
            stream = self._streams.get(name)
            if stream is None:
                symbol, interval = wire.parse_stream_name(name)
                live = self._market.has_symbol(symbol)
                decimals = self._market.decimals(symbol) if live else (4, 3)
                stream = _Stream(name, symbol, interval, decimals, live)
                self._streams[name] = stream
            stream.refs += 1
            conn.subs[name] = stream
        if added and self.push_mode == "on_change":
            self._mark_seen(conn, added, self._market.now_ms())

    def _mark_seen(self, conn: _Conn, names: Iterable[str], now: int) -> None:
        """On change: take the candles as they are now as already pushed to ``conn``.

        Binance sends nothing when a stream is subscribed, only the next change of its candle; the
        stream is refreshed here so that "now" is its current state, not an old one.
        """
        for name in names:
            stream = conn.subs[name]
            if stream.live:
                self._refresh(stream, now)
            conn.sent_ver[name] = stream.version
            conn.sub_ms[name] = now

    def _release(self, conn: _Conn, name: str) -> None:
        stream = conn.subs.pop(name, None)
        conn.sent_open.pop(name, None)
        conn.sent_ver.pop(name, None)
        conn.closed_sent.pop(name, None)
        conn.sub_ms.pop(name, None)
        if stream is None:
            return
        stream.refs -= 1
        if stream.refs <= 0:
            self._streams.pop(name, None)

    # ------------------------------------------------------------------ pushing events

    def _event_time(self) -> int:
        return self.clock_ms() + self._offset_ms

    async def _push_loop(self) -> None:
        """Every ``push_interval_s / _PHASE_SLOTS``: push the connections whose phase it is."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.push_interval_s / _PHASE_SLOTS
            delay = next_at - loop.time()
            if delay < 0:  # fell behind (loaded machine): do not burst to catch up
                next_at = loop.time()
                delay = 0.0
            await asyncio.sleep(delay)
            try:
                self._push_round()
            except Exception:  # pragma: no cover - a market bug must not kill the server
                log.exception("WsServer: push round failed")

    def _phase(self, conn: _Conn) -> int:
        """The slot of the interval at which ``conn`` pushes."""
        if self.push_phases == "aligned":
            return 0
        return int((conn.id * _GOLDEN) % 1.0 * _PHASE_SLOTS)

    def _push_round(self) -> None:
        self._tick += 1
        tick = self._tick
        if not self._streams:
            return
        slot = tick % _PHASE_SLOTS
        if self._firehose:  # the firehose writes the current frames back to back: keep them current
            if slot == 0:
                now = self._market.now_ms()
                for stream in self._streams.values():
                    if stream.live:
                        stream.refreshed = tick
                        self._refresh(stream, now)
            return
        due = [c for c in self._conns.values() if c.subs and self._phase(c) == slot]
        if not due:
            return
        market = self._market
        now = market.now_ms()
        offset = now - _wall_ms()
        if abs(offset - self._offset_ms) > 2:  # ignore rounding jitter so E never steps back
            self._offset_ms = offset
        loop_now = asyncio.get_running_loop().time()
        require_route = self._require_route
        on_change = self.push_mode == "on_change"
        for conn in due:
            # not writable: skipped before its frames are built, so what is recorded was written
            if not self._writable(conn) or self._stalled(conn, loop_now):
                continue
            if require_route and not conn.routed:
                continue
            if conn.ws.transport.get_write_buffer_size() > _SLOW_CONSUMER_BYTES:
                # a client that stopped reading would otherwise grow this process without bound
                conn.close_reason = "slow_consumer"
                conn.closing = True
                conn.ws.transport.abort()
                continue
            for stream in conn.subs.values():
                if stream.live and stream.refreshed != tick:
                    stream.refreshed = tick
                    self._refresh(stream, now)
            frames = self._changed_frames(conn) if on_change else self._tick_frames(conn)
            if frames and self._write(conn, b"".join(frames), len(frames)):
                self._events_sent += len(frames)

    def _changed_frames(self, conn: _Conn) -> list[bytes]:
        """Binance's "every 250 ms if existing": a stream's frame only when its candle changed since
        the last push, never for a candle without a trade; the final (``x``) state of a candle that
        had trades once it closes, before the next candle, if the connection was subscribed then."""
        combined = conn.combined
        sent_ver, closed_sent, sub_ms = conn.sent_ver, conn.closed_sent, conn.sub_ms
        record = self._record if self._sent is not None else None
        frames: list[bytes] = []
        append = frames.append
        for name, stream in conn.subs.items():
            tpl = stream.tpl
            if tpl is None:
                continue
            closing = stream.closing
            if closing is not None:
                final = closing.kline
                if (
                    final.trades
                    and closed_sent.get(name, -1) < final.open_time
                    and sub_ms.get(name, 0) <= final.close_time
                ):
                    closed_sent[name] = final.open_time
                    append((closing.combined if combined else closing.raw).frame(self._event_time()))
                    if record is not None:
                        record(name, closing)
            if sent_ver.get(name) != stream.version:
                sent_ver[name] = stream.version
                if tpl.kline.trades:
                    append((tpl.combined if combined else tpl.raw).frame(self._event_time()))
                    if record is not None:
                        record(name, tpl)
        return frames

    def _record(self, name: str, tpl: KlineTemplates) -> None:
        """``record_sent``: keep this event (E zeroed). Looked up once per push, not per frame."""
        assert self._sent is not None
        raw = tpl.raw
        self._sent.setdefault(name, set()).add(raw.prefix + b"0" + raw.suffix)

    def _tick_frames(self, conn: _Conn) -> list[bytes]:
        """Every tick, every stream's current frame (and a closed candle's final state once)."""
        combined = conn.combined
        sent_open = conn.sent_open
        record = self._record if self._sent is not None else None
        frames: list[bytes] = []
        append = frames.append
        for name, stream in conn.subs.items():
            tpl = stream.tpl
            if tpl is None:
                continue
            open_time = tpl.kline.open_time
            last = sent_open.get(name)
            if last != open_time:
                closing = stream.closing
                if last is not None and closing is not None and closing.kline.open_time == last:
                    # the candle this connection last saw has closed: its final state first
                    append((closing.combined if combined else closing.raw).frame(self._event_time()))
                    if record is not None:
                        record(name, closing)
                sent_open[name] = open_time
            append((tpl.combined if combined else tpl.raw).frame(self._event_time()))
            if record is not None:
                record(name, tpl)
        return frames

    def _refresh(self, stream: _Stream, now: int) -> None:
        """Re-serialise a stream only when its candle changed; remember a candle that just closed."""
        market = self._market
        try:
            kline = market.current_kline(stream.symbol, stream.interval, now)
            old = stream.tpl
            if old is not None and kline == old.kline:
                return
            if old is not None and kline.open_time != old.kline.open_time:
                closed = market.kline_at(stream.symbol, stream.interval, old.kline.open_time, now)
                if not closed.closed:  # a newer candle exists, so this one is over
                    closed = msgspec.structs.replace(closed, closed=True)
                stream.closing = kline_templates(stream.name, closed, *stream.decimals)
            stream.tpl = kline_templates(stream.name, kline, *stream.decimals)
            stream.version += 1
        except Exception as exc:  # noqa: BLE001 - e.g. a symbol not listed yet: silent until it is, like Binance
            if not stream.failed:
                stream.failed = True
                log.warning("WsServer: no kline for %s yet: %s", stream.name, exc)

    def _start_firehose(self, conn: _Conn) -> None:
        if conn.firehose_task is None or conn.firehose_task.done():
            conn.firehose_task = asyncio.get_running_loop().create_task(
                self._firehose_loop(conn), name=f"surge-sim-ws-firehose-{conn.id}"
            )

    async def _firehose_loop(self, conn: _Conn) -> None:
        """Benchmark mode: write batches of events back to back, pausing only for socket backpressure."""
        try:
            await self._firehose_batches(conn)
        except (ConnectionError, ConnectionClosed):  # the connection went away under a drain()
            pass

    async def _firehose_batches(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        ws = conn.ws
        clock = self.clock_ms
        index = 0
        while self._firehose and not conn.closing:
            streams = [s.tpl for s in conn.subs.values() if s.tpl is not None]
            if not streams or self._stalled(conn, loop.time()) or (self._require_route and not conn.routed):
                await asyncio.sleep(0.01)
                continue
            offset = self._offset_ms
            templates = [t.combined if conn.combined else t.raw for t in streams]
            count = len(templates)
            frames: list[bytes] = []
            append = frames.append
            for _ in range(_FIREHOSE_BATCH):
                index += 1
                if index >= count:
                    index = 0
                append(templates[index].frame(clock() + offset))
            if not self._write(conn, b"".join(frames), _FIREHOSE_BATCH):
                return
            self._events_sent += _FIREHOSE_BATCH
            if ws.transport.get_write_buffer_size() > _WRITE_LIMIT:
                await ws.drain()
            else:
                await asyncio.sleep(0)
