"""Kline frames that parse but cannot be true reach no callback: the connection drops and counts them.

A raw scripted server on 127.0.0.1 sends what the simulator never does: a stream's frame carrying
another symbol's candle, a negative price, high below low, a time beyond int64. Each is counted in
``dropped_frames`` like any malformed frame, and the good frames around them are delivered.
"""

from __future__ import annotations

import json
import socket
import threading

from surge.exchange import wire
from tests.stream.conftest import wait_until
from tests.stream.test_connection import KLINE, STREAM, Harness, RawServer, frame, read_client_frame


def _event(e_time: int, **k: object) -> bytes:
    data = wire.kline_to_event(KLINE, e_time)
    data["k"].update(k)
    return json.dumps({"stream": STREAM, "data": data}, separators=(",", ":")).encode()


BAD = [
    _event(2, s="ETHUSDT"),  # btcusdt@kline_1m carrying ETHUSDT
    _event(3, o="-1.5000"),
    _event(4, h="0.5000", l="1.0000"),
    _event(5, t=2**70),
    _event(6, v="-10.000"),
    _event(7, h="1e300"),
]


def test_impossible_klines_are_dropped_and_counted_around_good_ones() -> None:
    hold = threading.Event()

    def script(sock: socket.socket, n: int) -> None:
        if n > 0:
            return
        _, payload = read_client_frame(sock)
        sock.sendall(frame(json.dumps({"result": None, "id": json.loads(payload)["id"]}).encode()))
        sock.sendall(b"".join(frame(p) for p in [_event(1), *BAD, _event(8)]))
        hold.wait(10)

    srv = RawServer(script)
    h = Harness(srv.url, batch=True)
    try:
        wait_until(lambda: h.conn.connected, 10, "connected")
        assert h.conn.send_request(7, "SUBSCRIBE", (STREAM,))
        wait_until(
            lambda: len(h.klines) >= 2 and h.conn.counters.dropped_frames >= len(BAD), 10, "frames read"
        )
        assert [(k.symbol, k.event_time) for k in h.klines] == [("BTCUSDT", 1), ("BTCUSDT", 8)]
        assert h.conn.counters.dropped_frames == len(BAD) and h.conn.counters.events == 2
    finally:
        hold.set()
        h.stop()
        srv.close()
        assert not srv.errors, srv.errors
