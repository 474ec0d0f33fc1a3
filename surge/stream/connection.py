"""One Binance combined-stream WebSocket connection: one named thread, its recv loop, its requests.

Why the loop reads the socket itself: ``websocket.WebSocket`` does the handshake (TLS, proxy,
headers) well, but its ``recv()`` costs several microseconds per frame, more than decoding the
kline in it. After the handshake this module reads the socket in ``recv_bufsize`` chunks and
:mod:`surge.stream.frames` cuts the RFC 6455 frames out of each whole chunk; pings are answered with
websocket-client's own ``WebSocket.pong()`` (thread-safe with the manager's sends through the
library's send lock). A protocol error (a masked, oversized or malformed frame) replaces the socket.

The connection does not decide what to subscribe: the manager assigns streams to it
(:class:`~surge.stream.subscriptions.Subscriptions`, ``Connection.streams``), its resubscriber sends
SUBSCRIBE / UNSUBSCRIBE through :meth:`Connection.send_request` (rate-limited per connection), and
this thread matches the replies by id and records what the server confirmed. On any loss (error, EOF, silence,
protocol error) the thread reconnects with exponential backoff and full jitter (tenacity), never
giving up, each attempt drawn from the manager-wide attempt budget, and the manager re-subscribes.

Silence is not death: a quiet connection is probed before it is replaced
(:mod:`surge.stream.liveness`); the reconnect policy is :mod:`surge.stream.reconnect`, the frame
decoding :mod:`surge.stream.frames` and the kline hand-over :mod:`surge.stream.delivery`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import websocket

from surge.exchange import wire
from surge.exchange.wire import WireError
from surge.models import Kline
from surge.stream.counters import StreamCounters
from surge.stream.delivery import KlineDelivery
from surge.stream.frames import Chunk, FrameReader, ProtocolError
from surge.stream.handover import Handover
from surge.stream.liveness import PROBE, PROBE_ID_BASE, Liveness, Quiet
from surge.stream.reconnect import Reconnector, Retry, Stopped
from surge.stream.subscriptions import Request, Subscriptions, wire_request
from surge.stream.throttle import SlidingWindow
from surge.stream.tuning import StreamTuning

__all__ = ["PROBE_ID_BASE", "Connection", "GapReport", "ProtocolError", "wire_request"]

#: What a failed send or handshake raises: the socket's own errors and websocket-client's.
_SOCKET_ERRORS = (OSError, websocket.WebSocketException)
#: ``on_gap(connection, streams, start_ms, end_ms, reason)``: streams re-confirmed after being down.
GapReport = Callable[["Connection", frozenset[str], int, int, str], None]


class Connection:
    """One WebSocket connection slot with its own thread (``surge-ws-<id>``).

    What it carries is ``streams`` (shared with the manager under the manager's lock, ``lock``).
    Counters are in ``counters``, written by this thread only and read without locks.
    """

    def __init__(
        self,
        conn_id: int,
        url: str,
        *,
        lock: threading.Lock,
        callback: Callable[[Kline], Any],
        wake: Callable[[], None],
        on_gap: GapReport,
        budget: SlidingWindow,
        tuning: StreamTuning,
        logger: logging.Logger,
        batch_callback: Callable[[list[Kline]], Any] | None = None,
        routed: threading.Event | None = None,
    ) -> None:
        self.id = conn_id
        self.name = f"surge-ws-{conn_id}"
        self.url = url
        self.lock = lock
        self._wake = wake
        self._on_gap = on_gap
        self._budget = budget
        self.tuning = tuning
        self.log = logger
        # set by any connection of the manager that received stream data: the URL's route works
        self.routed = routed if routed is not None else threading.Event()
        self.streams = Subscriptions()
        self.last_e: dict[str, int] = {}  # stream -> last event time received on this connection
        self.limiter = SlidingWindow(tuning.max_msgs_per_s, 1.0)
        self.counters = StreamCounters()
        # set on both sides of a rotation while it lasts; the replacement clears it once caught up
        self.handover: Handover | None = None
        self.predecessor: Connection | None = None  # the connection this one replaces, during a rotation
        self.retiring = False
        self._delivery = KlineDelivery(
            conn_id,
            self.name,
            logger,
            self.counters,
            callback=callback,
            batch_callback=batch_callback,
            deliver=self.streams.deliver,
            last_e=self.last_e,
            on_reply=self._on_reply,
            decode_last=tuning.decode_last,
        )
        self._liveness = Liveness(
            self.name, logger, self.counters, tuning.silence_timeout_s, tuning.probe_timeout_s
        )
        self._ws: websocket.WebSocket | None = None
        self._connecting: websocket.WebSocket | None = None
        self._sock: socket.socket | None = None
        self.connected_at = 0.0  # monotonic, 0 while down
        self.last_rx = 0.0  # monotonic time of the last frame of any kind
        self.last_event_rx = 0.0  # monotonic time of the last data frame
        self.last_rx_wall_ms = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._sessions = 0

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end and unblock its recv (or handshake); returns at once (join separately)."""
        self._stop.set()
        connecting = self._connecting
        for sock in (self._sock, connecting.sock if connecting is not None else None):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def join(self, timeout: float | None) -> bool:
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def confirmed_at(self) -> float:
        """Monotonic time the server last confirmed a SUBSCRIBE on this connection (0: never)."""
        return self.streams.confirmed_at

    @property
    def last_alive(self) -> float:
        """Monotonic time of the last sign of life: data, or an answered probe (quiet thin streams)."""
        return max(self.last_event_rx, self._liveness.answered_at)

    def due_for_rotation(self, now: float) -> bool:
        """Up past ``max_connection_age_s``, and not still catching up after its own rotation."""
        return self.connected and not self.handover and self.age_s(now) >= self.tuning.max_connection_age_s

    def age_s(self, now: float | None = None) -> float:
        """Seconds since the current socket opened (0 while down)."""
        if not self.connected_at:
            return 0.0
        return (now or time.monotonic()) - self.connected_at

    # ----------------------------------------------------------------- requests (resubscriber thread)

    def send_request(self, req_id: int, method: str, streams: tuple[str, ...], failures: int = 0) -> bool:
        """Send one live request if the socket is up and the rate budget allows; else False."""
        ws = self._ws
        if ws is None or not self.limiter.try_acquire():
            return False
        with self.lock:
            if self._ws is not ws:
                return False
            gen = self.streams.generation
            self.streams.sent(Request(req_id, method, streams, time.monotonic(), gen, failures))
        try:
            ws.send(wire_request(method, streams, req_id))
        except _SOCKET_ERRORS as exc:  # the recv loop sees the broken socket and reconnects
            self.log.info("%s: send %s failed: %s", self.name, method, exc)
            with self.lock:
                self.streams.unsent(req_id)
            return False
        self.counters.requests_sent += 1
        return True

    def expire_requests(self, timeout_s: float) -> int:
        """Forget requests with no reply after ``timeout_s`` (the resubscriber re-sends them)."""
        with self.lock:
            expired = self.streams.expire(time.monotonic(), timeout_s)
        for req in expired:
            self.counters.failed_replies += 1
            self.log.warning("%s: no reply to %s in %.1fs, will retry", self.name, req, timeout_s)
        return len(expired)

    # ----------------------------------------------------------------- thread

    def _run(self) -> None:
        """Connect, serve, reconnect: forever until stopped, never giving up."""
        t = self.tuning
        policy = Reconnector(
            self.name, self.log, self._stop, t.backoff_base_s, t.backoff_max_s, lambda: self.last_error
        )
        try:
            policy.run(self._attempt)
        finally:
            self._mark_down("stopped")

    def _attempt(self) -> None:
        """One connection attempt and, if it opens, one session. Raises Retry to back off."""
        if self._stop.is_set() or self.retiring and self._sessions > 0:
            raise Stopped
        if not self._budget.acquire(self._stop):
            raise Stopped
        self.counters.attempts += 1
        ws = self._connect()
        if ws is None:
            raise Retry
        healthy = self._session(ws)
        if self._stop.is_set() or self.retiring:
            raise Stopped
        if not healthy:
            raise Retry

    def _connect(self) -> websocket.WebSocket | None:
        """Open the socket and do the handshake; None (``last_error`` says why) if that failed."""
        ws = self._connecting = _new_websocket(self.tuning.sslopt)  # stop() can reach it from now on
        try:
            ws.connect(self.url, timeout=self.tuning.connect_timeout_s)
        except (*_SOCKET_ERRORS, ValueError) as exc:  # ValueError: a URL websocket-client cannot parse
            self.last_error = f"connect: {exc!r}"
            try:
                ws.shutdown()
            except OSError:
                pass
            return None
        finally:
            self._connecting = None
        return ws

    def _session(self, ws: websocket.WebSocket) -> bool:
        """Serve one open socket until it ends; True if it delivered data (healthy)."""
        sock = ws.sock
        assert sock is not None
        sock.settimeout(self.tuning.tick_s)
        now = self._open_session(ws, sock)
        if self._stop.is_set():  # stop() raced with the connect: its shutdown missed this socket
            _close_socket(ws)
            return True
        self._wake()
        reason = "closed"
        try:
            reason = self._recv_loop(ws, sock)
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
            self.counters.dropped_frames += 1
        except OSError as exc:
            reason = f"socket error: {exc!r}"
        except Exception as exc:  # a parsing surprise must not end the thread silently (logged)
            reason = f"unexpected: {exc!r}"
            self.log.exception("%s: recv loop failed", self.name)
        finally:
            healthy = self.last_event_rx > 0.0 or (time.monotonic() - now) >= self.tuning.stable_after_s
            _close_socket(ws)
            self._mark_down(reason)
        if not self._stop.is_set() and not self.retiring:
            self.log.warning(
                "%s: connection lost (%s); %d streams down", self.name, reason, len(self.streams.down)
            )
        self.last_error = reason
        return healthy

    def _open_session(self, ws: websocket.WebSocket, sock: socket.socket) -> float:
        """A socket opened: nothing confirmed on it yet. Returns the monotonic time it opened."""
        now = time.monotonic()
        with self.lock:
            self._ws = ws
            self._sock = sock
            self.streams.new_session()
            self.connected_at = now
            self.last_rx = now
            self.last_event_rx = 0.0
            self._liveness.reset()
        self._sessions += 1
        if self._sessions > 1:
            self.counters.reconnects += 1
            self.log.info("%s: reconnected (%d streams to restore)", self.name, len(self.streams.assigned))
        else:
            self.log.debug("%s: connected to %s", self.name, self.url)
        return now

    def _mark_down(self, reason: str) -> None:
        """Socket gone: nothing is confirmed any more; remember since when each stream is down."""
        with self.lock:
            if self._ws is None and not self.streams.server and not self.streams.inflight:
                return
            self._ws = None
            self._sock = None
            self.connected_at = 0.0
            stopping = self._stop.is_set()
            self.streams.socket_lost(None if stopping else self.last_rx_wall_ms or int(time.time() * 1000))
        self._wake()

    # ----------------------------------------------------------------- recv loop

    def _recv_loop(self, ws: websocket.WebSocket, sock: socket.socket) -> str:
        """Read chunks, cut them into frames, deliver the klines. Returns why it ended.

        The socket is read with ``recv_into`` into one buffer allocated per session: a fresh
        ``recv_bufsize`` bytes object per read (``sock.recv``), shrunk to what arrived, is a large
        malloc/realloc per chunk in each of several threads, which fragments glibc's arenas and lets
        RSS creep. Each chunk is then copied once into a bytes object of its exact size, because
        slicing payloads out of bytes and decoding them is cheaper than decoding memoryview or
        bytearray slices. A partial frame at the end of a chunk is moved to the front of the buffer;
        a frame larger than the buffer grows it (up to :data:`surge.stream.frames.MAX_FRAME`).
        """
        buf = bytearray(self.tuning.recv_bufsize)
        view = memoryview(buf)
        recv_into = sock.recv_into
        read_frames = FrameReader().read
        deliver = self._delivery.deliver
        counters, routed, stop, monotonic = self.counters, self.routed, self._stop, time.monotonic
        have = 0  # bytes of an incomplete frame kept at the front of buf
        try:
            while True:
                if have >= len(buf):  # one frame does not fit: grow
                    view.release()
                    buf = buf + bytearray(len(buf))
                    view = memoryview(buf)
                try:
                    got = recv_into(view[have:])
                except TimeoutError:
                    reason = "stopped" if stop.is_set() else self._check_silence(ws)
                    if reason:
                        return reason
                    continue
                if not got:
                    return "closed by server (EOF)"
                now = monotonic()
                self.last_rx = now
                self.last_rx_wall_ms = int(time.time() * 1000)
                n = have + got
                data = bytes(view[:n])
                chunk = read_frames(data, n)
                counters.messages += chunk.frames
                handover = self.handover
                if deliver(chunk.messages, handover):
                    self.last_event_rx = now
                    if not routed.is_set():
                        routed.set()
                if handover is not None and handover.caught_up(self.last_e, self.streams.deliver, now):
                    self.handover = None
                if chunk.pings or chunk.close is not None or chunk.error is not None:
                    self._control(ws, chunk)
                have = n - chunk.consumed
                if have:
                    buf[:have] = data[chunk.consumed :]
                if stop.is_set():
                    return "stopped"
        finally:
            view.release()

    def _control(self, ws: websocket.WebSocket, chunk: Chunk) -> None:
        """A chunk's pings answered, then its close frame or protocol error ends the session."""
        for payload in chunk.pings:
            try:
                ws.pong(payload)  # websocket-client's own pong, under its send lock
                self.limiter.record()  # a pong counts against the server's incoming-message limit
                self.counters.pongs += 1
            except _SOCKET_ERRORS as exc:
                self.log.info("%s: pong failed: %s", self.name, exc)
        if chunk.error is not None:
            raise ProtocolError(chunk.error)
        if chunk.close is not None:
            code, why = chunk.close
            raise OSError(f"close frame from server, code {code} {why}")

    # ----------------------------------------------------------------- replies and probes

    def _on_reply(self, msg: dict[str, Any]) -> None:
        """Match a reply to its request: confirm streams, or log the failure for a retry."""
        try:
            reply = wire.parse_reply(msg)
        except WireError:
            self.counters.dropped_frames += 1
            return
        if reply.id is not None and reply.id == self._liveness.probe_id:
            self._on_probe_reply(reply)
            return
        now_ms = int(time.time() * 1000)
        with self.lock:
            settled = self.streams.settle(reply, time.monotonic())
        if settled is None:
            self.log.debug("%s: reply to unknown request id=%s", self.name, reply.id)
            return
        req = settled.request
        if not settled.ok:
            self.counters.failed_replies += 1
            self.log.warning(
                "%s: %s refused (%s %s); will retry", self.name, req, reply.error_code, reply.error_msg
            )
        if settled.back:
            self._on_gap(self, settled.back, settled.since, now_ms, "reconnect")
        self._wake()

    def _check_silence(self, ws: websocket.WebSocket) -> str:
        """On a recv timeout: why this socket must be replaced, or "" (see :mod:`surge.stream.liveness`)."""
        s, now, routed = self.streams, time.monotonic(), self.routed.is_set()
        quiet = Quiet(
            now, self.last_rx, self.last_event_rx, s.confirmed_at, len(s.server), len(s.inflight), routed
        )
        verdict = self._liveness.verdict(quiet)
        if verdict != PROBE:
            return verdict
        if not self.limiter.try_acquire():
            return ""  # the outgoing budget is used up this second: the next tick tries again
        try:
            ws.send(self._liveness.next_probe(time.monotonic()))
        except _SOCKET_ERRORS as exc:  # the socket is broken: the recv loop sees it; else the deadline does
            self.log.info("%s: probe send failed: %s", self.name, exc)
        return ""

    def _on_probe_reply(self, reply: wire.Reply) -> None:
        """A probe answered: the socket is alive. Streams it no longer lists are re-subscribed."""
        self._liveness.answered(time.monotonic())
        listed = reply.result
        if not reply.ok or not isinstance(listed, list):
            self.log.debug("%s: probe answered (%s %s): alive", self.name, reply.error_code, reply.error_msg)
            return
        fallback_ms = self.last_rx_wall_ms or int(time.time() * 1000)
        with self.lock:
            lost = self.streams.reconcile({s for s in listed if type(s) is str}, self.last_e, fallback_ms)
        if lost:
            sample = ", ".join(sorted(lost)[:3])
            self.log.warning(
                "%s: probe: %d streams no longer listed (%s...); resubscribing", self.name, len(lost), sample
            )
            self._wake()
        else:
            self.log.debug("%s: probe answered: %d streams listed, alive", self.name, len(listed))


def _new_websocket(sslopt: dict[str, Any] | None) -> websocket.WebSocket:
    """``websocket.create_connection()`` in two steps, so ``stop()`` can reach the socket during the
    handshake (``ws.sock`` exists from the TCP connect on) instead of waiting out the timeout."""
    return websocket.WebSocket(
        skip_utf8_validation=True,  # JSON is parsed right after; UTF-8 checks cost more than the recv
        enable_multithread=True,  # the resubscriber sends while this thread reads
        sockopt=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        sslopt=sslopt,
    )


def _close_socket(ws: websocket.WebSocket) -> None:
    """Say goodbye if the socket still takes it (briefly), then close it; errors mean it is gone already."""
    try:
        if ws.sock is not None:
            ws.sock.settimeout(0.2)
        ws.send_close()
    except _SOCKET_ERRORS:
        pass
    try:
        ws.shutdown()
    except OSError:
        pass
