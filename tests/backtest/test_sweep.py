"""Sweeps: the flags checked before any loading, and every combination equal to its own single run."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from surge.backtest.engine import backtest_candles
from surge.backtest.report import totals
from surge.backtest.sweep import combinations, parse_sweeps, sweep_candles
from surge.config import Filter4hSettings, Settings
from surge.errors import ConfigError
from surge.history.store import SymbolCandles
from tests.backtest.candles import T0, Row, build


def test_parse_sweeps() -> None:
    grid = parse_sweeps(
        ["surge.min_change_pct=2,3.5, 4", "surge.volume_lookback=5,10", "trade.max_hold_s=600"]
    )
    assert grid == {
        "surge.min_change_pct": [2, 3.5, 4],
        "surge.volume_lookback": [5, 10],
        "trade.max_hold_s": [600],
    }


@pytest.mark.parametrize(
    ("texts", "named"),
    [
        (["surge.nope=1,2"], "surge.nope"),
        (["trade.mode=1"], "trade.mode"),  # not numeric
        (["exchange.venue=1"], "exchange.venue"),  # not a swept section
        (["stream.streams_per_connection=10"], "stream.streams_per_connection"),
        (["surge.min_change_pct=2,x"], "'x'"),
        (["surge.min_change_pct=2,nan"], "'nan'"),
        (["surge.min_change_pct"], "no values"),
        (["surge.min_change_pct=1", "surge.min_change_pct=2"], "twice"),
    ],
)
def test_a_bad_sweep_names_what_is_wrong(texts: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_sweeps(texts)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("surge.volume_lookback=5,2.5", "surge.volume_lookback must be an integer"),
        ("surge.min_change_pct=0", "surge.min_change_pct must be > 0"),
        ("trade.max_open_positions=0", "trade.max_open_positions must be between 1 and 1000"),
        ("filter_4h.min_change_pct=20", "must not exceed"),
    ],
)
def test_a_value_out_of_range_is_refused_like_in_the_config(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        combinations(Settings(), parse_sweeps([text]))


def random_market(symbol: str, seed: int, minutes: int = 900) -> SymbolCandles:
    """A random walk with planted surges of various sizes, a few gaps, and a thin first 4h."""
    rng = np.random.default_rng(seed)
    price = 100.0
    rows: list[Row] = []
    for minute in range(minutes):
        if rng.random() < 0.01:
            rows.append(None)
            continue
        open_price = price
        if minute > 240 and rng.random() < 0.03:
            close = open_price * (1 + rng.uniform(0.02, 0.08))
            volume = float(rng.uniform(30, 300))
        else:
            close = open_price * (1 + rng.normal(0, 0.004))
            volume = float(rng.uniform(5, 15))
        high = max(open_price, close) * (1 + abs(rng.normal(0, 0.003)))
        low = min(open_price, close) * (1 - abs(rng.normal(0, 0.003)))
        rows.append((open_price, high, low, close, volume, volume * close))
        price = close
    return build(symbol, rows)


def test_every_combination_equals_its_own_run_ranked_with_the_split() -> None:
    market = [random_market(f"R{n}USDT", seed=n) for n in range(3)]
    base = Settings(filter_4h=Filter4hSettings(min_quote_volume=10_000.0, max_change_pct=100.0))
    base = replace(
        base, surge=replace(base.surge, volume_lookback=10, min_quote_volume=500.0, cooldown_s=300.0)
    )
    grid = parse_sweeps(
        [
            "surge.min_change_pct=2,4",
            "surge.volume_multiple=3,8",
            "surge.volume_lookback=5,10",
            "trade.take_profit_pct=1,3",
            "trade.max_hold_s=300,1800",
            "trade.max_open_positions=1,5",
        ]
    )
    combos = combinations(base, grid)
    start, end = T0 + 60 * 60_000, T0 + 900 * 60_000
    result = sweep_candles(market, combos, start, end, split=0.6, workers=2)
    rows = result["combinations"]
    assert len(rows) == 64 and (result["from"], result["to"], result["symbols"]) == (start, end, 3)
    pnls = [r["totals"]["pnl"] for r in rows]
    assert pnls == sorted(pnls, reverse=True)
    assert len({r["totals"]["trades"] for r in rows}) > 3  # the grid does change the outcome
    by_params = {tuple(sorted(r["params"].items())): r for r in rows}
    split_ms = result["split"]
    for combo in combos:
        single = backtest_candles(market, combo.settings, start, end).trades
        row = by_params[tuple(sorted(combo.params.items()))]
        assert row["totals"] == totals(single, start, end), combo.params
        inside = [t for t in single if t.signal_time < split_ms]
        assert row["in_sample"] == totals(inside, start, split_ms)
        assert row["out_of_sample"]["trades"] == len(single) - len(inside)


def test_a_sweep_in_one_process_gives_the_same_rows() -> None:
    market = [random_market("ONEUSDT", seed=7)]
    base = Settings(filter_4h=Filter4hSettings(min_quote_volume=0.0, max_change_pct=100.0))
    combos = combinations(base, parse_sweeps(["surge.min_change_pct=2,3", "surge.volume_multiple=2,4"]))
    here = sweep_candles(market, combos, workers=1)
    forked = sweep_candles(market, combos, workers=2)
    assert here["combinations"] == forked["combinations"] and here["split"] is None
    assert all(r["in_sample"] is None and r["out_of_sample"] is None for r in here["combinations"])
