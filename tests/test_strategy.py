"""The surge rule: each condition alone, the baseline window, gaps, cooldown and restarts."""

from __future__ import annotations

import pytest

from surge.config import SurgeSettings
from surge.models import Kline
from surge.strategy import MINUTE_MS, SurgeRule

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
