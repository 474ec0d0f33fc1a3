#!/usr/bin/env python3
"""Benchmark surge's MultiplexedKlineManager against the simulator; prints ONE JSON object.

Why: surge's stream must lead what users would otherwise pick (unicorn-binance-websocket-api,
binance-futures-connector, python-binance, ccxt.pro) on every column, measured on this machine
against a fake Binance over loopback. The simulator runs in its own process (this script re-runs
itself with ``--child-sim``), driven through stdin commands, so it never shares our GIL.

Keys (targets in brackets):
  all_streams_s             start() with 1,062 subscriptions -> every stream delivered      [<= 1 s]
  latency_p50_ms / p99_ms   E -> callback at Binance cadence, 1,062 streams (~4,250 ev/s)   [p99 <= 3 ms]
                            (each connection pushes its streams every 250 ms at its own phase, as
                            connections on different Binance edge servers would)
  aligned_latency_*         the same with every connection pushing in the same instant: one burst of
                            1,062 events every 250 ms, the worst case (reported, no target)
  cpu_s_per_10k_events      this process's CPU at that cadence                             [<= 0.25]
  events_per_s              one connection, simulator firehose, parsed into Kline          [>= 100,000]
  change_apply_s            subscribe 100 new streams while 1,000 flow                     [<= 1 s]
  reconnects_during_change  [0];  events_lost_on_unchanged  [0]
  threads_peak              threads the manager added during the 25,488-call burst     [<= connections + 2]
  seed_threads              the same burst through the logic of the program surge replaced, the "seed"
                            (re-implemented below, not in the package): one thread per call, each
                            closing and reopening every connection
  seed_guarded_threads / seed_guarded_lost_streams   the old program's "in progress" flag fix: fewer threads,
                            but subscriptions made while a resubscribe runs are lost
  rss_mb / rss_growth_pct   RSS at the end of the soak at 1,062 streams, growth over its second half
                            [10-minute soak: --soak-s 600; growth <= 5 %]

Usage: python scripts/bench_stream.py [--soak-s 60] [--firehose-s 4]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PUSH_MS = 250  # Binance's (and the simulator's) kline push interval


# --------------------------------------------------------------------------- simulator process


def _child_sim() -> None:
    """Run the simulated WebSocket server; commands on stdin, one JSON reply line each."""
    from surge.sim.market import Market
    from surge.sim.ws import WsServer

    # every stream pushing every 250 ms (the simulator's old default): figures stay comparable
    server = WsServer(Market(531, 1, surge_interval_s=None), "127.0.0.1", 0, push_mode="every_tick")
    server.start()
    print(server.url, flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "phases":
            server.set_push_phases(cmd[1])
            print("{}", flush=True)
        elif cmd[0] == "firehose":
            server.firehose(cmd[1] == "1")
            print("{}", flush=True)
        elif cmd[0] == "stats":
            stats = server.stats()
            out = {
                "subscriptions": stats["subscriptions"],
                "disconnects": stats["disconnects"],
                "max_incoming_per_s": stats["max_incoming_per_s"],
            }
            print(json.dumps(out), flush=True)
    server.stop()


class SimProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child-sim"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("ws://"):
            raise RuntimeError("simulator did not start")

    def cmd(self, line: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --------------------------------------------------------------------------- helpers


class Histogram:
    """Latency histogram with fixed 10 µs bins: constant memory during a 10-minute soak."""

    BIN_MS = 0.01

    def __init__(self, max_ms: float = 5000.0) -> None:
        self.bins = [0] * (int(max_ms / self.BIN_MS) + 1)
        self.n = 0

    def add(self, ms: float) -> None:
        i = int(ms / self.BIN_MS) if ms > 0 else 0
        self.bins[min(i, len(self.bins) - 1)] += 1
        self.n += 1

    def percentile(self, p: float) -> float | None:
        if not self.n:
            return None
        rank = math.ceil(self.n * p / 100.0)
        acc = 0
        for i, c in enumerate(self.bins):
            acc += c
            if acc >= rank:
                return round((i + 1) * self.BIN_MS, 3)
        return None


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.002)
    return pred()


def stream_of(k: Any) -> str:
    return f"{k.symbol.lower()}@kline_{k.interval}"


def symbols() -> list[str]:
    from surge.sim.market import Market

    return Market(531, 1, surge_interval_s=None).tradable_symbols()


# --------------------------------------------------------------------------- measurements


def bench_cadence(sim: SimProcess, syms: list[str], soak_s: float) -> dict[str, Any]:
    """all_streams_s, then latency / CPU / RSS at Binance cadence over the soak."""
    from surge.stream import MultiplexedKlineManager

    hist = Histogram()
    seen: set[str] = set()
    state = {"track": True, "events": 0}

    def cb(k: Any) -> None:
        hist.add(time.time() * 1000.0 - k.event_time)
        state["events"] += 1
        if state["track"]:
            seen.add(stream_of(k))

    mgr = MultiplexedKlineManager(cb, ws_url=sim.url)
    for s in syms:
        mgr.subscribe_kline(s, "1m")
        mgr.subscribe_kline(s, "4h")
    t0 = time.monotonic()
    mgr.start()
    ok = wait_until(lambda: len(seen) >= 2 * len(syms), 30)
    all_streams_s = time.monotonic() - t0 if ok else None
    state["track"] = False
    time.sleep(2.0)  # settle: connection set-up is not part of the steady state
    hist.__init__()
    ev0, cpu0, w0 = state["events"], time.process_time(), time.monotonic()
    half_rss = None
    half_at = w0 + soak_s / 2
    end_at = w0 + soak_s
    while time.monotonic() < end_at:
        time.sleep(min(1.0, max(0.0, end_at - time.monotonic())))
        if half_rss is None and time.monotonic() >= half_at:
            half_rss = rss_mb()
    ev1, cpu1, w1 = state["events"], time.process_time(), time.monotonic()
    end_rss = rss_mb()
    stats = mgr.stats()
    mgr.stop()
    events = ev1 - ev0
    return {
        "all_streams_s": round(all_streams_s, 3) if all_streams_s is not None else None,
        "connections": stats["connections"],
        "cadence_events_per_s": round(events / (w1 - w0)),
        "latency_p50_ms": hist.percentile(50),
        "latency_p99_ms": hist.percentile(99),
        "latency_max_ms": hist.percentile(100),
        "cpu_s_per_10k_events": round((cpu1 - cpu0) / events * 10_000, 4) if events else None,
        "soak_s": soak_s,
        "rss_mb": round(end_rss, 1),
        "rss_growth_pct": round((end_rss - half_rss) / half_rss * 100.0, 2) if half_rss else None,
        "cadence_reconnects": stats["reconnects"],
    }


def bench_change(sim: SimProcess, syms: list[str]) -> dict[str, Any]:
    """Subscribe 100 new streams while 1,000 flow: time to apply, reconnects, events lost."""
    from surge.stream import MultiplexedKlineManager

    lock = threading.Lock()
    times: dict[str, list[int]] = {}
    arrived: dict[str, float] = {}

    def cb(k: Any) -> None:
        name = stream_of(k)
        with lock:
            times.setdefault(name, []).append(k.event_time)
            if name not in arrived:
                arrived[name] = time.monotonic()

    mgr = MultiplexedKlineManager(cb, ws_url=sim.url)
    base = [(s, i) for s in syms[:500] for i in ("1m", "4h")]
    new = [(s, "5m") for s in syms[:100]]
    for s, i in base:
        mgr.subscribe_kline(s, i)
    mgr.start()
    base_names = {f"{s.lower()}@kline_{i}" for s, i in base}
    new_names = {f"{s.lower()}@kline_{i}" for s, i in new}
    wait_until(lambda: base_names <= set(arrived), 30)
    time.sleep(1.5)
    reconnects0 = mgr.stats()["reconnects"]
    start_e = int(time.time() * 1000)
    t0 = time.monotonic()
    for s, i in new:
        mgr.subscribe_kline(s, i)
    ok = wait_until(lambda: new_names <= set(arrived), 30)
    change_apply_s = time.monotonic() - t0 if ok else None
    time.sleep(1.5)
    end_e = int(time.time() * 1000)
    reconnects = mgr.stats()["reconnects"] - reconnects0
    mgr.stop()
    # Unchanged streams, from 1 s before the change to the end: every push interval must have an event.
    lost = 0
    with lock:
        for name in base_names:
            window = [e for e in times.get(name, []) if start_e - 1000 <= e <= end_e]
            if len(window) < 2:
                lost += 1
                continue
            expected = round((window[-1] - window[0]) / PUSH_MS) + 1
            lost += max(0, expected - len(window))
    return {
        "change_apply_s": round(change_apply_s, 3) if change_apply_s is not None else None,
        "reconnects_during_change": reconnects,
        "events_lost_on_unchanged": lost,
    }


def bench_burst(sim: SimProcess, syms: list[str]) -> dict[str, Any]:
    """8 threads, 531 symbols x {1m, 4h} three times over = 25,488 calls on a started manager."""
    from surge.stream import MultiplexedKlineManager

    seen: set[str] = set()
    mgr = MultiplexedKlineManager(lambda k: seen.add(stream_of(k)), ws_url=sim.url)
    calls = [(s, i) for _ in range(3) for s in syms for i in ("1m", "4h")]  # x 8 threads = 25,488
    go = threading.Event()
    done = threading.Event()

    def caller() -> None:
        go.wait()
        for s, i in calls:
            mgr.subscribe_kline(s, i)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    known = set(threading.enumerate())
    peak = [0]

    def sample() -> None:  # threads that did not exist before: the manager's
        while not done.wait(0.001):
            peak[0] = max(peak[0], sum(1 for t in threading.enumerate() if t not in known))

    sampler = threading.Thread(target=sample)
    known.add(sampler)
    sampler.start()
    t0 = time.monotonic()
    mgr.start()
    go.set()
    for t in threads:
        t.join()
    calls_s = time.monotonic() - t0
    ok = wait_until(lambda: len(seen) >= 2 * len(syms), 30)
    burst_all_s = time.monotonic() - t0 if ok else None
    time.sleep(0.5)
    done.set()
    sampler.join()
    stats = mgr.stats()
    srv = sim.cmd("stats")
    server_set = set().union(*(set(v) for v in srv["subscriptions"].values()))
    mgr_set = mgr.subscriptions()
    mgr.stop()
    return {
        "burst_calls": 8 * len(calls),
        "burst_calls_s": round(calls_s, 3),
        "threads_peak": peak[0],
        "burst_connections": stats["connections"],
        "burst_all_streams_s": round(burst_all_s, 3) if burst_all_s is not None else None,
        "burst_requests_sent": stats["requests_sent"],
        "burst_server_set_equals_subscriptions": server_set == mgr_set,
        "max_incoming_msgs_per_s": max(srv["max_incoming_per_s"].values(), default=0),
    }


def bench_firehose(sim: SimProcess, syms: list[str], seconds: float) -> dict[str, Any]:
    """Events parsed into Kline and counted, one connection, simulator pushing flat out."""
    from surge.stream import MultiplexedKlineManager

    count = [0]

    def cb(k: Any) -> None:
        count[0] += 1

    mgr = MultiplexedKlineManager(cb, ws_url=sim.url)
    for s in syms[:200]:
        mgr.subscribe_kline(s, "1m")
    mgr.start()
    wait_until(lambda: count[0] > 0, 30)
    sim.cmd("firehose 1")
    time.sleep(1.0)
    c0, w0, cpu0 = count[0], time.perf_counter(), time.process_time()
    time.sleep(seconds)
    c1, w1, cpu1 = count[0], time.perf_counter(), time.process_time()
    sim.cmd("firehose 0")
    stats = mgr.stats()
    mgr.stop()
    return {
        "events_per_s": round((c1 - c0) / (w1 - w0)),
        "firehose_cpu_util": round((cpu1 - cpu0) / (w1 - w0), 2),
        "firehose_connections": stats["connections"],
        "firehose_dropped_frames": stats["dropped_frames"],
    }


# ------------------------------------------------------------------ the replaced program, re-implemented


class SeedManager:
    """The replaced program's logic, for comparison only (never in the package).

    Every ``subscribe_kline`` triggers a resubscribe on a new thread; a resubscribe snapshots the
    wanted set, closes every connection and reopens ``ceil(n / 200)`` of them, each a
    ``WebSocketApp.run_forever(ping_interval=...)``-style pair of threads (reader + pinger), here
    stand-ins that just wait to be closed; ``connect_s`` models the reconnect round trip. With
    ``guarded`` the spawn is behind the old program's "in progress" flag (checked without a lock, cleared by
    the runner after applying its snapshot).
    """

    def __init__(self, guarded: bool, connect_s: float, cap: int) -> None:
        self.guarded = guarded
        self.connect_s = connect_s
        self.cap = cap
        self.wanted: set[str] = set()
        self.applied: set[str] = set()
        self.in_progress = False
        self.conns: list[threading.Event] = []
        self.conn_lock = threading.Lock()
        self.peak = 0
        self.live = 0
        self.live_lock = threading.Lock()
        self.capped = False
        self.closed = False
        self.workers: list[threading.Thread] = []

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        with self.live_lock:
            if (
                self.live >= self.cap
            ):  # the replaced program died at 3,686 threads; we stop short of the machine's limit
                self.capped = True
                return
            self.live += 1
            self.peak = max(self.peak, self.live)

        def run() -> None:
            try:
                target(*args)
            finally:
                with self.live_lock:
                    self.live -= 1

        t = threading.Thread(target=run, daemon=True)
        self.workers.append(t)
        t.start()

    def subscribe_kline(self, symbol: str, interval: str) -> None:
        self.wanted.add(f"{symbol.lower()}@kline_{interval}")
        if self.guarded:
            if self.in_progress:
                return
            self.in_progress = True
        self._spawn(self._resubscribe)

    def _resubscribe(self) -> None:
        snapshot = set(self.wanted)
        with self.conn_lock:
            old, self.conns = self.conns, []
        for ev in old:
            ev.set()
        time.sleep(self.connect_s)
        for _ in range(math.ceil(len(snapshot) / 200)):
            ev = threading.Event()
            with self.conn_lock:
                if self.closed:
                    return
                self.conns.append(ev)
            self._spawn(ev.wait, 30.0)  # reader
            self._spawn(ev.wait, 30.0)  # ping thread
        self.applied = snapshot
        self.in_progress = False

    def close(self) -> None:
        with self.conn_lock:
            self.closed = True
            for ev in self.conns:
                ev.set()


def _seed_caller(seed: SeedManager, calls: list[tuple[str, str]], n: int) -> None:
    order = list(calls)
    random.Random(n).shuffle(order)
    for s, i in order:
        seed.subscribe_kline(s, i)


def bench_seed(syms: list[str], connect_s: float = 0.3, cap: int = 4000) -> dict[str, Any]:
    out: dict[str, Any] = {}
    old_stack = threading.stack_size()
    threading.stack_size(256 * 1024)  # thousands of threads: keep their virtual memory small
    try:
        for guarded in (False, True):
            seed = SeedManager(guarded, connect_s, cap)
            calls = [(s, i) for _ in range(3) for s in syms for i in ("1m", "4h")]
            callers = [threading.Thread(target=_seed_caller, args=(seed, calls, n)) for n in range(8)]
            for t in callers:
                t.start()
            for t in callers:
                t.join()
            wait_until(lambda seed=seed: not seed.in_progress, 10)
            time.sleep(connect_s * 2)
            peak = seed.peak
            lost = len(seed.wanted - seed.applied)
            seed.close()
            deadline = time.monotonic() + 30
            for t in list(seed.workers):
                t.join(max(0.0, deadline - time.monotonic()))
            if guarded:
                out["seed_guarded_threads"] = max(peak, 0)
                out["seed_guarded_lost_streams"] = lost
            else:
                out["seed_threads"] = max(peak, 0)
                out["seed_threads_capped_at"] = cap if seed.capped else None
    finally:
        threading.stack_size(old_stack)
    return out


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--soak-s",
        type=float,
        default=60.0,
        help="cadence soak length (600 = the 10-minute soak of the targets)",
    )
    ap.add_argument("--firehose-s", type=float, default=4.0)
    ap.add_argument(
        "--aligned-s",
        type=float,
        default=20.0,
        help="latency soak with every connection pushing in the same instant (worst case)",
    )
    ap.add_argument("--child-sim", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_sim:
        _child_sim()
        return 0
    syms = symbols()
    result: dict[str, Any] = {"streams": 2 * len(syms), "cpus": os.cpu_count()}
    sim = SimProcess()
    try:
        result.update(bench_firehose(sim, syms, args.firehose_s))
        result.update(bench_burst(sim, syms))
        result.update(bench_change(sim, syms))
        result.update(bench_cadence(sim, syms, args.soak_s))
        # the worst case next to it: every connection's burst in the same instant (1,062 events at once)
        sim.cmd("phases aligned")
        aligned = bench_cadence(sim, syms, args.aligned_s)
        result["push_phases"] = "per_connection (aligned below)"
        for key in ("latency_p50_ms", "latency_p99_ms", "latency_max_ms"):
            result[f"aligned_{key}"] = aligned[key]
    finally:
        sim.close()
    result.update(bench_seed(syms))
    targets = {
        "events_per_s": result.get("events_per_s", 0) >= 100_000,
        "all_streams_s": (result.get("all_streams_s") or 99) <= 1.0,
        "latency_p99_ms": (result.get("latency_p99_ms") or 99) <= 3.0,
        "cpu_s_per_10k_events": (result.get("cpu_s_per_10k_events") or 99) <= 0.25,
        "change_apply_s": (result.get("change_apply_s") or 99) <= 1.0,
        "reconnects_during_change": result.get("reconnects_during_change") == 0,
        "events_lost_on_unchanged": result.get("events_lost_on_unchanged") == 0,
        "threads_peak": result.get("threads_peak", 99) <= result.get("burst_connections", 0) + 2,
        "rss_growth_pct": (result.get("rss_growth_pct") or 0) <= 5.0,
    }
    result["targets_met"] = targets
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
