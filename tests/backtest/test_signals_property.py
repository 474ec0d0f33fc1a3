"""The vectorised signals are exactly the live rule's: ``SurgeRule`` fed the same closed candles one by
one, over thousands of generated series with gaps, zero volumes, ties at every threshold, cooldown
boundaries and short histories; and, with the 4h filter, the live bot's way of asking the rule only
about symbols that pass it."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from surge.backtest.signals import Loosest, decide, find_candidates, surge_signal_times
from surge.config import SurgeSettings
from surge.filter4h import Rule4h
from surge.history.store import SymbolCandles
from surge.strategy import SurgeRule
from tests.backtest.candles import H4_MS, T0, Row, build, klines

PROPERTY = settings(
    derandomize=True,  # the same examples on every run: CI stays stable
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

OPENS = [100.0, 100.0, 100.0, 7.0, 0.3, 1.1, 0.0]
MOVES = ["tie", "tie", "above", "below", "big", "big", "flat", "down"]
VOLUMES = [0.0, 0.0, 0.1, 0.2, 0.3, 1.0, 3.0, 10.0, "tie", "tie", "tie", "tie+", "tie-", "big", "big"]
QUOTES = ["min", "min", "below", "big", "big", "big", "zero"]


def _close(open_price: float, move: str, threshold_pct: float) -> float:
    at = open_price * (
        1.0 + threshold_pct / 100.0
    )  # (close - open) / open * 100 lands on or by the threshold
    return {
        "tie": at,
        "above": math.nextafter(at, math.inf),
        "below": math.nextafter(at, -math.inf),
        "big": open_price * 1.5,
        "flat": open_price,
        "down": open_price * 0.8,
    }[move]


def _volume(kind: float | str, s: SurgeSettings, minute: int, seen: dict[int, float], first: int) -> float:
    """A volume; "tie" is exactly the live threshold (``volume_multiple`` times the baseline as the rule
    sums it: newest minute first, a minute without a candle as 0.0), "tie+"/"tie-" its neighbours."""
    if not isinstance(kind, str):
        return kind
    if kind == "big":
        return 1000.0
    lookback = s.volume_lookback
    if minute - lookback < first:
        return 1.0
    baseline = sum(seen.get(minute - i, 0.0) for i in range(1, lookback + 1)) / lookback
    tie = s.volume_multiple * baseline
    return {"tie": tie, "tie+": math.nextafter(tie, math.inf), "tie-": math.nextafter(tie, -math.inf)}[kind]


def _quote(kind: str, minimum: float) -> float:
    return {"min": minimum, "below": math.nextafter(minimum, -math.inf), "big": 1e9, "zero": 0.0}[kind]


surge_settings = st.builds(
    SurgeSettings,
    min_change_pct=st.sampled_from([3.0, 0.5, 1.0, 2.5]),
    volume_multiple=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    volume_lookback=st.sampled_from([1, 2, 3, 5]),
    min_quote_volume=st.sampled_from([0.0, 100.0]),
    cooldown_s=st.sampled_from([0.0, 60.0, 90.0, 120.0, 300.0]),  # multiples of a minute make ties
)


def _series(s: SurgeSettings, steps: list[tuple[int, float, str, float | str, str]]) -> SymbolCandles:
    rows: list[Row] = []
    seen: dict[int, float] = {}
    minute = -1
    for gap, open_price, move, volume_kind, quote_kind in steps:
        minute += gap
        rows.extend([None] * (minute - len(rows)))
        close = _close(open_price, move, s.min_change_pct)
        volume = _volume(volume_kind, s, minute, seen, first=min(seen, default=minute))
        seen[minute] = volume
        quote = _quote(quote_kind, s.min_quote_volume)
        rows.append((open_price, max(open_price, close), min(open_price, close), close, volume, quote))
    return build("PROPUSDT", rows)


def candle_steps(*choices: list, max_size: int) -> st.SearchStrategy[list[tuple]]:
    """Lists of (gap, open, move, volume, quote), each picked from ``choices``. Hypothesis draws only a
    length and a seed (a failure prints both, which reproduce it) and the candles are picked with
    that seed: five draws per candle made data generation most of the test's time."""

    def pick(drawn: tuple[int, int]) -> list[tuple]:
        size, seed = drawn
        rng = random.Random(seed)
        return [tuple(rng.choice(options) for options in choices) for _ in range(size)]

    return st.tuples(st.integers(0, max_size), st.integers(0, 2**32 - 1)).map(pick)


steps_1m = candle_steps([1, 1, 1, 1, 1, 1, 2, 3, 4, 6, 7, 30], OPENS, MOVES, VOLUMES, QUOTES, max_size=50)


@settings(PROPERTY, max_examples=3000)
@given(s=surge_settings, steps=steps_1m)
def test_vectorised_signals_are_the_live_rules(s: SurgeSettings, steps: list) -> None:
    candles = _series(s, steps)
    rule = SurgeRule(s)
    expected = [k.open_time for k in klines(candles) if rule.on_kline(k) is not None]
    event(f"signals: {min(len(expected), 3)}")
    assert surge_signal_times(candles, s) == expected


@pytest.mark.parametrize("older_to_newer", [(0.3, 0.2, 0.1), (0.1, 0.2, 0.3)])
def test_a_tie_summed_in_another_order_would_differ(older_to_newer: tuple[float, float, float]) -> None:
    """The case the shared sum exists for: 0.1 + 0.2 + 0.3 is not 0.3 + 0.2 + 0.1 in floats. A volume of
    exactly the live threshold (the window summed newest first) signals; in one of the two orders of
    the window, a sum the other way round would make the threshold higher and miss it."""
    s = SurgeSettings(min_change_pct=1.0, volume_multiple=3.0, volume_lookback=3, min_quote_volume=0.0)
    old, mid, new = older_to_newer
    assert (new + mid) + old != (old + mid) + new  # the premise
    tie = 3.0 * ((((0.0 + new) + mid) + old) / 3)  # the rule: multiple * (sum newest first / lookback)
    rows: list[Row] = [(1.0, 1.0, 1.0, 1.0, v, 1.0) for v in older_to_newer]
    rows.append((100.0, 103.0, 100.0, 103.0, tie, 1.0))
    candles = build("TIEUSDT", rows)
    rule = SurgeRule(s)
    live = [k.open_time for k in klines(candles) if rule.on_kline(k) is not None]
    assert live == [T0 + 3 * 60_000] and surge_signal_times(candles, s) == live


# --------------------------------------------------------------------------- with the 4h filter


def reference_with_filter(
    candles: SymbolCandles, s: SurgeSettings, rule_4h: Rule4h, start_ms: int | None
) -> list[int]:
    """The live bot's path, naively: each closed candle goes to ``SurgeRule.on_kline`` when its symbol
    passes the 4h rule at that moment (and the candle is in the range), else to ``observe``."""
    rule = SurgeRule(s)
    first_open: dict[int, float] = {}  # 4h window -> the open of its first candle
    quote_sum: dict[int, float] = {}  # 4h window -> its candles' quote volume
    out = []
    for k in klines(candles):
        window = k.open_time // H4_MS
        first_open.setdefault(window, k.open)
        previous = quote_sum.get(window - 1)  # complete: every candle of that window came before
        verdict = (
            None if previous is None else rule_4h.decide(k.symbol, first_open[window], k.close, previous)
        )
        passes = verdict is not None and verdict.passed
        quote_sum[window] = quote_sum.get(window, 0.0) + k.quote_volume
        if passes and (start_ms is None or k.open_time >= start_ms):
            if rule.on_kline(k) is not None:
                out.append(k.open_time)
        else:
            rule.observe(k)
    return out


rules_4h = st.builds(
    lambda lo, hi, qv: Rule4h(min(lo, hi), max(lo, hi), qv),
    st.sampled_from([-5.0, 0.0, 1.0, 4.0]),
    st.sampled_from([2.0, 10.0, 50.0]),
    st.sampled_from([0.0, 50.0, 500.0]),
)

steps_4h = candle_steps(
    [1] * 12 + [2, 60, 200, 239, 240, 241, 500],
    [100.0, 100.0, 100.0, 103.0, 97.0, 110.0],
    MOVES,
    [0.0, 1.0, 3.0, 10.0, "tie", "tie", "big", "big", "big"],
    [0.0, 10.0, 60.0, 100.0, 1000.0],  # whole numbers: any summing order is exact
    max_size=150,
)


@settings(PROPERTY, max_examples=1000)
@given(
    s=st.builds(
        SurgeSettings,
        min_change_pct=st.sampled_from([1.0, 3.0]),
        volume_multiple=st.sampled_from([1.0, 2.0]),
        volume_lookback=st.sampled_from([1, 2, 3]),
        min_quote_volume=st.sampled_from([0.0, 50.0]),
        cooldown_s=st.sampled_from([0.0, 60.0, 600.0]),
    ),
    rule_4h=rules_4h,
    steps=steps_4h,
    start_at=st.one_of(st.none(), st.integers(0, 149)),
)
def test_signals_with_the_4h_filter_are_the_live_bots(
    s: SurgeSettings, rule_4h: Rule4h, steps: list, start_at: int | None
) -> None:
    candles = _series_4h(s, steps)
    times = candles.open_time.tolist()
    start_ms = times[start_at] if start_at is not None and start_at < len(times) else None
    expected = reference_with_filter(candles, s, rule_4h, start_ms)
    found = find_candidates(candles, Loosest.of([s]), start_ms, None)
    event(f"signals: {min(len(expected), 3)}")
    assert [found.open_time[i] for i in decide(found, s, rule_4h)] == expected


def _series_4h(s: SurgeSettings, steps: list[tuple[int, float, str, float | str, float]]) -> SymbolCandles:
    rows: list[Row] = []
    seen: dict[int, float] = {}
    minute = -1
    for gap, open_price, move, volume_kind, quote in steps:
        minute += gap
        rows.extend([None] * (minute - len(rows)))
        close = _close(open_price, move, s.min_change_pct)
        volume = _volume(volume_kind, s, minute, seen, first=min(seen, default=minute))
        seen[minute] = volume
        rows.append((open_price, max(open_price, close), min(open_price, close), close, volume, quote))
    return build("FILTUSDT", rows)
