"""The 4h pre-filter: which symbols are worth streaming 1-minute klines for.

The rule (the ``[filter_4h]`` keys): a symbol passes when ``min_change_pct <= change of its current 4h candle
<= max_change_pct`` and the quote volume of its latest *closed* 4h candle ``>= min_quote_volume``,
where change = (last close - open of the current candle) / that open * 100.

How a scan gets there with as few round trips as possible:

* **Cold** (nothing cached): one ``klines`` request per symbol, ``limit = lookback`` (< 100, weight
  1), on a ThreadPoolExecutor of 1..3 workers. Every symbol is its own task, so no worker sits idle
  while symbols remain and the scan ends at the round-trip bound ``ceil(n / workers)`` x latency.
  Batches of ``batch_size`` are only the unit of progress reporting ("batch 2/6, 37 passed").
* **Warm** (same 4h window as a previous scan): closed candles never change and neither does the
  open of the current candle once it has started, so both come from SQLite; the only thing that
  moved is the last price, and ``/fapi/v2/ticker/price`` (weight 2) has it for every symbol. A warm
  scan is exchangeInfo (universe, weight limit and server time) + ticker/price: 2 requests, weight
  3, whatever the universe size.
* **Across a 4h boundary**: per-symbol requests again, but only for what is new (``startTime``
  after the last cached closed candle, ``limit`` 1 or 2).

Errors stay per symbol (a ``-1121`` is an entry in ``errors``, not a crash). A 418 ban beyond the
limiter's maximum aborts the scan (``RateLimitBanned``); a run of transport failures with no
success in between stops asking (the exchange is down) and leaves the rest in ``errors``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from surge.exchange.ratelimit import MAX_WEIGHT1_LIMIT, RateLimitBanned
from surge.exchange.rest import BinanceRest, ExchangeError, ExchangeUnavailable
from surge.models import INTERVAL_MS, Kline
from surge.store import CandleState, Store
from surge.universe import UNKNOWN_SYMBOL, not_tradable, universe_from_exchange_info

INTERVAL = "4h"
H4 = INTERVAL_MS[INTERVAL]
MAX_WORKERS = 3
#: Cached candles older than this are pruned after a scan (the rule needs only the latest two).
CACHE_KEEP_MS = 7 * 24 * 3600 * 1000

Scheduling = Literal["symbol", "batch"]


@dataclass(frozen=True, slots=True)
class Rule4h:
    """The contract's 4h rule with its three thresholds (the ``[filter_4h]`` keys)."""

    min_change_pct: float = -5.0
    max_change_pct: float = 10.0
    min_quote_volume: float = 5_000_000.0

    @classmethod
    def from_settings(cls, s: Any) -> Rule4h:
        return cls(s.min_change_pct, s.max_change_pct, s.min_quote_volume)

    @staticmethod
    def change_pct(open_price: float, last_price: float) -> float:
        """The current 4h candle's move so far (0 when its open is unknown)."""
        return (last_price - open_price) / open_price * 100.0 if open_price else 0.0

    def passes(self, open_price: float, last_price: float, closed_quote_volume: float) -> bool:
        """The verdict alone: what :meth:`decide` answers, without the words (the backtest asks it for
        every candidate signal, so it skips building the reason)."""
        change = self.change_pct(open_price, last_price)
        return not (
            change < self.min_change_pct
            or change > self.max_change_pct
            or closed_quote_volume < self.min_quote_volume
        )

    def decide(
        self,
        symbol: str,
        open_price: float,
        last_price: float,
        closed_quote_volume: float,
        source: str = "klines",
    ) -> Decision:
        """Pass/fail with the reason, in the words a user reading ``--json`` output would want."""
        change = self.change_pct(open_price, last_price)
        reasons = []
        if change < self.min_change_pct:
            reasons.append(f"4h change {change:+.2f}% < min {self.min_change_pct:g}%")
        elif change > self.max_change_pct:
            reasons.append(f"4h change {change:+.2f}% > max {self.max_change_pct:g}%")
        if closed_quote_volume < self.min_quote_volume:
            reasons.append(
                f"closed 4h quote volume {_human(closed_quote_volume)} < min {_human(self.min_quote_volume)}"
            )
        passed = self.passes(open_price, last_price, closed_quote_volume)  # the reasons list its failures
        if passed:
            reason = (
                f"4h change {change:+.2f}% in [{self.min_change_pct:g}%, {self.max_change_pct:g}%], "
                f"closed 4h quote volume {_human(closed_quote_volume)} >= {_human(self.min_quote_volume)}"
            )
        else:
            reason = "; ".join(reasons)
        return Decision(symbol, passed, reason, change, closed_quote_volume, open_price, last_price, source)


@dataclass(frozen=True, slots=True)
class Decision:
    """One symbol's verdict and the numbers behind it."""

    symbol: str
    passed: bool
    reason: str
    change_pct: float
    quote_volume: float  # of the latest closed 4h candle
    open: float  # of the current 4h candle
    last: float  # last price (close of the current 4h candle)
    source: str = "klines"  # "klines" (asked the exchange) or "cache" (cache + bulk ticker)


@dataclass(frozen=True, slots=True)
class ScanProgress:
    """Handed to the progress callback after every symbol (from the scanning thread)."""

    done: int
    total: int
    batch: int  # the batch the scan is in, 1-based
    batches: int
    passed: int
    errors: int
    requests: int
    used_weight: int  # latest X-MBX-USED-WEIGHT-1M seen (0 before the first response)


@dataclass
class ScanResult:
    """The outcome of one scan; :meth:`to_json` is the contract's ``--json`` object."""

    decisions: dict[str, Decision] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    checked: int = 0
    elapsed_s: float = 0.0
    requests: int = 0
    weight: int = 0  # weight this scan booked in the limiter
    max_used_weight: int = 0
    symbols: int = 0  # symbols asked about
    from_cache: int = 0  # decided from the cache + bulk ticker, no per-symbol request
    server_time: int = 0
    passed_count: int = 0  # running count for progress reports (passed is sorted on demand)
    refused_symbols: set[str] = field(default_factory=set)  # the exchange answered with an error

    @property
    def passed(self) -> list[str]:
        return sorted(s for s, d in self.decisions.items() if d.passed)

    @property
    def failed(self) -> list[str]:
        return sorted(s for s, d in self.decisions.items() if not d.passed)

    def refused(self) -> set[str]:
        """Symbols the exchange refused outright (an error answer, e.g. -1121 for a --symbols typo):
        never streamed. Told by the answer, not by parsing the message in ``errors``."""
        return self.refused_symbols & self.errors.keys()

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "passed": self.passed,
            "failed": self.failed,
            "errors": dict(sorted(self.errors.items())),
            "elapsed_s": round(self.elapsed_s, 3),
            "requests": self.requests,
            "max_used_weight": self.max_used_weight,
        }


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to ask the exchange about one symbol (None: nothing, the cache + ticker answer it)."""

    limit: int
    start_time: int | None = None


@dataclass(slots=True)
class _Outcome:
    symbol: str
    klines: list[Kline] | None = None
    error: str | None = None
    answered: bool = False  # the exchange answered (an ExchangeError counts as checked)
    transport: bool = False  # unreachable / kept failing
    refused: bool = False  # the exchange answered with an error (ExchangeError)


class Filter4h:
    """Scans symbols against :class:`Rule4h` over REST, with the SQLite candle cache if given.

    ``progress`` is called with a :class:`ScanProgress` from the thread that called :meth:`scan`.
    ``scheduling="batch"`` hands each batch whole to one worker: the first version's scheduling, kept only
    so the benchmark can measure what it costs.
    """

    def __init__(
        self,
        rest: BinanceRest,
        rule: Rule4h | None = None,
        *,
        store: Store | None = None,
        workers: int = 3,
        batch_size: int = 100,
        lookback: int = 6,
        progress: Callable[[ScanProgress], None] | None = None,
        scheduling: Scheduling = "symbol",
        max_consecutive_failures: int | None = None,
    ) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be between 1 and {MAX_WORKERS}, got {workers}")
        if not 2 <= lookback <= MAX_WEIGHT1_LIMIT:
            raise ValueError(f"lookback must be between 2 and {MAX_WEIGHT1_LIMIT}, got {lookback}")
        self.rest = rest
        self.rule = rule or Rule4h()
        self.store = store
        self.workers = workers
        self.batch_size = max(1, batch_size)
        self.lookback = lookback
        self.progress = progress
        self.scheduling = scheduling
        self.max_consecutive_failures = max_consecutive_failures or max(4, 2 * workers)
        self._answered: set[str] = set()  # symbols the exchange answered in the running scan

    @classmethod
    def from_settings(
        cls,
        rest: BinanceRest,
        cfg: Any,
        *,
        store: Store | None = None,
        rule: Rule4h | None = None,
        progress: Callable[[ScanProgress], None] | None = None,
    ) -> Filter4h:
        """The scanner ``surge filter-4h`` and ``surge run`` use: the ``[filter_4h]`` section's rule,
        workers, batch size and lookback (``rule`` when the caller already holds one built from it)."""
        return cls(
            rest,
            rule or Rule4h.from_settings(cfg),
            store=store,
            workers=cfg.workers,
            batch_size=cfg.batch_size,
            lookback=cfg.lookback,
            progress=progress,
        )

    # ------------------------------------------------------------------ the scan

    def scan(self, symbols: Sequence[str] | None = None, info: Mapping[str, Any] | None = None) -> ScanResult:
        """Scan ``symbols`` (default: the universe from exchangeInfo). One scan at a time per instance.

        ``info``: an exchangeInfo body the caller has just read (with or without filters), so the
        scan does not ask for it again.

        Raises ExchangeUnavailable when the exchange cannot be reached at all (exchangeInfo or the
        bulk ticker fail) and RateLimitBanned on a ban longer than the limiter's maximum.
        """
        t0 = time.perf_counter()
        self._answered = set()
        requests0 = self.rest.requests
        weight0 = self._booked_weight()
        # exchangeInfo even with explicit symbols: it carries the REQUEST_WEIGHT limit the limiter
        # must respect and the server's clock (one request instead of a second one to /time).
        if info is None:
            info = self.rest.exchange_info()
        names, rejected, asked = self._names(symbols, info)
        server_time = info.get("serverTime")
        if isinstance(server_time, int) and not isinstance(server_time, bool) and server_time > 0:
            now = server_time
        else:
            now = self.rest.server_time()
        result = ScanResult(symbols=asked, server_time=now)
        result.errors.update(rejected)
        # not listed at all: refused as the exchange itself would (it answers -1121 for them)
        result.refused_symbols.update(s for s, why in rejected.items() if why == UNKNOWN_SYMBOL)
        self._answered.update(rejected)  # the exchange's own answer about them: checked

        states = self.store.candle_states(INTERVAL, names) if self.store is not None else {}
        plans: dict[str, _Plan | None] = {}
        window, now = self._decide_warm(names, states, plans, now, result)
        todo = [s for s in names if plans[s] is not None]
        self._fetch_all(todo, plans, states, now, result, len(names))

        result.checked = len(result.decisions) + sum(1 for s in result.errors if s in self._answered)
        result.elapsed_s = time.perf_counter() - t0
        result.requests = self.rest.requests - requests0
        result.weight = self._booked_weight() - weight0
        result.max_used_weight = self.rest.limiter.max_used_weight
        if self.store is not None:
            self.store.prune_candles(INTERVAL, window - CACHE_KEEP_MS)
        return result

    @staticmethod
    def _names(
        symbols: Sequence[str] | None, info: Mapping[str, Any]
    ) -> tuple[list[str], dict[str, str], int]:
        """The symbols to decide, those exchangeInfo already rules out (with why), how many were asked."""
        if symbols is None:
            universe = [s.symbol for s in universe_from_exchange_info(info)]
            return universe, {}, len(universe)
        names = _dedupe(s.strip().upper() for s in symbols if s.strip())
        # exchangeInfo already says which of them are no TRADING USDT perpetual: no request for
        # those (a typo costs weight for nothing, a malformed name must never reach a URL)
        rejected = not_tradable(info, names)
        return [s for s in names if s not in rejected], rejected, len(names)

    def _decide_warm(
        self,
        names: list[str],
        states: dict[str, CandleState],
        plans: dict[str, _Plan | None],
        now: int,
        result: ScanResult,
    ) -> tuple[int, int]:
        """Plan every symbol; decide those the cache and one bulk ticker answer. Returns the 4h window
        and the time the plans are for (later than ``now`` when a 4h boundary passed meanwhile)."""
        window = now - now % H4
        plans.update((s, self._plan(states.get(s), window)) for s in names)
        warm = [s for s, p in plans.items() if p is None]
        if not warm:
            return window, now
        prices, stamp = self.rest.ticker_price_snapshot()
        if stamp >= window + H4:
            # A 4h boundary passed between exchangeInfo and the ticker: these prices belong to
            # the new candle, whose open the cache does not have yet. Plan against the new window.
            window += H4
            now = stamp
            for s in warm:
                plans[s] = self._plan(states.get(s), window)
            warm = [s for s in warm if plans[s] is None]
        for s in warm:
            st = states[s]
            if s in prices and st.latest_closed is not None and st.current_open is not None:
                qv = st.latest_closed.quote_volume
                _record(result, self.rule.decide(s, st.current_open, prices[s], qv, "cache"))
                result.from_cache += 1
            else:  # not in the bulk answer (delisted? new?): ask about it alone
                plans[s] = _Plan(limit=1, start_time=window)
        return window, now

    def _plan(self, state: CandleState | None, window: int) -> _Plan | None:
        """The smallest request that completes what the cache knows (None: nothing to ask)."""
        if state is None or state.latest_closed is None:
            return _Plan(limit=self.lookback)
        last = state.latest_closed.open_time
        if last == window - H4:
            if state.current_open_time == window:
                return None
            return _Plan(limit=1, start_time=window)
        missing = (window - last) // H4  # closed candles after `last` plus the current one
        if last < window and 1 <= missing <= self.lookback:
            return _Plan(limit=missing, start_time=last + H4)
        return _Plan(limit=self.lookback)

    # ------------------------------------------------------------------ per-symbol requests

    def _fetch_all(
        self,
        todo: list[str],
        plans: dict[str, _Plan | None],
        states: dict[str, CandleState],
        now: int,
        result: ScanResult,
        total: int,
    ) -> None:
        done = total - len(todo)
        batches = max(1, math.ceil(total / self.batch_size))
        self._report(result, done, total, batches)
        if not todo:
            return
        abort = threading.Event()
        fails = 0
        pending_candles: list[Kline] = []
        pending_opens: list[tuple[str, str, int, float]] = []
        if self.scheduling == "batch":
            units = [todo[i : i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        else:
            units = [[s] for s in todo]
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="surge-filter4h")
        try:
            futures: set[Future[list[_Outcome]]] = {
                pool.submit(self._fetch_unit, unit, plans, abort) for unit in units
            }
            while futures:
                finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                for fut in finished:
                    for out in fut.result():  # RateLimitBanned propagates from here
                        done += 1
                        if out.transport:
                            fails += 1
                            if fails >= self.max_consecutive_failures:
                                abort.set()
                        elif out.answered:
                            fails = 0
                        self._absorb(out, states, now, result, pending_candles, pending_opens)
                        if self.store is not None and (done % self.batch_size == 0):
                            self._flush(pending_candles, pending_opens)
                        self._report(result, done, total, batches)
        except BaseException:
            abort.set()  # queued symbols return at once instead of sending requests
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if self.store is not None:
                self._flush(pending_candles, pending_opens)

    def _fetch_unit(
        self, unit: list[str], plans: dict[str, _Plan | None], abort: threading.Event
    ) -> list[_Outcome]:
        outs = []
        for symbol in unit:
            if abort.is_set():
                outs.append(_Outcome(symbol, error="not checked: the exchange kept failing", transport=True))
                continue
            plan = plans[symbol]
            assert plan is not None
            try:
                kl = self.rest.klines(symbol, INTERVAL, limit=plan.limit, start_time=plan.start_time)
                outs.append(_Outcome(symbol, klines=kl, answered=True))
            except ExchangeError as exc:
                outs.append(_Outcome(symbol, error=str(exc), answered=True, refused=True))
            except ExchangeUnavailable as exc:
                outs.append(_Outcome(symbol, error=f"unavailable: {exc}", transport=True))
            except RateLimitBanned:
                abort.set()
                raise
        return outs

    def _absorb(
        self,
        out: _Outcome,
        states: dict[str, CandleState],
        now: int,
        result: ScanResult,
        candles: list[Kline],
        opens: list[tuple[str, str, int, float]],
    ) -> None:
        """Turn one symbol's answer into a decision (or an error) and queue what to cache."""
        sym = out.symbol
        if out.answered:
            self._answered.add(sym)
        if out.klines is None:
            result.errors[sym] = out.error or "unknown error"
            if out.refused:
                result.refused_symbols.add(sym)
            return
        rows = out.klines
        if not rows:
            _record(result, _no_data(sym, "the exchange has no 4h candles for it"))
            return
        # Every row but the last is closed (a later candle exists). The last one is the candle in
        # progress unless it had already closed when the scan started (a symbol that stopped trading).
        last = rows[-1]
        last_closed = last.close_time < now
        rows = [*rows[:-1], msgspec.structs.replace(last, closed=last_closed)]
        closed = [k for k in rows if k.closed]
        current = None if last_closed else rows[-1]
        candles.extend(closed)
        if current is None:
            _record(result, _no_data(sym, "no 4h candle in progress (not trading?)"))
            return
        opens.append((sym, INTERVAL, current.open_time, current.open))
        latest_closed = closed[-1] if closed else None
        cached = states.get(sym)
        if latest_closed is None and cached is not None and cached.latest_closed is not None:
            latest_closed = cached.latest_closed
        if latest_closed is None:
            _record(result, _no_data(sym, "no closed 4h candle yet (newly listed)", current))
            return
        _record(result, self.rule.decide(sym, current.open, current.close, latest_closed.quote_volume))

    def _flush(self, candles: list[Kline], opens: list[tuple[str, str, int, float]]) -> None:
        assert self.store is not None
        self.store.put_candles(candles)
        self.store.put_current_opens(opens)
        candles.clear()
        opens.clear()

    def _report(self, result: ScanResult, done: int, total: int, batches: int) -> None:
        if self.progress is None:
            return
        passed = result.passed_count
        batch = min(batches, done // self.batch_size + 1)
        self.progress(
            ScanProgress(
                done,
                total,
                batch,
                batches,
                passed,
                len(result.errors),
                self.rest.requests,
                self.rest.limiter.last_used_weight,
            )
        )

    def _booked_weight(self) -> int:
        return self.rest.limiter.total_weight


def _record(result: ScanResult, decision: Decision) -> None:
    result.decisions[decision.symbol] = decision
    if decision.passed:
        result.passed_count += 1


def _no_data(symbol: str, why: str, current: Kline | None = None) -> Decision:
    o = current.open if current else 0.0
    c = current.close if current else 0.0
    return Decision(symbol, False, why, 0.0, 0.0, o, c)


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for s in items:
        seen.setdefault(s, None)
    return list(seen)


def _human(value: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}"


# --------------------------------------------------------------------------- wiring for the CLI / app


def run_scan(
    settings: Any,
    symbols: Sequence[str] | None = None,
    *,
    progress: Callable[[ScanProgress], None] | None = None,
    use_cache: bool = True,
    read_timeout: float = 10.0,
) -> ScanResult:
    """One scan as ``surge filter-4h`` runs it: REST client sized to the workers, the store at
    ``settings.home/surge.db`` (a damaged or foreign file is a StoreError before any request)."""
    from surge.store import open_store

    cfg = settings.filter_4h
    store = open_store(settings.home) if use_cache else None
    try:
        with BinanceRest(settings.rest_url, pool_size=cfg.workers, read_timeout=read_timeout) as rest:
            return Filter4h.from_settings(rest, cfg, store=store, progress=progress).scan(symbols)
    finally:
        if store is not None:
            store.close()


def format_table(result: ScanResult, *, max_errors: int = 10) -> str:
    """The human summary: passed symbols with their 4h change and closed quote volume, then totals."""
    lines = []
    passed = [result.decisions[s] for s in result.passed]
    if passed:
        lines.append(f"{'SYMBOL':<16} {'4H CHANGE':>10} {'CLOSED 4H QUOTE VOL':>20}")
        for d in sorted(passed, key=lambda d: -d.change_pct):
            lines.append(f"{d.symbol:<16} {d.change_pct:>+9.2f}% {_human(d.quote_volume):>20}")
    else:
        lines.append("no symbol passed the 4h filter")
    for sym, msg in list(sorted(result.errors.items()))[:max_errors]:
        lines.append(f"error {sym}: {msg}")
    if len(result.errors) > max_errors:
        lines.append(f"... and {len(result.errors) - max_errors} more errors (see --json)")
    cached = f", {result.from_cache} from cache" if result.from_cache else ""
    lines.append(
        f"checked {result.checked}: {len(result.passed)} passed, {len(result.failed)} failed, "
        f"{len(result.errors)} errors in {result.elapsed_s:.1f} s ({result.requests} requests{cached}, "
        f"max used weight {result.max_used_weight})"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- kept current by the stream


@dataclass(slots=True)
class _Live4h:
    open_time: int
    open: float
    last: float
    closed_quote_volume: float | None


class LiveFilter4h:
    """The 4h rule kept current from ``kline_4h`` stream events, with no REST after the first scan.

    ``surge run`` seeds it from a scan (:meth:`seed`), then feeds it every 4h event (:meth:`on_kline`).
    A closed event carries the quote volume the rule needs; an event of a new candle carries its open.
    :meth:`evaluate` answers the pass set at any moment. Symbols the stream has not told about keep
    their scanned verdict's numbers.
    """

    def __init__(self, rule: Rule4h) -> None:
        self.rule = rule
        self._state: dict[str, _Live4h] = {}
        self._decisions: dict[str, Decision] = {}

    def seed(self, result: ScanResult) -> None:
        """Take a scan's decisions (the current candle's open and last price, the closed volume)."""
        window = result.server_time - result.server_time % H4 if result.server_time else 0
        for sym, d in result.decisions.items():
            self._decisions[sym] = d
            if d.open > 0 and d.quote_volume > 0:
                self._state[sym] = _Live4h(window, d.open, d.last, d.quote_volume)

    def on_kline(self, k: Kline) -> bool:
        """Feed one 4h event; True when it closed a candle (the caller then re-evaluates)."""
        st = self._state.get(k.symbol)
        if k.closed:
            if st is None:
                st = self._state[k.symbol] = _Live4h(k.open_time + H4, k.close, k.close, k.quote_volume)
            elif k.open_time >= st.open_time:  # the candle we tracked closed; the next opens at its close
                st.open_time, st.open, st.last = k.open_time + H4, k.close, k.close
            st.closed_quote_volume = k.quote_volume
            return True
        if st is None:
            self._state[k.symbol] = _Live4h(k.open_time, k.open, k.close, None)
        elif k.open_time >= st.open_time:
            if k.open_time > st.open_time or st.open != k.open:
                st.open_time, st.open = k.open_time, k.open
            st.last = k.close
        return False

    def stale(self, symbols: Iterable[str], now_ms: int) -> set[str]:
        """Of ``symbols``, those whose current 4h candle the stream has not told about: a symbol with
        no trade since the boundary gets no event (Binance pushes on change), so its verdict would
        keep the previous candle's numbers until a scan reads the flat candle over REST."""
        window = now_ms - now_ms % H4
        state = self._state
        return {s for s in symbols if (st := state.get(s)) is None or st.open_time < window}

    def forget(self, symbol: str) -> None:
        self._state.pop(symbol, None)
        self._decisions.pop(symbol, None)

    def evaluate(self) -> dict[str, Decision]:
        """The current verdict of every known symbol."""
        for sym, st in self._state.items():
            if st.closed_quote_volume is not None and st.open > 0:
                qv = st.closed_quote_volume
                self._decisions[sym] = self.rule.decide(sym, st.open, st.last, qv, "stream")
        return dict(self._decisions)

    def passing(self) -> set[str]:
        return {s for s, d in self.evaluate().items() if d.passed}
