"""The surge rule over a symbol's stored 1m candles at once, deciding exactly as the live rule does.

Why two stages: numpy over a whole month of candles is fast, but a float computed another way can
differ from the live rule's in its last bit (a ``cumsum`` rounds differently from the rule's sum of
the window), and a tie at a threshold would then be decided differently. So:

1. :func:`find_candidates` is a vectorised net: it keeps every candle that could signal under the
   loosest thresholds asked (a sweep asks several), with a margin far wider than any rounding
   difference, so it never drops a candle the rule would take. It keeps few: a surge is rare.
2. :func:`decide` asks the live rule's own pure functions about each candidate, in Python floats:
   :func:`surge.strategy.price_surges`, :func:`~surge.strategy.window_mean`,
   :func:`~surge.strategy.volume_surges`, :func:`~surge.strategy.cooling_down` and the 4h rule's
   :meth:`surge.filter4h.Rule4h.passes`. There is one copy of the decision's arithmetic, the live one;
   ``tests/backtest/test_signals_property.py`` proves the result equal to ``SurgeRule.on_kline`` fed
   the same closed candles one by one.

What the candles mean here (the same as a ``SurgeRule`` fed them one by one from the first one, as
closed klines of an uninterrupted stream):

* a candle's signal time is its close time, ``open_time + 59,999`` ms; the cooldown runs on it;
* the volume baseline is the mean of the ``volume_lookback`` minutes before the candle. A minute
  with no stored candle after the first one is a quiet minute (volume 0), as the live rule counts
  the minutes an uninterrupted stream skipped; minutes before the first candle are unknown, so a
  candle less than ``volume_lookback`` minutes after the first one never signals;
* the 4h filter at the signal: the current 4h candle is the UTC 4h window holding the signal candle,
  its open the open of the first stored 1m candle of that window and its last price the signal
  candle's close. The previous closed 4h candle's quote volume is the sum of the stored 1m quote
  volumes of the previous window: a missing minute adds nothing (a minute without a candle had no
  trade, or the archive lost it; either way nothing is known to have traded), and a previous window
  without any stored candle is unknown, so the symbol fails the filter (as a live scan fails a symbol
  without a closed 4h candle);
* a candle that surges while its symbol fails the 4h filter starts no cooldown: the live bot asks the
  rule only about symbols passing the filter (the others it merely observes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from surge.config import SurgeSettings
from surge.filter4h import H4, Rule4h
from surge.strategy import (
    MINUTE_MS,
    cooldown_ms,
    cooling_down,
    price_surges,
    volume_surges,
    window_mean,
)

if TYPE_CHECKING:
    from surge.history.store import SymbolCandles

#: A 1m candle's close time minus its open time (Binance's kline ``T``).
CLOSE_MS = MINUTE_MS - 1
#: The net's slack: in percent points for the change, relative for the volume. numpy computes the
#: change with the rule's very IEEE operations, so there it is only a guard; the rough baseline
#: (numpy's sum of the window) differs from the rule's by ~1e-14 relative at most (98 volumes).
_CHANGE_SLACK = 1e-9
_VOLUME_SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class Loosest:
    """The widest net over several ``[surge]`` settings: a candle any of them could signal on passes it."""

    min_change_pct: float
    min_quote_volume: float
    volume_multiple: float
    lookbacks: tuple[int, ...]

    @classmethod
    def of(cls, settings: Iterable[SurgeSettings]) -> Loosest:
        every = list(settings)
        if not every:
            raise ValueError("no settings to cover")
        return cls(
            min(s.min_change_pct for s in every),
            min(s.min_quote_volume for s in every),
            min(s.volume_multiple for s in every),
            tuple(sorted({s.volume_lookback for s in every})),
        )


@dataclass(frozen=True, slots=True)
class Candidates:
    """The candles of one symbol the net kept, in time order, with what the exact decision reads.

    Plain Python lists, not arrays: :func:`decide` reads them one by one in Python floats (the live
    rule's arithmetic), where indexing an array would box a numpy scalar each time.
    """

    index: np.ndarray  # int64 positions in the symbol's candle arrays
    open_time: list[int]
    open: list[float]
    close: list[float]
    volume: list[float]
    quote_volume: list[float]
    open_4h: list[float]  # open of the first stored 1m candle of the candle's 4h window
    closed_quote_volume_4h: list[float | None]  # previous 4h window's; None when it has no candle
    baselines: dict[int, list[float | None]]  # by volume_lookback; None: the history is too short

    def __len__(self) -> int:
        return len(self.open_time)


def find_candidates(
    candles: SymbolCandles, loosest: Loosest, start_ms: int | None = None, end_ms: int | None = None
) -> Candidates:
    """The candles with ``start_ms <= open_time < end_ms`` that may signal under ``loosest``; the
    candles before ``start_ms`` are history only (the baseline and the 4h windows read them)."""
    times = candles.open_time
    lo = 0 if start_ms is None else int(np.searchsorted(times, start_ms, side="left"))
    hi = len(times) if end_ms is None else int(np.searchsorted(times, end_ms, side="left"))
    opens, closes = candles.open[lo:hi], candles.close[lo:hi]
    with np.errstate(all="ignore"):  # an open of 0 divides by zero: the (open > 0) term drops it
        change = (closes - opens) / opens * 100.0
        kept = (
            (opens > 0)
            & (change >= loosest.min_change_pct - _CHANGE_SLACK)
            & (candles.quote_volume[lo:hi] >= loosest.min_quote_volume)
        )
    index = np.flatnonzero(kept) + lo
    windows = {lookback: _volume_windows(candles, index, lookback) for lookback in loosest.lookbacks}
    plausible = np.zeros(len(index), dtype=bool)
    volume = candles.volume[index]
    for lookback, (window, known) in windows.items():
        rough = window.sum(axis=1) / lookback
        floor = loosest.volume_multiple * rough
        with np.errstate(invalid="ignore"):
            plausible |= known & (rough != 0) & (volume >= floor - np.abs(floor) * _VOLUME_SLACK)
    index = index[plausible]
    baselines = {
        lookback: [
            window_mean(row, lookback) if ok else None
            for row, ok in zip(window[plausible].tolist(), known[plausible].tolist(), strict=True)
        ]
        for lookback, (window, known) in windows.items()
    }
    open_4h, closed_4h = _four_hour_context(candles, index)
    return Candidates(
        index=index,
        open_time=candles.open_time[index].tolist(),
        open=candles.open[index].tolist(),
        close=candles.close[index].tolist(),
        volume=candles.volume[index].tolist(),
        quote_volume=candles.quote_volume[index].tolist(),
        open_4h=open_4h,
        closed_quote_volume_4h=closed_4h,
        baselines=baselines,
    )


def _volume_windows(
    candles: SymbolCandles, index: np.ndarray, lookback: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's baseline window, newest minute first, a quiet minute as 0.0 (the live rule's
    order and values), and whether the window is known (it starts at or after the first candle)."""
    times, volumes = candles.open_time, candles.volume
    window = np.zeros((len(index), lookback))
    if len(times) == 0 or len(index) == 0:
        return window, np.zeros(len(index), dtype=bool)
    at = times[index]
    last = len(times) - 1
    for back in range(1, lookback + 1):
        minute = at - back * MINUTE_MS
        pos = np.minimum(np.searchsorted(times, minute, side="left"), last)
        window[:, back - 1] = np.where(times[pos] == minute, volumes[pos], 0.0)
    known = at - lookback * MINUTE_MS >= times[0]
    return window, known


def _four_hour_context(candles: SymbolCandles, index: np.ndarray) -> tuple[list[float], list[float | None]]:
    """For each candidate: the open of its 4h window (its first stored 1m candle) and the summed 1m
    quote volume of the previous 4h window (None when that window has no stored candle)."""
    if len(index) == 0:
        return [], []
    window_of = candles.open_time // H4
    starts = np.flatnonzero(np.concatenate(([True], window_of[1:] != window_of[:-1])))
    windows = window_of[starts]
    sums = np.add.reduceat(candles.quote_volume, starts)
    current = window_of[index]
    k = np.searchsorted(windows, current)  # the candidate's own window: always present
    open_4h = candles.open[starts[k]].tolist()
    before = np.maximum(k - 1, 0)
    has_previous = (k > 0) & (windows[before] == current - 1)
    closed = [
        float(v) if ok else None for v, ok in zip(sums[before].tolist(), has_previous.tolist(), strict=True)
    ]
    return open_4h, closed


def decide(candidates: Candidates, settings: SurgeSettings, rule_4h: Rule4h | None) -> list[int]:
    """Positions (into ``candidates``) of the candles that signal, in time order: the surge rule, then
    the 4h filter (``None``: no filter), then the cooldown among the signals that passed both."""
    baselines = candidates.baselines.get(settings.volume_lookback)
    if baselines is None:
        raise ValueError(f"candidates were found without volume_lookback={settings.volume_lookback}")
    cooldown = cooldown_ms(settings)
    last_signal: int | None = None
    chosen: list[int] = []
    closed_4h = candidates.closed_quote_volume_4h
    open_4h = candidates.open_4h
    rows = zip(
        candidates.open, candidates.close, candidates.volume, candidates.quote_volume, baselines, strict=True
    )
    for i, (open_price, close, volume, quote_volume, baseline) in enumerate(rows):
        if not (
            price_surges(settings, open_price, close, quote_volume)
            and volume_surges(settings, volume, baseline)
        ):
            continue
        if rule_4h is not None:
            previous = closed_4h[i]
            if previous is None or not rule_4h.passes(open_4h[i], close, previous):
                continue
        now = candidates.open_time[i] + CLOSE_MS
        if cooling_down(last_signal, now, cooldown):
            continue
        last_signal = now
        chosen.append(i)
    return chosen


def surge_signal_times(
    candles: SymbolCandles, settings: SurgeSettings, start_ms: int | None = None, end_ms: int | None = None
) -> list[int]:
    """Open times of the candles the surge rule alone (no 4h filter) signals on: what the property test
    compares with ``SurgeRule``."""
    found = find_candidates(candles, Loosest.of([settings]), start_ms, end_ms)
    return [found.open_time[i] for i in decide(found, settings, None)]
