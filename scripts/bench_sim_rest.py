#!/usr/bin/env python3
"""Benchmark the simulator's REST side; prints ONE JSON object on stdout.

Why: the bot's REST benchmarks (the 4h scan of 531 symbols) must measure the bot, not the
simulator, so the simulator's own rate at zero latency is reported next to them.

What it measures: ``threads`` client threads, each with its own ``requests.Session`` (keep-alive),
hit ``GET /fapi/v1/klines?symbol=S&interval=4h&limit=6`` (what the 4h filter sends) round-robin
over the tradable symbols for ``seconds``; the server runs in its own process (``--in-process`` to
share this one) with the weight limit lifted so no 429 interferes.

Keys: rest_requests_per_s (requests.Session clients), requests, errors, threads, seconds, p50_ms,
p99_ms, server_max_in_flight, server_connections, mode, and raw_socket_requests_per_s (the same
requests from minimal keep-alive socket clients: the server's own capacity).

Usage: python scripts/bench_sim_rest.py [--seconds 3] [--threads 3] [--url http://127.0.0.1:PORT]
``bench()`` is importable (scripts/bench_sim.py calls it).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NO_LIMIT = 1_000_000_000


def _serve(seed: int, symbols: int) -> None:
    """Child mode: a REST server on a free port; prints its URL, serves until stdin closes."""
    from surge.sim.market import Market
    from surge.sim.rest import RestServer

    server = RestServer(Market(symbols, seed, surge_interval_s=None), weight_limit=NO_LIMIT).start()
    print(server.url, flush=True)
    try:
        sys.stdin.read()  # the parent closes our stdin (or dies) -> stop
    finally:
        server.stop()


def _control(url: str, name: str, **params: Any) -> Any:
    r = requests.post(f"{url}/_sim/{name}", params=params, timeout=10)
    r.raise_for_status()
    return r.json()["result"]


def _drive(url: str, symbols: list[str], threads: int, seconds: float) -> dict[str, Any]:
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]
    counts = [0] * threads
    errors = [0] * threads
    samples: list[list[float]] = [[] for _ in range(threads)]

    def worker(n: int) -> None:
        with requests.Session() as session:
            target = f"{url}/fapi/v1/klines"
            for sym in symbols[n : n + 5]:  # warm-up: connection and the server's window caches
                session.get(target, params={"symbol": sym, "interval": "4h", "limit": 6}, timeout=10)
            start.wait()
            i = n
            while True:
                t = time.perf_counter()
                if t >= stop_at[0]:
                    break
                sym = symbols[i % len(symbols)]
                i += threads
                r = session.get(target, params={"symbol": sym, "interval": "4h", "limit": 6}, timeout=10)
                samples[n].append(time.perf_counter() - t)
                if r.status_code == 200 and r.content.startswith(b"[["):
                    counts[n] += 1
                else:
                    errors[n] += 1

    pool = [threading.Thread(target=worker, args=(n,), name=f"bench-rest-{n}") for n in range(threads)]
    for t in pool:
        t.start()
    # pre-generate every symbol's windows once so the measurement sees the steady state
    with requests.Session() as session:
        for sym in symbols:
            params = {"symbol": sym, "interval": "4h", "limit": 6}
            session.get(f"{url}/fapi/v1/klines", params=params, timeout=30)
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    start.wait()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    lat = sorted(x for s in samples for x in s)
    return {
        "rest_requests_per_s": round(sum(counts) / elapsed, 1),
        "requests": sum(counts),
        "errors": sum(errors),
        "threads": threads,
        "seconds": round(elapsed, 2),
        "p50_ms": round(statistics.median(lat) * 1000, 3) if lat else None,
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 3) if lat else None,
    }


def _drive_raw(url: str, symbols: list[str], threads: int, seconds: float) -> float:
    """The same requests from minimal keep-alive socket clients: the server's own capacity, without
    the time per request that ``requests`` itself costs on the client side (the gap between this
    function's rate and :func:`_drive`'s)."""
    host, port = url.removeprefix("http://").split(":")
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(n: int) -> None:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            start.wait()
            i = n
            while time.perf_counter() < stop_at[0]:
                sym = symbols[i % len(symbols)]
                i += threads
                sock.sendall(
                    f"GET /fapi/v1/klines?symbol={sym}&interval=4h&limit=6 HTTP/1.1\r\n"
                    f"Host: {host}\r\n\r\n".encode()
                )
                buf = b""
                while b"\r\n\r\n" not in buf:
                    buf += sock.recv(65536)
                head, _, body = buf.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(body) < length:
                    body += sock.recv(65536)
                if head.startswith(b"HTTP/1.1 200"):
                    counts[n] += 1

    pool = [threading.Thread(target=worker, args=(n,), name=f"bench-raw-{n}") for n in range(threads)]
    for t in pool:
        t.start()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    start.wait()
    for t in pool:
        t.join()
    return round(sum(counts) / (time.perf_counter() - t0), 1)


def bench(
    seconds: float = 3.0,
    threads: int = 3,
    url: str | None = None,
    seed: int = 1,
    symbols: int = 531,
    in_process: bool = False,
) -> dict[str, Any]:
    """REST requests per second at zero latency (see the module docstring); returns the JSON dict."""
    child = None
    server = None
    mode = "url" if url else "in-process" if in_process else "subprocess"
    if url is None and in_process:
        from surge.sim.market import Market
        from surge.sim.rest import RestServer

        server = RestServer(Market(symbols, seed, surge_interval_s=None), weight_limit=NO_LIMIT).start()
        url = server.url
    elif url is None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, __file__, "--serve", "--seed", str(seed), "--symbols", str(symbols)]
        child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        if not url.startswith("http://"):
            child.kill()
            raise RuntimeError("the REST server child did not start")
    previous_limit = None
    try:
        _control(url, "latency", ms=0)
        previous_limit = _control(url, "stats")["weight_limit"]
        _control(url, "weight_limit", limit=NO_LIMIT)
        _control(url, "reset")
        tradable = _control(url, "tradable")
        result = _drive(url, tradable, threads, seconds)
        stats = _control(url, "stats")
        result["raw_socket_requests_per_s"] = _drive_raw(url, tradable, threads, seconds)
        result.update(
            server_max_in_flight=stats["max_in_flight"], server_connections=stats["connections"], mode=mode
        )
        return result
    finally:
        if previous_limit is not None:
            _control(url, "weight_limit", limit=previous_limit)
        if server is not None:
            server.stop()
        if child is not None:
            assert child.stdin is not None
            child.stdin.close()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--url", default=None, help="an already running simulator (surge sim) instead of a child")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--symbols", type=int, default=531)
    ap.add_argument("--in-process", action="store_true", help="server in this process (shares the GIL)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        _serve(args.seed, args.symbols)
        return 0
    print(json.dumps(bench(args.seconds, args.threads, args.url, args.seed, args.symbols, args.in_process)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
