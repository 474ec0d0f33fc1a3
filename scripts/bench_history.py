#!/usr/bin/env python3
"""Benchmark ``surge history download`` against ``surge sim``; prints ONE JSON object on stdout.

Starts ``surge sim`` (531 symbols by default) as a subprocess, points ``SURGE_DATA_URL`` and
``SURGE_REST_URL`` at it, and runs the real command ``surge history download --json --days N``
twice in a fresh temporary ``SURGE_HOME``:

* ``first``: every symbol's N - 1 archive days (daily files, checksums verified) and today over
  REST (weight-aware: 531 x today's pages exceed one minute's budget, so the limiter paces it);
* ``second``: the resume; ``files_downloaded`` must be 0 (``resume_ok``), today's new minutes only.

Also reported: the simulator's archive counters (requests, zip builds, cache hits), the store's
files and bytes, and ``history list --json`` totals (candles stored = candles downloaded).

    python scripts/bench_history.py                         # 531 symbols x 3 days
    python scripts/bench_history.py --symbols 20 --days 2   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests


def start_sim(symbols: int, seed: int) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable,
        "-m",
        "surge",
        "sim",
        "--symbols",
        str(symbols),
        "--seed",
        str(seed),
        "--surge-every",
        "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) < 2 or line[0] != "REST":
        stop(proc)
        raise SystemExit(f"bench: `surge sim` did not start (got {line!r})")
    return proc, line[1]


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def history_cmd() -> list[str]:
    """``python -m surge history`` when the CLI registers it, else the group itself (same code)."""
    probe = subprocess.run(
        [sys.executable, "-m", "surge", "history", "--help"], capture_output=True, text=True, check=False
    )
    if probe.returncode == 0:
        return [sys.executable, "-m", "surge", "history"]
    return [sys.executable, "-c", "from surge.history.command import history_group; history_group()"]


def run_history(cmd: list[str], args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float, int]:
    started = time.monotonic()
    done = subprocess.run(cmd + args, capture_output=True, text=True, env=env, check=False)
    wall = time.monotonic() - started
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise SystemExit(
            f"bench: history {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[:500]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1]), wall, done.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--symbols", type=int, default=531, help="USDT perpetuals in the simulator (531)")
    ap.add_argument(
        "--days", type=int, default=3, help="--days of the download (3: two archive days + today)"
    )
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    proc, url = start_sim(args.symbols, args.seed)
    http = requests.Session()
    try:
        with tempfile.TemporaryDirectory(prefix="surge-bench-history-") as tmp:
            home = Path(tmp) / "home"
            env = os.environ | {"SURGE_HOME": str(home), "SURGE_REST_URL": url, "SURGE_DATA_URL": url}
            env.pop("SURGE_CONFIG", None)
            cmd = history_cmd()
            download = ["download", "--json", "--no-progress", "--days", str(args.days)]
            first, first_wall, first_rc = run_history(cmd, download, env)
            archive_first = http.get(f"{url}/_sim/archive/stats", timeout=30).json()["result"]
            http.get(f"{url}/_sim/archive/reset", timeout=30)
            second, second_wall, second_rc = run_history(cmd, download, env)
            archive_second = http.get(f"{url}/_sim/archive/stats", timeout=30).json()["result"]
            listed, _, _ = run_history(cmd, ["list", "--json"], env)
            files = [p for p in (home / "history").rglob("*.arrow")]
            out = {
                "symbols": args.symbols,
                "days": args.days,
                "first": first | {"exit_code": first_rc, "wall_s": round(first_wall, 2)},
                "second": second | {"exit_code": second_rc, "wall_s": round(second_wall, 2)},
                "resume_ok": second["files_downloaded"] == 0 and second_rc == 0,
                "archive_first": {
                    k: archive_first[k] for k in ("requests", "builds", "cache_hits", "bytes_served")
                },
                "archive_second_requests": archive_second["requests"],
                "stored_files": len(files),
                "stored_bytes": sum(p.stat().st_size for p in files),
                "stored_candles": listed["total"]["candles"],
                "candles_match": listed["total"]["candles"] == first["candles"] + second["candles"],
            }
    finally:
        http.close()
        stop(proc)
    print(json.dumps(out))
    return 0 if out["resume_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
