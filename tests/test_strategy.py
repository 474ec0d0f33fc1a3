"""The surge rule: each condition alone, the baseline window, gaps, cooldown and restarts."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surge.config import SurgeSettings
from surge.models import Kline
from surge.strategy import MINUTE_MS, MinuteVolumes, SurgeRule
from tests.memory import growth_in

T0 = 1_700_000_040_000 - 1_700_000_040_000 % MINUTE_MS


def candle(
    minute: int, *, o=100.0, c=100.0, v=10.0, qv=None, closed=True, symbol="ABCUSDT", at=None
) -> Kline:
    open_time = T0 + minute * MINUTE_MS
    quote = qv if qv is not None else v * c
    event = at if at is not None else open_time + (MINUTE_MS - 1 if closed else 30_000)
    return Kline(
        symbol,
        "1m",
        open_time,
        open_time + MINUTE_MS - 1,
        o,
        max(o, c),
        min(o, c),
        c,
        v,
        quote,
        5,
        closed,
        event_time=event,
    )


def history(rule: SurgeRule, n: int = 20, v: float = 10.0, symbol: str = "ABCUSDT") -> None:
    rule.seed(symbol, [candle(m, v=v, symbol=symbol) for m in range(n)])


SETTINGS = SurgeSettings(
    min_change_pct=3.0, volume_multiple=3.0, volume_lookback=20, min_quote_volume=50_000, cooldown_s=900
)


def test_all_three_conditions_make_a_signal() -> None:
    rule = SurgeRule(SETTINGS)
    history(rule)
    sig = rule.on_kline(candle(20, o=100, c=103.5, v=31, qv=60_000, closed=False))
    assert sig is not None
    assert (sig.symbol, sig.open_time, sig.price) == ("ABCUSDT", T0 + 20 * MINUTE_MS, 103.5)
    assert sig.change_pct == pytest.approx(3.5) and sig.volume_multiple == pytest.approx(3.1)
    assert sig.key == f"ABCUSDT:{T0 + 20 * MINUTE_MS}"


@pytest.mark.parametrize(
    ("c", "v", "qv"),
    [(102.9, 31, 60_000), (103.5, 29.9, 60_000), (103.5, 31, 49_999)],
    ids=["change too small", "volume multiple too small", "quote volume too small"],
)
def test_each_condition_is_required(c: float, v: float, qv: float) -> None:
    rule = SurgeRule(SETTINGS)
    history(rule)
    assert rule.on_kline(candle(20, o=100, c=c, v=v, qv=qv, closed=False)) is None


def test_baseline_is_the_candles_just_before() -> None:
    rule = SurgeRule(SETTINGS)
    rule.seed("ABCUSDT", [candle(m, v=100.0) for m in range(0, 5)])  # old and loud: outside the window
    rule.seed("ABCUSDT", [candle(m, v=10.0) for m in range(5, 25)])
    assert rule.on_kline(candle(25, o=100, c=104, v=31, qv=60_000, closed=False)) is not None


def test_a_hole_in_history_blocks_signals_until_filled() -> None:
    rule = SurgeRule(SETTINGS)
    rule.seed("ABCUSDT", [candle(m) for m in range(20) if m != 7])
    assert rule.missing("ABCUSDT", T0 + 20 * MINUTE_MS) == [T0 + 7 * MINUTE_MS]
    surge = candle(20, o=100, c=104, v=40, qv=60_000, closed=False)
    assert rule.on_kline(surge) is None
    rule.seed("ABCUSDT", [candle(7)])  # the backfill arrives
    assert rule.missing("ABCUSDT", T0 + 20 * MINUTE_MS) == []
    assert (
        rule.on_kline(candle(20, o=100, c=104, v=41, qv=60_000, closed=False, at=surge.event_time + 250))
        is not None
    )


def test_streamed_closed_candles_extend_the_history() -> None:
    rule = SurgeRule(SETTINGS)
    history(rule)
    for m in range(20, 30):
        assert rule.on_kline(candle(m, v=10.0)) is None  # quiet candles closing on the stream
    assert rule.missing("ABCUSDT", T0 + 30 * MINUTE_MS) == []
    assert rule.on_kline(candle(30, o=100, c=104, v=31, qv=60_000, closed=False)) is not None


def test_cooldown_per_symbol_and_restored_after_restart() -> None:
    rule = SurgeRule(SETTINGS)
    history(rule)
    history(rule, symbol="XYZUSDT")
    first = rule.on_kline(candle(20, o=100, c=104, v=40, qv=60_000, closed=False))
    assert first is not None
    again = candle(20, o=100, c=105, v=50, qv=70_000, closed=False, at=first.time + 250)
    assert rule.on_kline(again) is None  # same candle, inside the cooldown
    assert (
        rule.on_kline(candle(20, o=100, c=104, v=40, qv=60_000, closed=False, symbol="XYZUSDT")) is not None
    )
    later = candle(20, o=100, c=105, v=50, qv=70_000, closed=False, at=first.time + 900_000)
    assert rule.on_kline(later) is not None  # the cooldown has passed

    restarted = SurgeRule(SETTINGS)
    history(restarted)
    restarted.restore_cooldowns({"ABCUSDT": first.time})
    assert restarted.on_kline(again) is None


def test_zero_baseline_never_signals() -> None:
    rule = SurgeRule(SETTINGS)
    history(rule, v=0.0)
    assert rule.on_kline(candle(20, o=100, c=110, v=500, qv=60_000, closed=False)) is None


def test_history_stays_bounded() -> None:
    rule = SurgeRule(SETTINGS)
    for m in range(2_000):
        rule.on_kline(candle(m))
    assert len(rule._state["ABCUSDT"].volumes) <= SETTINGS.volume_lookback + 2
    rule.forget("ABCUSDT")
    assert rule.missing("ABCUSDT", T0)  # forgotten: history must be backfilled again


# ----------------------------------------------------------------- quiet minutes (Binance pushes on change)

QUIET_SURGE = {"o": 100, "c": 104, "qv": 60_000, "closed": False}


def test_minutes_an_uninterrupted_stream_skipped_are_zero_volume_candles() -> None:
    """A minute without a trade is never pushed: on a stream that stayed up it is a candle of volume 0,
    part of the baseline, with nothing to fetch (the seed took it for a hole and refetched it)."""
    rule = SurgeRule(SETTINGS)
    history(rule)  # minutes 0..19 from REST, volume 10
    assert rule.on_kline(candle(20, v=10.0)) is None  # the stream's first candle, closed (x=true)
    assert rule.missing("ABCUSDT", T0 + 23 * MINUTE_MS) == []  # 21 and 22 quiet so far
    # minutes 21 and 22 had no trade; the first frame of 23 arrives: baseline (18 * 10 + 2 * 0) / 20
    sig = rule.on_kline(candle(23, v=27.0, **QUIET_SURGE))
    assert sig is not None and sig.volume_multiple == pytest.approx(3.0)
    volumes = rule._state["ABCUSDT"].volumes
    assert volumes[T0 + 21 * MINUTE_MS] == 0.0 and volumes[T0 + 22 * MINUTE_MS] == 0.0


def test_a_gap_interrupts_the_stream_and_its_silence_stays_unknown() -> None:
    rule = SurgeRule(SETTINGS)
    history(rule)
    rule.on_kline(candle(20, v=10.0))
    rule.interrupt("ABCUSDT")  # a stream gap (or a new subscription) was reported
    assert rule.missing("ABCUSDT", T0 + 23 * MINUTE_MS) == [T0 + 21 * MINUTE_MS, T0 + 22 * MINUTE_MS]
    assert rule.on_kline(candle(23, v=27.0, **QUIET_SURGE)) is None  # no mean over a hole
    assert rule.missing("ABCUSDT", T0 + 23 * MINUTE_MS) == [T0 + 21 * MINUTE_MS, T0 + 22 * MINUTE_MS]
    rule.seed("ABCUSDT", [candle(21, v=0.0), candle(22, v=0.0)])  # the backfill: REST has them
    assert rule.on_kline(candle(23, v=28.0, **QUIET_SURGE)) is not None

    fresh = SurgeRule(SETTINGS)  # a fresh start: its first candle implies nothing about the past
    fresh.on_kline(candle(20, v=10.0, closed=False))
    assert len(fresh.missing("ABCUSDT", T0 + 21 * MINUTE_MS)) == 20 and not fresh._state["ABCUSDT"].volumes


def test_a_candle_whose_final_frame_never_came_is_unknown_and_so_is_the_silence_after_it() -> None:
    """Updates are 250 ms snapshots: without its x=true frame a candle's volume is not known, and a
    stream that lost a frame cannot vouch for the minutes it then skipped either."""
    rule = SurgeRule(SETTINGS)
    history(rule)
    rule.on_kline(candle(20, v=5.0, closed=False))  # the last update seen of 20, not its final state
    assert rule.missing("ABCUSDT", T0 + 22 * MINUTE_MS) == [T0 + 20 * MINUTE_MS, T0 + 21 * MINUTE_MS]
    assert rule.on_kline(candle(22, v=27.0, **QUIET_SURGE)) is None
    assert rule.missing("ABCUSDT", T0 + 22 * MINUTE_MS) == [T0 + 20 * MINUTE_MS, T0 + 21 * MINUTE_MS]
    # from 22 on the stream is followed again: 22 closes, 23 is quiet, 24 trades
    rule.on_kline(candle(22, v=27.0, closed=True))
    rule.on_kline(candle(24, v=1.0, closed=False))
    assert rule._state["ABCUSDT"].volumes[T0 + 23 * MINUTE_MS] == 0.0


def test_rest_truth_wins_over_a_recorded_quiet_minute_and_long_silences_stay_bounded() -> None:
    rule = SurgeRule(SETTINGS)
    history(rule)
    rule.on_kline(candle(20, v=10.0))
    rule.seed("ABCUSDT", [candle(21, v=3.0)])  # a backfill answered first: not overwritten by a 0
    rule.on_kline(candle(23, v=1.0, closed=False))
    volumes = rule._state["ABCUSDT"].volumes
    assert volumes[T0 + 21 * MINUTE_MS] == 3.0 and volumes[T0 + 22 * MINUTE_MS] == 0.0
    rule.on_kline(candle(23, v=1.0))
    rule.on_kline(candle(5_000, v=1.0, closed=False))  # silent for three days
    assert len(rule._state["ABCUSDT"].volumes) <= SETTINGS.volume_lookback + 2
    assert rule.missing("ABCUSDT", T0 + 5_000 * MINUTE_MS) == []


def test_observe_follows_the_stream_of_a_symbol_that_does_not_pass_yet() -> None:
    rule = SurgeRule(SETTINGS)
    history(rule)
    rule.observe(candle(20, v=10.0, closed=False))
    rule.observe(candle(20, v=10.0))
    rule.observe(candle(22, v=4.0, closed=False))
    volumes = rule._state["ABCUSDT"].volumes
    assert volumes[T0 + 20 * MINUTE_MS] == 10.0 and volumes[T0 + 21 * MINUTE_MS] == 0.0
    assert T0 + 22 * MINUTE_MS not in volumes  # in progress
    assert rule.missing("ABCUSDT", T0 + 22 * MINUTE_MS) == []


def test_ready_count_remembers_a_complete_baseline_until_the_stream_is_interrupted() -> None:
    """The heartbeat's count: a baseline found complete is not searched again that minute, and a gap
    (interrupt) makes the minutes it had inferred as quiet unknown again."""
    rule = SurgeRule(SETTINGS)
    history(rule)  # minutes 0..19
    rule.on_kline(candle(20, v=10.0))  # closed: 21 and 22 are quiet until a candle says otherwise
    minute = T0 + 23 * MINUTE_MS
    assert rule.ready_count(["ABCUSDT", "NEWUSDT"], minute) == 1
    assert rule._state["ABCUSDT"].complete_for == minute
    rule.interrupt("ABCUSDT")
    assert rule.ready_count(["ABCUSDT"], minute) == 0  # 21 and 22 unknown again
    rule.seed("ABCUSDT", [candle(21, v=0.0), candle(22, v=0.0)])
    assert rule.ready_count(["ABCUSDT"], minute) == 1
    assert rule.ready_count(["ABCUSDT"], minute + MINUTE_MS) == 0  # minute 23 itself is not known yet


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["seed", "kline", "interrupt", "forget", "ask"]),
            st.integers(0, 40),
            st.booleans(),
            st.sampled_from(["AUSDT", "BUSDT"]),
        ),
        max_size=60,
    )
)
def test_ready_count_always_equals_a_full_search(ops: list[tuple[str, int, bool, str]]) -> None:
    rule = SurgeRule(SETTINGS)
    symbols = ["AUSDT", "BUSDT"]
    for op, minute, closed, symbol in ops:
        if op == "seed":
            rule.seed(symbol, [candle(m, symbol=symbol) for m in range(max(0, minute - 5), minute)])
        elif op == "kline":
            rule.on_kline(candle(minute, closed=closed, symbol=symbol))
        elif op == "interrupt":
            rule.interrupt(symbol)
        elif op == "forget":
            rule.forget(symbol)
        else:
            rule.ready_count(symbols, T0 + minute * MINUTE_MS)  # fills the remembered minutes
        for m in (minute, minute + 1):
            at = T0 + m * MINUTE_MS
            full = copy.deepcopy(rule)  # missing() on a copy: the count below must not lean on it
            expected = sum(1 for s in symbols if not full.missing(s, at))
            assert rule.ready_count(symbols, at) == expected


def test_a_symbols_history_holds_the_same_memory_after_hours_as_after_its_first_minutes() -> None:
    """Every closed minute adds one volume and drops the oldest. Deleting keys from one dict made
    its table double ~20 minutes on (~1 KiB a symbol; issue 14's soak saw the step in RSS)."""
    rule = SurgeRule(SETTINGS)
    symbols = [f"S{i}USDT" for i in range(50)]

    def minutes(first: int, end: int) -> None:
        for m in range(first, end):
            for sym in symbols:
                rule.on_kline(candle(m, v=1.0 + m % 7, symbol=sym))

    full = SETTINGS.volume_lookback + 5  # the history full, trimmed a few times
    grown = growth_in("*/surge/strategy.py", lambda: minutes(0, full), lambda: minutes(full, 300))
    assert grown <= 2048, f"{grown} bytes more after {300 - full} more minutes of {len(symbols)} symbols"


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), st.lists(st.tuples(st.integers(0, 30), st.booleans()), max_size=80))
def test_minute_volumes_hold_exactly_the_newest_minutes_of_the_window(
    size: int, puts: list[tuple[int, bool]]
) -> None:
    """The ring against the plain model: a dict of the minutes put, cut to the ``size`` minutes that
    end at the newest one; a minute older than that window is not taken, and a known one is kept
    when asked to (a REST answer is not overwritten by an inferred quiet minute)."""
    ring, model = MinuteVolumes(size), {}
    for n, (minute, keep_known) in enumerate(puts):
        t = T0 + minute * MINUTE_MS
        newest = max(model, default=t)
        evicted = ring.put(t, float(n), keep_known=keep_known)
        if t <= newest - size * MINUTE_MS:
            assert evicted == t
            continue
        if not (keep_known and t in model):
            model[t] = float(n)
        end = max(newest, t)
        gone = [k for k in model if k <= end - size * MINUTE_MS]
        for k in gone:
            del model[k]
        assert evicted == max(gone, default=None)
        assert dict(ring) == model and len(ring) == len(model) and list(ring) == sorted(model)
        for m in range(minute - size - 1, minute + 2):
            probe = T0 + m * MINUTE_MS
            assert (probe in ring) == (probe in model)
            assert ring.get(probe, -1.0) == model.get(probe, -1.0)
