"""The connection's own frame reader, against a raw scripted WebSocket server on 127.0.0.1.

The simulator only sends the frames Binance sends; these tests cover the rest of RFC 6455 that a
server may legally (or illegally) send: fragmented messages, 64-bit lengths, pings with payloads,
close frames, and masked frames (forbidden from servers: the connection must be replaced).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from surge.exchange import wire
from surge.models import Kline
from surge.stream.connection import Connection, wire_request
from surge.stream.throttle import SlidingWindow
from surge.stream.tuning import StreamTuning
from tests.stream.conftest import wait_until
from tests.stream.test_frames import frame

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KLINE = Kline(
    "BTCUSDT", "1m", 1_700_000_000_000, 1_700_000_059_999, 1.5, 2.0, 1.0, 1.75, 10.0, 17.5, 42, False
)
STREAM = "btcusdt@kline_1m"


def event(e_time: int, **extra: object) -> bytes:
    data = wire.kline_to_event(KLINE, e_time)
    data.update(extra)
    return json.dumps({"stream": STREAM, "data": data}, separators=(",", ":")).encode()


def read_client_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One (masked) client frame: (opcode, unmasked payload)."""

    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("eof")
            buf += chunk
        return buf

    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exact(8))[0]
    key = exact(4)
    data = exact(n)
    return b0 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data))


Script = Callable[[socket.socket, int], None]


class RawServer:
    """Accepts connections and runs ``script(sock, n)`` for the n-th one after the handshake."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        scheme = "wss" if tls else "ws"
        self.url = f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}/stream"
        self.accepted = 0
        self.errors: list[BaseException] = []
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self._socks.append(sock)
            n = self.accepted
            self.accepted += 1
            threading.Thread(target=self._serve, args=(sock, n), daemon=True).start()

    def _serve(self, sock: socket.socket, n: int) -> None:
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
                self._socks.append(sock)
            req = b""
            while b"\r\n\r\n" not in req:
                req += sock.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in req.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key")
            )
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            sock.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.script(sock, n)
        except (OSError, ConnectionError):
            pass
        except BaseException as exc:  # noqa: BLE001 - any failure of the script is surfaced by the test
            self.errors.append(exc)

    def close(self) -> None:
        self.listener.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


RawFactory = Callable[..., RawServer]


class Harness:
    def __init__(self, url: str, batch: bool = False, **tuning: object) -> None:
        self.klines: list[Kline] = []
        self.batches: list[list[Kline]] = []
        self.lock = threading.Lock()
        t = StreamTuning(
            **{
                "tick_s": 0.05,
                "backoff_base_s": 0.01,
                "backoff_max_s": 0.05,
                "silence_timeout_s": 5.0,
                **tuning,
            }
        )  # type: ignore[arg-type]
        self.conn = Connection(
            0,
            url,
            lock=self.lock,
            callback=self.klines.append,
            wake=lambda: None,
            on_gap=lambda *a: None,
            budget=SlidingWindow(100, 60.0),
            tuning=t,
            logger=logging.getLogger("test.connection"),
            batch_callback=self._batch if batch else None,
        )
        self.conn.streams.assign([STREAM])
        self.conn.start()

    def _batch(self, klines: list[Kline]) -> None:
        self.batches.append(klines)
        self.klines.extend(klines)

    def stop(self) -> None:
        self.conn.stop()
        assert self.conn.join(5.0)


@pytest.fixture
def raw() -> Iterator[Callable[[Callable[[socket.socket, int], None]], RawServer]]:
    servers: list[RawServer] = []

    def make(script: Callable[[socket.socket, int], None], tls: ssl.SSLContext | None = None) -> RawServer:
        srv = RawServer(script, tls)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.close()
        assert not srv.errors, srv.errors


def test_fragments_large_frames_and_pings(raw: Callable[..., RawServer]) -> None:
    pongs: list[bytes] = []
    hold = threading.Event()

    def script(sock: socket.socket, n: int) -> None:
        msg = event(1)
        half = len(msg) // 2
        big = event(3, pad="x" * 70_000)  # 64-bit length form
        sock.sendall(
            frame(msg[:half], fin=False)
            + frame(b"ping-1", opcode=0x9)  # control inside a message
            + frame(msg[half:], opcode=0x0)
            + frame(event(2))
            + frame(big)
        )
        opcode, payload = read_client_frame(sock)
        assert opcode == 0xA
        pongs.append(payload)
        hold.wait(10)

    srv = raw(script)
    h = Harness(srv.url)
    try:
        wait_until(lambda: len(h.klines) == 3 and pongs, 10, "three klines and a pong")
        assert [k.event_time for k in h.klines] == [1, 2, 3]
        assert h.klines[0] == Kline(**{**_fields(KLINE), "event_time": 1})
        assert pongs == [b"ping-1"]
        assert h.conn.counters.pongs == 1 and h.conn.counters.dropped_frames == 0
    finally:
        hold.set()
        h.stop()


def test_frames_larger_than_the_buffer_and_split_across_reads_with_batches(raw: RawFactory) -> None:
    """recv_into a fixed buffer: a frame cut anywhere, or bigger than the buffer, still arrives whole;
    with a batch callback each read's klines come as one list and the per-kline callback is not used."""
    hold = threading.Event()

    def script(sock: socket.socket, n: int) -> None:
        stream = b"".join(frame(event(i)) for i in range(1, 41))
        stream += frame(event(41, pad="y" * 20_000)) + frame(event(42))  # 5x the 4 KiB buffer
        for i in range(0, len(stream), 1000):  # cuts through headers and payloads alike
            sock.sendall(stream[i : i + 1000])
        hold.wait(10)

    srv = raw(script)
    h = Harness(srv.url, batch=True, recv_bufsize=4096)
    try:
        wait_until(lambda: len(h.klines) == 42, 10, "42 klines")
        assert [k.event_time for k in h.klines] == list(range(1, 43))
        assert all(type(b) is list and b for b in h.batches)
        assert h.klines[0] == Kline(**{**_fields(KLINE), "event_time": 1})
        assert h.conn.counters.events == 42 and h.conn.counters.dropped_frames == 0
    finally:
        hold.set()
        h.stop()


def _fields(k: Kline) -> dict[str, object]:
    return {f: getattr(k, f) for f in k.__slots__}  # type: ignore[attr-defined]


def test_masked_frame_is_a_protocol_error_and_the_connection_is_replaced(raw: RawFactory) -> None:
    hold = threading.Event()

    def script(sock: socket.socket, n: int) -> None:
        if n == 0:
            sock.sendall(frame(event(1)) + frame(event(2), mask=True))
        else:
            sock.sendall(frame(event(3)))
        hold.wait(10)

    srv = raw(script)
    h = Harness(srv.url)
    try:
        wait_until(lambda: srv.accepted >= 2 and len(h.klines) == 2, 10, "a second connection")
        assert [k.event_time for k in h.klines] == [1, 3]
        assert h.conn.counters.reconnects == 1 and h.conn.counters.dropped_frames >= 1
    finally:
        hold.set()
        h.stop()


def test_close_frame_and_eof_lead_to_a_reconnect(raw: Callable[..., RawServer]) -> None:
    hold = threading.Event()

    def script(sock: socket.socket, n: int) -> None:
        sock.sendall(frame(event(n + 1)))
        if n == 0:
            sock.sendall(frame(struct.pack("!H", 1001) + b"going away", opcode=0x8))
        elif n == 1:
            sock.shutdown(socket.SHUT_WR)
        else:
            hold.wait(10)

    srv = raw(script)
    h = Harness(srv.url)
    try:
        wait_until(lambda: srv.accepted >= 3 and len(h.klines) == 3, 10, "three connections")
        assert h.conn.counters.reconnects == 2
    finally:
        hold.set()
        h.stop()


def test_replies_are_matched_by_id_and_garbage_is_counted(raw: Callable[..., RawServer]) -> None:
    got: list[dict[str, object]] = []
    hold = threading.Event()

    def script(sock: socket.socket, n: int) -> None:
        if n > 0:
            return
        opcode, payload = read_client_frame(sock)
        req = json.loads(payload)
        got.append(req)
        sock.sendall(
            frame(b'{"result":null,"id":999}')  # unknown id: ignored
            + frame(b"not json")
            + frame(b"[1,2]")
            + frame(b'{"stream":5}')
            + frame(json.dumps({"result": None, "id": req["id"]}).encode())
        )
        hold.wait(10)

    srv = raw(script)
    h = Harness(srv.url)
    try:
        wait_until(lambda: h.conn.connected, 10, "connected")
        assert h.conn.send_request(7, "SUBSCRIBE", (STREAM,))
        wait_until(lambda: STREAM in h.conn.streams.server, 10, "confirmation")
        assert got == [{"method": "SUBSCRIBE", "params": [STREAM], "id": 7}]
        assert h.conn.counters.dropped_frames == 3 and not h.conn.streams.inflight
    finally:
        hold.set()
        h.stop()


def test_unrouted_connection_that_acknowledges_but_never_sends_is_replaced(raw: RawFactory) -> None:
    hold = threading.Event()

    def script(sock: socket.socket, n: int) -> None:
        if n == 0:
            opcode, payload = read_client_frame(sock)
            req = json.loads(payload)
            sock.sendall(frame(json.dumps({"result": None, "id": req["id"]}).encode()))
        hold.wait(10)  # acknowledged, then silence (Binance without the /market route)

    srv = raw(script)
    h = Harness(srv.url, silence_timeout_s=0.3)
    try:
        wait_until(lambda: h.conn.connected, 10, "connected")
        assert h.conn.send_request(1, "SUBSCRIBE", (STREAM,))
        wait_until(lambda: srv.accepted >= 2, 10, "replacement after silence")
    finally:
        hold.set()
        h.stop()


def _quiet_after_delivering(
    answer: Callable[[dict[str, object]], list[str] | None],
    requests: list[dict[str, object]],
    hold: threading.Event,
) -> Script:
    """Script: the first connection confirms the SUBSCRIBE, delivers two events, then only answers
    LIST_SUBSCRIPTIONS (with ``answer(request)``'s list; None = no answer, the server looks dead)."""

    def script(sock: socket.socket, n: int) -> None:
        if n > 0:
            hold.wait(20)
            return
        opcode, payload = read_client_frame(sock)
        req = json.loads(payload)
        sock.sendall(
            frame(json.dumps({"result": None, "id": req["id"]}).encode()) + frame(event(1)) + frame(event(2))
        )
        while not hold.is_set():
            opcode, payload = read_client_frame(sock)
            if opcode != 0x1:
                continue
            req = json.loads(payload)
            requests.append(req)
            listed = answer(req)
            if listed is not None:
                sock.sendall(frame(json.dumps({"result": listed, "id": req["id"]}).encode()))

    return script


def test_quiet_connection_after_delivering_is_probed_and_kept(
    raw: RawFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Binance pushes only when a candle changed: a quiet connection is asked LIST_SUBSCRIPTIONS and,
    answered, kept (probed again after the next quiet spell), never reconnected."""
    requests: list[dict[str, object]] = []
    hold = threading.Event()
    srv = raw(_quiet_after_delivering(lambda req: [STREAM], requests, hold))
    caplog.set_level(logging.DEBUG, "test.connection")
    h = Harness(srv.url, silence_timeout_s=0.3)
    try:
        wait_until(lambda: h.conn.connected, 10, "connected")
        assert h.conn.send_request(1, "SUBSCRIBE", (STREAM,))
        wait_until(lambda: len(h.klines) == 2, 10, "two klines")
        wait_until(lambda: len(requests) >= 4 or srv.accepted > 1, 20, "four probes or a reconnect")
        assert srv.accepted == 1 and len(requests) >= 4 and h.conn.counters.probes >= 4
        assert h.conn.counters.reconnects == 0 and h.conn.connected
        assert (
            h.conn.streams.server == {STREAM}
            and not h.conn.streams.down
            and h.conn.counters.probes_unanswered == 0
        )
        assert all(r["method"] == "LIST_SUBSCRIPTIONS" and "params" not in r for r in requests)
        assert len({r["id"] for r in requests}) == len(requests)  # a fresh id per probe
        probes = [r for r in caplog.records if "probing with LIST_SUBSCRIPTIONS" in r.getMessage()]
        assert probes and all(r.levelno == logging.DEBUG for r in probes)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        hold.set()
        h.stop()


def test_quiet_connection_whose_probe_is_not_answered_is_replaced(
    raw: RawFactory, caplog: pytest.LogCaptureFixture
) -> None:
    requests: list[dict[str, object]] = []
    hold = threading.Event()
    srv = raw(_quiet_after_delivering(lambda req: None, requests, hold))
    h = Harness(srv.url, silence_timeout_s=0.3, probe_timeout_s=0.5)
    try:
        wait_until(lambda: h.conn.connected, 10, "connected")
        assert h.conn.send_request(1, "SUBSCRIBE", (STREAM,))
        wait_until(lambda: srv.accepted >= 2, 10, "a replacement after the unanswered probe")
        assert h.conn.counters.probes == 1 and h.conn.counters.probes_unanswered == 1
        assert [r["method"] for r in requests] == ["LIST_SUBSCRIPTIONS"]
        warned = [r for r in caplog.records if "unanswered" in r.getMessage()]
        assert warned and warned[0].levelno == logging.WARNING
    finally:
        hold.set()
        h.stop()


def test_probe_answer_without_a_stream_resubscribes_it_instead_of_reconnecting(raw: RawFactory) -> None:
    """The server dropped one of our streams: only that one is marked down (its re-confirmation will
    report a gap) and handed back to the resubscriber; the socket and its other streams stay."""
    other = "ethusdt@kline_1m"
    requests: list[dict[str, object]] = []
    hold = threading.Event()
    srv = raw(_quiet_after_delivering(lambda req: [other], requests, hold))
    woken = threading.Event()
    h = Harness(srv.url, silence_timeout_s=0.3, probe_timeout_s=0.5)
    h.conn._wake = woken.set
    try:
        wait_until(lambda: h.conn.connected, 10, "connected")
        with h.lock:
            h.conn.streams.assign([other])
        woken.clear()
        assert h.conn.send_request(1, "SUBSCRIBE", (STREAM, other))
        wait_until(lambda: len(h.klines) == 2, 10, "two klines")
        wait_until(lambda: STREAM in h.conn.streams.down, 10, "the dropped stream marked down")
        assert h.conn.streams.server == {other} and woken.is_set()
        assert (
            h.conn.streams.down[STREAM] == 2
        )  # since its last event (E=2): the candles after it may be lost
        assert srv.accepted == 1 and h.conn.counters.reconnects == 0
    finally:
        hold.set()
        h.stop()


def test_wire_request_is_compact_json() -> None:
    assert json.loads(wire_request("UNSUBSCRIBE", ("a@kline_1m", "b@kline_4h"), 3)) == {
        "method": "UNSUBSCRIBE",
        "params": ["a@kline_1m", "b@kline_4h"],
        "id": 3,
    }


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command for a certificate")
def test_wss_reads_frames_through_tls(raw: RawFactory, tmp_path: Path) -> None:
    """Binance is wss://: the recv loop reads the TLS socket websocket-client set up."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    pongs: list[bytes] = []
    hold = threading.Event()

    def script(sock: socket.socket, n: int) -> None:
        sock.sendall(frame(event(1)) + frame(b"p", opcode=0x9) + frame(event(2, pad="y" * 40_000)))
        pongs.append(read_client_frame(sock)[1])
        hold.wait(10)

    srv = raw(script, ctx)
    h = Harness(srv.url, sslopt={"ca_certs": str(cert), "check_hostname": False})
    try:
        wait_until(lambda: len(h.klines) == 2 and pongs, 10, "two klines and a pong over TLS")
        assert [k.event_time for k in h.klines] == [1, 2] and pongs == [b"p"]
    finally:
        hold.set()
        h.stop()
