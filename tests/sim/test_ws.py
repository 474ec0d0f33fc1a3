"""The simulated market-stream server against a real WebSocket client (websocket-client) on loopback.

Why these tests: every stream test of the bot trusts this server to behave like Binance (paths,
replies, error codes, limits, 250 ms pushes, candle-close events, E per event) and to inject faults
on demand. Each test waits on a condition with a deadline; rates are asserted with wide bounds
because the machine is small and shared.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
import websocket

from surge.exchange import wire
from surge.sim.market import Market
from surge.sim.ws import WsServer, parse_ws_path
from surge.sim.ws_frames import kline_templates
from tests.waiting import wait_for

SEED = 11
SYMBOLS = Market(seed=SEED).tradable_symbols()  # 531 realistic names, BTCUSDT among them


def make_server(**kw: Any) -> WsServer:
    market = kw.pop("market", None) or Market(seed=SEED, surge_interval_s=None)
    kw.setdefault("push_interval_s", 0.1)
    server = WsServer(market, **kw)
    server.start()
    return server


@pytest.fixture(scope="module")
def server() -> Iterator[WsServer]:
    """One lenient server for the functional tests (rate limit raised so tables can be sent quickly)."""
    srv = make_server(max_incoming_per_s=1000)
    yield srv
    srv.stop()


# --------------------------------------------------------------------------- client helpers


class Client:
    """websocket-client connection with JSON helpers; answers server pings while reading."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.ws = websocket.create_connection(url, timeout=timeout)
        self.next_id = 1

    def send(self, obj: Any) -> None:
        self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    def recv(self, timeout: float = 5.0) -> Any:
        self.ws.settimeout(timeout)
        return json.loads(self.ws.recv())

    def request(self, method: str, params: Any = None, timeout: float = 5.0) -> Any:
        """Send one request and return its reply, skipping events in between."""
        rid = self.next_id
        self.next_id += 1
        req: dict[str, Any] = {"method": method, "id": rid}
        if params is not None:
            req["params"] = params
        self.send(req)
        return self.reply(rid, timeout)

    def reply(self, rid: int | None, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.05, deadline - time.monotonic()))
            is_reply = isinstance(msg, dict) and ("result" in msg or "error" in msg)
            if is_reply and msg.get("id", "none") == rid:
                return msg
            if time.monotonic() > deadline:
                raise AssertionError(f"no reply with id {rid}")

    def events(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The next ``n`` kline events (raw or combined), replies skipped."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            msg = self.recv(max(0.05, deadline - time.monotonic()))
            if isinstance(msg, dict) and ("data" in msg or msg.get("e") == "kline"):
                out.append(msg)
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(out)} of {n} events")
        return out

    def closed_within(self, timeout: float) -> bool:
        """Read until the server closes (True) or the time is up (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.ws.settimeout(max(0.05, deadline - time.monotonic()))
                opcode, _ = self.ws.recv_data(control_frame=False)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    return True
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
                return True
        return False

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:  # noqa: BLE001 - teardown of a client the test may already have broken
            pass


@pytest.fixture
def clients() -> Iterator[Callable[[str], Client]]:
    opened: list[Client] = []

    def connect(url: str) -> Client:
        c = Client(url)
        opened.append(c)
        return c

    yield connect
    for c in opened:
        c.close()


def conn_ids(server: WsServer) -> set[int]:
    return {c["id"] for c in server.stats()["connections"]}


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("path", "combined", "streams", "routed"),
    [
        (
            "/stream?streams=btcusdt@kline_1m/ethusdt@kline_4h",
            True,
            ("btcusdt@kline_1m", "ethusdt@kline_4h"),
            False,
        ),
        ("/stream", True, (), False),
        ("/market/stream", True, (), True),
        ("/market/stream?streams=btcusdt@kline_1m", True, ("btcusdt@kline_1m",), True),
        ("/ws/btcusdt@kline_1m", False, ("btcusdt@kline_1m",), False),
        ("/ws/btcusdt@kline_1m/ethusdt@kline_1m", False, ("btcusdt@kline_1m", "ethusdt@kline_1m"), False),
        ("/ws", False, (), False),
        ("/public/ws/btcusdt@kline_1m", False, ("btcusdt@kline_1m",), False),
        ("/market/ws/", False, (), True),
        ("/ws/btcusdt%40kline_1m", False, ("btcusdt@kline_1m",), False),
    ],
)
def test_parse_ws_path(path: str, combined: bool, streams: tuple[str, ...], routed: bool) -> None:
    route = parse_ws_path(path)
    assert route is not None
    assert (route.combined, route.streams, route.routed) == (combined, streams, routed)


@pytest.mark.parametrize("path", ["/", "/foo", "/stream/extra", "/market"])
def test_parse_ws_path_refuses_other_paths(path: str) -> None:
    assert parse_ws_path(path) is None


def test_templates_are_kline_to_event_with_their_own_e() -> None:
    market = Market(seed=SEED)
    k = market.current_kline("BTCUSDT", "1m", market.now_ms())
    tpl = kline_templates("btcusdt@kline_1m", k, 2, 3)
    for e in (1_795_000_000_500, 42):  # 13-digit fast path and the general path
        raw = tpl.raw.frame(e)
        payload = raw[2:] if raw[1] < 126 else raw[4:]
        assert json.loads(payload) == wire.kline_to_event(k, e, 2, 3)
        comb = tpl.combined.frame(e)
        assert comb[0] == 0x81
        payload = comb[2:] if comb[1] < 126 else comb[4:]
        assert len(payload) == (comb[1] if comb[1] < 126 else int.from_bytes(comb[2:4], "big"))
        assert json.loads(payload) == {"stream": "btcusdt@kline_1m", "data": wire.kline_to_event(k, e, 2, 3)}


# --------------------------------------------------------------------------- paths and envelopes


@pytest.mark.parametrize(
    ("path", "live", "combined"),
    [
        ("/stream?streams=btcusdt@kline_1m", False, True),
        ("/market/stream?streams=btcusdt@kline_1m", False, True),
        ("/stream", True, True),
        ("/market/stream", True, True),
        ("/ws/btcusdt@kline_1m", False, False),
        ("/public/ws/btcusdt@kline_1m", False, False),
        ("/ws", True, False),
    ],
)
def test_every_path_form_delivers_klines(
    server: WsServer, clients: Callable[[str], Client], path: str, live: bool, combined: bool
) -> None:
    c = clients(server.root_url + (path if path.startswith("/market/") else "/market" + path))
    if live:
        assert c.request("SUBSCRIBE", ["btcusdt@kline_1m"]) == {"result": None, "id": 1}
    msg = c.events(1)[0]
    if combined:
        assert msg["stream"] == "btcusdt@kline_1m"
        stream, kline = wire.parse_combined(msg)
    else:
        assert "stream" not in msg
        kline = wire.kline_from_event(msg)
    assert (kline.symbol, kline.interval, kline.closed) == ("BTCUSDT", "1m", False)


def test_raw_path_with_two_streams(server: WsServer, clients: Callable[[str], Client]) -> None:
    c = clients(server.url + "/ws/btcusdt@kline_1m/ethusdt@kline_4h")
    seen = {(e["s"], e["k"]["i"]) for e in c.events(6)}
    assert seen == {("BTCUSDT", "1m"), ("ETHUSDT", "4h")}


@pytest.mark.parametrize(
    ("path", "status"),
    [("/nothing", 404), ("/stream/extra", 404), ("/market/stream/extra", 404)],
)
def test_bad_paths_are_refused_at_handshake(server: WsServer, path: str, status: int) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(server.root_url + path, timeout=5)
    assert info.value.status_code == status


@pytest.mark.parametrize(
    "path",
    [
        "/stream?streams=btcusdt@kline_7m",
        "/ws/BTCUSDT@kline_1m",
        "/stream?streams=btcusdt@kline_1m/btcusdt@aggTrade",
    ],
)
def test_malformed_stream_in_the_url_closes_after_the_handshake(server: WsServer, path: str) -> None:
    """Binance sends no (undocumented) error text: the connection opens and is closed at once."""
    before = server.stats()["disconnects"]["invalid_stream"]
    c = Client(server.url + path)
    try:
        assert c.closed_within(5.0)
    finally:
        c.ws.shutdown()  # the handshake is done both ways: just drop the socket
    wait_for(lambda: server.stats()["disconnects"]["invalid_stream"] == before + 1, 5.0, "the close counted")


# --------------------------------------------------------------------------- live requests


def test_subscribe_unsubscribe_list_replies(server: WsServer, clients: Callable[[str], Client]) -> None:
    c = clients(server.root_url + "/market/stream")
    c.send({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m", "ethusdt@kline_1m"], "id": 7})
    assert c.reply(7) == {"result": None, "id": 7}
    c.send({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m", "solusdt@kline_4h"], "id": 8})
    assert c.reply(8) == {"result": None, "id": 8}
    c.send({"method": "LIST_SUBSCRIPTIONS", "id": 9})
    assert c.reply(9) == {"result": ["btcusdt@kline_1m", "ethusdt@kline_1m", "solusdt@kline_4h"], "id": 9}
    big = 1_795_000_000_000  # connector libraries use a millisecond timestamp as id
    # unsubscribing a well-formed name that was never subscribed is acknowledged
    c.send({"method": "UNSUBSCRIBE", "params": ["ethusdt@kline_1m", "never@kline_1m"], "id": big})
    assert c.reply(big) == {"result": None, "id": big}
    assert c.request("LIST_SUBSCRIPTIONS")["result"] == ["btcusdt@kline_1m", "solusdt@kline_4h"]
    stats = server.stats()
    mine = [s for s in stats["connections"] if s["path"] == "/market/stream"]
    assert any(s["subscriptions"] == ["btcusdt@kline_1m", "solusdt@kline_4h"] for s in mine)
    # events after the UNSUBSCRIBE reply are only for the remaining streams
    assert {e["stream"] for e in c.events(6)} <= {"btcusdt@kline_1m", "solusdt@kline_4h"}


TOO_MANY = "Invalid request: too many parameters"
ERRORS: list[tuple[str, int | None, int, str]] = [
    ("{not json", None, 3, "Invalid JSON: "),
    ('{"params":[],"id":5}', 5, 2, "Invalid request: missing field `method`"),
    ('{"method":"SUBSCRIBEX","params":[],"id":6}', 6, 2, "Invalid request: unknown variant `SUBSCRIBEX`"),
    (
        '{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":"abc"}',
        None,
        2,
        "Invalid request: request ID must be an unsigned integer",
    ),
    (
        '{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":-1}',
        None,
        2,
        "Invalid request: request ID must be an unsigned integer",
    ),
    (
        '{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"]}',
        None,
        2,
        "Invalid request: request ID must be an unsigned integer",
    ),
    ('{"method":"LIST_SUBSCRIPTIONS","params":["x"],"id":15}', 15, 2, TOO_MANY),
    ('{"method":"SET_PROPERTY","params":["nosuch",true],"id":16}', 16, 0, "Unknown property"),
    (
        '{"method":"SET_PROPERTY","params":["combined","yes"],"id":17}',
        17,
        1,
        "Invalid value type: expected Boolean",
    ),
    (
        '{"method":"SET_PROPERTY","params":[5,true],"id":18}',
        18,
        2,
        "Invalid request: property name must be a string",
    ),
    ('{"method":"GET_PROPERTY","params":["combined","x"],"id":19}', 19, 2, TOO_MANY),
    ('{"method":"GET_PROPERTY","params":["nosuch"],"id":20}', 20, 0, "Unknown property"),
    ("[1,2]", None, 2, "Invalid request: "),
]


def test_error_replies_are_binance_shaped(server: WsServer, clients: Callable[[str], Client]) -> None:
    c = clients(server.root_url + "/market/stream")
    for text, rid, code, msg in ERRORS:
        c.send(text)
        reply = c.reply(rid)
        assert set(reply) == {"error", "id"}, text
        assert reply["error"]["code"] == code, text
        assert reply["error"]["msg"].startswith(msg), (text, reply)
    # nothing of it was subscribed, and the connection is still usable
    assert c.request("LIST_SUBSCRIPTIONS")["result"] == []


@pytest.mark.parametrize(
    "params",
    [
        ["btcusdt@kline_7m"],
        ["BTCUSDT@kline_1m"],
        ["btcusdt@aggTrade"],
        [1],
        ["btcusdt@kline_1m", "ethusdt@kline_9m"],
    ],
)
@pytest.mark.parametrize("method", ["SUBSCRIBE", "UNSUBSCRIBE"])
def test_malformed_stream_name_closes_the_connection(
    server: WsServer, clients: Callable[[str], Client], method: str, params: list[Any]
) -> None:
    """No undocumented ``code 2 "invalid stream"`` reply: Binance drops such a connection."""
    before = server.stats()["disconnects"]["invalid_stream"]
    c = clients(server.url + "/stream")
    c.send({"method": method, "params": params, "id": 3})
    seen: list[Any] = []
    deadline = time.monotonic() + 5.0
    closed = False
    while time.monotonic() < deadline and not closed:
        try:
            c.ws.settimeout(max(0.05, deadline - time.monotonic()))
            opcode, data = c.ws.recv_data(control_frame=False)
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            closed = True
            break
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            closed = True
            assert int.from_bytes(data[:2], "big") == 1008
        elif opcode == websocket.ABNF.OPCODE_TEXT:
            seen.append(json.loads(data))
    c.ws.shutdown()  # the handshake is done both ways: just drop the socket
    assert closed and not [m for m in seen if "error" in m or "result" in m], seen
    wait_for(lambda: server.stats()["disconnects"]["invalid_stream"] == before + 1, 5.0, "the close counted")


def test_unknown_symbol_is_acknowledged_and_silent(
    server: WsServer, clients: Callable[[str], Client]
) -> None:
    """A well-formed stream of a symbol Binance does not list gets ``result: null`` and no event."""
    c = clients(server.url + "/stream")
    assert c.request("SUBSCRIBE", ["nosuchusdt@kline_1m", "btcusdt@kline_1m"]) == {"result": None, "id": 1}
    assert {e["stream"] for e in c.events(8)} == {"btcusdt@kline_1m"}
    assert c.request("LIST_SUBSCRIPTIONS")["result"] == ["nosuchusdt@kline_1m", "btcusdt@kline_1m"]


def test_properties_switch_the_envelope(server: WsServer, clients: Callable[[str], Client]) -> None:
    c = clients(server.url + "/ws/btcusdt@kline_1m")
    assert c.request("GET_PROPERTY", ["combined"])["result"] is False
    assert "stream" not in c.events(1)[0]
    assert c.request("SET_PROPERTY", ["combined", True]) == {"result": None, "id": 2}
    assert c.request("GET_PROPERTY", ["combined"])["result"] is True
    assert c.events(1)[0]["stream"] == "btcusdt@kline_1m"


def test_stream_cap_per_connection() -> None:
    srv = make_server(max_incoming_per_s=100, push_interval_s=0.25)
    try:
        names = [wire.stream_name(s, i) for s in SYMBOLS for i in ("1m", "4h")][:1024]
        assert len(names) == 1024
        c = Client(srv.root_url + "/market/stream")
        try:
            assert c.request("SUBSCRIBE", names[:1000]) == {"result": None, "id": 1}
            assert c.request("SUBSCRIBE", names[1000:]) == {"result": None, "id": 2}
            listed = c.request("LIST_SUBSCRIPTIONS")["result"]
            assert len(listed) == 1024 and set(listed) == set(names)
            # re-subscribing what is already there is not "more"
            assert c.request("SUBSCRIBE", names[:5]) == {"result": None, "id": 4}
            # the 1025th stream: no reply, the connection is closed (as Binance does)
            c.send({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1M"], "id": 5})
            assert c.closed_within(5.0)
            wait_for(lambda: srv.stats()["disconnects"]["too_many_streams"] == 1, 5.0, "the close counted")
        finally:
            c.close()
    finally:
        srv.stop()


# --------------------------------------------------------------------------- limits


def test_stream_cap_in_the_url() -> None:
    srv = make_server(max_streams=2)
    try:
        over = Client(srv.url + "/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m/solusdt@kline_1m")
        assert over.closed_within(5.0)
        over.close()
        c = Client(srv.url + "/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m")
        assert {e["stream"] for e in c.events(6)} == {"btcusdt@kline_1m", "ethusdt@kline_1m"}
        c.send({"method": "SUBSCRIBE", "params": ["solusdt@kline_1m"], "id": 1})
        assert c.closed_within(5.0)
        c.close()
        wait_for(lambda: srv.stats()["disconnects"]["too_many_streams"] == 2, 5.0, "both closes counted")
    finally:
        srv.stop()


def test_more_than_ten_messages_a_second_disconnects() -> None:
    srv = make_server()
    try:
        ok = Client(srv.root_url + "/market/stream")
        for i in range(10):  # exactly the limit: fine
            ok.send({"method": "LIST_SUBSCRIPTIONS", "id": i})
        for i in range(10):
            ok.reply(i)
        flood = Client(srv.root_url + "/market/stream")
        for i in range(30):
            try:
                flood.send({"method": "LIST_SUBSCRIPTIONS", "id": i})
            except (websocket.WebSocketConnectionClosedException, OSError):
                break
        assert flood.closed_within(5.0)
        stats = wait_for(lambda: (s := srv.stats())["disconnects"]["rate_limit"] == 1 and s, what="close")
        flooded = [c for c in stats["closed_connections"] if c["close_reason"] == "rate_limit"]
        assert flooded[0]["max_incoming_per_s"] > 10
        assert stats["max_incoming_per_s"][flooded[0]["id"]] > 10
        # the polite one (exactly 10 in a second) lives on
        assert [c["max_incoming_per_s"] for c in stats["connections"]] == [10]
        ok.close()
        flood.close()
    finally:
        srv.stop()


def test_pings_need_pongs_and_lifetime_closes() -> None:
    srv = make_server(ping_interval_s=0.2, pong_timeout_s=1.5, connection_lifetime_s=30.0)
    try:
        answering = Client(srv.url + "/stream")  # websocket-client echoes the ping payload on recv
        empty = websocket.create_connection(srv.root_url + "/market/stream", timeout=5)  # pongs b"" by hand
        silent = websocket.create_connection(srv.root_url + "/market/stream", timeout=5)  # never reads
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and srv.stats()["disconnects"]["pong_timeout"] == 0:
            answering.closed_within(0.05)
            empty.settimeout(0.05)
            try:
                frame = empty.recv_frame()  # low level: no automatic pong
                if frame.opcode == websocket.ABNF.OPCODE_PING:
                    empty.pong(b"")
            except websocket.WebSocketTimeoutException:
                pass
        stats = srv.stats()
        assert stats["disconnects"]["pong_timeout"] == 1
        live = stats["connections"]
        assert len(live) == 2 and all(c["pongs_received"] >= 2 for c in live)
        silent.close()
        empty.close()
        answering.close()
    finally:
        srv.stop()
    short = make_server(connection_lifetime_s=0.3)
    try:
        c = Client(short.url + "/stream?streams=btcusdt@kline_1m")
        started = time.monotonic()
        assert c.closed_within(5.0)
        assert time.monotonic() - started >= 0.2
        assert wait_for(lambda: short.stats()["disconnects"]["lifetime"] == 1, what="lifetime close")
        c.close()
    finally:
        short.stop()


# --------------------------------------------------------------------------- events


def test_each_event_is_stamped_when_sent(clients: Callable[[str], Client]) -> None:
    srv = make_server()
    try:
        ticks = iter(range(1_795_000_000_000, 1_795_000_000_000 + 10**9))
        lock = threading.Lock()

        def counter() -> int:  # a clock that moves 1 ms per reading: one reading per event
            with lock:
                return next(ticks)

        srv.clock_ms = counter
        names = [wire.stream_name(s, "1m") for s in SYMBOLS[:8]]
        c = clients(srv.root_url + "/market/stream?streams=" + "/".join(names))
        stamps = [e["data"]["E"] for e in c.events(40)]
        assert len(set(stamps)) == len(stamps), "two events shared one E"
        assert stamps == sorted(stamps)
    finally:
        srv.stop()


def test_event_time_is_the_send_time(server: WsServer, clients: Callable[[str], Client]) -> None:
    c = clients(server.root_url + "/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m")
    for _ in range(8):
        msg = c.events(1)[0]
        received = time.time() * 1000
        # sent shortly before it was read (10 s: a stalled CI box), not the candle's time (up to 60 s)
        assert received - 10_000 <= msg["data"]["E"] <= received + 5


def test_a_closing_candle_gets_a_final_x_true_event() -> None:
    t0 = time.time()
    fast = Market(seed=SEED, clock=lambda: t0 + (time.time() - t0) * 300)  # a 1m candle lasts 0.2 s
    srv = make_server(market=fast, push_interval_s=0.05)
    try:
        c = Client(srv.root_url + "/market/stream?streams=btcusdt@kline_1m")
        klines = [wire.parse_combined(m)[1] for m in c.events(25, timeout=10)]
        c.close()
    finally:
        srv.stop()
    opens = [k.open_time for k in klines]
    assert len(set(opens)) >= 3
    for prev, nxt in zip(klines, klines[1:], strict=False):
        if nxt.open_time != prev.open_time:  # a new candle starts only right after its predecessor closed
            assert prev.closed and prev.open_time < nxt.open_time, (prev, nxt)
    closed = [k for k in klines if k.closed]
    assert len(closed) >= 2 and len({k.open_time for k in closed}) == len(closed)
    assert all(k.close_time == k.open_time + 59_999 for k in closed)


def test_record_sent_holds_every_candle_state_pushed_without_its_e() -> None:
    t0 = time.time()
    fast = Market(seed=SEED, clock=lambda: t0 + (time.time() - t0) * 300)  # a 1m candle lasts 0.2 s
    srv = make_server(market=fast, push_interval_s=0.05, record_sent=True)
    plain = make_server()
    try:
        names = ["btcusdt@kline_1m", "ethusdt@kline_1m"]
        c = Client(srv.root_url + "/market/stream?streams=" + "/".join(names))
        got = [wire.parse_combined(m) for m in c.events(40, timeout=10)]
        c.close()
        sent = srv.sent_klines()
        with pytest.raises(RuntimeError, match="record_sent"):
            plain.sent_klines()
    finally:
        srv.stop()
        plain.stop()
    assert set(sent) == set(names)
    for name, kline in got:
        assert kline.event_time > 0
        assert msgspec.structs.replace(kline, event_time=0) in sent[name]
    assert all(k.event_time == 0 for states in sent.values() for k in states)
    assert any(k.closed for k in sent["btcusdt@kline_1m"])  # final states are recorded too


def test_a_closing_candle_reaches_every_connection_sharing_the_stream() -> None:
    """Connections push at different phases; each one still gets every candle's final x=true event."""
    t0 = time.time()
    fast = Market(seed=SEED, clock=lambda: t0 + (time.time() - t0) * 300)  # a 1m candle lasts 0.2 s
    srv = make_server(market=fast, push_interval_s=0.05)
    try:
        pair = [Client(srv.root_url + "/market/stream?streams=btcusdt@kline_1m") for _ in range(2)]
        seen = [[wire.parse_combined(m)[1] for m in c.events(25, timeout=10)] for c in pair]
        for c in pair:
            c.close()
    finally:
        srv.stop()
    for klines in seen:
        for prev, nxt in zip(klines, klines[1:], strict=False):
            if nxt.open_time != prev.open_time:
                assert prev.closed and prev.open_time < nxt.open_time, (prev, nxt)
        assert len([k for k in klines if k.closed]) >= 2


def _phases(server: WsServer, n: int) -> list[float]:
    """The median push phase (ms into the 250 ms interval, by E) of each of ``n`` new connections,
    each checked to keep Binance's 250 ms cadence."""
    conns = [Client(server.url + f"/stream?streams={SYMBOLS[i].lower()}@kline_1m") for i in range(n)]
    try:
        stamps = [[m["data"]["E"] for m in c.events(12, timeout=10)][2:] for c in conns]
    finally:
        for c in conns:
            c.close()
    phases = []
    for es in stamps:
        gaps = sorted(b - a for a, b in zip(es, es[1:], strict=False))
        assert 200 <= gaps[len(gaps) // 2] <= 300, gaps  # one push per stream every 250 ms
        # circular median around the first phase: a phase near 0 must not split into 1 and 249
        ref = es[0] % 250
        rel = sorted((e - ref + 125) % 250 - 125 for e in es)
        phases.append((ref + rel[len(rel) // 2]) % 250)
    return phases


def _apart(a: float, b: float) -> float:
    return min((a - b) % 250, (b - a) % 250)


def test_each_connection_pushes_at_its_own_phase() -> None:
    srv = make_server(push_interval_s=0.25)
    try:
        phases = _phases(srv, 3)
    finally:
        srv.stop()
    # connection n pushes at frac(n * golden ratio) of the interval: any two are >= 40 ms apart
    for i in range(3):
        for j in range(i + 1, 3):
            assert _apart(phases[i], phases[j]) >= 20, phases


def test_aligned_phases_push_every_connection_at_once() -> None:
    srv = make_server(push_interval_s=0.25, push_phases="aligned")
    try:
        phases = _phases(srv, 3)
    finally:
        srv.stop()
    assert all(_apart(phases[0], p) <= 8 for p in phases), phases


def test_push_phases_are_checked() -> None:
    with pytest.raises(ValueError, match="push_phases"):
        WsServer(Market(seed=SEED, surge_interval_s=None), push_phases="random")


# --------------------------------------------------------------------------- controls and observations


def test_drop_all_and_observations(server: WsServer, clients: Callable[[str], Client]) -> None:
    before = server.stats()
    a = clients(server.root_url + "/market/stream?streams=btcusdt@kline_1m")
    b = clients(server.url + "/ws/ethusdt@kline_1m")
    a.events(1)
    b.events(1)
    stats = server.stats()
    assert stats["connections_accepted"] >= before["connections_accepted"] + 2
    mine = {s["path"]: s for s in stats["connections"]}
    info = mine["/market/stream?streams=btcusdt@kline_1m"]
    assert info["subscriptions"] == ["btcusdt@kline_1m"]
    assert info["messages_out"] >= 1 and info["messages_in"] == 0
    assert time.time() - 30 < info["opened_at"] <= time.time()
    assert stats["subscriptions"][info["id"]] == ["btcusdt@kline_1m"]
    assert server.drop_all() >= 2
    assert a.closed_within(5.0) and b.closed_within(5.0)
    after = wait_for(lambda: (s := server.stats())["open_connections"] == 0 and s, what="all dropped")
    assert after["disconnects"]["dropped"] >= before["disconnects"]["dropped"] + 2


def test_stall_silences_one_connection_only(server: WsServer, clients: Callable[[str], Client]) -> None:
    a = clients(server.root_url + "/market/stream?streams=btcusdt@kline_1m")
    a.events(1)
    a_id = max(conn_ids(server))
    b = clients(server.root_url + "/market/stream?streams=btcusdt@kline_1m")
    b.events(1)
    assert server.stall(1.2, conn_id=a_id) == 1
    t0 = time.monotonic()
    a.ws.settimeout(0.4)
    silent = False
    while not silent and time.monotonic() - t0 < 0.8:  # what was in flight may still arrive
        try:
            a.ws.recv()
        except websocket.WebSocketTimeoutException:
            silent = True
    assert silent, "a stalled connection kept sending"
    assert len(b.events(2, timeout=3)) == 2  # the other connection is not affected
    assert a_id in conn_ids(server)  # stalled, not closed
    assert len(a.events(2, timeout=5)) == 2  # and it resumes
    with pytest.raises(KeyError):
        server.stall(1.0, conn_id=10**6)


def test_malformed_and_unknown_stream_frames(server: WsServer, clients: Callable[[str], Client]) -> None:
    c = clients(server.root_url + "/market/stream?streams=btcusdt@kline_1m")
    c.events(1)
    cid = max(conn_ids(server))
    assert server.send_malformed(7, conn_id=cid) == 7
    assert server.send_unknown_stream(3, conn_id=cid) == 3
    bad = unknown = 0
    c.ws.settimeout(5)
    deadline = time.monotonic() + 5
    while (bad < 7 or unknown < 3) and time.monotonic() < deadline:
        text = c.ws.recv()
        try:
            stream, kline = wire.parse_combined(wire.loads(text))
        except wire.WireError:
            bad += 1
            continue
        if stream != "btcusdt@kline_1m":
            unknown += 1
            assert stream == wire.stream_name(kline.symbol, kline.interval)
    assert (bad, unknown) == (7, 3)
    stats = server.stats()
    assert stats["malformed_sent"] >= 7 and stats["unknown_stream_sent"] >= 3


def test_market_route_is_required_by_default(server: WsServer, clients: Callable[[str], Client]) -> None:
    """Binance since 2026-04-23: an unrouted connection acknowledges SUBSCRIBE and never sends a kline."""
    assert server.stats()["require_market_route"] is True
    assert server.url == server.root_url + "/market"
    unrouted = clients(server.root_url + "/stream")
    unrouted_raw = clients(server.root_url + "/ws/btcusdt@kline_1m")
    routed = clients(server.url + "/stream")
    assert unrouted.request("SUBSCRIBE", ["btcusdt@kline_1m"]) == {"result": None, "id": 1}
    assert routed.request("SUBSCRIBE", ["btcusdt@kline_1m"]) == {"result": None, "id": 1}
    assert len(routed.events(4)) == 4
    ticks = server.stats()["push_ticks"]
    wait_for(lambda: server.stats()["push_ticks"] >= ticks + 75, 10.0, "three push intervals")
    for c in (unrouted, unrouted_raw):
        with pytest.raises(websocket.WebSocketTimeoutException):
            c.events(1, timeout=0.3)
    server.require_market_route(False)  # the option that turns it off
    try:
        assert unrouted.events(1)[0]["stream"] == "btcusdt@kline_1m"
    finally:
        server.require_market_route(True)


def test_firehose_pushes_back_to_back_with_rising_e(clients: Callable[[str], Client]) -> None:
    srv = make_server(push_interval_s=0.25)
    try:
        c = clients(srv.root_url + "/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m")
        c.events(1)
        srv.firehose(True)
        c.ws.settimeout(5)
        t0 = time.monotonic()
        stamps = []
        for _ in range(1000):
            msg = json.loads(c.ws.recv())
            if "data" in msg:
                stamps.append(msg["data"]["E"])
        assert time.monotonic() - t0 < 20
        srv.firehose(False)
        assert stamps == sorted(stamps)
        assert srv.stats()["events_sent"] >= 1000
    finally:
        srv.stop()


def test_1062_streams_over_6_connections_arrive_about_4_a_second() -> None:
    """Every stream is in every push round, once, at the push interval. Asserted on what was pushed
    (counts per round, the server's own E stamps), not on how fast this 2-core machine reads it: a
    reader behind by a second would make a wall-clock rate meaningless."""
    # every stream pushing at every tick, thin symbols included: the throughput case, not Binance's default
    srv = make_server(push_interval_s=0.25, push_mode="every_tick")
    names = [wire.stream_name(s, i) for s in SYMBOLS for i in ("1m", "4h")]
    chunks = [names[i::6] for i in range(6)]
    rounds = 8
    stamps: list[dict[str, list[int]]] = [{} for _ in chunks]
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def reader(idx: int) -> None:
        try:
            c = Client(srv.root_url + "/market/stream")
            assert c.request("SUBSCRIBE", chunks[idx], timeout=10)["result"] is None
            start.wait(10)
            first = c.events(len(chunks[idx]), timeout=10)  # settle: up to a round begun before it
            last_e = {m["stream"]: m["data"]["E"] for m in first}
            for msg in c.events(rounds * len(chunks[idx]), timeout=60):
                if msg["data"]["E"] > last_e.get(msg["stream"], 0) or msg["stream"] not in last_e:
                    stamps[idx].setdefault(msg["stream"], []).append(msg["data"]["E"])
            c.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            try:
                start.abort()
            except threading.BrokenBarrierError:
                pass

    threads = [threading.Thread(target=reader, args=(i,), name=f"test-reader-{i}") for i in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not errors, errors
    finally:
        srv.stop()
    per_stream = {name: e for part in stamps for name, e in part.items()}
    assert set(per_stream) == set(names)  # all 1,062, none lost
    counts = sorted(len(e) for e in per_stream.values())
    assert counts[0] >= rounds - 1 and counts[-1] <= rounds + 1, (counts[0], counts[-1])  # once a round
    gaps = sorted(b - a for e in per_stream.values() for a, b in itertools.pairwise(e))
    assert gaps[0] >= 150  # never faster than the 250 ms interval (E stamps jitter by a few ms)
    assert 200 <= gaps[len(gaps) // 2] <= 1000  # ~4 a second; a loaded machine pushes late, not early


def test_stop_joins_everything_and_keeps_final_stats() -> None:
    srv = make_server()
    c = Client(srv.root_url + "/market/stream?streams=btcusdt@kline_1m")
    c.events(1)
    assert any(t.name == srv.thread_name for t in threading.enumerate())
    srv.stop()
    assert c.closed_within(5.0)
    assert not [t for t in threading.enumerate() if t.name == srv.thread_name]
    final = srv.stats()
    assert final["open_connections"] == 0 and final["disconnects"]["server_stop"] == 1
    with pytest.raises(RuntimeError):
        srv.drop_all()
    srv.stop()  # idempotent
    c.close()


def test_port_in_use_fails_clearly() -> None:
    before = set(threading.enumerate())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        srv = WsServer(Market(seed=SEED), port=busy.getsockname()[1])
        with pytest.raises(RuntimeError, match="failed to start"):
            srv.start()
    assert set(threading.enumerate()) <= before


# --------------------------------------------------------------------------- pushing only on change


def _quiet(srv: WsServer, c: Client, intervals: int = 3) -> None:
    """Wait ``intervals`` push intervals (by the server's own tick count), then assert nothing came."""
    ticks = srv.stats()["push_ticks"]
    wait_for(lambda: srv.stats()["push_ticks"] >= ticks + 25 * intervals, 10.0, "push intervals")
    with pytest.raises(websocket.WebSocketTimeoutException):
        c.events(1, timeout=0.2)


def _same(ws_kline: Any, rest_kline: Any) -> bool:
    fields = ("open_time", "open", "high", "low", "close", "volume", "quote_volume", "trades", "closed")
    return all(getattr(ws_kline, f) == getattr(rest_kline, f) for f in fields)


def test_on_change_is_the_default_and_pushes_only_a_candle_that_changed() -> None:
    market = Market(seed=SEED, surge_interval_s=None)
    t = market.now_ms() // 60_000 * 60_000 + 10_000
    market.freeze(t)
    srv = make_server(market=market)
    c = Client(srv.url + "/stream?streams=btcusdt@kline_1m")
    try:
        assert srv.stats()["push_mode"] == "on_change"
        _quiet(srv, c)  # the market stands still: nothing is pushed, not even on subscription
        market.freeze(t + 1_000)
        k = wire.parse_combined(c.events(1)[0])[1]
        assert _same(k, market.kline_at("BTCUSDT", "1m", t - 10_000, t + 1_000))
        _quiet(srv, c)  # one frame per change
        market.freeze(t + 60_000)  # the next minute: the final state of the candle first, then the new one
        final, new = (wire.parse_combined(m)[1] for m in c.events(2))
        assert final.closed and _same(final, market.kline_at("BTCUSDT", "1m", t - 10_000, t + 60_000))
        assert not new.closed and new.open_time == t + 50_000
        _quiet(srv, c)
        srv.set_push_mode("every_tick")  # the option: every tick, changed or not
        assert len(c.events(3)) == 3
    finally:
        c.close()
        srv.stop()


def test_a_thin_candle_without_a_trade_is_never_pushed() -> None:
    market = Market(seed=SEED, surge_interval_s=None, thin=["LINKUSDT"], thin_gap_s=90.0)
    now = market.now_ms()
    ks = market.klines("LINKUSDT", "1m", limit=300, now_ms=now)[:-1]
    i = next(i for i in range(1, len(ks) - 1) if ks[i].trades == 0 and ks[i - 1].trades and ks[i + 1].trades)
    before, empty, after = ks[i - 1], ks[i], ks[i + 1]
    market.freeze(empty.open_time - 1)  # the last millisecond of a candle with trades
    srv = make_server(market=market)
    c = Client(srv.url + "/stream?streams=linkusdt@kline_1m")
    try:
        _quiet(srv, c)
        market.freeze(empty.open_time + 1)
        (final,) = (wire.parse_combined(m)[1] for m in c.events(1))
        assert final.closed and _same(final, before)  # the candle that traded closes with x=true
        for off in (20_000, 40_000, 59_999):  # the empty minute: silence, at its close too
            market.freeze(empty.open_time + off)
            _quiet(srv, c, intervals=2)
        market.freeze(after.open_time + 59_999)
        k = wire.parse_combined(c.events(1)[0])[1]
        assert k.open_time == after.open_time and k.trades == after.trades
        assert _same(msgspec.structs.replace(k, closed=True), after)  # WS and REST: the same candle
    finally:
        c.close()
        srv.stop()


def test_push_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="push_mode"):
        WsServer(Market(seed=SEED, surge_interval_s=None), push_mode="sometimes")
