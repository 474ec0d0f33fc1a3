"""The Bot: ``surge run`` wired end to end, and shut down in order.

Data path: universe and 4h scan (REST, warm from the SQLite cache) -> kline_4h streams for the whole
universe (keeping the filter current with no REST) and kline_1m streams for the symbols that pass
-> one queue -> the strategy loop on the main thread -> paper broker -> store.

Threads (the whole budget): the main thread runs the strategy loop and writes the heartbeat; the
stream manager owns one thread per connection plus its resubscriber; one housekeeping thread does
every REST job after the start (1m backfills, 4h rescans, universe refreshes), each job opening a
pool of at most ``filter_4h.workers`` threads only while it runs; when trading live, one broker
thread makes the signed calls (entries, closes, exit checks). Nothing else.

Why the main loop owns all state: every decision (signal, entry, exit, filter change) is taken on
one thread, in the order events arrived, so none of it needs a lock and a replay is deterministic.
Other threads only put messages on the queue.

Live trading (both opt-ins given, ``credentials`` set): the same loop drives a
:class:`~surge.trading.live.LiveBroker` instead of the paper broker, through the same calls, made on
the broker thread with their results back through the queue (the loop decides, the thread waits). It
signs over the bot's own REST client, so signed calls and the scans share one weight limiter. At
start it shows the account and the limits in force and reconciles the database with the exchange
(what it reports is persisted); while running it asks the exchange every few seconds which
positions its protective orders closed. An exchange error in a live call is logged and retried
later, never fatal once running: the protective orders sit on the exchange meanwhile.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

from surge.config import Settings
from surge.errors import SurgeError
from surge.exchange.orders import Credentials, SignedRest, install_log_redaction
from surge.exchange.ratelimit import RateLimitBanned
from surge.exchange.rest import BinanceRest, ExchangeError, RestError
from surge.filter4h import Filter4h, LiveFilter4h, Rule4h, ScanResult
from surge.models import INTERVAL_MS, Kline, Position, Signal
from surge.runtime import HEARTBEAT_NAME, InstanceLock, write_json_atomic
from surge.store import Store, open_store
from surge.strategy import MINUTE_MS, SurgeRule
from surge.stream import MultiplexedKlineManager, StreamGap
from surge.trading import PaperBroker, PositionBook
from surge.trading.live import LiveBroker, ReconcileReport
from surge.universe import universe_from_exchange_info

log = logging.getLogger("surge.app")

HEARTBEAT_EVERY_S = 2.0
QUIET_S = 0.005  # the queue empty this long: a burst of kline chunks is over, time for periodic work
PERIODIC_MAX_DEFER_S = 0.25  # ... but periodic work overdue by this long runs even mid-flow
EXIT_CHECK_EVERY_S = 1.0
UNIVERSE_REFRESH_S = 3600.0
FILTER_SETTLE_S = 5.0  # after 4h candles close, wait this long for the rest before re-evaluating
LATENCY_SAMPLES = 20_000
BACKFILL_RETRY_S = (2.0, 60.0)  # first and longest wait before re-asking for a failed 1m backfill
LIVE_RETRY_S = 5.0  # after a failed live call, wait this long before asking the exchange again
ENTRY_RETRY_FOR_S = 60.0  # a live entry whose requests keep failing is given up after this long
BROKER_STOP_S = 5.0  # at shutdown, how long the broker calls on their way may take to end (an entry
# whose market order filled should get its protective orders before the process goes)
#: Errors of a live call that are ridden out once running (the exchange down, a 4xx, a ban).
LIVE_ERRORS = (RestError, RateLimitBanned)
#: Codes that mean the API key or secret is wrong (or lacks permission): a clear error at start.
KEY_ERRORS = {
    -1022: "SURGE_API_SECRET is not the secret of SURGE_API_KEY",
    -2014: "SURGE_API_KEY is malformed",
    -2015: "SURGE_API_KEY is unknown, lacks Futures permission, or this IP is not whitelisted",
    -2008: "SURGE_API_KEY is unknown",
}


# --------------------------------------------------------------------------- messages to the main loop


@dataclass(frozen=True, slots=True)
class _Backfilled:
    symbol: str
    klines: list[Kline]


@dataclass(frozen=True, slots=True)
class _Rescanned:
    result: ScanResult
    universe: frozenset[str] | None  # set when the job refreshed the universe too


@dataclass(frozen=True, slots=True)
class _PendingEntry:
    """A live entry whose request failed: asked again (same client order id) until ENTRY_RETRY_FOR_S."""

    signal: Signal
    since: float  # time.monotonic() of the first failure
    error: str


class Broker(Protocol):
    """What the bot needs from a broker: :class:`PaperBroker` and :class:`LiveBroker` both are one."""

    skipped: dict[str, str]  # signal key -> why open() returned None

    def open(self, signal: Signal) -> Position | None: ...

    def exit_reason(self, position: Position, price: float, now_ms: int) -> str | None: ...

    def close(self, position: Position, price: float, now_ms: int, reason: str) -> Position: ...

    def sync(self, positions: Iterable[Position], *, force: bool = False) -> list[Position]: ...


@dataclass(frozen=True, slots=True)
class _BrokerDone:
    """What one broker call did (made on the broker thread when live, inline on paper)."""

    kind: str  # "open" | "close" | "sync"
    subject: Any  # what it was about: the Signal (open), (Position, reason) (close), None (sync)
    result: Any = None  # (Position | None, why not) for open, Position for close, [Position] for sync
    error: Exception | None = None


@dataclass(frozen=True, slots=True)
class _JobFailed:
    job: str
    error: str
    symbols: tuple[str, ...] = ()  # a backfill's symbols that are still without their history


class Housekeeper:
    """One named thread running exchange jobs in order; results go back to the main loop's queue.

    Two of them run in a bot: ``surge-housekeeping`` for REST jobs (backfills, rescans, universe
    refresh) and, when trading live, ``surge-broker`` for the signed calls (entries, closes, the
    exits the exchange made), so that neither kind waits behind the other and the strategy loop waits
    for neither. Jobs are plain callables; a job that raises is logged and reported, never fatal: once
    ``surge run`` is up, an exchange outage is ridden out, not turned into an exit.
    """

    def __init__(self, post: Callable[[Any], None], thread_name: str = "surge-housekeeping") -> None:
        self._jobs: queue.Queue[tuple[str, Callable[[], Any]] | None] = queue.Queue()
        self._post = post
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self.busy = False

    def start(self) -> None:
        self._thread.start()

    def submit(self, name: str, job: Callable[[], Any]) -> None:
        self._jobs.put((name, job))

    def stop(self, timeout: float) -> None:
        """Finish the queued jobs (at most ``timeout`` seconds), then end the thread."""
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            name, job = item
            self.busy = True
            try:
                result = job()
                if result is not None:
                    self._post(result)
            except Exception as exc:  # noqa: BLE001 - reported to the loop, which logs and retries later
                self._post(_JobFailed(name, f"{type(exc).__name__}: {exc}"))
            finally:
                self.busy = False


# --------------------------------------------------------------------------- the bot


class StopRequested(BaseException):
    """SIGINT/SIGTERM while the bot is still starting: unwinds the start (a cold 4h scan takes ~30 s
    at 147 ms per request) at once, so a stop is honoured within the contract's 10 s. A BaseException
    so that no ``except Exception`` on the way swallows it; the scan's own cleanup still runs."""


class Bot:
    """``surge run``: see the module docstring. ``run()`` returns when stopped (signal or duration)."""

    def __init__(
        self,
        settings: Settings,
        *,
        symbols: Iterable[str] | None = None,
        duration_s: float | None = None,
        venue: str | None = None,
        simulator: Any = None,
        stream_tuning: dict[str, Any] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.settings = settings
        self.simulator = simulator  # an unstarted surge.sim.Simulator for --sim, started under the lock
        self.only = {s.strip().upper() for s in symbols} if symbols else None
        self.duration_s = duration_s
        # live trading when set: the CLI passes them only with both opt-ins (repr shows neither)
        self.credentials = credentials
        self.live = credentials is not None
        self.venue = venue or venue_of(settings.rest_url)
        if self.live:
            self.venue = live_venue(self.venue)
        self.stream_tuning = stream_tuning or {}
        self.stop_event = threading.Event()
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()

        self.rule = SurgeRule(settings.surge)
        self.rule4h = Rule4h.from_settings(settings.filter_4h)
        self.live4h = LiveFilter4h(self.rule4h)
        self.broker: Broker = PaperBroker(settings.trade)  # a LiveBroker from _start_live when live
        self.book = PositionBook(settings.trade.max_open_positions)
        self._pending: dict[str, _PendingEntry] = {}
        self._exchange_retry_at = 0.0  # monotonic: no live call before this after a failed one
        # live broker calls on their way (the broker thread makes them): an entry in flight counts as
        # held, a position being closed is not closed twice, one exit check at a time
        self.broker_desk: Housekeeper | None = None
        self._entering: dict[str, Signal] = {}
        self._closing: set[str] = set()
        self._syncing = False
        self._next_sync_at = 0.0

        self.universe: set[str] = set()
        self.passing: set[str] = set()
        self.streaming_1m: set[str] = set()
        self.last_price: dict[str, float] = {}
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.signals_seen = 0
        self.entries_open = True
        self.clock_offset_ms = 0  # exchange clock - local clock
        self.started_at = time.time()
        self.ready_at: float | None = None
        self.start_weight = 0

        self.store: Store | None = None
        self.rest: BinanceRest | None = None
        self.manager: MultiplexedKlineManager | None = None
        self.housekeeper: Housekeeper | None = None
        self._lock: InstanceLock | None = None
        self._starting = False
        self._filter_dirty_at: float | None = None
        self._backfill_pending: set[str] = set()
        # closed 4h candles for the cache, written in one transaction when the filter settles: at a
        # 4h close all 531 arrive at once, and 531 commits would hold up the strategy loop
        self._closed_4h: list[Kline] = []
        # symbols whose 1m backfill failed (exchange down): re-asked with a growing delay, not only
        # at their next closed candle, so an outage costs seconds of blindness, not minutes
        self._backfill_retry: set[str] = set()
        self._backfill_retry_at = 0.0
        self._backfill_delay = BACKFILL_RETRY_S[0]
        self.backfills = 0  # symbols whose 1m history was fetched (start, new in filter, gaps)

    # ----------------------------------------------------------------- lifecycle

    def request_stop(self) -> None:
        """Safe from a signal handler or any thread: the main loop notices within a tick.

        From a signal handler (the main thread) during the start it raises :class:`StopRequested`,
        which ``run()`` turns into a clean shutdown: the start does not check ``stop_event``.
        """
        self.stop_event.set()
        if self._starting and threading.current_thread() is threading.main_thread():
            self._starting = False
            raise StopRequested

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_offset_ms

    def run(self) -> None:
        """Lock, start, loop until stopped, shut down in order. A failed start raises SurgeError."""
        self._lock = InstanceLock(self.settings.home).acquire()
        self._starting = not self.stop_event.is_set()
        try:
            if not self._starting:
                return
            if self.simulator is not None:
                self.simulator.start()
                self.settings = replace(
                    self.settings, rest_url=self.simulator.rest_url, ws_url=self.simulator.ws_url
                )
                log.info("simulated exchange on %s and %s", self.simulator.rest_url, self.simulator.ws_url)
            self._start()
            self._starting = False
            self._loop()
        except StopRequested:
            self._starting = False
            log.info("stop requested while starting")
        finally:
            self._starting = False
            self._shutdown()

    def _start(self) -> None:
        s = self.settings
        self.store = open_store(s.home)
        for p in self.store.open_positions(venue=self.venue):
            self.book.add(p)
        self.rule.restore_cooldowns(self.store.last_signal_times(venue=self.venue))
        if len(self.book):
            log.info(
                "resuming %d open position(s): %s", len(self.book), ", ".join(sorted(self.book.symbols()))
            )

        self.rest = BinanceRest(s.rest_url, pool_size=s.filter_4h.workers)
        if self.live:
            self._start_live()
        log.info("scanning the universe's 4h candles on %s", s.rest_url)
        scan_started_ms = int(time.time() * 1000)
        result = self._scan(None)  # an unreachable exchange raises here: exit 1 before anything started
        # serverTime is the exchange's clock when the scan began (its first request, exchangeInfo):
        # compare it with ours then, not after a cold scan of ~30 s, or every "is this candle closed"
        # and max-hold check would run that far behind
        self.clock_offset_ms = result.server_time - scan_started_ms if result.server_time else 0
        self.universe = set(result.decisions) | set(result.errors) - _rejected(result)
        self.live4h.seed(result)
        self.start_weight = result.weight
        log.info(
            "4h filter: %d of %d symbols pass (%d requests, weight %d, %.1fs)",
            len(result.passed),
            result.checked,
            result.requests,
            result.weight,
            result.elapsed_s,
        )

        self.manager = MultiplexedKlineManager(
            self.events.put,
            logging.getLogger("surge.stream"),
            ws_url=s.ws_url,
            streams_per_connection=s.stream.streams_per_connection,
            on_gap=self.events.put,
            # one list per received chunk instead of one queue item per kline: one put, one get
            # and one wake-up of this loop per chunk (~177 klines at Binance cadence)
            batch_callback=self.events.put,
            **self.stream_tuning,
        )
        self.manager.start()
        # before the pass set: it submits the 1m backfill that seeds every volume baseline, which
        # would otherwise be dropped and the baseline left to the first closed candle, a minute later
        self.housekeeper = Housekeeper(self.events.put)
        self.housekeeper.start()
        for sym in sorted(self.universe):
            self.manager.subscribe_kline(sym, "4h")
        self._apply_pass_set(set(result.passed))

    def _start_live(self) -> None:
        """Signed client over the bot's own REST client, the account banner, reconciliation.

        Raises SurgeError (exit 1, one line) when the exchange refuses the keys: better at start,
        before anything was streamed, than at the first signal.
        """
        assert self.rest is not None and self.store is not None and self.credentials is not None
        install_log_redaction()
        signed = SignedRest(self.rest, self.credentials)
        broker = LiveBroker(self.settings.trade, signed)
        try:
            summary = broker.account_summary()
        except ExchangeError as exc:
            hint = KEY_ERRORS.get(exc.code)
            if hint is None:
                raise
            raise SurgeError(f"the exchange refused the API key (code {exc.code}: {exc.msg}): "
                             f"{hint}") from None
        for line in summary.lines():
            log.info("%s", line)
        log.info("live trading on %s: protective orders on the exchange's Algo Service; state under venue %r",
                 self.settings.rest_url, self.venue)
        self._persist_reconciliation(broker.reconcile(self.store.open_positions(venue=self.venue)))
        self.broker = broker
        # an entry is three signed requests (a timeout costs 10 s): made on their own thread, they
        # do not hold up the decisions on every other symbol
        self.broker_desk = Housekeeper(self.events.put, thread_name="surge-broker")
        self.broker_desk.start()

    def _persist_reconciliation(self, report: ReconcileReport) -> None:
        """Store what reconciliation found; the book becomes exactly what the exchange holds."""
        assert self.store is not None
        for p in report.closed:
            self.store.close_position(p, venue=self.venue)
            log.info("EXIT %s %s at %g while surge was away, PnL %+.4f USDT", p.symbol, p.exit_reason,
                     p.exit_price, p.pnl)
        for p in report.updated:
            self.store.update_position(p, venue=self.venue)
        for p in report.adopted:
            if not self.store.adopt_position(p, venue=self.venue):
                log.warning("adopted position %s is already recorded (closed): kept in the book only", p.key)
        if report.adopted:  # their signals are new rows: the same surge must not signal again at once
            self.rule.restore_cooldowns(self.store.last_signal_times(venue=self.venue))
        self.book = PositionBook(self.settings.trade.max_open_positions)
        for p in report.open:
            self.book.add(p)
        if report.open:
            log.info("holding %d position(s) on the exchange: %s", len(report.open),
                     ", ".join(sorted(p.symbol for p in report.open)))

    def _shutdown(self) -> None:
        """Stop entries, close streams, flush, release: bounded so SIGTERM ends within 10 s."""
        self.entries_open = False
        if self.broker_desk is not None:
            # an order request is never abandoned half way: let the calls on their way end, then
            # record what they did
            self.broker_desk.stop(timeout=BROKER_STOP_S)
            self._drain_broker_results()
        if self.store is not None:
            unconfirmed = {k: p.error for k, p in self._pending.items()}
            unconfirmed.update({k: "no answer yet" for k in self._entering if k not in unconfirmed})
            signals = {**{k: p.signal for k, p in self._pending.items()}, **self._entering}
            for key, error in unconfirmed.items():  # reconciliation adopts them if the exchange has them
                self.store.record_entry(signals[key], None, f"shutting down with the entry unconfirmed "
                                        f"({error})", venue=self.venue)
            self._pending.clear()
            self._entering.clear()
        if self.manager is not None:
            self.manager.stop(timeout=4.0)
        if self.housekeeper is not None:
            self.housekeeper.stop(timeout=3.0)
        try:
            self._flush_closed_4h()
        except Exception as exc:  # noqa: BLE001 - a cache write must not stop the shutdown
            log.warning("could not cache the last closed 4h candles: %s", exc)
        try:
            if self.store is not None and self.manager is not None:
                self._write_heartbeat(running=False)
        except OSError as exc:
            log.warning("could not write the final heartbeat: %s", exc)
        if self.rest is not None:
            self.rest.close()
        if self.store is not None:
            self.store.close()
        if self.simulator is not None:
            self.simulator.stop()
        if self._lock is not None:
            self._lock.release()
        log.info("stopped")

    # ----------------------------------------------------------------- main loop

    def _loop(self) -> None:
        deadline = time.monotonic() + self.duration_s if self.duration_s else None
        next_heartbeat = next_exit_check = 0.0
        next_refresh = time.monotonic() + self.settings.filter_4h.refresh_s
        next_universe = time.monotonic() + UNIVERSE_REFRESH_S
        handlers: dict[type, Callable[[Any], None]] = {
            list: self._on_klines,
            Kline: self._on_kline,
            StreamGap: self._on_gap,
            _Backfilled: self._on_backfilled,
            _Rescanned: self._on_rescanned,
            _JobFailed: self._on_job_failed,
            _BrokerDone: self._on_broker_done,
        }
        get = self.events.get
        monotonic = time.monotonic
        next_due = -math.inf  # earliest time any periodic job below is due
        while not self.stop_event.is_set():
            try:
                item = get(timeout=0.25)
                handlers[type(item)](item)
                # Drain the burst before the periodic work: Binance-style pushes arrive as a burst of
                # chunks within a few ms, and a heartbeat (~3 ms: percentiles over 20,000 latencies,
                # the baseline count, stats, a file write) run after its first chunk would delay every
                # decision behind it. So wait for a quiet moment, but never defer the work by more
                # than PERIODIC_MAX_DEFER_S under a flow with no pause.
                while True:
                    item = get(timeout=QUIET_S)
                    handlers[type(item)](item)
                    if monotonic() >= next_due + PERIODIC_MAX_DEFER_S:
                        break
            except queue.Empty:
                pass
            now = monotonic()
            if deadline is not None and now >= deadline:
                log.info("--duration reached")
                break
            if self.ready_at is None:
                self._check_ready()
                if self.ready_at is not None:
                    next_heartbeat = now  # say so at once: `surge status` right after "ready" is current
            if now >= next_exit_check:
                next_exit_check = now + EXIT_CHECK_EVERY_S
                self._check_max_hold()
                self._sync_exchange()
                self._retry_entries()
            if now >= next_heartbeat:
                next_heartbeat = now + HEARTBEAT_EVERY_S
                self._write_heartbeat(running=True)
            if self._filter_dirty_at is not None and now - self._filter_dirty_at >= FILTER_SETTLE_S:
                self._filter_dirty_at = None
                self._flush_closed_4h()
                self._apply_pass_set(self.live4h.passing())
            if now >= next_refresh:
                next_refresh = now + self.settings.filter_4h.refresh_s
                self._apply_pass_set(self.live4h.passing())
            if now >= next_universe:
                next_universe = now + UNIVERSE_REFRESH_S
                self._submit_universe_refresh()
            if self._backfill_retry and now >= self._backfill_retry_at:
                retry, self._backfill_retry = self._backfill_retry & self.streaming_1m, set()
                self._submit_backfill(sorted(retry - self._backfill_pending))
            next_due = min(next_exit_check, next_heartbeat, next_refresh, next_universe)
            if self._filter_dirty_at is not None:
                next_due = min(next_due, self._filter_dirty_at + FILTER_SETTLE_S)
            if self._backfill_retry:
                next_due = min(next_due, self._backfill_retry_at)
            if deadline is not None:
                next_due = min(next_due, deadline)
            if self.ready_at is None or self._pending:
                next_due = -math.inf  # checked after every item while starting / retrying entries

    def _flush_closed_4h(self) -> None:
        if self._closed_4h and self.store is not None:
            closed, self._closed_4h = self._closed_4h, []
            self.store.put_candles(closed)

    def _check_ready(self) -> None:
        """Log once when the filter is known and every wanted stream is confirmed by the exchange."""
        assert self.manager is not None
        st = self.manager.stats()
        if st["streams"] >= st["wanted"] > 0:
            self.ready_at = time.time()
            log.info(
                "ready in %.2fs: %d symbols, %d pass the 4h filter, %d streams on %d connections",
                self.ready_at - self.started_at,
                len(self.universe),
                len(self.passing),
                st["streams"],
                st["connections"],
            )

    # ----------------------------------------------------------------- events

    def _on_klines(self, batch: list[Kline]) -> None:
        """One chunk's klines from a connection, in arrival order (the hot path: ~4,250 a second)."""
        on_1m, on_4h = self._on_1m, self._on_kline
        for k in batch:
            if k.interval == "1m":
                on_1m(k)
            else:
                on_4h(k)

    def _on_kline(self, k: Kline) -> None:
        if k.interval == "1m":
            self._on_1m(k)
        elif k.interval == "4h" and self.live4h.on_kline(k):
            self._closed_4h.append(k)
            if self._filter_dirty_at is None:
                self._filter_dirty_at = time.monotonic()

    def _on_1m(self, k: Kline) -> None:
        sym = k.symbol
        self.last_price[sym] = k.close
        held = self.book.get(sym)
        if held is not None:
            reason = self.broker.exit_reason(held, k.close, k.event_time or self.now_ms())
            if reason is not None:
                self._close(held, k.close, k.event_time or self.now_ms(), reason)
            self._sync_exchange()  # live: did a protective order fire? (at most every poll interval)
        if sym not in self.passing:
            if k.closed:
                self.rule.seed(sym, [k])  # keep its history so it can signal at once if it passes later
            return
        signal = self.rule.on_kline(k)
        if k.event_time:
            # event time (exchange clock, stamped when the frame is sent) -> the decision taken: the
            # wire, parsing, the queue and the rule, i.e. what a surge waits before we act on it
            self.latencies_ms.append(time.time() * 1000 - k.event_time)
        if signal is not None:
            self._on_signal(signal)
        elif (
            k.closed and sym not in self._backfill_pending and self.rule.missing(sym, k.open_time + MINUTE_MS)
        ):
            self._submit_backfill([sym])  # a hole the gap report did not cover (e.g. a fresh start)

    def _on_signal(self, signal: Signal) -> None:
        assert self.store is not None
        self.signals_seen += 1
        if self.store.has_signal(signal.key, venue=self.venue):  # ask before any order is sent
            log.info("signal %s was already recorded: not entering twice", signal.key)
            return
        refusal = None if self.entries_open else "shutting down"
        refusal = refusal or self.book.refusal(signal.symbol) or self._pending_refusal(signal.symbol)
        self._enter(signal, refusal)

    def _pending_refusal(self, symbol: str) -> str | None:
        """Live entries on their way or being retried count as held: none more on the symbol or past
        the limit."""
        if not self._pending and not self._entering:
            return None
        unconfirmed = {k: p.signal.symbol for k, p in self._pending.items()}
        unconfirmed.update({k: s.symbol for k, s in self._entering.items()})
        if symbol in unconfirmed.values():
            return f"an entry on {symbol} is still unconfirmed"
        if len(self.book) + len(unconfirmed) >= self.book.max_open:
            return f"max_open_positions ({self.book.max_open}) reached"
        return None

    # ----------------------------------------------------------------- broker calls

    def _broker_call(self, kind: str, subject: Any, call: Callable[[], Any]) -> None:
        """Make one broker call: on the broker thread when live (the result comes back through the
        queue), at once on paper (nothing to wait for)."""

        def job() -> _BrokerDone:
            try:
                return _BrokerDone(kind, subject, result=call())
            except Exception as exc:  # noqa: BLE001 - handed to the loop, which decides (LIVE_ERRORS or a bug)
                return _BrokerDone(kind, subject, error=exc)

        if self.broker_desk is None:
            self._on_broker_done(job())
        else:
            self.broker_desk.submit(f"broker {kind}", job)

    def _on_broker_done(self, done: _BrokerDone) -> None:
        if done.error is not None and not isinstance(done.error, LIVE_ERRORS):
            raise done.error  # a bug, not the exchange: as loud as if the loop had made the call
        if done.kind == "open":
            self._entered(done)
        elif done.kind == "close":
            self._closed(done)
        else:
            self._synced(done)

    def _drain_broker_results(self) -> None:
        """At shutdown: handle the broker results still in the queue (nothing else is needed now)."""
        while True:
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _BrokerDone):
                try:
                    self._on_broker_done(item)
                except Exception:  # noqa: BLE001 - the shutdown must go on (streams, lock)
                    log.exception("while recording a broker result at shutdown")

    def _enter(self, signal: Signal, refusal: str | None) -> None:
        """Open (unless refused), then record the signal and its position in one transaction.

        A live entry whose request fails is not recorded yet: it is asked again later under the same
        client order id (the broker looks the order up before sending anything), never sent twice.
        """
        if refusal is not None:
            self._record_entry(signal, None, refusal)
            return
        broker = self.broker
        self._entering[signal.key] = signal

        def call() -> tuple[Position | None, str | None]:
            position = broker.open(signal)
            # below the exchange's minimums, or refused by it: the broker says why
            return position, None if position is not None else broker.skipped.get(signal.key, "not entered")

        self._broker_call("open", signal, call)

    def _entered(self, done: _BrokerDone) -> None:
        signal: Signal = done.subject
        self._entering.pop(signal.key, None)
        if done.error is not None:
            self._entry_failed(signal, done.error)
            return
        self._pending.pop(signal.key, None)
        position, refusal = done.result
        self._record_entry(signal, position, refusal)

    def _record_entry(self, signal: Signal, position: Position | None, refusal: str | None) -> None:
        assert self.store is not None
        if not self.store.record_entry(signal, position, skip_reason=refusal, venue=self.venue):
            log.info("signal %s was already recorded: not entering twice", signal.key)
            return
        log.info(
            "SIGNAL %s %+.2f%% volume x%.1f quote %.0f at %g%s",
            signal.symbol,
            signal.change_pct,
            signal.volume_multiple,
            signal.quote_volume,
            signal.price,
            f" (not entered: {refusal})" if refusal else "",
        )
        if position is not None:
            self.book.add(position)
            log.info(
                "ENTER %s qty %.6g at %g, take profit %g, stop loss %g, max hold until %s",
                position.symbol,
                position.qty,
                position.entry_price,
                position.take_profit,
                position.stop_loss,
                time.strftime("%H:%M:%S", time.gmtime(position.deadline / 1000)),
            )

    def _entry_failed(self, signal: Signal, exc: Exception) -> None:
        first = self._pending.get(signal.key)
        since = first.since if first is not None else time.monotonic()
        self._exchange_retry_at = time.monotonic() + LIVE_RETRY_S
        if time.monotonic() - since >= ENTRY_RETRY_FOR_S:
            self._pending.pop(signal.key, None)
            log.error("entry of %s given up after %.0fs of exchange errors: %s", signal.key,
                      time.monotonic() - since, exc)
            self._enter(signal, f"exchange error: {exc}")
            return
        self._pending[signal.key] = _PendingEntry(signal, since, str(exc))
        log.error("entry of %s failed: %s; asking the exchange again in %.0fs (same client order id: never "
                  "a second entry)", signal.key, exc, LIVE_RETRY_S)

    def _retry_entries(self) -> None:
        if self._pending and time.monotonic() >= self._exchange_retry_at:
            for pending in list(self._pending.values()):
                if pending.signal.key in self._entering:
                    continue  # asked already, the answer is on its way
                refusal = None if self.entries_open else "shutting down"
                self._enter(pending.signal, refusal)

    def _close(self, position: Position, price: float, now_ms: int, reason: str) -> None:
        if time.monotonic() < self._exchange_retry_at or position.key in self._closing:
            return  # a live call failed a moment ago (the next exit check tries again), or on its way
        self._closing.add(position.key)
        broker = self.broker
        self._broker_call("close", (position, reason), lambda: broker.close(position, price, now_ms, reason))

    def _closed(self, done: _BrokerDone) -> None:
        position, reason = done.subject
        self._closing.discard(position.key)
        if done.error is not None:
            self._exchange_retry_at = time.monotonic() + LIVE_RETRY_S
            log.error("could not close %s (%s): %s; trying again in %.0fs", position.symbol, reason,
                      done.error, LIVE_RETRY_S)
            return
        self._record_exit(done.result)

    def _record_exit(self, closed: Position) -> None:
        assert self.store is not None
        held = self.book.get(closed.symbol)
        if held is None or held.key != closed.key:
            return  # recorded already: our close and the exchange's exit check both saw it end
        self.store.close_position(closed, venue=self.venue)
        self.book.remove(closed.symbol)
        log.info("EXIT %s %s at %g, PnL %+.4f USDT", closed.symbol, closed.exit_reason, closed.exit_price,
                 closed.pnl)
        if closed.symbol not in self.passing:
            self._sync_1m()

    def _sync_exchange(self) -> None:
        """Live: record the exits the exchange made (a protective order fired, or someone closed the
        position) and put back missing protective orders. The broker throttles itself; paper: nothing."""
        now = time.monotonic()
        if not len(self.book) or now < self._exchange_retry_at or self._syncing or now < self._next_sync_at:
            return
        self._syncing = True
        self._next_sync_at = now + getattr(self.broker, "poll_interval_s", 0.0)
        broker, positions = self.broker, self.book.positions()
        self._broker_call("sync", None, lambda: broker.sync(positions, force=True))

    def _synced(self, done: _BrokerDone) -> None:
        self._syncing = False
        if done.error is not None:
            self._exchange_retry_at = time.monotonic() + LIVE_RETRY_S
            log.warning("checking the exchange's positions failed: %s (trying again in %.0fs)", done.error,
                        LIVE_RETRY_S)
            return
        for p in done.result:
            self._record_exit(p)

    def _check_max_hold(self) -> None:
        now = self.now_ms()
        for p in self.book.positions():
            if now >= p.deadline:
                price = self.last_price.get(p.symbol)
                if price is None:
                    log.warning(
                        "max hold of %s reached but no price yet: closing on the next update", p.symbol
                    )
                    continue
                self._close(p, price, now, "max_hold")

    def _on_gap(self, gap: StreamGap) -> None:
        symbols_1m = sorted({n.split("@", 1)[0].upper() for n in gap.streams if n.endswith("@kline_1m")})
        symbols_4h = sorted({n.split("@", 1)[0].upper() for n in gap.streams if n.endswith("@kline_4h")})
        log.warning(
            "stream gap on %s (%s): %d streams down for %.1fs; backfilling",
            gap.connection,
            gap.reason,
            len(gap.streams),
            (gap.end_ms - gap.start_ms) / 1000,
        )
        if symbols_1m:
            self._submit_backfill(symbols_1m)
        four_h = INTERVAL_MS["4h"]
        if symbols_4h and gap.end_ms // four_h != gap.start_ms // four_h:
            self._submit_rescan(symbols_4h)  # a 4h close may have been missed

    def _on_backfilled(self, item: _Backfilled) -> None:
        self._backfill_pending.discard(item.symbol)
        self.rule.seed(item.symbol, item.klines)
        self.backfills += 1
        self._backfill_delay = BACKFILL_RETRY_S[0]

    def _on_rescanned(self, item: _Rescanned) -> None:
        if item.universe is not None:
            gone = self.universe - item.universe
            new = item.universe - self.universe
            for sym in gone:
                log.info("%s left the universe", sym)
                self.live4h.forget(sym)
                assert self.manager is not None
                self.manager.unsubscribe_kline(sym, "4h")
            for sym in new:
                log.info("%s joined the universe", sym)
                assert self.manager is not None
                self.manager.subscribe_kline(sym, "4h")
            self.universe = set(item.universe)
        self.live4h.seed(item.result)
        self._apply_pass_set(self.live4h.passing())

    def _on_job_failed(self, item: _JobFailed) -> None:
        if item.symbols:
            self._backfill_pending.difference_update(item.symbols)
            self._backfill_retry.update(item.symbols)
            self._backfill_retry_at = time.monotonic() + self._backfill_delay
            log.warning("%s failed: %s (trying again in %.0fs)", item.job, item.error, self._backfill_delay)
            self._backfill_delay = min(self._backfill_delay * 2, BACKFILL_RETRY_S[1])
            return
        log.warning("%s failed: %s (will try again)", item.job, item.error)
        if item.job.startswith("backfill"):
            self._backfill_pending.clear()  # the next closed candle of a hole re-requests it

    # ----------------------------------------------------------------- filter and subscriptions

    def _apply_pass_set(self, passing: set[str]) -> None:
        passing = {s for s in passing if s in self.universe}
        if passing != self.passing:
            entered, left = passing - self.passing, self.passing - passing
            if self.passing:
                log.info(
                    "4h filter: %d pass (+%s, -%s)",
                    len(passing),
                    ",".join(sorted(entered)) or "none",
                    ",".join(sorted(left)) or "none",
                )
            self.passing = passing
            for sym in left:
                self.rule.forget(sym)
        self._sync_1m()

    def _sync_1m(self) -> None:
        """1m streams for the symbols that pass and for every open position (its exits need prices)."""
        assert self.manager is not None
        wanted = self.passing | self.book.symbols()
        for sym in sorted(wanted - self.streaming_1m):
            self.manager.subscribe_kline(sym, "1m")
        for sym in sorted(self.streaming_1m - wanted):
            self.manager.unsubscribe_kline(sym, "1m")
            self.last_price.pop(sym, None)
        new = sorted(wanted - self.streaming_1m)
        self.streaming_1m = wanted
        if new:
            self._submit_backfill(new)

    # ----------------------------------------------------------------- REST jobs (housekeeping thread)

    def _scan(self, symbols: list[str] | None) -> ScanResult:
        assert self.rest is not None and self.store is not None
        f = self.settings.filter_4h
        scanner = Filter4h(
            self.rest,
            self.rule4h,
            store=self.store,
            workers=f.workers,
            batch_size=f.batch_size,
            lookback=f.lookback,
        )
        if symbols is None and self.only is not None:
            symbols = sorted(self.only)
        return scanner.scan(symbols)

    def _submit_rescan(self, symbols: list[str]) -> None:
        if self.housekeeper is not None:
            self.housekeeper.submit(
                f"4h rescan of {len(symbols)}", lambda: _Rescanned(self._scan(symbols), None)
            )

    def _submit_universe_refresh(self) -> None:
        def job() -> _Rescanned:
            assert self.rest is not None
            info = self.rest.exchange_info()
            names = {s.symbol for s in universe_from_exchange_info(info)}
            if self.only is not None:
                names &= self.only
            return _Rescanned(self._scan(sorted(names)), frozenset(names))

        if self.housekeeper is not None:
            self.housekeeper.submit("universe refresh", job)

    def _submit_backfill(self, symbols: list[str]) -> None:
        """Fetch the closed 1m candles the volume baseline needs (weight 1 each, <= workers at once)."""
        if self.housekeeper is None or not symbols:
            return
        self._backfill_pending.update(symbols)
        limit = min(self.settings.surge.volume_lookback + 2, 99)
        rest, post, now_ms = self.rest, self.events.put, self.now_ms
        workers = self.settings.filter_4h.workers

        down = threading.Event()  # the exchange is unreachable: the rest of the job asks nothing
        failed: list[str] = []
        errors: list[str] = []

        def one(sym: str) -> None:
            assert rest is not None
            if down.is_set():
                failed.append(sym)
                return
            try:
                post(_Backfilled(sym, rest.klines(sym, "1m", limit=limit, now_ms=now_ms())))
            except ExchangeError as exc:  # about this symbol (e.g. delisted): not retried
                post(_JobFailed(f"backfill {sym}", str(exc)))
            except RestError as exc:  # unreachable or banned: retried later, like every symbol after it
                down.set()
                failed.append(sym)
                errors.append(str(exc))

        def job() -> _JobFailed | None:
            if len(symbols) == 1:
                one(symbols[0])
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="surge-backfill") as pool:
                    for fut in [pool.submit(one, s) for s in symbols]:
                        fut.result()
            if failed:
                return _JobFailed(f"backfill of {len(failed)}", errors[0] if errors else "", tuple(failed))
            return None

        self.housekeeper.submit(f"backfill of {len(symbols)}", job)

    # ----------------------------------------------------------------- heartbeat

    def baseline_ready(self) -> int:
        """How many passing symbols have the whole volume baseline of the current minute, i.e. can
        signal right now (a read-only figure for people, tests and the benchmark)."""
        minute = self.now_ms() // MINUTE_MS * MINUTE_MS
        return sum(1 for s in self.passing if not self.rule.missing(s, minute))

    def latency_percentiles(self) -> tuple[float | None, float | None]:
        data = sorted(self.latencies_ms)
        if not data:
            return None, None
        return data[len(data) // 2], data[min(len(data) - 1, int(len(data) * 0.99))]

    def _write_heartbeat(self, *, running: bool) -> None:
        assert self.manager is not None and self.store is not None
        st = self.manager.stats()
        age = st.get("last_message_age_s")
        p50, p99 = self.latency_percentiles()
        write_json_atomic(
            self.settings.home / HEARTBEAT_NAME,
            {
                "pid": os.getpid(),
                "running": running,
                "written_at": time.time(),
                "started_at": self.started_at,
                "ready_at": self.ready_at,
                "mode": self.settings.trade.mode,
                "venue": self.venue,
                "connections": st["connections"],
                "streams": st["streams"],
                "threads": threading.active_count(),
                "last_message_at": time.time() - age if age is not None else None,
                "signals": self.store.signal_count(venue=self.venue),
                "open_positions": len(self.book),
                "universe": len(self.universe),
                "passing": len(self.passing),
                "reconnects": st["reconnects"],
                "gaps": st["gaps"],
                "events": st["events"],
                "latency_ms_p50": p50,
                "latency_ms_p99": p99,
                "latency_samples": len(self.latencies_ms),
                "start_weight": self.start_weight,
                "backfills": self.backfills,
                "backfill_pending": len(self._backfill_pending) + len(self._backfill_retry),
                "baseline_ready": self.baseline_ready(),
            },
        )


def venue_of(rest_url: str) -> str:
    """Which book of signals and positions a run uses: "sim" for any exchange on loopback (the
    simulator, whatever port it got), else the exchange's host (mainnet and testnet stay apart)."""
    host = urlsplit(rest_url).hostname or rest_url
    if host == "localhost" or host == "::1" or host.startswith("127."):
        return "sim"
    return host


def live_venue(venue: str) -> str:
    """The venue of live state on an exchange ("live:sim", "live:fapi.binance.com"): paper and live
    trading on one SURGE_HOME never resume, reconcile or deduplicate each other's positions."""
    return f"live:{venue}"


def _rejected(result: ScanResult) -> set[str]:
    """Symbols the exchange refused outright (e.g. -1121 for a --symbols typo): never streamed."""
    return {s for s, msg in result.errors.items() if msg.startswith("code ")}


__all__ = ["Bot", "Broker", "Housekeeper", "RestError", "live_venue"]
