"""Parameter sweeps: the backtest over a grid of settings, ranked, with in- and out-of-sample figures.

Why it is fast enough for 100 combinations over a month of the whole market: the candles are read
and reduced once, in the parent, to what any combination can need (:func:`surge.backtest.engine.prepare`
under the loosest thresholds of the grid and its longest max hold); a combination then only decides
its candidates and walks their exits. The grid runs on a ``ProcessPoolExecutor`` of one worker per
CPU, forked after the data is in memory, so the workers share it copy-on-write instead of each
loading it (or receiving it pickled).

``--split 0.7`` splits the range at 70 % of its length: a trade belongs to the in-sample part when
its signal comes before the split, to the out-of-sample part otherwise (a trade open across the
split keeps its whole pnl in-sample). Both parts are one run: the book's limits carry across the
split. A combination that does well in-sample only is the overfitting the split is there to show.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from surge.backtest.engine import (
    ExitCache,
    NoHistory,
    SymbolPrep,
    load,
    max_hold_ms,
    prepare,
    simulate,
)
from surge.backtest.report import totals
from surge.backtest.signals import Loosest
from surge.config import SECTIONS, Settings, TradeSettings, with_overrides
from surge.errors import ConfigError

if TYPE_CHECKING:
    from surge.history.store import HistoryStore, SymbolCandles

#: The sections whose numeric keys a sweep may vary (the others do not change a backtest).
SWEPT_SECTIONS = ("surge", "trade", "filter_4h")
#: A grid beyond this is a typo (a missing comma makes no such grid; an extra --sweep may).
MAX_COMBINATIONS = 10_000

Params = dict[str, float | int]


@dataclass(frozen=True, slots=True)
class Combination:
    params: Params  # the swept keys ("surge.min_change_pct") and their values
    settings: Settings


def numeric_keys() -> list[str]:
    """Every key ``--sweep`` accepts, e.g. ``surge.min_change_pct``."""
    keys = []
    for section in SWEPT_SECTIONS:
        for f in fields(SECTIONS[section]):
            if isinstance(f.default, int | float) and not isinstance(f.default, bool):
                keys.append(f"{section}.{f.name}")
    return keys


def parse_sweeps(texts: Sequence[str]) -> dict[str, list[float | int]]:
    """``["surge.min_change_pct=2,3,4", ...]`` as {key: values}; a bad key or value is a ConfigError
    (exit 2) naming it."""
    known = numeric_keys()
    grid: dict[str, list[float | int]] = {}
    for text in texts:
        key, sep, values = text.partition("=")
        key = key.strip()
        if key not in known:
            raise ConfigError(
                f"--sweep {key or text!r}: not a numeric [surge], [trade] or [filter_4h] key "
                f"(known: {', '.join(known)})"
            )
        if key in grid:
            raise ConfigError(f"--sweep {key} given twice: list all its values in one, e.g. {key}=1,2,3")
        if not sep or not values.strip():
            raise ConfigError(f"--sweep {key}: no values, e.g. --sweep {key}=1,2,3")
        grid[key] = [_number(key, value) for value in values.split(",")]
    return grid


def _number(key: str, text: str) -> float | int:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--sweep {key}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"--sweep {key}: {text!r} is not a finite number")
    return value


def combinations(base: Settings, grid: Mapping[str, Sequence[float | int]]) -> list[Combination]:
    """Every combination of the grid's values, in grid order, each validated."""
    size = math.prod(len(values) for values in grid.values())
    if size > MAX_COMBINATIONS:
        raise ConfigError(f"--sweep: {size} combinations, at most {MAX_COMBINATIONS}")
    keys = list(grid)
    combos = []
    for values in itertools.product(*(grid[k] for k in keys)):
        params: Params = dict(zip(keys, values, strict=True))
        combos.append(Combination(params, with_overrides(base, params)))
    return combos


# --------------------------------------------------------------------------- running the grid

# The prepared candles a forked worker reads: set by the pool's initializer. With the fork start
# method the initializer's arguments are inherited, not pickled.
_SHARED: tuple[list[SymbolPrep], int, int, int | None] | None = None


# A worker's computed trades, by [trade] settings: combinations differing only in other keys share them.
_EXITS: dict[TradeSettings, ExitCache] = {}


def _install(preps: list[SymbolPrep], start_ms: int, end_ms: int, split_ms: int | None) -> None:
    global _SHARED
    _SHARED = (preps, start_ms, end_ms, split_ms)
    _EXITS.clear()


def _uninstall() -> None:
    global _SHARED
    _SHARED = None
    _EXITS.clear()


def _evaluate(settings: Settings) -> dict[str, Any]:
    assert _SHARED is not None, "the worker was not initialised"
    preps, start_ms, end_ms, split_ms = _SHARED
    trades, _ = simulate(preps, settings, _EXITS.setdefault(settings.trade, {}))
    figures: dict[str, Any] = {
        "totals": totals(trades, start_ms, end_ms),
        "in_sample": None,
        "out_of_sample": None,
    }
    if split_ms is not None:
        inside = [t for t in trades if t.signal_time < split_ms]
        outside = [t for t in trades if t.signal_time >= split_ms]
        figures["in_sample"] = totals(inside, start_ms, split_ms)
        figures["out_of_sample"] = totals(outside, split_ms, end_ms)
    return figures


def split_point(start_ms: int, end_ms: int, fraction: float) -> int:
    """The in-sample part's end: ``fraction`` of the range, on a minute boundary."""
    at = start_ms + int((end_ms - start_ms) * fraction)
    return at - at % 60_000


def sweep_candles(
    candles: Iterable[SymbolCandles],
    combos: Sequence[Combination],
    start_ms: int | None = None,
    end_ms: int | None = None,
    split: float | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """The grid over already loaded candles (each read once): the contract's ``--sweep`` JSON object,
    best pnl first, with the range covered added."""
    began = time.perf_counter()
    if not combos:
        raise ConfigError("--sweep: no combination to run")
    every = [c.settings for c in combos]
    loosest = Loosest.of(s.surge for s in every)
    hold = max(max_hold_ms(s.trade) for s in every)
    preps: list[SymbolPrep] = []
    for symbol_candles in candles:
        prep = prepare(symbol_candles, loosest, hold, start_ms, end_ms)
        if prep is not None:
            preps.append(prep)
    if not preps:
        raise NoHistory("no candles stored for that range: run `surge history download` first")
    start = min(p.first_ms for p in preps) if start_ms is None else start_ms
    end = max(p.last_ms for p in preps) + 60_000 if end_ms is None else end_ms
    split_ms = None if split is None else split_point(start, end, split)
    figures = _run_grid(preps, every, (start, end, split_ms), workers)
    rows = [{"params": dict(c.params), **f} for c, f in zip(combos, figures, strict=True)]
    rows.sort(key=lambda r: -r["totals"]["pnl"])  # stable: equal pnl keeps the grid's order
    return {
        "combinations": rows,
        "elapsed_s": round(time.perf_counter() - began, 3),
        "from": start,
        "to": end,
        "symbols": len(preps),
        "candles": sum(p.candles for p in preps),
        "split": split_ms,
    }


def _run_grid(
    preps: list[SymbolPrep],
    every: list[Settings],
    span: tuple[int, int, int | None],
    workers: int | None,
) -> list[dict[str, Any]]:
    """Each combination's figures, in grid order: on forked workers when there is more than one CPU
    and one combination (and the platform forks), else here."""
    count = min(workers or os.cpu_count() or 1, len(every))
    if count <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        _install(preps, *span)
        try:
            return [_evaluate(s) for s in every]
        finally:
            _uninstall()
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        count, mp_context=context, initializer=_install, initargs=(preps, *span)
    ) as pool:
        return list(pool.map(_evaluate, every, chunksize=max(1, len(every) // (count * 4))))


def run_sweep(
    store: HistoryStore,
    combos: Sequence[Combination],
    start_ms: int | None = None,
    end_ms: int | None = None,
    symbols: Sequence[str] | None = None,
    split: float | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The grid over the stored candles (loaded once, symbol by symbol, before the workers fork)."""
    return sweep_candles(
        load(store, symbols, start_ms, end_ms, progress), combos, start_ms, end_ms, split, workers
    )
