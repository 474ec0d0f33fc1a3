"""The Bot: ``surge run`` wired end to end, and shut down in order.

Data path: universe and 4h scan (REST, warm from the SQLite cache) -> kline_4h streams for the whole
universe (keeping the filter current with no REST) and kline_1m streams for the symbols that pass
-> one queue -> the strategy loop on the main thread -> the desk (paper, or live orders) -> store.

Threads (the whole budget): the main thread runs the strategy loop and writes the heartbeat; the
stream manager owns one thread per connection plus its resubscriber; one housekeeping thread does
every REST job after the start (1m backfills, 4h rescans, universe refreshes), each job opening a
pool of at most ``filter_4h.workers`` threads only while it runs; when trading live, the order desk
owns two (``surge-desk`` for every signed call, ``surge-desk-protect`` so both protective orders go
out together); with ``--record``, ``surge-recorder`` writes the loop's input (:mod:`surge.record`);
with ``--metrics-port``, ``surge-metrics`` answers ``/metrics`` and ``/health`` (:mod:`surge.metrics`);
with ``[notify] urls``, ``surge-notify`` sends the notifications (:mod:`surge.notify`).
Nothing else.

The parts the loop drives, each in its module: :mod:`surge.startup` (the start and the stop, in
order), :mod:`surge.backfill` (1m history for the volume baselines), :mod:`surge.filter_refresh`
(the universe and the live 4h verdicts), :mod:`surge.trade_flow` (entries, the book, closes),
:mod:`surge.heartbeat` (what ``surge status`` reads) and :mod:`surge.jobs` (the housekeeping
worker). Every message on the loop's queue is one type per outcome, dispatched by type.

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
import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from surge.backfill import BackfillAbandoned, BackfillDeferred, Backfilled, BackfillScheduler
from surge.clock import SYSTEM_CLOCK, Clock
from surge.config import Settings
from surge.errors import EXIT_OK, EXIT_RUNTIME
from surge.exchange.orders import Credentials
from surge.exchange.rest import BinanceRest, RestError
from surge.filter4h import Filter4h, Rule4h, ScanResult
from surge.filter_refresh import FilterRefresh, Rescanned
from surge.heartbeat import publish
from surge.jobs import Housekeeper, JobFailed
from surge.latency import LatencyWindow
from surge.models import INTERVAL_MS, Kline, Trade
from surge.notify.wiring import check as notify_check
from surge.record.recorder import Recorder
from surge.runtime import HEARTBEAT_NAME, HeapTrimmer, InstanceLock, Spell, check_lock, write_json_atomic
from surge.startup import shutdown, start
from surge.store import Store, StoreError
from surge.strategy import MINUTE_MS, SurgeRule
from surge.stream import MultiplexedKlineManager, StreamGap
from surge.trade_flow import TradeFlow
from surge.trading import PaperDesk, PositionBook, TradeClosed, TradeOpened, TradeVoid
from surge.trading.desk import OrderDesk

if TYPE_CHECKING:
    from surge.metrics import MetricsServer

log = logging.getLogger("surge.app")

HEARTBEAT_EVERY_S = 2.0
QUIET_S = 0.005  # the queue empty this long: a burst of kline chunks is over, time for periodic work
PERIODIC_MAX_DEFER_S = 0.25  # ... but periodic work overdue by this long runs even mid-flow
EXIT_CHECK_EVERY_S = 1.0
UNIVERSE_REFRESH_S = 3600.0
LATENCY_SAMPLES = 20_000
HEAP = HeapTrimmer()  # the process's C heap: free pages back to the system after each minute's close


# --------------------------------------------------------------------------- the bot


class StopRequested(BaseException):
    """SIGINT/SIGTERM while the bot is still starting: unwinds the start (a cold 4h scan takes tens of
    seconds) at once, so a stop is honoured within the 10 s ``surge run`` promises. A BaseException
    so that no ``except Exception`` on the way swallows it; the scan's own cleanup still runs."""


@dataclass(slots=True)
class _Due:
    """When each periodic job of the loop is next due (the loop's monotonic clock, seconds)."""

    refresh: float
    universe: float
    exit_check: float = 0.0
    heartbeat: float = 0.0


class Bot:
    """``surge run`` (see the module docstring); ``run()`` returns when stopped (signal or duration).
    ``clock`` gives every time the loop reads, so a replay can run it on virtual time."""

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
        clock: Clock = SYSTEM_CLOCK,
        recorder: Recorder | None = None,
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
        self.clock, self._wall = clock, clock.wall
        self.recorder = recorder  # --record: the loop's input, written off the loop (surge.record)
        self.stop_event = threading.Event()
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._store_spell = Spell(log, "writing to the database")
        self._heartbeat_spell = Spell(log, "writing the heartbeat")

        self.rule = SurgeRule(settings.surge)
        self.rule4h = Rule4h.from_settings(settings.filter_4h)
        self.filters = FilterRefresh(self.rule4h, self.only, self._store_spell)
        self.live4h = self.filters.live
        self.book = PositionBook(settings.trade.max_open_positions)
        self.trades = TradeFlow(self.book, self.rule, self.venue, self._store_spell)
        self.desk: PaperDesk | OrderDesk | None = None  # made by surge.startup.start (an OrderDesk when live)
        self.backfill = BackfillScheduler.for_settings(settings, self.events.put, self.now_ms, clock)
        self.unresolved: list[Trade] = []  # live trades the desk could not resolve (exit 4 when any)
        self.exit_code = EXIT_OK

        self.passing: set[str] = set()
        self.streaming_1m: set[str] = set()
        self.last_price: dict[str, float] = {}
        self.latency = LatencyWindow(LATENCY_SAMPLES)
        self.clock_offset_ms = 0  # exchange clock - local clock
        self.started_at = clock.wall()
        self.ready_at: float | None = None
        self.start_weight = 0
        self.start_scan: ScanResult | None = None  # the start's 4h scan (a recording begins with it)

        self.store: Store | None = None
        self.rest: BinanceRest | None = None
        self.manager: MultiplexedKlineManager | None = None
        self.housekeeper: Housekeeper | None = None
        self.lock: InstanceLock | None = None
        self.metrics: MetricsServer | None = None  # --metrics-port (set by the CLI): surge.metrics
        self.lock_lost = False  # another bot holds surge.lock now: stop, and leave its heartbeat alone
        self._starting = False

    # names kept for the tests and tools that read the bot while it runs
    universe = property(lambda self: self.filters.universe)
    backfills = property(lambda self: self.backfill.done)
    signals_seen = property(lambda self: self.trades.signals_seen)
    _backfill_pending = property(lambda self: self.backfill.pending)
    _backfill_retry = property(lambda self: self.backfill.retry)

    # ----------------------------------------------------------------- lifecycle

    def request_stop(self) -> None:
        """Safe from a signal handler or any thread: the loop notices within a tick. From a signal
        handler during the start it raises :class:`StopRequested` (the start does not check
        ``stop_event``), which ``run()`` turns into a clean shutdown."""
        self.stop_event.set()
        if self._starting and threading.current_thread() is threading.main_thread():
            self._starting = False
            raise StopRequested

    def now_ms(self) -> int:
        return int(self._wall() * 1000) + self.clock_offset_ms

    def run(self) -> None:
        """Lock, start, loop until stopped, shut down in order. A failed start raises SurgeError."""
        self.lock = InstanceLock(self.settings.home).acquire()
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
            start(self)
            self._starting = False
            self._loop()
        except StopRequested:
            self._starting = False
            log.info("stop requested while starting")
        finally:
            self._starting = False
            shutdown(self)

    # ----------------------------------------------------------------- main loop

    def _loop(self) -> None:
        monotonic = self.clock.monotonic
        started = monotonic()
        deadline = started + self.duration_s if self.duration_s else math.inf
        due = schedule(self, started)
        handlers = loop_handlers(self)
        if self.recorder is not None:
            handlers = self.recorder.begin(self, started, handlers)
        self.start_scan = None  # its verdicts (~0.2 KiB a symbol) must not outlive the first refresh
        get = self.events.get
        next_due = -math.inf  # earliest time any periodic job is due
        while not self.stop_event.is_set():
            try:
                item = get(timeout=0.25)
                handlers[type(item)](item)
                # Drain the burst before the periodic work: Binance-style pushes arrive as a burst of
                # chunks within a few ms, and a heartbeat (percentiles over 20,000 latencies, the
                # baseline count, stats, a file write) run after its first chunk would delay every
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
            if now >= deadline:
                log.info("--duration reached")
                break
            next_due = min(self._periodic(now, due), deadline)

    def _periodic(self, now: float, due: _Due) -> float:
        """The loop's periodic work at ``now``; returns when it is next due (-inf while starting:
        readiness is checked after every item)."""
        if self.ready_at is None:
            self._check_ready()
            if self.ready_at is not None:
                due.heartbeat = now  # say so at once: `surge status` right after "ready" is current
        wall = self._wall()
        if self.recorder is not None:
            self.recorder.tick(now, wall)
        self.periodic_decisions(now, wall, due)
        notify_check(self, now)  # [notify]: outage, rate limit, day change (one look every 2 s)
        if now >= due.heartbeat:
            due.heartbeat = now + HEARTBEAT_EVERY_S
            self._beat()
        if self.ready_at is None:
            return -math.inf
        return min(
            due.exit_check,
            due.heartbeat,
            due.refresh,
            due.universe,
            self.filters.next_due(),
            self.backfill.next_due(),
        )

    def periodic_decisions(self, now: float, wall: float, due: _Due) -> None:
        """The periodic work that decides (max-hold exits, filter re-evaluations) or asks for REST
        (rescans, retried backfills), on the loop's clock readings ``now`` and ``wall``: a replay
        calls it with the recorded ones."""
        now_ms = int(wall * 1000) + self.clock_offset_ms
        if now >= due.exit_check:
            due.exit_check = now + EXIT_CHECK_EVERY_S
            self.trades.check_max_hold(now_ms, self.last_price.get, self.live)
        if self.filters.settled(now):
            self.apply_pass_set(self.live4h.passing())
        if now >= due.refresh:
            due.refresh = now + self.settings.filter_4h.refresh_s
            self.apply_pass_set(self.live4h.passing())
        if now >= due.universe:
            due.universe = now + UNIVERSE_REFRESH_S
            self.filters.submit_universe_refresh(now_ms, self._scan)
        retry = self.backfill.due(now, self.streaming_1m)
        if retry:
            self._submit_backfill(retry)

    def _check_ready(self) -> None:
        """Log once when the filter is known and every wanted stream is confirmed by the exchange."""
        assert self.manager is not None
        st = self.manager.stats()
        if st["streams"] >= st["wanted"] > 0:
            self.ready_at = self._wall()
            _log_ready(self, st)

    # ----------------------------------------------------------------- events

    def _on_klines(self, batch: list[Kline]) -> None:
        """One chunk's klines (the hot path): its 1m updates in order, then its 4h ones, which only feed
        filter verdicts applied after the chunk, so the 1m decisions need not wait behind them."""
        on_1m = self._on_1m
        later: list[Kline] = []
        for k in batch:
            if k.interval == "1m":
                on_1m(k)
            else:
                later.append(k)
        self.latency.stamp(self._wall)  # once a chunk: see LatencyWindow.add_decided
        if later:
            on_4h = self.filters.on_4h
            for k in later:
                on_4h(k)

    def _on_kline(self, k: Kline) -> None:
        self._on_klines([k])  # a lone kline (a replay's record of one) is a chunk of one

    def _on_1m(self, k: Kline) -> None:
        sym = k.symbol
        self.last_price[sym] = k.close
        held = self.book.get(sym)
        if held is not None:
            assert self.desk is not None
            reason = self.desk.exit_reason(held, k.close, k.event_time or self.now_ms())
            if reason is not None:
                self.trades.close(held, k.close, k.event_time or self.now_ms(), reason)
        if sym not in self.passing:
            self.rule.observe(k)  # keep its history so it can signal at once if it passes later
            return
        signal = self.rule.on_kline(k)
        if k.event_time:
            # event time (exchange clock, stamped when the frame is sent) -> the decision taken: the
            # wire, parsing, the queue and the rule, i.e. what a surge waits before we act on it
            self.latency.pending.append(k.event_time)
        if signal is not None:
            self.latency.stamp(self._wall)  # this decision's latency ends here, not after the entry
            self.trades.on_signal(signal)
        elif (
            k.closed and sym not in self.backfill.pending and self.rule.missing(sym, k.open_time + MINUTE_MS)
        ):
            # a hole the gap report did not cover: a fresh start or subscription (the minutes before the
            # stream's first candle), a candle whose final frame never came. Not a quiet minute: the
            # rule records the minutes an uninterrupted stream skipped as zero-volume candles.
            self._submit_backfill([sym])

    def on_outcome(self, outcome: TradeOpened | TradeVoid | TradeClosed) -> None:
        if self.trades.on_outcome(outcome):
            self._sync_1m()  # an adopted position needs its prices; a closed one may not any more

    def _on_gap(self, gap: StreamGap) -> None:
        log.warning(
            "stream gap on %s (%s): %d streams down for %.1fs; backfilling",
            gap.connection,
            gap.reason,
            len(gap.streams),
            (gap.end_ms - gap.start_ms) / 1000,
        )
        symbols_1m = _symbols_of(gap, "@kline_1m")
        if symbols_1m:
            for sym in symbols_1m:
                self.rule.interrupt(sym)  # its silence during the gap says nothing about trades
            self._submit_backfill(symbols_1m)
        symbols_4h = _symbols_of(gap, "@kline_4h")
        four_h = INTERVAL_MS["4h"]
        if symbols_4h and gap.end_ms // four_h != gap.start_ms // four_h:
            self.filters.submit_rescan(symbols_4h, self._scan)  # a 4h close may have been missed

    def _on_backfilled(self, item: Backfilled) -> None:
        self.rule.seed(item.symbol, item.klines)
        self.backfill.on_backfilled(item)

    def _on_rescanned(self, item: Rescanned) -> None:
        self.filters.on_rescanned(item)
        self.apply_pass_set(self.live4h.passing())

    # ----------------------------------------------------------------- filter and subscriptions

    def apply_pass_set(self, passing: set[str]) -> None:
        passing = {s for s in passing if s in self.filters.universe}
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

    def _scan(self, symbols: Sequence[str] | None, info: Mapping[str, Any] | None = None) -> ScanResult:
        return scan_4h(self, symbols, info)

    def _submit_backfill(self, symbols: list[str]) -> None:
        self.backfill.submit(symbols)

    # ----------------------------------------------------------------- heartbeat

    def baseline_ready(self) -> int:
        """How many passing symbols have the whole volume baseline of the current minute, i.e. can
        signal right now (a read-only figure for people, tests and the benchmark)."""
        minute = self.now_ms() // MINUTE_MS * MINUTE_MS
        return self.rule.ready_count(self.passing, minute)

    def _beat(self) -> None:
        """Every HEARTBEAT_EVERY_S: the lock still ours, writes a full disk held back, the heartbeat
        (a failed write is logged once per spell and retried: a full disk never stops the bot)."""
        assert self.lock is not None and self.desk is not None
        if not check_lock(self.lock, log):
            self.lock_lost, self.exit_code = True, EXIT_RUNTIME
            self.stop_event.set()
            return
        if isinstance(self.desk, PaperDesk):
            self.desk.flush_unsaved()  # paper closes the database could not take
        HEAP.tick(self.now_ms() / 1000)  # the exchange's minute: its candles close then
        try:
            self.write_heartbeat(running=True)
        except (OSError, StoreError) as exc:
            self._heartbeat_spell.failed(exc, "the bot goes on; tried again at every beat")
        else:
            self._heartbeat_spell.ok()

    def write_heartbeat(self, *, running: bool) -> None:
        write_json_atomic(self.settings.home / HEARTBEAT_NAME, publish(self, running=running))


def scan_4h(bot: Bot, symbols: Sequence[str] | None, info: Mapping[str, Any] | None = None) -> ScanResult:
    """A 4h scan of ``symbols`` (``None``: the universe, or ``--symbols``) with the bot's client and cache."""
    assert bot.rest is not None and bot.store is not None
    scanner = Filter4h.from_settings(bot.rest, bot.settings.filter_4h, store=bot.store, rule=bot.rule4h)
    if symbols is None and bot.only is not None:
        symbols = sorted(bot.only)
    return scanner.scan(symbols, info)


def schedule(bot: Bot, started: float) -> _Due:
    """When the periodic jobs are first due, for a loop started at ``started`` (monotonic)."""
    return _Due(started + bot.settings.filter_4h.refresh_s, started + UNIVERSE_REFRESH_S)


def loop_handlers(bot: Bot) -> dict[type, Callable[[Any], None]]:
    """The loop's handler of each message type (a replay dispatches through the same ones)."""
    return {
        list: bot._on_klines,
        Kline: bot._on_kline,
        StreamGap: bot._on_gap,
        Backfilled: bot._on_backfilled,
        BackfillDeferred: bot.backfill.on_deferred,
        BackfillAbandoned: bot.backfill.on_abandoned,
        Rescanned: bot._on_rescanned,
        JobFailed: _log_job_failed,
        TradeOpened: bot.on_outcome,
        TradeVoid: bot.on_outcome,
        TradeClosed: bot.on_outcome,
    }


def _log_ready(bot: Bot, st: dict[str, Any]) -> None:
    log.info(
        "ready in %.2fs: %d symbols, %d pass the 4h filter, %d streams on %d connections",
        (bot.ready_at or 0.0) - bot.started_at,
        len(bot.filters.universe),
        len(bot.passing),
        st["streams"],
        st["connections"],
    )


def _symbols_of(gap: StreamGap, suffix: str) -> list[str]:
    return sorted({n.split("@", 1)[0].upper() for n in gap.streams if n.endswith(suffix)})


def _log_job_failed(item: JobFailed) -> None:
    log.warning("%s failed: %s (will try again)", item.job, item.error)


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


__all__ = ["Bot", "Housekeeper", "RestError", "live_venue"]
