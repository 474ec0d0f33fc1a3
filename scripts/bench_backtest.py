#!/usr/bin/env python3
"""Benchmark of the backtest; prints ONE JSON object on stdout, progress on stderr.

It writes ``--days`` x ``--symbols`` of 1m candles (30 x 531: 22.9 M) in the history store's format
(``HistoryStore.write``: one Arrow file per symbol and month) into a temporary directory, then
measures, each phase in a fresh child process so that its ``peak_rss_mb`` (``getrusage`` maxrss of
that child, imports included) belongs to that phase alone:

* ``backtest``: ``surge.backtest.engine.run_backtest`` end to end over the whole store, loading
  included: ``candles``, ``seconds``, ``candles_per_s``, ``peak_rss_mb``, ``trades``.
  Targets: >= 2,000,000 candles/s and peak RSS <= 600 MB on 2 cores.
* ``reference`` (the baseline, same run, same candles): the candles of the first
  ``--reference-symbols`` symbols read from the same store, turned into closed ``Kline`` objects and
  fed one by one through the live ``SurgeRule.on_kline``, as a backtest that replays the live path
  would. ``candles_per_s`` counts the rule alone (the Kline objects are built beforehand,
  ``build_s``), so it flatters the reference: it has no 4h filter and no exits either.
* ``sweep``: a 10 x 10 grid over ``surge.min_change_pct`` and ``surge.volume_multiple`` (100
  combinations) through ``surge.backtest.sweep``: ``seconds``, ``combinations``, and the peak RSS of
  the sweep's main process and of its largest worker. Target: <= 300 s.

The candles are seeded random walks (per-symbol volatility, price level and liquidity) with prices on
a tick of 5 significant digits, a daily volume cycle, bursts of volume without a price move, quiet
zero-volume minutes on illiquid symbols, and about two planted surges per symbol and day (a +3..9 %
candle on 4..20x the volume, which then fades: given back on average, +-3 %) so that the backtest
trades. About a fifth of the symbols trade too little to pass the default 4h filter (quote volume
>= 5 M per 4h), more in their quiet hours, and the 4h moves of the volatile ones leave the
-5..+10 % band at times: the filter matters, as on the real market.

    python scripts/bench_backtest.py                                  # full size: several minutes
    python scripts/bench_backtest.py --days 1 --symbols 10 --skip-sweep   # seconds
    python scripts/bench_backtest.py --keep /tmp/bt-data              # keep (and reuse) the candles
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MINUTE_MS = 60_000
DAY_MS = 1_440 * MINUTE_MS
START_MS = 1_790_812_800_000  # 2026-10-01 00:00 UTC: 30 days stay inside one month file per symbol
TARGETS = {"candles_per_s": 2_000_000, "peak_rss_mb": 600, "sweep_s": 300}
SWEEP_MIN_CHANGE = [2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0]
SWEEP_VOLUME_MULTIPLE = [2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0]
CHILD_TIMEOUT_S = 3_600


def say(msg: str) -> None:
    print(f"bench_backtest: {msg}", file=sys.stderr, flush=True)


def symbol_name(index: int) -> str:
    return f"B{index:03d}USDT"


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set of this process (or of its largest finished child), MB (Linux: kB units)."""
    return round(resource.getrusage(who).ru_maxrss / 1024.0, 1)


# --------------------------------------------------------------------------- the candles


def _held(minutes: int, starts: np.ndarray, lengths: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sum of ``values[i]`` over ``[starts[i], starts[i] + lengths[i])`` at each minute, vectorised."""
    marks = np.zeros(minutes + 1)
    np.add.at(marks, starts, values)
    np.add.at(marks, np.minimum(starts + lengths, minutes), -values)
    return np.cumsum(marks)[:minutes]


def generate_symbol(index: int, minutes: int, seed: int) -> dict[str, np.ndarray]:
    """One symbol's candles from ``START_MS``: the same ``(seed, index)`` gives the same candles."""
    rng = np.random.default_rng([seed, index])
    price0 = 10.0 ** rng.uniform(-2.0, 4.7)  # 0.01 .. 50,000 USDT
    sigma = rng.uniform(0.0008, 0.003)  # per-minute log-return deviation
    base_quote = 10.0 ** rng.uniform(4.0, 5.7)  # mean quote volume per minute: 10 k .. 500 k USDT
    minute = np.arange(minutes)

    # volume: a daily cycle, log-normal noise, and bursts (x2..5 for 5..30 minutes, ~4 a day)
    cycle = 1.0 + 0.5 * np.sin(2.0 * np.pi * (minute % 1_440) / 1_440.0 + rng.uniform(0, 2 * np.pi))
    bursts = rng.poisson(minutes / 360.0)
    burst = np.exp(
        _held(
            minutes,
            rng.integers(0, minutes, bursts),
            rng.integers(5, 31, bursts),
            np.log(rng.uniform(2.0, 5.0, bursts)),
        )
    )
    quote = base_quote * cycle * burst * rng.lognormal(-0.18, 0.6, minutes)
    returns = rng.standard_normal(minutes) * sigma * np.sqrt(burst)

    # planted surges (~2 a day): a +3..9 % candle on 4..20x the volume; over the next 10..60 minutes
    # the price gives the jump back on average (a pump that fades), +-3 % either way: some trades
    # reach the take profit, more the stop, so the price level does not ratchet up surge by surge
    surges = rng.poisson(minutes / 720.0)
    at = rng.integers(min(30, minutes - 1), minutes, surges)
    jump = np.log1p(rng.uniform(0.03, 0.09, surges))
    returns[at] = jump
    quote[at] *= rng.uniform(4.0, 20.0, surges)
    fade = rng.integers(10, 61, surges)
    after = rng.normal(-jump, 0.03) / fade
    returns += _held(minutes, np.minimum(at + 1, minutes), fade, after)

    # an illiquid symbol has quiet minutes: no trade, O=H=L=C=previous close, volume 0
    quiet = rng.random(minutes) < (0.03 if base_quote < 30_000 else 0.0)
    quiet[at] = False
    returns[quiet] = 0.0
    quote[quiet] = 0.0

    # prices on a tick of 5 significant digits and quantities on a step, as the exchange lists them
    tick_digits = 4 - int(np.floor(np.log10(price0)))
    step_digits = max(0, int(np.ceil(np.log10(price0))))
    close = np.round(price0 * np.exp(np.cumsum(returns)), tick_digits)
    open_ = np.concatenate(([round(price0, tick_digits)], close[:-1]))
    wick = sigma * 0.6
    high = np.round(
        np.maximum(open_, close) * np.exp(np.abs(rng.standard_normal(minutes)) * wick), tick_digits
    )
    low = np.round(
        np.minimum(open_, close) * np.exp(-np.abs(rng.standard_normal(minutes)) * wick), tick_digits
    )
    high[quiet] = low[quiet] = open_[quiet]
    typical = (high + low + close) / 3.0
    volume = np.round(quote / typical, step_digits)
    quote = np.round(volume * typical, 4)
    trades = np.where(volume > 0, np.maximum(1, np.rint(quote / rng.uniform(200.0, 2_000.0))), 0)
    return {
        "open_time": START_MS + minute.astype(np.int64) * MINUTE_MS,
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": volume,
        "quote_volume": quote,
        "trades": trades.astype(np.int64),
    }


def write_history(root: Path, days: int, symbols: int, seed: int) -> dict[str, Any]:
    """The candles into ``root`` (reused when a marker says they are these very candles)."""
    from surge.history.store import HistoryStore, SymbolCandles

    marker = root / "bench_backtest.json"
    wanted = {"days": days, "symbols": symbols, "seed": seed, "start_ms": START_MS}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        say(f"reusing the candles in {root}")
        return {"generate_s": None, "reused": True}
    store = HistoryStore(root)
    minutes = days * 1_440
    began = time.perf_counter()
    for i in range(symbols):
        columns = generate_symbol(i, minutes, seed)
        store.write(symbol_name(i), SymbolCandles(symbol_name(i), **columns))
        if (i + 1) % 50 == 0 or i + 1 == symbols:
            say(f"generated {i + 1}/{symbols} symbols ({(i + 1) * minutes:,} candles)")
    marker.write_text(json.dumps(wanted))
    return {"generate_s": round(time.perf_counter() - began, 2), "reused": False}


def store_mb(root: Path) -> float:
    return round(sum(p.stat().st_size for p in root.rglob("*.arrow")) / 1e6, 1)


# --------------------------------------------------------------------------- the phases (children)


def phase_backtest(root: Path, days: int) -> dict[str, Any]:
    from surge.backtest.engine import run_backtest
    from surge.config import Settings
    from surge.history.store import HistoryStore

    settings = Settings()
    imports_mb = peak_rss_mb()
    began = time.perf_counter()
    result = run_backtest(HistoryStore(root), settings, START_MS, START_MS + days * DAY_MS)
    seconds = time.perf_counter() - began
    return {
        "candles": int(result.candles),
        "seconds": round(seconds, 3),
        "candles_per_s": round(result.candles / seconds) if seconds > 0 else None,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_imports_mb": imports_mb,
        "trades": len(result.trades),
    }


def phase_reference(root: Path, days: int, symbols: int) -> dict[str, Any]:
    from surge.config import Settings
    from surge.history.store import HistoryStore
    from surge.models import Kline
    from surge.strategy import SurgeRule

    store = HistoryStore(root)
    rule = SurgeRule(Settings().surge)
    on_kline = rule.on_kline
    candles = signals = 0
    build_s = feed_s = 0.0
    for i in range(symbols):
        name = symbol_name(i)
        data = store.read(name, START_MS, START_MS + days * DAY_MS)
        began = time.perf_counter()
        klines = [
            Kline(name, "1m", t, t + MINUTE_MS - 1, o, h, lo, c, v, q, n, True)
            for t, o, h, lo, c, v, q, n in zip(
                data.open_time.tolist(),
                data.open.tolist(),
                data.high.tolist(),
                data.low.tolist(),
                data.close.tolist(),
                data.volume.tolist(),
                data.quote_volume.tolist(),
                data.trades.tolist(),
                strict=True,
            )
        ]
        fed = time.perf_counter()
        for k in klines:
            if on_kline(k) is not None:
                signals += 1
        feed_s += time.perf_counter() - fed
        build_s += fed - began
        candles += len(klines)
    return {
        "symbols": symbols,
        "candles": candles,
        "seconds": round(feed_s, 3),
        "candles_per_s": round(candles / feed_s) if feed_s > 0 else None,
        "build_s": round(build_s, 3),
        "candles_per_s_with_build": round(candles / (feed_s + build_s)) if feed_s + build_s > 0 else None,
        "signals": signals,
        "peak_rss_mb": peak_rss_mb(),
    }


def phase_sweep(root: Path, days: int) -> dict[str, Any]:
    from surge.backtest import sweep
    from surge.config import Settings
    from surge.history.store import HistoryStore

    grid = {"surge.min_change_pct": SWEEP_MIN_CHANGE, "surge.volume_multiple": SWEEP_VOLUME_MULTIPLE}
    combos = sweep.combinations(Settings(), grid)
    began = time.perf_counter()
    result = sweep.run_sweep(HistoryStore(root), combos, START_MS, START_MS + days * DAY_MS)
    seconds = time.perf_counter() - began
    ranked = result["combinations"]
    best = ranked[0] if ranked else None
    return {
        "seconds": round(seconds, 3),
        "combinations": len(ranked),
        "candles": result["candles"],
        "best": None if best is None else {"params": best["params"], "pnl": round(best["totals"]["pnl"], 2)},
        "grid": {key: len(values) for key, values in grid.items()},
        "peak_rss_mb": peak_rss_mb(),
        "workers_peak_rss_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
    }


def run_child(phase: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One phase in a fresh interpreter: its peak RSS is its own, not the generator's or another's."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--phase",
        phase,
        "--data",
        str(root),
        "--days",
        str(args.days),
        "--reference-symbols",
        str(min(args.reference_symbols, args.symbols)),
    ]
    say(f"{phase}: running")
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"bench_backtest: the {phase} phase took over {CHILD_TIMEOUT_S} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"bench_backtest: the {phase} phase failed (exit {done.returncode})")
    result: dict[str, Any] = json.loads(lines[-1])
    say(f"{phase}: {result}")
    return result


def child_main(args: argparse.Namespace) -> int:
    root = Path(args.data)
    if args.phase == "backtest":
        result = phase_backtest(root, args.days)
    elif args.phase == "reference":
        result = phase_reference(root, args.days, args.reference_symbols)
    else:
        result = phase_sweep(root, args.days)
    print(json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------- the run


def measure(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "days": args.days,
        "symbols": args.symbols,
        "candles": args.days * 1_440 * args.symbols,
        "seed": args.seed,
    }
    out.update(write_history(root, args.days, args.symbols, args.seed))
    out["store_mb"] = store_mb(root)
    backtest = out["backtest"] = run_child("backtest", root, args)
    met = {
        "candles_per_s>=2M": (backtest["candles_per_s"] or 0) >= TARGETS["candles_per_s"],
        "peak_rss_mb<=600": backtest["peak_rss_mb"] <= TARGETS["peak_rss_mb"],
    }
    if not args.skip_reference:
        reference = out["reference"] = run_child("reference", root, args)
        if reference["candles_per_s"] and backtest["candles_per_s"]:
            out["speedup_vs_reference"] = round(backtest["candles_per_s"] / reference["candles_per_s"], 1)
    if not args.skip_sweep:
        sweep = out["sweep"] = run_child("sweep", root, args)
        met["sweep_s<=300"] = sweep["seconds"] <= TARGETS["sweep_s"]
        met["sweep_combinations==100"] = sweep["combinations"] == 100
    out["targets"] = TARGETS
    out["targets_met"] = met
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    out["cpus"] = os.cpu_count()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--days", type=int, default=30, help="days of 1m candles (30)")
    ap.add_argument("--symbols", type=int, default=531, help="symbols (531)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--reference-symbols", type=int, default=20, help="symbols fed one by one through SurgeRule (20)"
    )
    ap.add_argument("--skip-reference", action="store_true", help="skip the one-by-one SurgeRule reference")
    ap.add_argument("--skip-sweep", action="store_true", help="skip the 100-combination sweep")
    ap.add_argument("--keep", metavar="DIR", help="write the candles here and keep them (reused next time)")
    ap.add_argument("--phase", choices=["backtest", "reference", "sweep"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.days < 1 or args.symbols < 1 or args.reference_symbols < 1:
        ap.error("--days, --symbols and --reference-symbols must be at least 1")
    if args.phase:
        return child_main(args)

    if args.keep:
        root = Path(args.keep)
        root.mkdir(parents=True, exist_ok=True)
        out = measure(root, args)
        out["data_dir"] = str(root)
    else:
        with tempfile.TemporaryDirectory(prefix="surge-bench-backtest-") as tmp:
            out = measure(Path(tmp), args)
    print(json.dumps(out))
    return 0 if all(out["targets_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
