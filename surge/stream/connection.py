"""One Binance combined-stream WebSocket connection: one named thread, its recv loop, its requests.

Why the loop reads frames itself: ``websocket.create_connection`` does the handshake (TLS, proxy,
headers) and answers nothing on its own until ``recv()`` is called; ``recv()`` then costs ~6.6 µs
per frame, which alone caps a connection near 150,000 frames/s before any JSON is parsed. After the
handshake this module reads the socket in 256 KiB chunks and cuts RFC 6455 frames out of them
(~0.5 µs per frame); pings are answered with websocket-client's own ``WebSocket.pong()`` (thread-safe
with the manager's sends through the library's send lock). Server frames are never masked; a
masked, oversized or malformed frame header is a protocol error and the connection is replaced.

The connection does not decide what to subscribe: the manager's resubscriber sends SUBSCRIBE /
UNSUBSCRIBE through :meth:`Connection.send_request` (rate-limited per connection), and this thread
matches the replies by id and records what the server confirmed. On any loss (error, EOF, silence,
protocol error) the thread reconnects with exponential backoff and full jitter (tenacity), never
giving up, each attempt drawn from the manager-wide attempt budget, and the manager re-subscribes.

Silence is not death. Binance pushes a kline stream only when its candle changed, so a connection of
thin symbols can be quiet for minutes while perfectly healthy; replacing it would cost a gap report
and a REST backfill per stream each time, for nothing. So:

* a connection whose confirmed streams delivered nothing at all since ``silence_timeout_s`` after the
  confirmation is replaced, as before: that is Binance without the ``/market`` route, which
  acknowledges SUBSCRIBE and never sends. Unless a sibling connection of the same manager (same URL)
  has delivered data (``routed``): then the route works and this one is only thin, and is probed;
* a connection that delivered and then went quiet for ``silence_timeout_s`` is probed with
  ``LIST_SUBSCRIPTIONS`` (DEBUG log). An answer proves it alive (quiet again for
  ``silence_timeout_s`` -> probed again); no answer within ``probe_timeout_s`` replaces it (WARNING).
  An answer that lacks confirmed streams (the server dropped them) re-subscribes those streams on
  the same socket instead of reconnecting: the others are fine, and the dropped ones are marked down
  so their re-confirmation reports a gap (we cannot know whether they missed a candle).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import tenacity
import websocket

from surge.exchange import wire
from surge.exchange.wire import WireError
from surge.models import Kline
from surge.stream.throttle import SlidingWindow

if TYPE_CHECKING:
    from surge.stream.multiplex import StreamTuning

_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_MAX_FRAME = 16 * 1024 * 1024  # far above any Binance frame; beyond it the stream is corrupt
# LIST_SUBSCRIPTIONS probes carry ids from here up, far above the manager's request ids (1, 2, ...),
# so a reply is matched to its kind by id alone
PROBE_ID_BASE = 1 << 48


class ProtocolError(Exception):
    """The byte stream is not a valid server-to-client WebSocket stream."""


class _Retry(Exception):
    """A session failed before it proved healthy: back off before the next attempt."""


class _Stopped(Exception):
    """The connection was told to stop while waiting."""


@dataclass
class Request:
    """A SUBSCRIBE / UNSUBSCRIBE in flight on one socket, matched to its reply by ``id``."""

    id: int
    method: str
    streams: tuple[str, ...]
    sent_at: float
    generation: int
    failures: int = 0  # how often these streams were refused or timed out before


@dataclass
class Handover:
    """Dedupe between an old connection being rotated out and its replacement.

    While both are subscribed to the same streams each event arrives twice. Until the old
    connection has seen this object (``old_acked``) it keeps delivering on its own and the new one
    drops everything; from then on both offer every event here and only a strictly newer ``E`` per
    stream passes, under one lock, so the consumer sees each stream's events once and in order.
    """

    old: Connection
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: dict[str, int] = field(default_factory=dict)
    old_acked: bool = False
    started: float = field(default_factory=time.monotonic)

    def offer(self, stream: str, event_time: int) -> bool:
        with self.lock:
            prev = self.last.get(stream)
            if prev is None:
                prev = self.old.last_e.get(stream, 0)
            if event_time <= prev:
                return False
            self.last[stream] = event_time
            return True


class Connection:
    """One WebSocket connection slot with its own thread (``surge-ws-<id>``).

    State shared with the manager is guarded by the manager's lock (``lock``): ``assigned`` (what
    the planner put here), ``server`` (what the server confirmed on the current socket), ``inflight``
    and ``down``. ``deliver`` is the hot-path filter (assigned and wanted); it is only ever mutated
    in place, never rebound, so the recv loop can hold a reference to it.
    """

    def __init__(
        self,
        conn_id: int,
        url: str,
        *,
        lock: threading.Lock,
        callback: Callable[[Kline], Any],
        wake: Callable[[], None],
        on_gap: Callable[[Connection, frozenset[str], int, int, str], None],
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
        self._callback = callback
        self._batch_callback = batch_callback
        self._wake = wake
        self._on_gap = on_gap
        self._budget = budget
        self.tuning = tuning
        self.log = logger
        # set by any connection of the manager that received stream data: the URL's route works
        self.routed = routed if routed is not None else threading.Event()

        self.assigned: set[str] = set()
        self.deliver: set[str] = set()
        self.server: set[str] = set()
        self.inflight: dict[int, Request] = {}
        self.failed: deque[Request] = deque()  # refused or timed out; the manager turns them into retries
        self.down: dict[str, int] = {}  # stream -> wall ms since when it has not been delivered
        self.last_e: dict[str, int] = {}  # stream -> last event time received on this connection
        self.limiter = SlidingWindow(tuning.max_msgs_per_s, 1.0)

        self.handover: Handover | None = None
        self.predecessor: Connection | None = None
        self.retiring = False

        self._ws: websocket.WebSocket | None = None
        self._connecting: websocket.WebSocket | None = None
        self._sock: socket.socket | None = None
        self.generation = 0
        self.connected_at = 0.0  # monotonic, 0 while down
        self.last_rx = 0.0  # monotonic time of the last frame of any kind
        self.last_event_rx = 0.0  # monotonic time of the last data frame
        self.last_rx_wall_ms = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._sessions = 0

        # counters (written by this thread only, read without locks by stats())
        self.messages = 0
        self.events = 0
        self.dropped_frames = 0
        self.unwanted = 0
        self.duplicates = 0
        self.callback_errors = 0
        self.reconnects = 0
        self.attempts = 0
        self.pongs = 0
        self.failed_replies = 0
        self.requests_sent = 0
        self.probes = 0  # LIST_SUBSCRIPTIONS sent because the connection was quiet
        self.probes_unanswered = 0  # ... and not answered in time (each one a reconnect)
        self.last_error = ""
        self._cb_log_at = 0.0

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

    def age_s(self, now: float | None = None) -> float:
        """Seconds since the current socket opened (0 while down)."""
        if not self.connected_at:
            return 0.0
        return (now or time.monotonic()) - self.connected_at

    # ----------------------------------------------------------------- requests (resubscriber thread)

    def send_request(self, req_id: int, method: str, streams: tuple[str, ...], failures: int = 0) -> bool:
        """Send one live request if the socket is up and the rate budget allows; else False.

        Recorded in ``inflight`` before it is sent so a fast reply always finds it.
        """
        ws = self._ws
        if ws is None or not self.limiter.try_acquire():
            return False
        gen = self.generation
        with self.lock:
            if self._ws is not ws:
                return False
            self.inflight[req_id] = Request(req_id, method, streams, time.monotonic(), gen, failures)
        payload = wire_request(method, streams, req_id)
        try:
            ws.send(payload)
        except Exception as exc:  # the recv loop sees the broken socket and reconnects
            self.log.info("%s: send %s failed: %s", self.name, method, exc)
            with self.lock:
                self.inflight.pop(req_id, None)
            return False
        self.requests_sent += 1
        return True

    def expire_requests(self, timeout_s: float) -> int:
        """Forget requests with no reply after ``timeout_s`` (the resubscriber re-sends them)."""
        now = time.monotonic()
        expired = 0
        with self.lock:
            for req_id, req in list(self.inflight.items()):
                if now - req.sent_at > timeout_s:
                    del self.inflight[req_id]
                    self.failed.append(req)
                    expired += 1
                    self.failed_replies += 1
                    self.log.warning("%s: no reply to %s id=%d (%d streams) in %.1fs, will retry",
                                     self.name, req.method, req_id, len(req.streams), timeout_s)
        return expired

    # ----------------------------------------------------------------- thread

    def _run(self) -> None:
        """Connect, serve, reconnect: forever until stopped, never giving up."""
        t = self.tuning
        retrying = tenacity.Retrying(
            wait=tenacity.wait_random_exponential(multiplier=t.backoff_base_s, max=t.backoff_max_s),
            retry=tenacity.retry_if_exception_type(_Retry),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            while not self._stop.is_set():
                # A fresh Retrying call per healthy period: the backoff restarts after a session
                # that proved itself, and keeps growing across sessions that did not.
                try:
                    retrying(self._attempt)
                except _Stopped:
                    break
                except Exception:  # pragma: no cover - a bug: say so loudly, but never give up
                    self.log.exception("%s: connection attempt crashed; retrying", self.name)
                    if self._stop.wait(self.tuning.backoff_max_s):
                        break
        finally:
            self._mark_down("stopped")

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopped

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        sleep = state.next_action.sleep if state.next_action else 0.0
        self.log.info("%s: reconnecting in %.2fs (attempt %d): %s",
                      self.name, sleep, state.attempt_number, self.last_error)

    def _attempt(self) -> None:
        """One connection attempt and, if it opens, one session. Raises _Retry to back off."""
        if self._stop.is_set() or self.retiring and self._sessions > 0:
            raise _Stopped
        if not self._budget.acquire(self._stop):
            raise _Stopped
        self.attempts += 1
        t = self.tuning
        # websocket.create_connection() in two steps, so stop() can reach the socket during the
        # handshake (ws.sock exists from the TCP connect on) instead of waiting out the timeout.
        ws = websocket.WebSocket(
            skip_utf8_validation=True,  # JSON is parsed right after; UTF-8 checks cost 6x the recv
            enable_multithread=True,  # the resubscriber sends while this thread reads
            sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            sslopt=t.sslopt,
        )
        self._connecting = ws
        try:
            ws.connect(self.url, timeout=t.connect_timeout_s)
        except Exception as exc:
            self.last_error = f"connect: {exc!r}"
            try:
                ws.shutdown()
            except Exception:
                pass
            raise _Retry from None
        finally:
            self._connecting = None
        healthy = self._session(ws)
        if self._stop.is_set():
            raise _Stopped
        if self.retiring:
            raise _Stopped
        if not healthy:
            raise _Retry

    def _session(self, ws: websocket.WebSocket) -> bool:
        """Serve one open socket until it ends; True if it delivered data (healthy)."""
        sock = ws.sock
        assert sock is not None
        sock.settimeout(self.tuning.tick_s)
        now = time.monotonic()
        with self.lock:
            self._ws = ws
            self._sock = sock
            self.generation += 1
            self.server.clear()
            self.inflight.clear()
            self.failed.clear()  # refusals on the old socket say nothing about the new one
            self.connected_at = now
            self.last_rx = now
            self.last_event_rx = 0.0
            self._probe_id = None
            self._probe_sent_at = 0.0
            self.probe_answered_at = 0.0
        self._sessions += 1
        if self._sessions > 1:
            self.reconnects += 1
            self.log.info("%s: reconnected (%d streams to restore)", self.name, len(self.assigned))
        else:
            self.log.debug("%s: connected to %s", self.name, self.url)
        if self._stop.is_set():  # stop() raced with the connect: its shutdown missed this socket
            self._close_socket(ws)
            return True
        self._wake()
        reason = "closed"
        try:
            reason = self._recv_loop(ws, sock)
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
            self.dropped_frames += 1
        except OSError as exc:
            reason = f"socket error: {exc!r}"
        except Exception as exc:  # never let a parsing surprise kill the thread silently
            reason = f"unexpected: {exc!r}"
            self.log.exception("%s: recv loop failed", self.name)
        finally:
            healthy = self.last_event_rx > 0.0 or (time.monotonic() - now) >= self.tuning.stable_after_s
            self._close_socket(ws)
            self._mark_down(reason)
        if not self._stop.is_set() and not self.retiring:
            self.log.warning("%s: connection lost (%s); %d streams down", self.name, reason, len(self.down))
        self.last_error = reason
        return healthy

    def _close_socket(self, ws: websocket.WebSocket) -> None:
        try:
            ws.sock and ws.sock.settimeout(0.2)
            ws.send_close()
        except Exception:
            pass
        try:
            ws.shutdown()
        except Exception:
            pass

    def _mark_down(self, reason: str) -> None:
        """Socket gone: nothing is confirmed any more; remember since when each stream is down."""
        with self.lock:
            if self._ws is None and not self.server and not self.inflight:
                return
            self._ws = None
            self._sock = None
            self.connected_at = 0.0
            self.server.clear()
            self.inflight.clear()
            if not self._stop.is_set():
                since = self.last_rx_wall_ms or int(time.time() * 1000)
                for s in self.deliver:
                    self.down.setdefault(s, since)
        self._wake()

    # ----------------------------------------------------------------- recv loop

    def _recv_loop(self, ws: websocket.WebSocket, sock: socket.socket) -> str:
        """Read chunks, cut frames, parse kline events and deliver them. Returns why it ended.

        The socket is read with ``recv_into`` into one buffer allocated per session: a fresh
        ``recv_bufsize`` bytes object per read (``sock.recv``), shrunk to what arrived, is a large
        malloc/realloc per chunk in each of several threads, which fragments glibc's arenas and lets
        RSS creep. Each chunk is then copied once into a bytes object of its exact size (a memcpy,
        ~0.02 µs per event), because slicing payloads out of bytes and decoding them is ~0.25 µs per
        event cheaper than decoding memoryview or bytearray slices. A partial frame at the end of a
        chunk is moved to the front of the buffer; a frame larger than the buffer grows it.

        Counters are kept in locals and flushed per chunk: attribute writes per event cost ~5 %.
        With a ``batch_callback`` the chunk's klines are handed over as one list (one queue hop and
        one consumer wake-up per chunk instead of per event).
        """
        buf = bytearray(self.tuning.recv_bufsize)
        view = memoryview(buf)
        recv_into = sock.recv_into
        fast_kline = wire.combined_kline_frame
        callback = self._callback
        batch_callback = self._batch_callback
        deliver = self.deliver
        last_e = self.last_e
        stop = self._stop
        silence_s = self.tuning.silence_timeout_s
        routed = self.routed
        monotonic = time.monotonic
        have = 0  # bytes of an incomplete frame kept at the front of buf
        frag: list[bytes] = []
        try:
            while True:
                if have >= len(buf):  # one frame does not fit: grow (never beyond _MAX_FRAME + header)
                    view.release()
                    buf = buf + bytearray(len(buf))
                    view = memoryview(buf)
                try:
                    got = recv_into(view[have:])
                except TimeoutError:
                    if stop.is_set():
                        return "stopped"
                    reason = self._check_silence(ws, silence_s)
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
                pos = 0
                frames = data_msgs = events = dropped = unwanted = dups = 0
                batch: list[Kline] = []
                handover = self.handover
                if handover is not None and handover.old is self and not handover.old_acked:
                    handover.old_acked = True  # every event before this point was delivered directly
                while n - pos >= 2:
                    b1 = data[pos + 1]
                    length = b1 & 0x7F
                    if length < 126:
                        hdr = 2
                    elif length == 126:
                        if n - pos < 4:
                            break
                        length = (data[pos + 2] << 8) | data[pos + 3]
                        hdr = 4
                    else:
                        if n - pos < 10:
                            break
                        length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                        hdr = 10
                        if length > _MAX_FRAME:
                            raise ProtocolError(f"frame of {length} bytes")
                    if b1 & 0x80:
                        raise ProtocolError("masked frame from server")
                    end = pos + hdr + length
                    if end > n:
                        break
                    b0 = data[pos]
                    payload = data[pos + hdr : end]
                    pos = end
                    frames += 1
                    if b0 != 0x81:  # anything but a final text frame: control, binary, fragments
                        payload = self._control(ws, b0, payload, frag)
                        if payload is None:
                            continue
                    # ---- one message: a kline event in one typed decode, anything else the slow way
                    parsed = fast_kline(payload)
                    if parsed is None:
                        parsed = self._slow_message(payload)
                        if parsed is None:  # a reply (handled) or a malformed frame (counted)
                            continue
                    stream, kline = parsed
                    data_msgs += 1
                    if stream not in deliver:
                        unwanted += 1
                        continue
                    if kline is None:
                        dropped += 1
                        continue
                    e_time = kline.event_time
                    last_e[stream] = e_time
                    if handover is not None and (
                        (handover.old is not self and not handover.old_acked)
                        or not handover.offer(stream, e_time)
                    ):
                        dups += 1
                        continue
                    events += 1
                    if batch_callback is not None:
                        batch.append(kline)
                        continue
                    try:
                        callback(kline)
                    except Exception:
                        self._callback_failed()
                if batch:
                    try:
                        batch_callback(batch)  # type: ignore[misc]
                    except Exception:
                        self._callback_failed()
                have = n - pos
                if have:
                    buf[:have] = data[pos:]
                self.messages += frames
                if data_msgs:
                    self.last_event_rx = now
                    if not routed.is_set():
                        routed.set()
                if events:
                    self.events += events
                if dropped:
                    self._count_dropped(dropped)
                if unwanted:
                    self.unwanted += unwanted
                if dups:
                    self.duplicates += dups
                if stop.is_set():
                    return "stopped"
        finally:
            view.release()

    def _slow_message(self, payload: bytes) -> tuple[str, Kline | None] | None:
        """A frame the fast kline decoder refused: (stream, Kline) for a kline event it was too strict
        for, (stream, None) for a malformed event of a stream, None for a reply (handled here) or a
        frame that is no stream message at all (counted as dropped here)."""
        try:
            msg = wire.loads(payload)
        except WireError:
            self._count_dropped(1)
            return None
        if type(msg) is not dict:
            self._count_dropped(1)
            return None
        stream = msg.get("stream")
        if stream is None and "id" in msg:
            self._on_reply(msg)
            return None
        if type(stream) is not str:
            self._count_dropped(1)
            return None
        try:
            return stream, wire.kline_from_event(msg.get("data"), stream)  # of its own symbol only
        except WireError:
            return stream, None

    _confirmed_at = 0.0  # monotonic time of the last SUBSCRIBE confirmation (silence reference)
    _probe_id: int | None = None  # the LIST_SUBSCRIPTIONS in flight on this socket, if any
    _probe_sent_at = 0.0
    _probe_seq = 0
    probe_answered_at = 0.0  # monotonic time the last probe was answered (silence reference)

    def _check_silence(self, ws: websocket.WebSocket, silence_s: float) -> str:
        """On a recv timeout: why this socket must be replaced, or "" (see the module docstring)."""
        now = time.monotonic()
        if not self.server:
            # requests unanswered and no frame at all: the server does not read or cannot answer
            if self.inflight and now - self.last_rx > silence_s:
                return f"silent for {now - self.last_rx:.1f}s with {len(self.inflight)} requests unanswered"
            return ""  # idle: nothing is expected from the server
        if self._probe_id is not None:
            if self.last_event_rx > self._probe_sent_at:
                self._probe_id = None  # data came meanwhile: alive; a late answer is ignored
            elif now - self._probe_sent_at > self.tuning.probe_timeout_s:
                self.probes_unanswered += 1
                self.log.warning("%s: quiet for %.1fs and LIST_SUBSCRIPTIONS id=%d unanswered after %.1fs; "
                                 "reconnecting", self.name, self._probe_sent_at - self._quiet_ref(),
                                 self._probe_id, now - self._probe_sent_at)
                return f"probe unanswered for {now - self._probe_sent_at:.1f}s"
            else:
                return ""
        quiet = now - self._quiet_ref()
        if quiet <= silence_s:
            return ""
        if not self.last_event_rx and not self.routed.is_set():
            # nothing since the confirmation and no connection of ours ever received data: the
            # unrouted case (Binance acknowledges SUBSCRIBE on a URL without /market, then sends nothing)
            self.log.warning("%s: %d streams confirmed %.1fs ago and not one event since (is the /market "
                             "route missing from the URL?); reconnecting", self.name, len(self.server), quiet)
            return f"no stream data for {quiet:.1f}s after SUBSCRIBE was confirmed"
        self._send_probe(ws, quiet)
        return ""

    def _quiet_ref(self) -> float:
        return max(self.last_event_rx, self._confirmed_at, self.probe_answered_at)

    def _send_probe(self, ws: websocket.WebSocket, quiet: float) -> None:
        """Ask the server what this socket carries; the answer (any reply with the id) proves it alive."""
        if not self.limiter.try_acquire():
            return  # the outgoing budget is used up this second: the next tick tries again
        self._probe_seq += 1
        probe_id = PROBE_ID_BASE + self._probe_seq
        self._probe_id = probe_id
        self._probe_sent_at = time.monotonic()
        self.probes += 1
        self.log.debug("%s: no stream data for %.1fs; probing with LIST_SUBSCRIPTIONS id=%d",
                       self.name, quiet, probe_id)
        try:
            ws.send(f'{{"method":"LIST_SUBSCRIPTIONS","id":{probe_id}}}')
        except Exception as exc:  # the socket is broken: the recv loop sees it; else the deadline does
            self.log.info("%s: probe send failed: %s", self.name, exc)

    def _on_probe_reply(self, reply: wire.Reply) -> None:
        """A probe answered: the socket is alive. Streams it no longer lists are re-subscribed."""
        self._probe_id = None
        self.probe_answered_at = time.monotonic()
        listed = reply.result
        if not reply.ok or not isinstance(listed, list):
            self.log.debug("%s: probe answered without a list (%s %s): alive", self.name,
                           reply.error_code, reply.error_msg)
            return
        now_ms = int(time.time() * 1000)
        with self.lock:
            listed_names = {s for s in listed if type(s) is str}
            lost = self.server - listed_names - {s for r in self.inflight.values() for s in r.streams}
            if lost:
                self.server.difference_update(lost)
                for s in lost:
                    if s in self.deliver:
                        # since the last event of the stream we know of: its candles after it may be lost
                        self.down.setdefault(s, self.last_e.get(s) or self.last_rx_wall_ms or now_ms)
        if lost:
            self.log.warning("%s: probe: the server no longer lists %d of our streams (%s...); "
                             "re-subscribing them", self.name, len(lost), ", ".join(sorted(lost)[:3]))
            self._wake()
        else:
            self.log.debug("%s: probe answered: %d streams listed, alive", self.name, len(listed))

    def _control(self, ws: websocket.WebSocket, b0: int, payload: bytes, frag: list[bytes]) -> bytes | None:
        """Non-fast-path frames. Returns a complete message payload, or None when there is none."""
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if b0 & 0x70:
            raise ProtocolError("reserved bits set (no extension was negotiated)")
        if opcode == _OP_PING:
            try:
                ws.pong(payload)  # websocket-client's own pong, under its send lock
                self.limiter.record()  # a pong counts against the server's incoming-message limit
                self.pongs += 1
            except Exception as exc:
                self.log.info("%s: pong failed: %s", self.name, exc)
            return None
        if opcode == _OP_PONG:
            return None
        if opcode == _OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            raise OSError(f"close frame from server, code {code} {payload[2:].decode('utf-8', 'replace')}")
        if opcode in (_OP_TEXT, _OP_BINARY):
            if fin:
                return payload
            frag.clear()
            frag.append(payload)
            return None
        if opcode == _OP_CONT:
            if not frag:
                raise ProtocolError("continuation frame without a start")
            frag.append(payload)
            if fin:
                whole = b"".join(frag)
                frag.clear()
                return whole
            return None
        raise ProtocolError(f"unknown opcode {opcode}")

    def _count_dropped(self, n: int) -> None:
        self.dropped_frames += n
        self.log.debug("%s: dropped %d malformed frame(s)", self.name, n)

    def _callback_failed(self) -> None:
        """Log (at most once per 10 s with the traceback) and count; the stream goes on."""
        self.callback_errors += 1
        now = time.monotonic()
        if now - self._cb_log_at >= 10.0:
            self._cb_log_at = now
            self.log.exception("%s: kline callback raised (%d so far); the stream continues",
                               self.name, self.callback_errors)

    def _on_reply(self, msg: dict[str, Any]) -> None:
        """Match a reply to its request: confirm streams, or log the failure for a retry."""
        try:
            reply = wire.parse_reply(msg)
        except WireError:
            self.dropped_frames += 1
            return
        if reply.id == self._probe_id:
            self._on_probe_reply(reply)
            return
        gap: tuple[frozenset[str], int] | None = None
        now_ms = int(time.time() * 1000)
        with self.lock:
            req = self.inflight.pop(reply.id, None)
            if req is None or req.generation != self.generation:
                self.log.debug("%s: reply to unknown request id=%s", self.name, reply.id)
                return
            if reply.ok:
                if req.method == "SUBSCRIBE":
                    self.server.update(req.streams)
                    self._confirmed_at = time.monotonic()
                    back = [s for s in req.streams if s in self.down]
                    if back:
                        since = min(self.down[s] for s in back)
                        for s in back:
                            del self.down[s]
                        gap = (frozenset(back), since)
                else:
                    self.server.difference_update(req.streams)
            else:
                self.failed_replies += 1
                if req.method == "SUBSCRIBE":
                    self.failed.append(req)
                else:
                    # Binance acknowledges UNSUBSCRIBE of a stream it does not carry, so a refusal
                    # means a malformed request: re-sending it cannot help. Take the streams as gone
                    # (their events, if any, are dropped as unwanted).
                    self.server.difference_update(req.streams)
        if not reply.ok:
            self.log.warning("%s: %s id=%d refused (%s %s) for %d streams; will retry",
                             self.name, req.method, reply.id, reply.error_code, reply.error_msg,
                             len(req.streams))
        if gap is not None:
            self._on_gap(self, gap[0], gap[1], now_ms, "reconnect")
        self._wake()


def wire_request(method: str, streams: tuple[str, ...], req_id: int) -> str:
    """``{"method": "SUBSCRIBE", "params": [...], "id": n}`` as compact JSON."""
    params = ",".join(f'"{s}"' for s in streams)
    return f'{{"method":"{method}","params":[{params}],"id":{req_id}}}'
