#!/usr/bin/env python3
"""Benchmark the 4h filter scan against the simulated exchange; prints ONE JSON object on stdout.

What it measures, in one run, against a simulator whose market clock is frozen (so every scan sees
the same 4h window and the same prices, and results can be compared exactly):

* ``sequential_s``   workers=1, cold cache (the program this replaces: 78 s at 147 ms);
* ``parallel_s``     workers=3, cold cache; ``bound_s`` = ceil(n / 3) x latency, ``ratio`` =
  parallel_s / bound_s (target <= 1.05);
* ``warm_s``, ``warm_weight``  the same scan again with the cache of the cold run (the cron
  restart); targets: warm_s <= 0.1 x bound_s, warm_weight <= 10 % of ``cold_weight``, and
  ``warm_equals_cold`` (checked/passed/failed/errors identical to the cold scan at the same moment);
* ``batch_scheduled_s``  workers=3 with batches of ``batch_size`` handed whole to a worker (the
  seed's scheduling), against ``batch_bound_s``, the bound that scheduling allows;
* ``max_inflight`` and ``max_weight_per_min`` as the simulator observed them (<= workers, <= budget).

The simulator runs in its own process by default (``surge sim``), so it does not share a GIL
with the client; ``--in-process`` runs it in this process instead.

    python scripts/bench_filter4h.py                       # 531 symbols, 147 ms: about 2.5 minutes
    python scripts/bench_filter4h.py --symbols 60 --latency-ms 20 --skip-sequential   # seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import requests

from surge.exchange.ratelimit import WeightLimiter
from surge.exchange.rest import BinanceRest
from surge.filter4h import Filter4h, Rule4h, ScanProgress, ScanResult
from surge.store import Store


class SimHandle:
    """The simulator, in another process (driven over /_sim/...) or in this one."""

    def __init__(self, symbols: int, latency_ms: float, seed: int, in_process: bool) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.sim: Any = None
        if in_process:
            from surge.sim import Simulator

            self.sim = Simulator(n_symbols=symbols, seed=seed, latency_ms=latency_ms, surge_interval_s=None)
            self.sim.start()
            self.url = self.sim.rest_url
        else:
            cmd = [
                sys.executable,
                "-m",
                "surge",
                "sim",
                "--symbols",
                str(symbols),
                "--latency-ms",
                str(latency_ms),
                "--seed",
                str(seed),
                "--surge-every",
                "0",
            ]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().split()
            if len(line) < 2 or line[0] != "REST":
                self.stop()
                raise SystemExit(f"bench: `surge sim` did not start (got {line!r})")
            self.url = line[1]
        self.http = requests.Session()

    def control(self, name: str, **params: Any) -> Any:
        r = self.http.get(f"{self.url}/_sim/{name}", params=params, timeout=60)
        r.raise_for_status()
        return r.json()["result"]

    def stop(self) -> None:
        self.http.close()
        if self.sim is not None:
            self.sim.stop()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def batch_bound(n: int, batch_size: int, workers: int, latency_s: float) -> float:
    """Round-trip bound when whole batches go to workers in order (each to the first free worker)."""
    loads = [0] * workers
    for start in range(0, n, batch_size):
        i = loads.index(min(loads))
        loads[i] += min(batch_size, n - start)
    return max(loads) * latency_s


def run_scan(
    sim: SimHandle,
    store_path: Path | None,
    workers: int,
    scheduling: str = "symbol",
    batch_size: int = 100,
    show: bool = False,
) -> tuple[ScanResult, dict[str, Any]]:
    sim.control("reset")
    progress = None
    if show:

        def progress(p: ScanProgress) -> None:
            if p.done == p.total or p.done % 25 == 0:
                print(
                    f"\r  {p.done}/{p.total} batch {p.batch}/{p.batches}, {p.passed} passed, "
                    f"{p.requests} requests",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )

    store = Store(store_path) if store_path is not None else None
    try:
        with BinanceRest(sim.url, pool_size=workers, limiter=WeightLimiter()) as rest:
            scanner = Filter4h(
                rest,
                Rule4h(),
                store=store,
                workers=workers,
                batch_size=batch_size,
                progress=progress,
                scheduling=scheduling,
            )  # type: ignore[arg-type]
            result = scanner.scan()
    finally:
        if store is not None:
            store.close()
    if show:
        print(file=sys.stderr)
    return result, sim.control("stats")


def outcome(r: ScanResult) -> dict[str, Any]:
    j = r.to_json()
    return {k: j[k] for k in ("checked", "passed", "failed", "errors")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--symbols", type=int, default=531, help="USDT perpetuals in the simulator (531)")
    ap.add_argument("--latency-ms", type=float, default=147.0, help="simulated round trip per request (147)")
    ap.add_argument("--workers", type=int, default=3, help="parallel workers of the cold/warm scans (3)")
    ap.add_argument("--batch-size", type=int, default=100, help="batch size of the batch-scheduled run (100)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--skip-sequential", action="store_true", help="skip the workers=1 run (saves n x latency)"
    )
    ap.add_argument("--skip-batch", action="store_true", help="skip the batch-scheduling run")
    ap.add_argument("--in-process", action="store_true", help="run the simulator in this process")
    ap.add_argument("--progress", action="store_true", help="progress lines on stderr")
    args = ap.parse_args()

    latency = args.latency_ms / 1000.0
    sim = SimHandle(args.symbols, args.latency_ms, args.seed, args.in_process)
    out: dict[str, Any] = {
        "symbols": args.symbols,
        "latency_ms": args.latency_ms,
        "workers": args.workers,
        "simulator": "in-process" if args.in_process else "subprocess",
    }
    max_inflight: dict[str, int] = {}
    max_weight = 0
    try:
        sim.control("freeze")
        # a realistic mix: every 7th symbol passes, the rest fail by change, volume or both
        tradable = sim.control("tradable")
        sim.control("arrange_4h", passing=",".join(tradable[::7]))
        out["arranged_passing"] = len(tradable[::7])
        with tempfile.TemporaryDirectory(prefix="surge-bench-") as tmp:
            tmpdir = Path(tmp)
            n = args.symbols
            bound = math.ceil(n / args.workers) * latency
            out["bound_s"] = round(bound, 3)

            if not args.skip_sequential:
                seq, st = run_scan(sim, tmpdir / "seq.db", 1, show=args.progress)
                out["sequential_s"] = round(seq.elapsed_s, 3)
                out["sequential_bound_s"] = round(n * latency, 3)
                max_inflight["sequential"] = st["max_in_flight"]
                max_weight = max(max_weight, st["max_weight_1m"])

            cold, st = run_scan(sim, tmpdir / "cache.db", args.workers, show=args.progress)
            out["parallel_s"] = round(cold.elapsed_s, 3)
            out["ratio"] = round(cold.elapsed_s / bound, 4) if bound else None
            out["cold_requests"] = cold.requests
            out["cold_weight"] = cold.weight
            max_inflight["parallel"] = st["max_in_flight"]
            out["connections"] = st["connections"]
            max_weight = max(max_weight, st["max_weight_1m"])

            warm, st = run_scan(sim, tmpdir / "cache.db", args.workers, show=args.progress)
            out["warm_s"] = round(warm.elapsed_s, 3)
            out["warm_requests"] = warm.requests
            out["warm_weight"] = warm.weight
            out["warm_from_cache"] = warm.from_cache
            out["warm_equals_cold"] = outcome(warm) == outcome(cold)
            out["warm_target_s"] = round(0.1 * bound, 3)
            max_inflight["warm"] = st["max_in_flight"]
            max_weight = max(max_weight, st["max_weight_1m"])

            if not args.skip_batch:
                bat, st = run_scan(
                    sim,
                    tmpdir / "batch.db",
                    args.workers,
                    scheduling="batch",
                    batch_size=args.batch_size,
                    show=args.progress,
                )
                out["batch_size"] = args.batch_size
                out["batch_scheduled_s"] = round(bat.elapsed_s, 3)
                out["batch_bound_s"] = round(batch_bound(n, args.batch_size, args.workers, latency), 3)
                out["batch_ratio"] = round(bat.elapsed_s / bound, 4) if bound else None
                out["batch_equals_cold"] = outcome(bat) == outcome(cold)
                max_inflight["batch"] = st["max_in_flight"]
                max_weight = max(max_weight, st["max_weight_1m"])

        out["checked"] = cold.checked
        out["passed"] = len(cold.passed)
        out["errors"] = len(cold.errors)
        out["max_inflight"] = max(max_inflight.values())
        out["max_inflight_by_run"] = max_inflight
        out["max_weight_per_min"] = max_weight
        out["weight_budget"] = WeightLimiter().budget
        out["targets_met"] = {
            "ratio<=1.05": out["ratio"] is not None and out["ratio"] <= 1.05,
            "warm_s<=0.1*bound_s": out["warm_s"] <= 0.1 * bound,
            "warm_weight<=10%cold": out["warm_weight"] <= 0.1 * out["cold_weight"],
            "warm_equals_cold": out["warm_equals_cold"],
            "max_inflight<=workers": out["max_inflight"] <= args.workers,
            "max_weight_per_min<=budget": max_weight <= out["weight_budget"],
        }
        out["load_avg_1m"] = round(os.getloadavg()[0], 2)
        out["cpus"] = os.cpu_count()
    finally:
        sim.stop()
    print(json.dumps(out))
    return 0 if all(out["targets_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
