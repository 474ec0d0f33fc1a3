"""The backtest: signals, paper exits and the portfolio's limits over stored 1m history.

How it stays inside its memory and time budget (22.9 M candles, >= 2 M candles/s, <= 600 MB): it
works symbol by symbol. A symbol's candles are loaded, its candidate signals found
(:mod:`surge.backtest.signals`), each candidate's exit computed, and the candles dropped, keeping
only the candidate trades (:func:`prepare` keeps, besides the candidates, just the candles their
exits can reach, which is what a sweep holds for every symbol). Then one pass over the candidate
trades in time order applies the portfolio's limits (:func:`portfolio`). That split is exact because
an exit depends only on its own symbol's candles: the portfolio only decides which candidates are
taken.

The semantics (the README states them so a user can check a trade by hand):

* entry at the signal candle's close plus slippage, at its close time, sized and charged the taker
  fee by :class:`surge.trading.paper.PaperBroker` (``open``), the paper desk's own arithmetic;
* exits from the next candle on, each candle in turn: stop loss when its low <= the stop (filled at
  the stop, minus slippage), else take profit when its high >= the target (at the target, minus
  slippage), else max hold at the close of the candle in which the deadline falls (the first candle
  whose close time is at or after the deadline, when that very minute has no candle); a candle
  touching both the stop and the target counts as the stop (pessimistic). A position still open at
  the symbol's last candle of the range is closed at its close (``end_of_data``). The exit time is
  the exit candle's close time; the exit's slippage, fee and pnl are ``PaperBroker.close``'s;
* one position per symbol, at most ``max_open_positions`` at once, applied in signal time order
  (ties by symbol name). A position closing at time t frees its slot (and its symbol) for a signal
  at t: the live bot handles a held symbol's exit before the rule's verdict on the same candle. A
  signal skipped for a full book still started its symbol's cooldown, as it does live;
* with a start date, the 4h before the start's 4h window are loaded too, as history only: the
  baseline and the previous 4h candle of the first candles of the range are known, and no signal
  before the start counts.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from surge.backtest.signals import CLOSE_MS, Candidates, Loosest, decide, find_candidates
from surge.backtest.trades import END_OF_DATA, MAX_HOLD, STOP_LOSS, TAKE_PROFIT, Trade
from surge.config import Settings, TradeSettings
from surge.errors import SurgeError
from surge.filter4h import H4, Rule4h
from surge.models import Signal
from surge.strategy import MINUTE_MS
from surge.trading.paper import PaperBroker

if TYPE_CHECKING:
    from surge.history.store import HistoryStore, SymbolCandles


@dataclass(frozen=True, slots=True)
class SymbolPrep:
    """What one symbol contributes to any number of runs over the same candles (a sweep holds one per
    symbol): its candidates and only the candles their exits can reach."""

    symbol: str
    candles: int  # candles in the range (the history before the start not counted)
    first_ms: int  # open time of the first and the last candle in the range
    last_ms: int
    candidates: Candidates
    position: np.ndarray  # each candidate's position in the arrays below
    open_time: np.ndarray  # the candles from each candidate to its latest deadline, and the last one
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """One run's trades and what it covered."""

    trades: list[Trade]
    candles: int
    symbols: list[str]  # the symbols with candles in the range
    start_ms: int
    end_ms: int  # exclusive
    elapsed_s: float
    signals: int = 0  # signals before the portfolio's limits (some were not taken)


class NoHistory(SurgeError):
    """Nothing stored for the range asked: a runtime failure (exit 1), fixed by a download."""


def max_hold_ms(trade: TradeSettings) -> int:
    return int(trade.max_hold_s * 1000)


def warmup_start(start_ms: int) -> int:
    """Where to start loading for a range starting at ``start_ms``: the 4h window before the start's
    (its quote volume is the first candles' closed 4h candle; it also covers any volume baseline)."""
    return start_ms - start_ms % H4 - H4


def prepare(
    candles: SymbolCandles,
    loosest: Loosest,
    hold_ms: int,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> SymbolPrep | None:
    """One symbol's candidates under ``loosest`` and the candles within ``hold_ms`` after each (None
    when it has no candle in the range)."""
    times = candles.open_time
    lo = 0 if start_ms is None else int(np.searchsorted(times, start_ms, side="left"))
    hi = len(times) if end_ms is None else int(np.searchsorted(times, end_ms, side="left"))
    if hi <= lo:
        return None
    found = find_candidates(candles, loosest, start_ms, end_ms)
    times = times[:hi]
    start = found.index
    reach = np.minimum(np.searchsorted(times, times[start] + hold_ms, side="left"), hi - 1)
    edges = np.bincount(start, minlength=hi + 1) - np.bincount(reach + 1, minlength=hi + 1)
    keep = np.cumsum(edges[:hi]) > 0
    keep[hi - 1] = True  # the last candle: end_of_data
    position = np.cumsum(keep)[start] - 1
    return SymbolPrep(
        symbol=candles.symbol,
        candles=hi - lo,
        first_ms=int(times[lo]),
        last_ms=int(times[hi - 1]),
        candidates=found,
        position=position,
        open_time=times[keep],
        high=candles.high[:hi][keep],
        low=candles.low[:hi][keep],
        close=candles.close[:hi][keep],
    )


#: Trades already computed, by (symbol, candidate position): valid for one ``[trade]`` settings only.
ExitCache = dict[tuple[str, int], Trade]


def candidate_trades(prep: SymbolPrep, settings: Settings, cache: ExitCache | None = None) -> list[Trade]:
    """Every signal of the symbol as a trade, exits computed, before the portfolio's limits.

    A trade depends on the candidate and the ``[trade]`` settings only, so a sweep over other keys
    passes the same ``cache`` for every combination with the same ``[trade]`` and walks each exit once.
    """
    chosen = decide(prep.candidates, settings.surge, Rule4h.from_settings(settings.filter_4h))
    if not chosen:
        return []
    broker = PaperBroker(settings.trade)
    lookback = settings.surge.volume_lookback
    if cache is None:
        return [_trade(prep, i, broker, lookback) for i in chosen]
    trades = []
    for i in chosen:
        trade = cache.get((prep.symbol, i))
        if trade is None:
            trade = cache[prep.symbol, i] = _trade(prep, i, broker, lookback)
        trades.append(trade)
    return trades


def _trade(prep: SymbolPrep, i: int, broker: PaperBroker, lookback: int) -> Trade:
    found = prep.candidates
    open_price, close, volume = found.open[i], found.close[i], found.volume[i]
    baseline = found.baselines[lookback][i] or 1.0  # a signal always has one (volume_surges)
    signal = Signal(
        symbol=prep.symbol,
        time=found.open_time[i] + CLOSE_MS,
        open_time=found.open_time[i],
        change_pct=(close - open_price) / open_price * 100.0,
        volume_multiple=volume / baseline,
        quote_volume=found.quote_volume[i],
        price=close,
    )
    position = broker.open(signal)
    at, price, reason = _exit(
        prep, int(prep.position[i]), position.stop_loss, position.take_profit, position.deadline
    )
    closed = broker.close(position, price, int(prep.open_time[at]) + CLOSE_MS, reason)
    assert closed.exit_price is not None and closed.exit_time is not None and closed.pnl is not None
    return Trade(
        symbol=prep.symbol,
        signal_time=signal.time,
        entry_time=position.entry_time,
        entry_price=position.entry_price,
        qty=position.qty,
        exit_time=closed.exit_time,
        exit_price=closed.exit_price,
        exit_reason=reason,
        fees=closed.fees,
        pnl=closed.pnl,
    )


def _exit(prep: SymbolPrep, entry: int, stop: float, target: float, deadline: int) -> tuple[int, float, str]:
    """(position of the exit candle, trigger price before slippage, reason) of a position entered at
    the close of candle ``entry``."""
    times = prep.open_time
    last = len(times) - 1
    due = int(np.searchsorted(times, deadline - CLOSE_MS, side="left"))  # first close >= deadline
    until = min(due, last) + 1
    touched = (prep.low[entry + 1 : until] <= stop) | (prep.high[entry + 1 : until] >= target)
    if touched.any():
        at = entry + 1 + int(touched.argmax())
        if prep.low[at] <= stop:
            return at, stop, STOP_LOSS
        return at, target, TAKE_PROFIT
    if due <= last:
        return due, float(prep.close[due]), MAX_HOLD
    return last, float(prep.close[last]), END_OF_DATA


def portfolio(candidates: Iterable[Trade], max_open: int) -> list[Trade]:
    """The candidate trades the book takes: in signal time order (ties by symbol), one per symbol, at
    most ``max_open`` at once; a position closing at t frees its slot for a signal at t."""
    ordered = sorted(candidates, key=lambda t: (t.signal_time, t.symbol))
    closing: list[tuple[int, str]] = []  # heap of (exit time, symbol) of the open positions
    held: set[str] = set()
    taken: list[Trade] = []
    for trade in ordered:
        while closing and closing[0][0] <= trade.signal_time:
            held.discard(heapq.heappop(closing)[1])
        if trade.symbol in held or len(held) >= max_open:
            continue
        heapq.heappush(closing, (trade.exit_time, trade.symbol))
        held.add(trade.symbol)
        taken.append(trade)
    return taken


@dataclass(slots=True)
class _Coverage:
    """What the preps streamed through a run covered."""

    candles: int = 0
    symbols: list[str] = field(default_factory=list)
    first_ms: int | None = None
    last_ms: int | None = None

    def add(self, prep: SymbolPrep) -> None:
        self.candles += prep.candles
        self.symbols.append(prep.symbol)
        self.first_ms = prep.first_ms if self.first_ms is None else min(self.first_ms, prep.first_ms)
        self.last_ms = prep.last_ms if self.last_ms is None else max(self.last_ms, prep.last_ms)

    def span(self, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
        """The range covered: as asked, or (unbounded) from the first candle to after the last."""
        if self.first_ms is None or self.last_ms is None:
            raise NoHistory("no candles stored for that range: run `surge history download` first")
        start = self.first_ms if start_ms is None else start_ms
        end = self.last_ms + MINUTE_MS if end_ms is None else end_ms
        return start, end


def simulate(
    preps: Iterable[SymbolPrep], settings: Settings, cache: ExitCache | None = None
) -> tuple[list[Trade], int]:
    """The trades the book takes over ``preps`` (each read once, so a generator that loads and drops
    symbol by symbol keeps one symbol's candles in memory), and the number of signals."""
    pending: list[Trade] = []
    for prep in preps:
        pending.extend(candidate_trades(prep, settings, cache))
    return portfolio(pending, settings.trade.max_open_positions), len(pending)


def backtest_candles(
    candles: Iterable[SymbolCandles],
    settings: Settings,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> BacktestResult:
    """The backtest over already loaded candles (the bench and the tests call it): the candles before
    ``start_ms`` are history only, those at or after ``end_ms`` are ignored."""
    began = time.perf_counter()
    loosest = Loosest.of([settings.surge])
    hold = max_hold_ms(settings.trade)
    coverage = _Coverage()

    def preps() -> Iterator[SymbolPrep]:
        for symbol_candles in candles:
            prep = prepare(symbol_candles, loosest, hold, start_ms, end_ms)
            if prep is not None:
                coverage.add(prep)
                yield prep

    trades, signals = simulate(preps(), settings)
    start, end = coverage.span(start_ms, end_ms)
    return BacktestResult(
        trades, coverage.candles, coverage.symbols, start, end, time.perf_counter() - began, signals
    )


def load(
    store: HistoryStore,
    symbols: Sequence[str] | None,
    start_ms: int | None,
    end_ms: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[SymbolCandles]:
    """Each symbol's candles for the range and its history before it, one symbol at a time."""
    names = list(symbols) if symbols else store.symbols()
    first = None if start_ms is None else warmup_start(start_ms)
    for done, name in enumerate(names, 1):
        yield store.read(name, first, end_ms)
        if progress is not None:
            progress(done, len(names))


def run_backtest(
    store: HistoryStore,
    settings: Settings,
    start_ms: int | None = None,
    end_ms: int | None = None,
    symbols: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestResult:
    """The backtest over the stored candles with ``start_ms <= open_time < end_ms`` (None: from the
    first, to the last stored), loading included in ``elapsed_s``; :class:`NoHistory` when none."""
    return backtest_candles(load(store, symbols, start_ms, end_ms, progress), settings, start_ms, end_ms)
