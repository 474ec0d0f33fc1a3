"""A connection's data messages decoded into klines and handed to the consumer: the hot path.

Why one call per received chunk, with everything in locals: at Binance cadence a connection's
streams arrive as one burst, and under the GIL the last event of a burst waits for every one before
it, so each microsecond per event adds to the burst's tail latency (``scripts/bench_stream.py``
measures it: ``latency_p99_ms``, ``events_per_s``). Counters are flushed once per chunk, because
attribute writes per event cost measurably. With a ``batch_callback`` a chunk's klines go over as one
list: one queue hop and one consumer wake-up per chunk instead of per event.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from surge.exchange import wire
from surge.exchange.wire import WireError
from surge.models import Kline
from surge.stream.counters import StreamCounters
from surge.stream.handover import Handover

_CALLBACK_LOG_EVERY_S = 10.0
_MARK_WITHIN = 80  # a stream name ends before this byte of its frame (symbols are < 30 characters)


class KlineDelivery:
    """Decodes one connection's messages; events of streams not in ``deliver`` are counted, not passed."""

    def __init__(
        self,
        conn_id: int,
        name: str,
        log: logging.Logger,
        counters: StreamCounters,
        *,
        callback: Callable[[Kline], Any],
        batch_callback: Callable[[list[Kline]], Any] | None,
        deliver: set[str],
        last_e: dict[str, int],
        on_reply: Callable[[dict[str, Any]], None],
        decode_last: tuple[str, ...] = (),
    ) -> None:
        self.conn_id = conn_id
        self.name = name
        self.log = log
        self.counters = counters
        self._callback = callback
        self._batch_callback = batch_callback
        self._deliver = deliver  # mutated in place by the manager, never rebound
        # a combined frame's stream name ends '@kline_<interval>"' within its first bytes, after
        # '{"stream":"'; one compiled search is cheaper per frame than bytes.find with bounds
        marks = b"|".join(re.escape(iv.encode()) for iv in decode_last)
        self._last_search = re.compile(b"@kline_(?:" + marks + b')"').search if decode_last else None
        self._last_e = last_e
        self._on_reply = on_reply
        self._cb_log_at = 0.0

    def deliver(self, messages: list[bytes], handover: Handover | None) -> int:
        """Decode ``messages`` and hand their klines over, in order. Returns how many were stream
        events (wanted or not: a sign the connection is routed and alive).

        Frames of the ``decode_last`` intervals are set aside and decoded after the others, as a
        second batch: each stream's events stay in order (a stream is of one interval), only the
        order across streams of a chunk changes."""
        if handover is None:
            return self._deliver_chunk(messages, None)
        # Admitting an event and handing it over are one step under the handover's lock: otherwise
        # the other connection could admit and deliver a newer event of the stream while this thread
        # sits between the two (preempted on a loaded machine), and the consumer would see it first.
        with handover.turn(self.conn_id):
            return self._deliver_chunk(messages, handover)

    def _deliver_chunk(self, messages: list[bytes], handover: Handover | None) -> int:
        if self._last_search is None:
            return self._decode(messages, handover, None)
        later: list[bytes] = []
        n = self._decode(messages, handover, later)
        if later:
            n += self._decode(later, handover, None)
        return n

    def _decode(self, messages: list[bytes], handover: Handover | None, later: list[bytes] | None) -> int:
        conn_id = self.conn_id
        fast_kline = wire.combined_kline_frame
        deliver = self._deliver
        last_e = self._last_e
        callback = self._callback
        batch: list[Kline] | None = None if self._batch_callback is None else []
        data_msgs = events = dropped = unwanted = dups = 0
        last_search = self._last_search if later is not None else None
        for payload in messages:
            if last_search is not None and last_search(payload, 11, _MARK_WITHIN) is not None:
                later.append(payload)  # type: ignore[union-attr]  # later is set with last_search
                continue
            # a kline event in one typed decode, anything else the slow way
            parsed: tuple[str, Kline | None] | None = fast_kline(payload)
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
            if handover is not None and not handover.admit(conn_id, stream, e_time, kline.open_time):
                last_e[stream] = e_time
                dups += 1
                continue
            last_e[stream] = e_time  # after admit(): during a rotation it reads the old side's dict
            events += 1
            if batch is not None:
                batch.append(kline)
                continue
            try:
                callback(kline)
            except Exception:  # noqa: BLE001 - a consumer's bug must not end the stream (logged, counted)
                self._callback_failed()
        if batch:
            self._hand_over(batch)
        if events or dropped or unwanted or dups:
            self._count(events, dropped, unwanted, dups)
        return data_msgs

    def _hand_over(self, batch: list[Kline]) -> None:
        assert self._batch_callback is not None
        try:
            self._batch_callback(batch)
        except Exception:  # noqa: BLE001 - a consumer's bug must not end the stream (logged, counted)
            self._callback_failed()

    def _count(self, events: int, dropped: int, unwanted: int, dups: int) -> None:
        c = self.counters
        c.events += events
        c.unwanted += unwanted
        c.duplicates += dups
        if dropped:
            self.count_dropped(dropped)

    def _slow_message(self, payload: bytes) -> tuple[str, Kline | None] | None:
        """A frame the fast kline decoder refused: (stream, Kline) for a kline event it was too strict
        for, (stream, None) for a malformed event of a stream, None for a reply (handled here) or a
        frame that is no stream message at all (counted as dropped here)."""
        try:
            msg = wire.loads(payload)
        except WireError:
            self.count_dropped(1)
            return None
        if type(msg) is not dict:
            self.count_dropped(1)
            return None
        stream = msg.get("stream")
        if stream is None and "id" in msg:
            self._on_reply(msg)
            return None
        if type(stream) is not str:
            self.count_dropped(1)
            return None
        try:
            return stream, wire.kline_from_event(msg.get("data"), stream)  # of its own symbol only
        except WireError:
            return stream, None

    def count_dropped(self, n: int) -> None:
        self.counters.dropped_frames += n
        self.log.debug("%s: dropped %d malformed frame(s)", self.name, n)

    def _callback_failed(self) -> None:
        """Log (at most once per 10 s with the traceback) and count; the stream goes on."""
        self.counters.callback_errors += 1
        now = time.monotonic()
        if now - self._cb_log_at >= _CALLBACK_LOG_EVERY_S:
            self._cb_log_at = now
            self.log.exception(
                "%s: kline callback raised (%d so far); the stream continues",
                self.name,
                self.counters.callback_errors,
            )
