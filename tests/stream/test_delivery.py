"""Decoding a connection's messages into klines: wanted ones delivered in order, the rest counted."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from surge.exchange import wire
from surge.models import Kline
from surge.stream.counters import StreamCounters
from surge.stream.delivery import KlineDelivery
from surge.stream.handover import Handover
from tests.stream.test_connection import KLINE, STREAM, event


class _Sink:
    def __init__(
        self,
        batch: bool = False,
        fail: bool = False,
        conn_id: int = 3,
        deliver: set[str] | None = None,
        decode_last: tuple[str, ...] = (),
        consumer: Callable[[Kline], None] | None = None,
    ) -> None:
        self.klines: list[Kline] = []
        self.batches: list[list[Kline]] = []
        self.replies: list[dict[str, Any]] = []
        self.fail = fail
        self.counters = StreamCounters()
        self.last_e: dict[str, int] = {}
        self.delivery = KlineDelivery(
            conn_id,
            f"surge-ws-{conn_id}",
            logging.getLogger("test.delivery"),
            self.counters,
            callback=self._one if consumer is None else consumer,
            batch_callback=self._batch if batch else None,
            deliver={STREAM} if deliver is None else deliver,
            last_e=self.last_e,
            on_reply=self.replies.append,
            decode_last=decode_last,
        )

    def _one(self, k: Kline) -> None:
        if self.fail:
            raise RuntimeError("consumer bug")
        self.klines.append(k)

    def _batch(self, ks: list[Kline]) -> None:
        self.batches.append(ks)


def _other_stream(e_time: int) -> bytes:
    k = Kline(
        "ETHUSDT",
        "1m",
        *[
            getattr(KLINE, f)
            for f in (
                "open_time",
                "close_time",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "quote_volume",
                "trades",
                "closed",
            )
        ],
    )
    return json.dumps({"stream": "ethusdt@kline_1m", "data": wire.kline_to_event(k, e_time)}).encode()


def test_klines_replies_garbage_and_unwanted_streams() -> None:
    sink = _Sink()
    messages = [event(1), b'{"result":null,"id":5}', b"not json", _other_stream(2), event(3)]
    assert sink.delivery.deliver(messages, None) == 3  # stream events, wanted or not
    assert [k.event_time for k in sink.klines] == [1, 3] and sink.last_e == {STREAM: 3}
    assert sink.replies == [{"result": None, "id": 5}]
    c = sink.counters
    assert (c.events, c.unwanted, c.dropped_frames, c.duplicates) == (2, 1, 1, 0)


def test_batches_and_a_raising_consumer() -> None:
    sink = _Sink(batch=True)
    sink.delivery.deliver([event(1), event(2)], None)
    assert [[k.event_time for k in b] for b in sink.batches] == [[1, 2]] and not sink.klines
    failing = _Sink(fail=True)
    failing.delivery.deliver([event(1), event(2)], None)
    assert failing.counters.callback_errors == 2 and failing.counters.events == 2


def _frame(symbol: str, interval: str, e_time: int) -> bytes:
    k = msgspec.structs.replace(KLINE, symbol=symbol, interval=interval)
    name = f"{symbol.lower()}@kline_{interval}"
    return json.dumps(
        {"stream": name, "data": wire.kline_to_event(k, e_time)}, separators=(",", ":")
    ).encode()


def test_decode_last_intervals_come_as_a_second_batch_each_stream_in_order() -> None:
    # a 1m decision should not wait behind the decoding of the 4h half of a burst: the 4h frames are
    # set aside and decoded after the chunk's other frames, each stream still in order
    names = {"btcusdt@kline_1m", "btcusdt@kline_4h", "ethusdt@kline_1m", "1000shibusdt@kline_4h"}
    sink = _Sink(batch=True, deliver=names, decode_last=("4h",))
    chunk = [
        _frame("BTCUSDT", "4h", 1),
        _frame("BTCUSDT", "1m", 2),
        _frame("1000SHIBUSDT", "4h", 3),
        b'{"result":null,"id":7}',
        _frame("ETHUSDT", "1m", 4),
        _frame("BTCUSDT", "4h", 5),
        b"not json",
        _frame("BTCUSDT", "1m", 6),
        _frame("XRPUSDT", "4h", 8),  # not delivered here: counted as unwanted
    ]
    assert sink.delivery.deliver(chunk, None) == 7
    got = [[(k.symbol, k.interval, k.event_time) for k in b] for b in sink.batches]
    assert got == [
        [("BTCUSDT", "1m", 2), ("ETHUSDT", "1m", 4), ("BTCUSDT", "1m", 6)],
        [("BTCUSDT", "4h", 1), ("1000SHIBUSDT", "4h", 3), ("BTCUSDT", "4h", 5)],
    ]
    assert sink.replies == [{"result": None, "id": 7}]
    assert sink.last_e == {
        "btcusdt@kline_1m": 6,
        "ethusdt@kline_1m": 4,
        "btcusdt@kline_4h": 5,
        "1000shibusdt@kline_4h": 3,
    }
    c = sink.counters
    assert (c.events, c.unwanted, c.dropped_frames) == (6, 1, 1)
    plain = _Sink(batch=True, deliver=names)  # without decode_last: one batch, arrival order
    plain.delivery.deliver(chunk, None)
    assert [[k.event_time for k in b] for b in plain.batches] == [[1, 2, 3, 4, 5, 6]]


def test_set_aside_frames_go_through_the_rotation_dedupe_too() -> None:
    name = "btcusdt@kline_4h"
    sink = _Sink(batch=True, deliver={STREAM, name}, decode_last=("4h",))  # the replacement (id 3) of 9
    h = Handover(old_id=9, old_last_e={name: 2, STREAM: 2})
    h.ack_old(9)
    sink.delivery.deliver([_frame("BTCUSDT", "4h", 2), event(3), _frame("BTCUSDT", "4h", 3)], h)
    assert [[k.event_time for k in b] for b in sink.batches] == [[3], [3]]
    assert sink.counters.duplicates == 1 and not h.admit(9, name, 3, 0)


def test_a_rotation_overlap_drops_events_the_other_side_delivered() -> None:
    sink = _Sink()  # the replacement (id 3) of connection 9
    old_last_e = {STREAM: 2}
    h = Handover(old_id=9, old_last_e=old_last_e)
    sink.delivery.deliver([event(3)], h)
    assert not sink.klines and sink.counters.duplicates == 1  # the old one has not acknowledged yet
    h.ack_old(9)
    sink.delivery.deliver([event(2), event(4)], h)  # E=2: the old one delivered it already
    assert [k.event_time for k in sink.klines] == [4] and sink.counters.duplicates == 2
    assert not h.admit(9, STREAM, 4, 0) and h.admit(9, STREAM, 5, 0)  # ... and the old one now skips E=4


def test_a_rotation_delivers_every_event_exactly_once_when_both_connections_see_the_same_e() -> None:
    """On Binance both connections of a rotation carry the same events with the same ``E``: each
    must reach the consumer once. (The old connection used to record its event as seen before
    offering it, so its first event per stream after the switch was refused as its own duplicate,
    and the replacement's copy as the old one's: lost.)"""
    old, new = _Sink(conn_id=9), _Sink(conn_id=3)
    old.delivery.deliver([event(2)], None)
    h = Handover(old_id=9, old_last_e=old.last_e)
    old.delivery.deliver([event(3)], h)  # the old connection's first chunk since the switch
    new.delivery.deliver([event(3)], h)
    new.delivery.deliver([event(4)], h)  # now the replacement is first
    old.delivery.deliver([event(4)], h)
    delivered = sorted(k.event_time for k in old.klines + new.klines)
    assert delivered == [2, 3, 4]
    assert old.counters.duplicates + new.counters.duplicates == 2


def test_a_rotation_hands_each_stream_over_in_order_when_one_side_stalls_in_its_callback() -> None:
    """Both connections of a rotation share one consumer. The old one admits E=3 and stalls in the
    consumer (preempted, or a slow consumer); the replacement must not deliver E=4 meanwhile, or the
    consumer sees 4 before 3 (CI caught it: "adausdt@kline_1m: repeated or reordered")."""
    seen: list[int] = []
    in_callback, new_returned = threading.Event(), threading.Event()

    def consume(k: Kline) -> None:
        if threading.current_thread().name == "old" and k.event_time == 3:
            in_callback.set()
            new_returned.wait(1.0)  # with the fix the replacement cannot return while this is held
        seen.append(k.event_time)

    old, new = _Sink(conn_id=9, consumer=consume), _Sink(conn_id=3, consumer=consume)
    h = Handover(old_id=9, old_last_e=old.last_e)
    old_side = threading.Thread(target=old.delivery.deliver, args=([event(3)], h), name="old")
    old_side.start()
    assert in_callback.wait(10.0)

    def replacement() -> None:
        new.delivery.deliver([event(3), event(4)], h)
        new_returned.set()

    new_side = threading.Thread(target=replacement, name="new")
    new_side.start()
    old_side.join(10.0)
    new_side.join(10.0)
    assert not old_side.is_alive() and not new_side.is_alive()
    assert seen == [3, 4] and new.counters.duplicates == 1
