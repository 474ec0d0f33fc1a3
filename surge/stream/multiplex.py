"""MultiplexedKlineManager: many kline streams over few WebSocket connections, bounded threads.

Why it looks like this (the seed's failures, each ruled out here):

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

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from surge.exchange import wire
from surge.models import Kline
from surge.stream import planner
from surge.stream.connection import Connection, Handover
from surge.stream.single_flight import SingleFlight
from surge.stream.throttle import SlidingWindow

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


@dataclass
class StreamTuning:
    """Knobs with production defaults; tests shrink the timeouts (passed as ``**tuning``)."""

    debounce_s: float = 0.02  # a burst of calls settles for this long before one pass applies it
    max_debounce_s: float = 0.2  # ... but never delays a change longer than this
    housekeeping_s: float = 0.5  # resubscriber wakes at least this often (timeouts, rotation, retries)
    max_msgs_per_s: int = 5  # outgoing messages per connection per sliding second (Binance: 10)
    max_streams_per_message: int = 200
    reply_timeout_s: float = 10.0  # a request without a reply by then is re-sent
    retry_delay_s: float = 1.0  # first delay after a refused request (doubles per failure)
    retry_max_s: float = 60.0
    connect_timeout_s: float = 4.0  # TCP + TLS connect; below stop()'s default 5 s so stop stays bounded
    # confirmed streams and no data for this long: never any since the confirmation -> replace (the
    # unrouted case); quiet after delivering -> probe with LIST_SUBSCRIPTIONS (Binance pushes a stream
    # only when its candle changed: thin symbols are quiet for minutes on a healthy connection)
    silence_timeout_s: float = 10.0
    probe_timeout_s: float = 5.0  # a probe without an answer by then -> replace
    tick_s: float = 0.5  # recv timeout: how often an idle connection checks stop/silence
    max_connection_age_s: float = 23 * 3600.0  # rotate before Binance's 24 h cut
    handover_settle_s: float = 1.0  # after the replacement is confirmed, overlap at most this long
    backoff_base_s: float = 0.5  # full-jitter exponential backoff: uniform(0, base * 2**n) ...
    # ... capped here: a stream is back within 15 s of the exchange coming back (with 60 s it took
    # 30 s on average after a long outage, every surge of that half minute missed); the manager-wide
    # attempt cap below, not this, keeps a long outage under Binance's per-IP connection limit
    backoff_max_s: float = 15.0
    stable_after_s: float = 30.0  # a session that delivered data or lasted this long resets backoff
    max_connect_attempts: int = 250  # manager-wide, per attempts_window_s (Binance: ~300 / 5 min / IP)
    attempts_window_s: float = 300.0
    recv_bufsize: int = 256 * 1024
    sslopt: dict[str, Any] | None = None  # passed to websocket-client for wss:// (CA bundle, proxies' CAs)


@dataclass
class _RetryGroup:
    """Streams whose request was refused or timed out, re-sent together after ``not_before``.

    A refused batch is split in halves so one bad stream is isolated in log2(n) rounds instead of
    failing its 199 neighbours forever.
    """

    streams: tuple[str, ...]
    not_before: float
    failures: int


class MultiplexedKlineManager:
    """Kline streams multiplexed over WebSocket connections (see the module docstring)."""

    def __init__(
        self,
        callback: Callable[[Kline], Any],
        logger: logging.Logger | None = None,
        *,
        ws_url: str | None = None,
        streams_per_connection: int = 200,
        **tuning: Any,
    ) -> None:
        if not 1 <= streams_per_connection <= MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"streams_per_connection must be 1..{MAX_STREAMS_PER_CONNECTION}")
        self._on_gap_cb: Callable[[StreamGap], Any] | None = tuning.pop("on_gap", None)
        # Optional: receive each received chunk's klines as one list instead of ``callback`` per
        # kline (same klines, same order per stream). A consumer behind a queue saves a queue hop
        # and a wake-up per event; ``callback`` is then not called for klines.
        self._batch_callback: Callable[[list[Kline]], Any] | None = tuning.pop("batch_callback", None)
        known = {f.name for f in fields(StreamTuning)}
        unknown = sorted(set(tuning) - known)
        if unknown:
            raise TypeError(f"unknown tuning option(s): {', '.join(unknown)}")
        self.tuning = StreamTuning(**tuning)
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
        self._retry: dict[int, list[_RetryGroup]] = {}
        self._conn_ids = itertools.count()
        self._req_ids = itertools.count(1)
        t = self.tuning
        self._flight = SingleFlight(t.debounce_s, t.max_debounce_s)
        self._budget = SlidingWindow(t.max_connect_attempts, t.attempts_window_s)
        self._worker: threading.Thread | None = None
        self._stopping = False
        self._gaps: deque[StreamGap] = deque(maxlen=1024)
        self._started_at = 0.0
        self._routed = threading.Event()  # some connection received stream data: the URL is routed

        self.resubscribes = 0  # resubscriber passes that changed something
        self.passes = 0
        self.rotations = 0
        self.gap_count = 0
        self.resubscriber_errors = 0
        self._retired_stats = {"messages": 0, "events": 0, "dropped_frames": 0, "unwanted": 0,
                               "callback_errors": 0, "reconnects": 0, "duplicates": 0, "requests_sent": 0,
                               "failed_replies": 0, "pongs": 0, "attempts": 0, "probes": 0,
                               "probes_unanswered": 0}

    # ----------------------------------------------------------------- public API

    def start(self) -> None:
        """Start the resubscriber; connections open as soon as there is something to carry."""
        with self._lock:
            if self._worker is not None:
                return
            self._started_at = time.monotonic()
            self._worker = threading.Thread(target=self._work, name="surge-ws-resub", daemon=True)
        self._worker.start()
        self._flight.request()

    def subscribe_kline(self, symbol: str, interval: str) -> None:
        """Want ``symbol``'s ``interval`` klines. Cheap, thread-safe, no I/O; applied asynchronously."""
        name = wire.stream_name(symbol, interval)
        with self._lock:
            self._wanted.add(name)
            conn = self._owner.get(name)
            if conn is not None and name in conn.assigned:
                conn.deliver.add(name)  # still subscribed on the server: deliver again at once
                prev = conn.predecessor
                if prev is not None and name in prev.assigned:
                    prev.deliver.add(name)
        self._flight.request()

    def unsubscribe_kline(self, symbol: str, interval: str) -> None:
        """Stop delivering at once; the UNSUBSCRIBE itself is sent asynchronously."""
        name = wire.stream_name(symbol, interval)
        with self._lock:
            self._wanted.discard(name)
            conn = self._owner.get(name)
            if conn is not None:
                conn.deliver.discard(name)
                if conn.predecessor is not None:
                    conn.predecessor.deliver.discard(name)
        self._flight.request()

    def subscriptions(self) -> set[str]:
        """Stream names wanted (what will be flowing once the resubscriber has caught up)."""
        with self._lock:
            return set(self._wanted)

    def gaps(self) -> list[StreamGap]:
        """Drain the gaps reported since the last call; with ``on_gap`` they go to it instead."""
        out = []
        while True:
            try:
                out.append(self._gaps.popleft())
            except IndexError:
                return out

    def stats(self) -> dict[str, Any]:
        """Counters for the heartbeat and for people: contract keys first, then detail."""
        now = time.monotonic()
        with self._lock:
            conns = list(self._slots.values()) + list(self._retiring.values())
            closing = list(self._closing)
            wanted = len(self._wanted)
            worker = self._worker
            flowing = len(set().union(*(c.server for c in conns))) if conns else 0
        every = conns + closing
        totals = dict(self._retired_stats)
        for c in every:
            for key in totals:
                totals[key] += getattr(c, key)
        last_rx = max((c.last_event_rx for c in every), default=0.0)
        # data or an answered probe: on a feed of thin symbols (Binance pushes only on change) data can
        # be minutes old on healthy connections, so an outage check should look at this one
        last_alive = max((max(c.last_event_rx, c.probe_answered_at) for c in every), default=0.0)
        threads = sum(1 for c in every if c.alive) + (1 if worker is not None and worker.is_alive() else 0)
        per_conn = [
            {
                "name": c.name,
                "connected": c.connected,
                "retiring": c.retiring,
                "streams": len(c.assigned),
                "confirmed": len(c.server),
                "pending_requests": len(c.inflight),
                "messages": c.messages,
                "events": c.events,
                "last_message_age_s": round(now - c.last_rx, 3) if c.last_rx else None,
                "age_s": round(c.age_s(now), 1),
                "reconnects": c.reconnects,
                "probes": c.probes,
                "dropped_frames": c.dropped_frames,
                "unwanted": c.unwanted,
                "callback_errors": c.callback_errors,
                "max_msgs_per_s": c.limiter.peak,
            }
            for c in conns
        ]
        return {
            "connections": sum(1 for c in conns if c.connected),
            "streams": flowing,
            "threads": threads,
            "resubscribes": self.resubscribes,
            "reconnects": totals["reconnects"],
            "messages": totals["messages"],
            "wanted": wanted,
            "events": totals["events"],
            "dropped_frames": totals["dropped_frames"],
            "unwanted_events": totals["unwanted"],
            "duplicates_dropped": totals["duplicates"],
            "callback_errors": totals["callback_errors"],
            "requests_sent": totals["requests_sent"],
            "failed_replies": totals["failed_replies"],
            "pongs": totals["pongs"],
            "probes": totals["probes"],  # quiet connections asked LIST_SUBSCRIPTIONS
            "probes_unanswered": totals["probes_unanswered"],  # ... and replaced for not answering
            "connect_attempts": totals["attempts"],
            "rotations": self.rotations,
            "gaps": self.gap_count,
            "last_message_age_s": round(now - last_rx, 3) if last_rx else None,
            "last_alive_age_s": round(now - last_alive, 3) if last_alive else None,
            "per_connection": per_conn,
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
            p = planner.plan(self._wanted, [(c.id, c.assigned) for c in self._slots.values()],
                             self.capacity)
            for cid, streams in p.remove.items():
                conn = self._slots[cid]
                for s in streams:
                    conn.assigned.discard(s)
                    conn.deliver.discard(s)
                    conn.down.pop(s, None)
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
                self._retry.pop(cid, None)
                self._closing.append(conn)
                to_close.append(conn)
        changed = not p.empty
        for conn in to_start:
            self.log.info("stream manager: opening %s for %d streams", conn.name, len(conn.assigned))
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
        conn.assigned.update(streams)
        conn.deliver.update(streams)
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
        batches: list[tuple[str, tuple[str, ...], int]] = []
        wait = t.housekeeping_s
        with self._lock:
            busy: set[str] = set()
            for req in conn.inflight.values():
                busy.update(req.streams)
            self._collect_failures(conn, now)
            groups = self._retry.get(conn.id, [])
            blocked: set[str] = set()
            due: list[_RetryGroup] = []
            for g in groups:
                if g.not_before <= now:
                    due.append(g)
                else:
                    wait = min(wait, g.not_before - now)
                blocked.update(g.streams)
            unsub = sorted(conn.server - conn.assigned - busy)
            sub = sorted(conn.assigned - conn.server - busy - blocked)
            step = t.max_streams_per_message
            for i in range(0, len(unsub), step):
                batches.append(("UNSUBSCRIBE", tuple(unsub[i : i + step]), 0))
            for g in due:
                streams = tuple(s for s in g.streams if s in conn.assigned and s not in conn.server
                                and s not in busy)
                groups.remove(g)
                if streams:
                    batches.append(("SUBSCRIBE", streams, g.failures))
            for i in range(0, len(sub), step):
                batches.append(("SUBSCRIBE", tuple(sub[i : i + step]), 0))
        sent = 0
        for method, streams, failures in batches:
            req_id = next(self._req_ids)
            if not conn.send_request(req_id, method, streams, failures):
                if failures:  # keep the retry group for the next pass
                    with self._lock:
                        self._retry.setdefault(conn.id, []).append(_RetryGroup(streams, now, failures))
                wait = min(wait, max(conn.limiter.wait_time(), 0.01))
                break
            sent += 1
            self.log.debug("%s: %s %d streams (id=%d)", conn.name, method, len(streams), req_id)
        return sent, wait

    def _collect_failures(self, conn: Connection, now: float) -> None:
        """Turn refused / timed-out requests reported by ``conn`` into retry groups (lock held)."""
        t = self.tuning
        groups = self._retry.setdefault(conn.id, [])
        while conn.failed:
            req = conn.failed.popleft()
            failures = req.failures + 1
            if req.method != "SUBSCRIBE":
                continue  # an UNSUBSCRIBE is simply re-derived from server - assigned next pass
            delay = min(t.retry_max_s, t.retry_delay_s * 2 ** (failures - 1))
            if len(req.streams) > 1:
                half = len(req.streams) // 2
                for part in (req.streams[:half], req.streams[half:]):
                    groups.append(_RetryGroup(part, now + t.retry_delay_s, failures))
            else:
                groups.append(_RetryGroup(req.streams, now + delay, failures))

    # ----------------------------------------------------------------- housekeeping

    def _housekeeping(self) -> None:
        self._rotate_if_due()
        self._progress_rotations()
        self._reap_closing()

    def _rotate_if_due(self) -> None:
        """Start replacing the oldest connection past ``max_connection_age_s`` (one at a time, so a
        fleet opened together does not reconnect together)."""
        t = self.tuning
        now = time.monotonic()
        with self._lock:
            if self._retiring or self._stopping:
                return
            due = [c for c in self._slots.values() if c.connected and c.age_s(now) >= t.max_connection_age_s]
            if not due:
                return
            old = max(due, key=lambda c: c.age_s(now))
            new = self._new_connection()
            new.assigned.update(old.assigned)
            new.deliver.update(old.deliver)
            new.handover = Handover(old=old)
            new.predecessor = old
            old.retiring = True
            self._slots = {(new.id if cid == old.id else cid): (new if c is old else c)
                           for cid, c in self._slots.items()}
            if old.id in self._retry:
                self._retry[new.id] = self._retry.pop(old.id)
            for s in new.assigned:
                self._owner[s] = new
            self._retiring[old.id] = old
            self._successor[old.id] = new
            old.handover = new.handover
            self.rotations += 1
        self.log.info("stream manager: rotating %s (age %.0fs) to %s with %d streams",
                      old.name, old.age_s(now), new.name, len(new.assigned))
        new.start()

    def _progress_rotations(self) -> None:
        """Close the old connection once its replacement is confirmed and delivering."""
        t = self.tuning
        now = time.monotonic()
        done: list[tuple[Connection, Connection]] = []
        with self._lock:
            items = [(old, self._successor[oid]) for oid, old in self._retiring.items()]
        for old, new in items:
            h = new.handover
            if h is None:
                continue
            if not old.alive:
                done.append((old, new))
                continue
            if old.stopping:
                continue
            with self._lock:
                confirmed = new.connected and new.assigned <= new.server
                seen = all(s in new.last_e for s in new.deliver)
            settled = confirmed and (seen or now - new._confirmed_at >= t.handover_settle_s)
            if settled and (h.old_acked or now - h.started > t.handover_settle_s * 5):
                h.old_acked = True
                self.log.info("stream manager: %s confirmed, closing %s", new.name, old.name)
                old.stop()
        for old, new in done:
            if not old.join(0.0):
                continue
            h = new.handover
            assert h is not None
            now_ms = int(time.time() * 1000)
            gap: dict[int, list[str]] = {}
            with self._lock:
                lost = dict(old.down)
                old.down.clear()
                self._retiring.pop(old.id, None)
                self._successor.pop(old.id, None)
                if not h.old_acked:
                    # The old connection died before the new one took over (which drops everything
                    # until then): a real gap. Streams the new one already carries end it now; the
                    # rest end when their SUBSCRIBE is confirmed, like any reconnect.
                    for s, since in lost.items():
                        if s not in new.assigned:
                            continue
                        if s in new.server:
                            gap.setdefault(since, []).append(s)
                        else:
                            new.down.setdefault(s, since)
            h.old_acked = True
            new.handover = None
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
        for key in self._retired_stats:
            self._retired_stats[key] += getattr(conn, key)

    def _emit_gap(self, conn: Connection, streams: frozenset[str], start_ms: int, end_ms: int,
                  reason: str) -> None:
        gap = StreamGap(streams, start_ms, end_ms, conn.name, reason)
        if self._on_gap_cb is None:
            # kept for gaps() only when no callback takes them: nobody would drain them, and 1,024
            # frozensets of up to 200 streams (~7 KB each) grew the bot by one per reconnect for days
            self._gaps.append(gap)
        self.gap_count += 1
        self.log.info("stream manager: %s: %d streams were down for %.1fs (%s)",
                      conn.name, len(streams), (end_ms - start_ms) / 1000.0, reason)
        if self._on_gap_cb is not None:
            try:
                self._on_gap_cb(gap)
            except Exception:
                self.log.exception("stream manager: on_gap callback raised")
