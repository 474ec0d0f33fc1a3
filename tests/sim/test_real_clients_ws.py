"""Proof of fidelity: Binance's own (third-party) Python connector accepts the simulated stream server.

Why: tests of the bot against the simulator are only worth something if the simulator behaves like
Binance to clients written by someone else. ``binance-futures-connector``'s
``UMFuturesWebsocketClient`` builds its URLs (``/stream`` or ``/ws`` appended to ``stream_url``), sends
its own SUBSCRIBE / LIST_SUBSCRIPTIONS with millisecond-timestamp ids and answers server pings with an
empty pong; here it receives kline events the bot's parser reads.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from surge.exchange import wire
from surge.sim.market import Market
from surge.sim.ws import WsServer
from tests.waiting import wait_for

um_ws = pytest.importorskip("binance.websocket.um_futures.websocket_client")


class Inbox:
    """Collects what the connector hands to ``on_message`` (called on the connector's thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[Any] = []
        self.errors: list[BaseException] = []

    def on_message(self, _manager: Any, message: str) -> None:
        with self.lock:
            self.messages.append(json.loads(message))

    def on_error(self, _manager: Any, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(exc)

    def snapshot(self) -> list[Any]:
        with self.lock:
            return list(self.messages)

    def wait(self, pred: Callable[[list[Any]], Any], timeout: float = 10.0) -> Any:
        return wait_for(
            lambda: pred(self.snapshot()),
            timeout,
            "the messages",
            poll=0.02,
            detail=lambda: f"last messages: {self.snapshot()[-3:]}",
        )


@pytest.fixture(scope="module")
def server() -> Iterator[WsServer]:
    srv = WsServer(
        Market(seed=5, surge_interval_s=None), ping_interval_s=0.3, pong_timeout_s=3.0, push_interval_s=0.25
    )
    srv.start()
    yield srv
    srv.stop()
    assert not [t for t in threading.enumerate() if t.name == srv.thread_name]


def start_client(url: str, inbox: Inbox, combined: bool) -> Any:
    return um_ws.UMFuturesWebsocketClient(
        stream_url=url,
        on_message=inbox.on_message,
        on_error=inbox.on_error,
        is_combined=combined,
    )


def stop_client(client: Any) -> None:
    """The connector joins its thread without a timeout; the close handshake must end it."""
    manager = client.socket_manager
    client.stop()
    manager.join(5)
    assert not manager.is_alive()


def klines_of(messages: list[Any], combined: bool) -> list[tuple[str, Any]]:
    out = []
    for msg in messages:
        if combined and isinstance(msg, dict) and "stream" in msg:
            out.append(wire.parse_combined(msg))
        elif not combined and isinstance(msg, dict) and msg.get("e") == "kline":
            kline = wire.kline_from_event(msg)
            out.append((wire.stream_name(kline.symbol, kline.interval), kline))
    return out


def test_connector_combined_route_receives_klines(server: WsServer) -> None:
    inbox = Inbox()
    client = start_client(server.url + "/market", inbox, combined=True)  # -> /market/stream
    try:
        client.kline(symbol="btcusdt", interval="1m")
        client.kline(symbol="ETHUSDT", interval="4h")  # the connector lower-cases the symbol
        both = {"btcusdt@kline_1m", "ethusdt@kline_4h"}
        got = inbox.wait(
            lambda msgs: len(k := klines_of(msgs, True)) >= 6 and {s for s, _ in k} == both and k
        )
        acks = [m for m in inbox.snapshot() if isinstance(m, dict) and "result" in m]
        assert len(acks) == 2 and all(a["result"] is None and a["id"] > 10**12 for a in acks)
        for stream, kline in got:
            assert stream == wire.stream_name(kline.symbol, kline.interval)
            assert kline.open_time < kline.close_time and kline.event_time > 0
            # an update that lands on a minute boundary is the candle's final, closed one
            assert kline.closed == (kline.event_time > kline.close_time), kline
        client.list_subscribe()
        listed = inbox.wait(
            lambda msgs: [m for m in msgs if isinstance(m, dict) and isinstance(m.get("result"), list)]
        )
        assert sorted(listed[0]["result"]) == ["btcusdt@kline_1m", "ethusdt@kline_4h"]
        unsubscribe = um_ws.UMFuturesWebsocketClient.ACTION_UNSUBSCRIBE
        client.kline(symbol="ethusdt", interval="4h", action=unsubscribe)
        inbox.wait(lambda msgs: len([m for m in msgs if isinstance(m, dict) and "result" in m]) >= 4)
        inbox.wait(
            lambda _m: [
                c for c in server.stats()["connections"] if c["subscriptions"] == ["btcusdt@kline_1m"]
            ]
        )
    finally:
        stop_client(client)
    assert not inbox.errors


def test_connector_raw_stream_receives_bare_events(server: WsServer) -> None:
    inbox = Inbox()
    client = start_client(server.url, inbox, combined=False)  # -> /ws
    try:
        client.kline(symbol="solusdt", interval="1m")
        got = inbox.wait(lambda msgs: len(k := klines_of(msgs, False)) >= 3 and k)
        assert {s for s, _ in got} == {"solusdt@kline_1m"}
        raw = [m for m in inbox.snapshot() if isinstance(m, dict) and m.get("e") == "kline"][0]
        assert set(raw) == {"e", "E", "s", "k"} and "stream" not in raw
    finally:
        stop_client(client)
    assert not inbox.errors


def test_connector_pongs_keep_the_connection(server: WsServer) -> None:
    """Server pings every 0.3 s with a 3 s pong deadline; the connector pongs with an empty payload,
    which Binance accepts, so it must stay connected well past the deadline."""
    inbox = Inbox()
    opened = time.time()  # the server stamps opened_at on accept, later, from the same clock
    client = start_client(server.url + "/market", inbox, combined=True)
    try:
        client.kline(symbol="btcusdt", interval="1m")
        # without counted pongs it would be closed 0.3 + 3 s after opening; this client's connection
        # is told apart by its opening time (the module's server may still hold an earlier test's one)
        mine = inbox.wait(
            lambda _m: [
                c
                for c in server.stats()["connections"]
                if c["opened_at"] >= opened and time.time() - c["opened_at"] > 4.5
            ],
            timeout=20,
        )
        assert mine[0]["pongs_received"] >= 4
        count = len(inbox.snapshot())
        inbox.wait(lambda msgs: len(msgs) > count + 2)  # still streaming
        stats = server.stats()
        assert mine[0]["id"] in {c["id"] for c in stats["connections"]}
        assert not [c for c in stats["closed_connections"] if c["id"] == mine[0]["id"]]
    finally:
        stop_client(client)
    assert not inbox.errors
