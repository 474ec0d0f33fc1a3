"""MultiplexedKlineManager: many kline streams over few WebSocket connections, bounded threads.

Why it looks like this (the failures of the program surge replaced, each ruled out here):

* ``subscribe_kline`` / ``unsubscribe_kline`` only record the wish under a lock and wake the one
  resubscriber thread (:class:`~surge.stream.single_flight.SingleFlight`): no thread per call, no
  sleep, no I/O, no lost wake-up. Bursts are coalesced by a short debounce, so 25,000 calls become
  one SUBSCRIBE per connection.
* Changes are applied live: batched SUBSCRIBE / UNSUBSCRIBE (up to ``max_streams_per_message``
  streams per message, at most ``max_msgs_per_s`` messages per second per connection, half of
  Binance's limit) on the open connections. New streams fill open connections first; a new
  connection opens only when all are full, one closes only when empty (see
  :mod:`surge.stream.planner`). Healthy connections are never closed to apply a change.
* Every connection heals itself (:mod:`surge.stream.connection`): reconnect with backoff and full
  jitter, never giving up, under a manager-wide attempt budget; a connection that never delivers is
  replaced, one that went quiet is probed and replaced only if the probe is not answered;
  connections are rotated before Binance's 24 h limit with an overlap and E-based dedupe, so no
  event is lost or repeated at the switch.
* Every outage is reported as a :class:`StreamGap` (streams, from, to) so the owner can backfill
  closed candles over REST.

Threads: one per open connection (``surge-ws-<n>``) plus the resubscriber (``surge-ws-resub``),
whatever the call pattern. ``stop()`` joins all of them.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from surge.exchange import wire
from surge.models import Kline
from surge.stream import planner
from surge.stream.connection import Connection
from surge.stream.counters import StreamCounters
from surge.stream.handover import Handover
from surge.stream.retries import Retries, RetryGroup
from surge.stream.single_flight import SingleFlight
from surge.stream.throttle import SlidingWindow
from surge.stream.tuning import StreamTuning

__all__ = [
    "DEFAULT_WS_URL",
    "MAX_STREAMS_PER_CONNECTION",
    "MultiplexedKlineManager",
    "StreamGap",
    "StreamTuning",
]

DEFAULT_WS_URL = "wss://fstream.binance.com/market"
MAX_STREAMS_PER_CONNECTION = 1024  # Binance's per-connection limit

log = logging.getLogger("surge.stream")


@dataclass(frozen=True, slots=True)
class StreamGap:
    """Streams that delivered nothing between ``start_ms`` and ``end_ms`` (wall clock, ms).

    ``start_ms`` is when the connection last received anything, ``end_ms`` when the server confirmed
    the re-subscription. Closed candles in that window should be fetched over REST.
    """

    streams: frozenset[str]
    start_ms: int
    end_ms: int
    connection: str
    reason: str


class MultiplexedKlineManager:
    """Kline streams multiplexed over WebSocket connections (see the module docstring)."""

    def __init__(
        self,
        callback: Callable[[Kline], Any],
        logger: logging.Logger | None = None,
        *,
        ws_url: str | None = None,
        streams_per_connection: int = 200,
        on_gap: Callable[[StreamGap], Any] | None = None,
        batch_callback: Callable[[list[Kline]], Any] | None = None,
        **tuning: Any,
    ) -> None:
        """``on_gap`` takes each :class:`StreamGap` as it happens (else :meth:`gaps` collects them).
        With ``batch_callback`` each received chunk's klines arrive as one list instead of through
        ``callback`` one by one (same klines, same order per stream): a consumer behind a queue saves
        a queue hop and a wake-up per event. ``tuning``: :class:`StreamTuning` fields."""
        if not 1 <= streams_per_connection <= MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"streams_per_connection must be 1..{MAX_STREAMS_PER_CONNECTION}")
        self._on_gap_cb = on_gap
        self._batch_callback = batch_callback
        self.tuning = StreamTuning.from_options(tuning)
        self.log = logger or log
        self._callback = callback
        base = (ws_url or DEFAULT_WS_URL).rstrip("/")
        self.url = base if base.endswith("/stream") else base + "/stream"
        self.capacity = streams_per_connection

        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._slots: dict[int, Connection] = {}  # fill order = insertion order
        self._owner: dict[str, Connection] = {}
        self._retiring: dict[int, Connection] = {}  # old connection id -> old connection
        self._successor: dict[int, Connection] = {}  # old connection id -> its replacement
        self._closing: list[Connection] = []
        self._retries = Retries(self.tuning.retry_delay_s, self.tuning.retry_max_s)
        self._conn_ids = itertools.count()
        self._req_ids = itertools.count(1)
        t = self.tuning
        self._flight = SingleFlight(t.debounce_s, t.max_debounce_s)
        self._budget = SlidingWindow(t.max_connect_attempts, t.attempts_window_s)
        self._worker: threading.Thread | None = None
        self._stopping = False
        self._gaps: deque[StreamGap] = deque(maxlen=1024)
        self._routed = threading.Event()  # some connection received stream data: the URL is routed

        self.resubscribes = 0  # resubscriber passes that changed something
        self.passes = 0
        self.rotations = 0
        self.gap_count = 0
        self.resubscriber_errors = 0
        self._retired = StreamCounters()  # of connections closed and joined

    # ----------------------------------------------------------------- public API

    def start(self) -> None:
        """Start the resubscriber; connections open as soon as there is something to carry."""
        with self._lock:
            if self._worker is not None:
                return
            self._worker = threading.Thread(target=self._work, name="surge-ws-resub", daemon=True)
        self._worker.start()
        self._flight.request()

    def subscribe_kline(self, symbol: str, interval: str) -> None:
        """Want ``symbol``'s ``interval`` klines. Cheap, thread-safe, no I/O; applied asynchronously."""
        name = wire.stream_name(symbol, interval)
        with self._lock:
            self._wanted.add(name)
            conn = self._owner.get(name)
            # still subscribed on the server: deliver again at once
            if conn is not None and conn.streams.resume(name) and conn.predecessor is not None:
                conn.predecessor.streams.resume(name)
        self._flight.request()

    def unsubscribe_kline(self, symbol: str, interval: str) -> None:
        """Stop delivering at once; the UNSUBSCRIBE itself is sent asynchronously."""
        name = wire.stream_name(symbol, interval)
        with self._lock:
            self._wanted.discard(name)
            conn = self._owner.get(name)
            if conn is not None:
                conn.streams.mute(name)
                if conn.predecessor is not None:
                    conn.predecessor.streams.mute(name)
        self._flight.request()

    def subscriptions(self) -> set[str]:
        """Stream names wanted (what will be flowing once the resubscriber has caught up)."""
        with self._lock:
            return set(self._wanted)

    def gaps(self) -> list[StreamGap]:
        """Drain the gaps reported since the last call; with ``on_gap`` they go to it instead."""
        out: list[StreamGap] = []
        with contextlib.suppress(IndexError):  # popleft until empty: safe against a concurrent append
            while True:
                out.append(self._gaps.popleft())
        return out

    def stats(self) -> dict[str, Any]:
        """Counters for the heartbeat and for people: contract keys first, then detail."""
        now = time.monotonic()
        with self._lock:
            conns = list(self._slots.values()) + list(self._retiring.values())
            every = conns + self._closing
            wanted = len(self._wanted)
            worker = self._worker
            flowing = len(set().union(*(c.streams.server for c in conns)))
        total = self._retired.copy()
        for c in every:
            total.add(c.counters)
        last_rx = max((c.last_event_rx for c in every), default=0.0)
        # data or an answered probe: on a feed of thin symbols (Binance pushes only on change) data can
        # be minutes old on healthy connections, so an outage check should look at this one
        last_alive = max((c.last_alive for c in every), default=0.0)
        threads = sum(1 for c in every if c.alive) + (1 if worker is not None and worker.is_alive() else 0)
        return {
            "connections": sum(1 for c in conns if c.connected),
            "streams": flowing,
            "threads": threads,
            "resubscribes": self.resubscribes,
            "reconnects": total.reconnects,
            "messages": total.messages,
            "wanted": wanted,
            **total.detail(),
            "rotations": self.rotations,
            "gaps": self.gap_count,
            "last_message_age_s": round(now - last_rx, 3) if last_rx else None,
            "last_alive_age_s": round(now - last_alive, 3) if last_alive else None,
            "per_connection": [_connection_stats(c, now) for c in conns],
        }

    def stop(self, timeout: float = 5.0) -> bool:
        """Close every connection and join every thread started here; True if all ended in time."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopping = True
            conns = list(self._slots.values()) + list(self._retiring.values()) + self._closing
            worker = self._worker
        self._flight.close()
        for c in conns:
            c.stop()
        ok = True
        if worker is not None:
            worker.join(max(0.0, deadline - time.monotonic()))
            ok = not worker.is_alive()
        with self._lock:  # the worker may have started one more before it saw the flag
            conns = list(self._slots.values()) + list(self._retiring.values()) + self._closing
        for c in conns:
            c.stop()
        for c in conns:
            ok = c.join(max(0.0, deadline - time.monotonic())) and ok
        if not ok:
            self.log.warning("stream manager: not every thread ended within %.1fs", timeout)
        return ok

    # ----------------------------------------------------------------- resubscriber thread

    def _work(self) -> None:
        wait = 0.0
        flight = self._flight
        while not flight.closed:
            flight.claim(timeout=wait)
            if flight.closed:
                break
            try:
                wait = self._pass()
            except Exception:  # a bug here must not end the only thread that applies changes
                self.resubscriber_errors += 1
                self.log.exception("stream manager: resubscriber pass failed")
                wait = self.tuning.housekeeping_s
            finally:
                flight.finish()
            self.passes += 1

    def _pass(self) -> float:
        """Apply wanted-vs-assigned, then assigned-vs-confirmed on every connection. Returns the
        time until the next pass is needed (rate budget, retry, housekeeping)."""
        t = self.tuning
        to_start: list[Connection] = []
        to_close: list[Connection] = []
        with self._lock:
            if self._stopping:
                return t.housekeeping_s
            p = planner.plan(
                self._wanted, [(c.id, c.streams.assigned) for c in self._slots.values()], self.capacity
            )
            for cid, streams in p.remove.items():
                conn = self._slots[cid]
                conn.streams.release(streams)
                for s in streams:
                    if self._owner.get(s) is conn:
                        del self._owner[s]
            for cid, streams in p.add.items():
                self._assign(self._slots[cid], streams)
            for streams in p.new_slots:
                conn = self._new_connection()
                self._slots[conn.id] = conn
                self._assign(conn, streams)
                to_start.append(conn)
            for cid in p.close:
                conn = self._slots.pop(cid)
                self._retries.forget(cid)
                self._closing.append(conn)
                to_close.append(conn)
        changed = not p.empty
        for conn in to_start:
            self.log.info("stream manager: opening %s for %d streams", conn.name, len(conn.streams.assigned))
            conn.start()
        for conn in to_close:
            self.log.info("stream manager: closing empty %s", conn.name)
            conn.stop()

        wait = t.housekeeping_s
        with self._lock:
            active = list(self._slots.values())
        for conn in active:
            sent, conn_wait = self._sync(conn)
            changed = changed or sent > 0
            wait = min(wait, conn_wait)
        self._housekeeping()
        if changed:
            self.resubscribes += 1
        return max(wait, 0.005)

    def _assign(self, conn: Connection, streams: list[str]) -> None:
        conn.streams.assign(streams)
        for s in streams:
            self._owner[s] = conn

    def _new_connection(self) -> Connection:
        return Connection(
            next(self._conn_ids),
            self.url,
            lock=self._lock,
            callback=self._callback,
            wake=self._flight.request,
            on_gap=self._emit_gap,
            budget=self._budget,
            tuning=self.tuning,
            logger=self.log,
            batch_callback=self._batch_callback,
            routed=self._routed,
        )

    def _sync(self, conn: Connection) -> tuple[int, float]:
        """Send what makes the server's set for ``conn`` equal its assigned set. Returns (sent, wait)."""
        t = self.tuning
        conn.expire_requests(t.reply_timeout_s)
        if not conn.connected:
            return 0, t.housekeeping_s
        now = time.monotonic()
        with self._lock:
            to_sub, to_unsub = conn.streams.out_of_sync()
            self._retries.add_failed(conn.id, conn.streams.take_failed(), now)
            due, blocked, retry_wait = self._retries.take_due(conn.id, now)
        wait = min(t.housekeeping_s, retry_wait)
        sent = 0
        for method, streams, failures in _batches(to_sub, to_unsub, due, blocked, t.max_streams_per_message):
            req_id = next(self._req_ids)
            if not conn.send_request(req_id, method, streams, failures):
                if failures:  # keep the retry group for the next pass
                    with self._lock:
                        self._retries.keep(conn.id, RetryGroup(streams, now, failures))
                wait = min(wait, max(conn.limiter.wait_time(), 0.01))
                break
            sent += 1
            self.log.debug("%s: %s %d streams (id=%d)", conn.name, method, len(streams), req_id)
        return sent, wait

    # ----------------------------------------------------------------- housekeeping

    def _housekeeping(self) -> None:
        self._rotate_if_due()
        self._progress_rotations()
        self._reap_closing()

    def _rotate_if_due(self) -> None:
        """Start replacing the oldest connection past ``max_connection_age_s`` (one at a time, so a
        fleet opened together does not reconnect together)."""
        now = time.monotonic()
        with self._lock:
            if self._retiring or self._stopping:
                return
            due = [c for c in self._slots.values() if c.due_for_rotation(now)]
            if not due:
                return
            old = max(due, key=lambda c: c.age_s(now))
            new = self._new_connection()
            new.streams.inherit(old.streams)
            new.handover = Handover(old.id, old.last_e)
            new.predecessor = old
            old.retiring = True
            self._slots = {
                (new.id if cid == old.id else cid): (new if c is old else c) for cid, c in self._slots.items()
            }
            self._retries.move(old.id, new.id)
            for s in new.streams.assigned:
                self._owner[s] = new
            self._retiring[old.id] = old
            self._successor[old.id] = new
            old.handover = new.handover
            self.rotations += 1
        self.log.info(
            "stream manager: rotating %s (age %.0fs) to %s with %d streams",
            old.name,
            old.age_s(now),
            new.name,
            len(new.streams.assigned),
        )
        new.start()

    def _progress_rotations(self) -> None:
        """Close the old connection once its replacement is confirmed and delivering."""
        with self._lock:
            items = [(old, self._successor[oid]) for oid, old in self._retiring.items()]
        for old, new in items:
            h = new.handover
            if h is None:
                continue
            if not old.alive:
                if old.join(0.0):
                    self._finish_rotation(old, new, h)
            elif not old.stopping:
                self._close_if_settled(old, new, h)

    def _close_if_settled(self, old: Connection, new: Connection, h: Handover) -> None:
        """Stop ``old`` once ``new`` carries everything and delivered (or the overlap ran long enough),
        handed over or not: ``new`` drops until an ``old`` that never took it has ended (see Handover)."""
        t = self.tuning
        now = time.monotonic()
        with self._lock:
            confirmed = new.connected and new.streams.fully_confirmed()
            seen = all(s in new.last_e for s in new.streams.deliver)
        settled = confirmed and (seen or now - new.confirmed_at >= t.handover_settle_s)
        if settled and (h.old_acked or now - h.started > t.handover_settle_s * 5):
            self.log.info("stream manager: %s confirmed, closing %s", new.name, old.name)
            old.stop()

    def _finish_rotation(self, old: Connection, new: Connection, h: Handover) -> None:
        """``old`` has ended: forget it, and report what it lost if it died before ``new`` took over."""
        now_ms = int(time.time() * 1000)
        gap: dict[int, list[str]] = {}
        with self._lock:
            lost = old.streams.take_down(None if h.old_acked else old.last_rx_wall_ms or now_ms)
            self._retiring.pop(old.id, None)
            self._successor.pop(old.id, None)
            if not h.old_acked:
                # The old connection died, or was stopped, before the new one took over (which drops
                # everything until then): a real gap. Streams the new one already carries end it now;
                # the rest end when their SUBSCRIBE is confirmed, like any reconnect.
                for s, since in lost.items():
                    if s not in new.streams.assigned:
                        continue
                    if s in new.streams.server:
                        gap.setdefault(since, []).append(s)
                    else:
                        new.streams.mark_down(s, since)
        h.old_ended()  # new.handover stays until the replacement caught up (see Handover.caught_up)
        new.predecessor = None
        for since, streams in gap.items():
            self._emit_gap(new, frozenset(streams), since, now_ms, "rotation")
        self._fold_stats(old)
        self._flight.request()

    def _reap_closing(self) -> None:
        with self._lock:
            closing = list(self._closing)
        for conn in closing:
            if conn.join(0.0):
                with self._lock:
                    if conn in self._closing:
                        self._closing.remove(conn)
                self._fold_stats(conn)

    def _fold_stats(self, conn: Connection) -> None:
        self._retired.add(conn.counters)

    def _emit_gap(
        self, conn: Connection, streams: frozenset[str], start_ms: int, end_ms: int, reason: str
    ) -> None:
        gap = StreamGap(streams, start_ms, end_ms, conn.name, reason)
        down_s = (end_ms - start_ms) / 1000.0
        self.log.info(
            "stream manager: %s: %d streams were down for %.1fs (%s)", conn.name, len(streams), down_s, reason
        )
        if self._on_gap_cb is None:
            # kept for gaps() only when no callback takes them: nobody would drain them, and 1,024
            # frozensets of up to 200 streams (~7 KB each) grew the bot by one per reconnect for days
            self._gaps.append(gap)
        self.gap_count += 1
        if self._on_gap_cb is not None:
            try:
                self._on_gap_cb(gap)
            except Exception:  # the owner's bug must not end the connection thread reporting it (logged)
                self.log.exception("stream manager: on_gap callback raised")


def _connection_stats(c: Connection, now: float) -> dict[str, Any]:
    """One connection's line in ``stats()["per_connection"]``."""
    counters = c.counters
    return {
        "name": c.name,
        "connected": c.connected,
        "retiring": c.retiring,
        "streams": len(c.streams.assigned),
        "confirmed": len(c.streams.server),
        "pending_requests": len(c.streams.inflight),
        "messages": counters.messages,
        "events": counters.events,
        "last_message_age_s": round(now - c.last_rx, 3) if c.last_rx else None,
        "age_s": round(c.age_s(now), 1),
        "reconnects": counters.reconnects,
        "probes": counters.probes,
        "dropped_frames": counters.dropped_frames,
        "unwanted": counters.unwanted,
        "callback_errors": counters.callback_errors,
        "max_msgs_per_s": c.limiter.peak,
    }


def _batches(
    to_sub: set[str], to_unsub: set[str], due: list[RetryGroup], blocked: set[str], step: int
) -> list[tuple[str, tuple[str, ...], int]]:
    """The requests of one sync, in sending order: (method, streams, earlier failures).

    UNSUBSCRIBE first (frees the server's slots), then retries that are due (as their own groups,
    so a bad stream stays isolated), then new SUBSCRIBEs of streams no retry is waiting for.
    """
    batches: list[tuple[str, tuple[str, ...], int]] = []
    unsub = sorted(to_unsub)
    for i in range(0, len(unsub), step):
        batches.append(("UNSUBSCRIBE", tuple(unsub[i : i + step]), 0))
    for g in due:
        streams = tuple(s for s in g.streams if s in to_sub)
        if streams:
            batches.append(("SUBSCRIBE", streams, g.failures))
    sub = sorted(to_sub - blocked)
    for i in range(0, len(sub), step):
        batches.append(("SUBSCRIBE", tuple(sub[i : i + step]), 0))
    return batches
