"""The Bot: ``surge run`` wired end to end, and shut down in order.

Data path: universe and 4h scan (REST, warm from the SQLite cache) -> kline_4h streams for the whole
universe (keeping the filter current with no REST) and kline_1m streams for the symbols that pass
-> one queue -> the strategy loop on the main thread -> the desk (paper, or live orders) -> store.

Threads (the whole budget): the main thread runs the strategy loop and writes the heartbeat; the
stream manager owns one thread per connection plus its resubscriber; one housekeeping thread does
every REST job after the start (1m backfills, 4h rescans, universe refreshes), each job opening a
pool of at most ``filter_4h.workers`` threads only while it runs; when trading live, the order desk
owns two (``surge-desk`` for every signed call, ``surge-desk-protect`` so both protective orders go
out together). Nothing else.

Why the main loop owns all state: every decision (signal, entry, exit, filter change) is taken on
one thread, in the order events arrived, so none of it needs a lock and a replay is deterministic.
Other threads only put messages on the queue.

Live trading (both opt-ins given, ``credentials`` set): the loop hands entries and closes to the
:class:`~surge.trading.desk.OrderDesk` and mirrors its outcomes (messages on the same queue) in the
book; the desk owns every live order's persisted lifecycle, its retries and the reconciliation with
the exchange. It signs over the bot's own REST client, so signed calls and the scans share one
weight limiter. Paper trading goes through :class:`~surge.trading.paper.PaperDesk`, the same calls
answered at once. A stop while a live entry or close is unresolved exits 4 (:data:`EXIT_UNRESOLVED`).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from surge.config import Settings
from surge.errors import EXIT_OK, EXIT_RUNTIME, EXIT_UNRESOLVED, ConfigError, SurgeError
from surge.exchange.orders import Credentials, SignedRest, install_log_redaction
from surge.exchange.rest import BinanceRest, ExchangeError, RestError
from surge.filter4h import Filter4h, LiveFilter4h, Rule4h, ScanResult
from surge.latency import LatencyWindow
from surge.models import INTERVAL_MS, Kline, Position, Signal
from surge.runtime import HEARTBEAT_NAME, HomeError, InstanceLock, LockLost, Spell, write_json_atomic
from surge.store import Store, StoreError, StoreWriteError, open_store
from surge.strategy import MINUTE_MS, SurgeRule
from surge.stream import MultiplexedKlineManager, StreamGap
from surge.trading import PaperDesk, PositionBook, TradeClosed, TradeOpened, TradeVoid
from surge.trading.desk import OrderDesk
from surge.trading.live import ENTRY, EXIT, client_id
from surge.universe import not_tradable, universe_from_exchange_info

log = logging.getLogger("surge.app")

HEARTBEAT_EVERY_S = 2.0
#: What the bot does while the database refuses writes (a full disk), said once per spell.
NO_ENTRY_WHILE_FULL = "no new entry meanwhile (it could not be recorded); held positions are still closed"
QUIET_S = 0.005  # the queue empty this long: a burst of kline chunks is over, time for periodic work
PERIODIC_MAX_DEFER_S = 0.25  # ... but periodic work overdue by this long runs even mid-flow
EXIT_CHECK_EVERY_S = 1.0
UNIVERSE_REFRESH_S = 3600.0
FILTER_SETTLE_S = 5.0  # after 4h candles close, wait this long for the rest before re-evaluating
LATENCY_SAMPLES = 20_000
BACKFILL_RETRY_S = (2.0, 60.0)  # first and longest wait before re-asking for a failed 1m backfill
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
class _JobFailed:
    job: str
    error: str
    symbols: tuple[str, ...] = ()  # a backfill's symbols that are still without their history


class Housekeeper:
    """One named thread running exchange jobs in order; results go back to the main loop's queue.

    ``surge-housekeeping`` runs the REST jobs (backfills, rescans, universe refresh) so the strategy
    loop never waits for them. Jobs are plain callables; a job that raises is logged and reported,
    never fatal: once ``surge run`` is up, an exchange outage is ridden out, not turned into an exit.
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
        self.desk: PaperDesk | OrderDesk | None = None  # made by _start (an OrderDesk when live)
        self.book = PositionBook(settings.trade.max_open_positions)
        # what the desk is doing for the loop: an entry on its way counts as held (key -> symbol), a
        # position being closed is not closed twice; both end with the desk's outcome message
        self.entering: dict[str, str] = {}
        self.closing: set[str] = set()
        #: live trades the desk could not resolve before the stop (exit 4 when any)
        self.unresolved: list[Any] = []
        self.exit_code = EXIT_OK

        self.universe: set[str] = set()
        self.passing: set[str] = set()
        self.streaming_1m: set[str] = set()
        self.last_price: dict[str, float] = {}
        self.latency = LatencyWindow(LATENCY_SAMPLES)
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
        self._lock_lost = False  # another bot holds surge.lock now: stop, and leave its heartbeat alone
        self._heartbeat_spell = Spell(log, "writing the heartbeat")
        self._store_spell = Spell(log, "writing to the database")
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
        # pool: the scan's workers, plus the desk's two threads placing both protective orders at once
        self.rest = BinanceRest(s.rest_url, pool_size=s.filter_4h.workers + 2)
        if self.only is not None:
            self._check_symbols()
        if self.live:
            self._start_live()
        else:
            self.desk = PaperDesk(s.trade, self.store, self.venue, self._on_outcome)
            for p in self.desk.start():
                self.book.add(p)
        self.rule.restore_cooldowns(self.store.last_signal_times(venue=self.venue))
        if len(self.book):
            log.info(
                "resuming %d open position(s): %s", len(self.book), ", ".join(sorted(self.book.symbols()))
            )
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

    def _check_symbols(self) -> None:
        """``--symbols`` against exchangeInfo before anything else (one request, weight 1).

        A typo, a delisted or a USDC symbol would otherwise be scanned, never streamed, and the bot
        would idle until stopped and exit 0: better a usage error (exit 2) naming them, before a live
        desk reconciles anything.
        """
        assert self.rest is not None and self.only is not None
        bad = not_tradable(self.rest.exchange_info(), sorted(self.only))
        if bad:
            raise ConfigError(f"--symbols: not a TRADING USDT perpetual on {self.settings.rest_url}: "
                              f"{', '.join(sorted(bad))}")

    def _start_live(self) -> None:
        """Signed client over the bot's own REST client, the account banner, reconciliation.

        Raises SurgeError (exit 1, one line) when the exchange refuses the keys: better at start,
        before anything was streamed, than at the first signal.
        """
        assert self.rest is not None and self.store is not None and self.credentials is not None
        install_log_redaction()
        signed = SignedRest(self.rest, self.credentials)
        desk = OrderDesk(self.settings.trade, signed, self.store, self.venue, self.events.put)
        try:
            summary = desk.account_summary()
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
        found = desk.start()  # hedge-mode check, the ledger against the exchange, then the desk's threads
        self.desk = desk
        for p in found.open:
            self.book.add(p)
        self.entering.update(found.in_flight)
        if found.open:
            log.info("holding %d position(s) on the exchange: %s", len(found.open),
                     ", ".join(sorted(p.symbol for p in found.open)))

    def _shutdown(self) -> None:
        """Stop entries, close streams, flush, release: bounded so SIGTERM ends within 10 s."""
        self.entries_open = False
        if self.desk is not None:
            # an order on its way is never abandoned half way: an entry gets its fill and its
            # protective orders (bounded); what is still unresolved then is resumed by the next start
            self.unresolved = self.desk.stop()
            for t in self.unresolved:
                log.error("stopping with the live %s of %s unresolved (trade %s is %s, client order id %s): "
                          "the next start reconciles it", "close" if t.state == "closing" else "entry",
                          t.symbol, t.key, t.state, client_id(t.key, EXIT if t.state == "closing" else ENTRY))
            if self.unresolved:
                self.exit_code = EXIT_UNRESOLVED
        if self.manager is not None:
            self.manager.stop(timeout=4.0)
        if self.housekeeper is not None:
            self.housekeeper.stop(timeout=3.0)
        try:
            self._flush_closed_4h()
        except Exception as exc:  # noqa: BLE001 - a cache write must not stop the shutdown
            log.warning("could not cache the last closed 4h candles: %s", exc)
        try:
            if self.store is not None and self.manager is not None and not self._lock_lost:
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
            TradeOpened: self._on_outcome,
            TradeVoid: self._on_outcome,
            TradeClosed: self._on_outcome,
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
            if now >= next_heartbeat:
                next_heartbeat = now + HEARTBEAT_EVERY_S
                self._beat()
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
            if self.ready_at is None:
                next_due = -math.inf  # checked after every item while starting

    def _flush_closed_4h(self) -> None:
        if self._closed_4h and self.store is not None:
            closed, self._closed_4h = self._closed_4h, []
            try:
                self.store.put_candles(closed)
            except StoreWriteError as exc:  # only the cache: the next scan asks the exchange for them
                self._store_spell.failed(exc, NO_ENTRY_WHILE_FULL)

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
            assert self.desk is not None
            reason = self.desk.exit_reason(held, k.close, k.event_time or self.now_ms())
            if reason is not None:
                self._close(held, k.close, k.event_time or self.now_ms(), reason)
        if sym not in self.passing:
            self.rule.observe(k)  # keep its history so it can signal at once if it passes later
            return
        signal = self.rule.on_kline(k)
        if k.event_time:
            # event time (exchange clock, stamped when the frame is sent) -> the decision taken: the
            # wire, parsing, the queue and the rule, i.e. what a surge waits before we act on it
            self.latency.add(time.time() * 1000 - k.event_time)
        if signal is not None:
            self._on_signal(signal)
        elif (
            k.closed and sym not in self._backfill_pending and self.rule.missing(sym, k.open_time + MINUTE_MS)
        ):
            # a hole the gap report did not cover: a fresh start or subscription (the minutes before the
            # stream's first candle), a candle whose final frame never came. Not a quiet minute: the
            # rule records the minutes an uninterrupted stream skipped as zero-volume candles.
            self._submit_backfill([sym])

    def _on_signal(self, signal: Signal) -> None:
        assert self.store is not None and self.desk is not None
        self.signals_seen += 1
        if self.store.has_signal(signal.key, venue=self.venue):  # the same candle again: entered once
            return
        refusal = None if self.entries_open else "shutting down"
        refusal = refusal or self.book.refusal(signal.symbol) or self._entering_refusal(signal.symbol)
        if refusal is not None:
            try:
                recorded = self.store.record_entry(signal, None, skip_reason=refusal, venue=self.venue)
            except StoreWriteError as exc:
                self._store_spell.failed(exc, NO_ENTRY_WHILE_FULL)
                recorded = True
            else:
                self._store_spell.ok()
            if recorded:
                self._log_signal(signal, refusal)
            return
        self.entering[signal.key] = signal.symbol  # before enter(): a paper outcome comes back inside it
        try:
            entered = self.desk.enter(signal)
        except StoreWriteError as exc:
            # the ledger comes first: an entry that cannot be recorded is not made (nor sent, live);
            # closes and protection of what is held go on (the desks keep those in memory meanwhile)
            self.entering.pop(signal.key, None)
            self._store_spell.failed(exc, NO_ENTRY_WHILE_FULL)
            self._log_signal(signal, "the database cannot record it")
            return
        self._store_spell.ok()
        if not entered:
            self.entering.pop(signal.key, None)
            log.info("signal %s was already recorded: not entering twice", signal.key)
            return
        self._log_signal(signal, None)

    def _entering_refusal(self, symbol: str) -> str | None:
        """Entries on their way count as held: none more on the symbol, none past the limit."""
        if not self.entering:
            return None
        if symbol in self.entering.values():
            return f"an entry on {symbol} is still unconfirmed"
        if len(self.book) + len(self.entering) >= self.book.max_open:
            return f"max_open_positions ({self.book.max_open}) reached"
        return None

    @staticmethod
    def _log_signal(signal: Signal, refusal: str | None) -> None:
        log.info(
            "SIGNAL %s %+.2f%% volume x%.1f quote %.0f at %g%s",
            signal.symbol,
            signal.change_pct,
            signal.volume_multiple,
            signal.quote_volume,
            signal.price,
            f" (not entered: {refusal})" if refusal else "",
        )

    # ----------------------------------------------------------------- the desk's outcomes

    def _on_outcome(self, outcome: TradeOpened | TradeVoid | TradeClosed) -> None:
        if isinstance(outcome, TradeOpened):
            position = outcome.position
            self.entering.pop(position.key, None)
            if self.book.get(position.symbol) is not None:
                return  # known already (resumed at start)
            self.book.add(position)
            if outcome.adopted:
                assert self.store is not None  # its signal row is new: no second signal on it at once
                self.rule.restore_cooldowns(self.store.last_signal_times(venue=self.venue))
            log.info(
                "ENTER %s qty %.6g at %g, take profit %g, stop loss %g, max hold until %s",
                position.symbol,
                position.qty,
                position.entry_price,
                position.take_profit,
                position.stop_loss,
                time.strftime("%H:%M:%S", time.gmtime(position.deadline / 1000)),
            )
            self._sync_1m()  # an adopted position needs its prices too
        elif isinstance(outcome, TradeVoid):
            self.entering.pop(outcome.key, None)
        else:
            closed = outcome.position
            self.closing.discard(closed.key)
            held = self.book.get(closed.symbol)
            if held is None or held.key != closed.key:
                return
            self.book.remove(closed.symbol)
            log.info("EXIT %s %s at %g, PnL %+.4f USDT", closed.symbol, closed.exit_reason, closed.exit_price,
                     closed.pnl)
            if closed.symbol not in self.passing:
                self._sync_1m()

    def _close(self, position: Position, price: float | None, now_ms: int, reason: str) -> None:
        assert self.desk is not None
        if position.key in self.closing:
            return  # on its way
        self.closing.add(position.key)
        self.desk.close(position, reason, price, now_ms)

    def _check_max_hold(self) -> None:
        now = self.now_ms()
        for p in self.book.positions():
            if now >= p.deadline and p.key not in self.closing:
                price = self.last_price.get(p.symbol)
                if price is None and not self.live:
                    log.warning(
                        "max hold of %s reached but no price yet: closing on the next update", p.symbol
                    )
                    continue
                self._close(p, price, now, "max_hold")  # live: a market order needs no price of ours

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
            for sym in symbols_1m:
                self.rule.interrupt(sym)  # its silence during the gap says nothing about trades
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
            if self.desk is not None and entered:
                self.desk.prepare(sorted(entered))  # live: their leverage set ahead of any signal
        self._sync_1m()

    def _sync_1m(self) -> None:
        """1m streams for the symbols that pass and for every open position (its exits need prices)."""
        assert self.manager is not None
        wanted = self.passing | self.book.symbols()
        for sym in sorted(wanted - self.streaming_1m):
            self.rule.interrupt(sym)  # a new run of its stream: the minutes before it are unknown
            self.manager.subscribe_kline(sym, "1m")
        for sym in sorted(self.streaming_1m - wanted):
            self.manager.unsubscribe_kline(sym, "1m")
            self.rule.interrupt(sym)
            self.last_price.pop(sym, None)
        new = sorted(wanted - self.streaming_1m)
        self.streaming_1m = wanted
        if new:
            self._submit_backfill(new)

    # ----------------------------------------------------------------- REST jobs (housekeeping thread)

    def _scan(self, symbols: list[str] | None, info: dict[str, Any] | None = None) -> ScanResult:
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
        return scanner.scan(symbols, info)

    def _submit_rescan(self, symbols: list[str]) -> None:
        if self.housekeeper is not None:
            self.housekeeper.submit(
                f"4h rescan of {len(symbols)}", lambda: _Rescanned(self._scan(symbols), None)
            )

    def _submit_universe_refresh(self) -> None:
        """Hourly: who joined or left the universe, and a scan of only what the streams cannot say.

        The kline_4h streams keep every listed symbol's verdict current, so the scan covers the
        symbols that joined and those whose current 4h candle no event has told about (no trade
        since the boundary). exchangeInfo is read once, without the trading rules: a full decode
        and a full scan every hour set the process's memory high-water about 3.5 MB above the
        steady state, for nothing the streams did not already know.
        """
        known = frozenset(self.universe)
        stale = frozenset(self.live4h.stale(known, self.now_ms()))

        def job() -> _Rescanned:
            assert self.rest is not None
            info = self.rest.exchange_info(filters=False)
            names = {s.symbol for s in universe_from_exchange_info(info)}
            if self.only is not None:
                names &= self.only
            todo = sorted((names - known) | (stale & names))
            if not todo:
                return _Rescanned(ScanResult(), frozenset(names))
            return _Rescanned(self._scan(todo, info), frozenset(names))

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
        return self.latency.percentiles()

    def _beat(self) -> None:
        """Every HEARTBEAT_EVERY_S: is the lock still ours, the writes a full disk held back, then the
        heartbeat. A failed write is logged once per spell and tried again at the next beat: a full
        disk never stops the bot (it keeps streaming, closing and protecting what it holds)."""
        assert self._lock is not None and self.desk is not None
        try:
            repaired = self._lock.check()
        except LockLost as exc:
            log.error("%s: stopping, so that two bots never run on one SURGE_HOME", exc)
            self._lock_lost = True
            self.exit_code = EXIT_RUNTIME
            self.stop_event.set()
            return
        except (OSError, HomeError) as exc:  # re-creating a deleted lock file on a full disk: next beat
            repaired = f"{self._lock.path} was deleted and cannot be re-created yet: {exc}"
        if repaired:
            log.warning("%s", repaired)
        flush = getattr(self.desk, "flush_unsaved", None)  # paper closes the database could not take
        if flush is not None:
            flush()
        try:
            self._write_heartbeat(running=True)
        except (OSError, StoreError) as exc:
            self._heartbeat_spell.failed(exc, "the bot goes on; tried again at every beat")
        else:
            self._heartbeat_spell.ok()

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
                "latency_samples": len(self.latency),
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


__all__ = ["Bot", "Housekeeper", "RestError", "live_venue"]
