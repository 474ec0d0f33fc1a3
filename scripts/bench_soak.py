#!/usr/bin/env python3
"""Soak of ``surge run`` against ``surge sim``; prints ONE JSON object on stdout.

Users run the bot for weeks on links that drop: memory that grows with every reconnect ends in an
OOM kill weeks later, long after any test ran. This runs the bot as cron would start it (``python -m
surge run --quiet``) against the simulator in its own process for ``--minutes``, and with ``--churn
S`` drops every WebSocket connection every S seconds (``/_sim/ws/drop_all``). The bot's RSS is
sampled every ``--sample-s`` seconds (15).

Figures: ``rss_ready_mb`` (first sample once the bot is ready and every volume baseline is
complete), ``rss_start_mb`` (first sample after ``--warmup-s`` more, 180 s: the first minutes
still allocate for good, the first entries and their ledger writes, SQLite's page cache, the first
closed minute of every stream, about +0.3 MB in the hour-long soaks; ``warmup_growth_mb`` reports
it, so growth from "ready" is ``rss_end_mb`` over ``rss_ready_mb``), ``rss_end_mb``,
``rss_growth_pct`` (end over start), ``rss_slope_mb_per_hour`` (least-squares slope over the
second half of the samples: the trend once everything warm exists), ``reconnects`` and ``gaps``
(from the bot's heartbeat), ``threads_max``, ``errors`` (ERROR lines and tracebacks in its log,
plus a non-zero exit), ``signals``; ``rss_growth_minute_means_pct`` and
``rss_slope_minute_means_mb_per_hour``, the same two over whole-minute means (the bot's one-minute
RSS cycle averaged out, see ``minute_means``), and ``rss_mb_samples``, every sample. Targets:
growth <= 1.5 %, slope <= 0.2 MB/h, 0 errors, with and without ``--churn 45`` over 60 minutes. The
baseline is the same bot before the fix, as first measured: +6.7 % over 55 minutes with churn, still
rising ~2.7 MB/h at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run import PY, Bot, Sim, wait_for

BASELINE = {
    "rss_growth_pct": 6.7,
    "rss_slope_mb_per_hour": 2.7,
    "minutes": 55,
    "churn_s": 45,
    "note": "the code before the reconnect-leak fix, as first measured",
}
TARGET = {"rss_growth_pct": 1.5, "rss_slope_mb_per_hour": 0.2, "errors": 0}


def say(msg: str) -> None:
    print(f"bench_soak: {msg}", file=sys.stderr, flush=True)


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) in MB per hour."""
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    cov = sum((t - mx) * (v - my) for t, v in samples)
    return cov / var * 3600.0 if var else 0.0


def minute_means(samples: list[tuple[float, float]], sample_s: float) -> list[tuple[float, float]]:
    """(mid-minute seconds, mean MB) of every whole minute of samples.

    Why: the bot lives on a one-minute cycle (every stream's candle closes on the minute, and the
    heap trim gives that burst's memory back 5 s later) and its RSS swings within each minute. A
    15 s sample catches one phase of that swing; the samples keep their phase (a fixed grid), but a
    mean over a whole minute holds every phase once, so its trend is the memory kept, not where in
    the cycle it was read. Before the trim was tied to the minute, it drifted through it, and the raw
    slope of an hour-long quiet soak read 0.09-0.31 MB/h of memory nobody held.
    """
    by_minute: dict[int, list[float]] = {}
    for t, mb in samples:
        by_minute.setdefault(int(t // 60), []).append(mb)
    whole = max(1, int(60 // sample_s))
    return [(m * 60 + 30.0, sum(v) / len(v)) for m, v in sorted(by_minute.items()) if len(v) >= whole]


def count_errors(home: Path) -> int:
    n = 0
    for path in sorted((home / "logs").glob("surge.log*")):
        for line in path.read_text(errors="replace").splitlines():
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="how long the bot runs once ready")
    ap.add_argument(
        "--churn",
        type=float,
        default=None,
        metavar="S",
        help="drop every WebSocket connection every S seconds (default: no faults)",
    )
    ap.add_argument("--sample-s", type=float, default=15.0, help="RSS sampling period")
    ap.add_argument(
        "--warmup-s",
        type=float,
        default=180.0,
        help="after ready, run this long (churn included) before the soak's first sample",
    )
    ap.add_argument("--symbols", type=int, default=531)
    ap.add_argument("--latency-ms", type=float, default=20.0, help="simulated REST latency")
    ap.add_argument(
        "--push-mode",
        default=None,
        help="the simulator's kline push mode (default: its own, pushes on change as Binance)",
    )
    args = ap.parse_args()

    sim = Sim(args.latency_ms, args.symbols, push_mode=args.push_mode)
    home = Path(tempfile.mkdtemp(prefix="surge-soak-"))
    config = home / "surge.toml"
    config.write_text("")  # the defaults: the 4h filter as shipped, the sim's surges every 20 s
    bot = Bot(home, sim, config)  # its log on stderr is read (and dropped) by the bench, not kept
    stop = threading.Event()
    drops = [0]

    def churn() -> None:
        while not stop.wait(args.churn):
            try:
                sim.control("ws/drop_all")
                drops[0] += 1
            except OSError as exc:  # the simulator is busy: the next drop comes anyway
                say(f"drop_all failed: {exc}")

    try:
        wait_for(
            lambda: (
                (h := bot.heartbeat()).get("ready_at")
                and h.get("backfill_pending") == 0
                and h.get("baseline_ready") == h.get("passing")
                and h
            ),
            600,
            "the bot ready",
        )
        say(
            f"ready; soaking {args.minutes:g} min"
            + (f", dropping every connection every {args.churn:g}s" if args.churn else "")
        )
        dropper = threading.Thread(target=churn, name="soak-churn", daemon=True) if args.churn else None
        if dropper is not None:
            dropper.start()
        ready_mb = bot.rss_mb()
        time.sleep(args.warmup_s)
        say(f"warm-up over: rss {ready_mb:.1f} -> {bot.rss_mb():.1f} MB")
        t0 = time.monotonic()
        samples: list[tuple[float, float]] = []
        threads_max = 0
        end = t0 + args.minutes * 60.0
        while True:
            now = time.monotonic()
            if bot.proc.poll() is not None:
                raise SystemExit(f"bench_soak: the bot exited {bot.proc.returncode} during the soak")
            samples.append((now - t0, bot.rss_mb()))
            threads_max = max(threads_max, int(bot.heartbeat().get("threads") or 0))
            if len(samples) % 20 == 1:
                say(
                    f"{(now - t0) / 60:5.1f} min: rss {samples[-1][1]:.1f} MB, "
                    f"reconnects {bot.heartbeat().get('reconnects')}"
                )
            if now >= end:
                break
            # on a fixed grid (t0 + k * sample_s), not "sleep after sampling": the sampler's own work
            # would drift its phase through the bot's one-minute cycle (see minute_means)
            time.sleep(max(0.0, min(t0 + len(samples) * args.sample_s, end) - time.monotonic()))
        stop.set()
        hb = bot.heartbeat()
        code = bot.proc.poll()
        bot.stop()
    finally:
        stop.set()
        if bot.proc.poll() is None:
            bot.proc.kill()
        sim.stop()
    second_half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    means = minute_means(samples, args.sample_s)
    means_half = [m for m in means if m[0] >= samples[-1][0] / 2]
    start_mb, end_mb = samples[0][1], samples[-1][1]
    errors = count_errors(home) + (1 if code not in (None, 0) else 0)
    out: dict[str, Any] = {
        "minutes": args.minutes,
        "churn_s": args.churn,
        "drops": drops[0],
        "reconnects": hb.get("reconnects"),
        "gaps": hb.get("gaps"),
        "warmup_s": args.warmup_s,
        "rss_ready_mb": round(ready_mb, 2),
        "warmup_growth_mb": round(start_mb - ready_mb, 2),
        "rss_start_mb": round(start_mb, 2),
        "rss_end_mb": round(end_mb, 2),
        "rss_growth_pct": round((end_mb / start_mb - 1) * 100, 2),
        "rss_slope_mb_per_hour": round(slope_per_hour(second_half), 3),
        "samples": len(samples),
        # the same two figures over whole-minute means (see minute_means), the bot's cycle averaged out
        "rss_growth_minute_means_pct": round((means[-1][1] / means[0][1] - 1) * 100, 2) if means else None,
        "rss_slope_minute_means_mb_per_hour": round(slope_per_hour(means_half), 3),
        "rss_mb_by_minute": [round(mb, 2) for t, mb in samples if int(t) % 60 < args.sample_s],
        "rss_mb_samples": [round(mb, 2) for _, mb in samples],
        "threads_max": threads_max,
        "errors": errors,
        "signals": hb.get("signals"),
        "target": TARGET,
        "baseline": BASELINE,
        "python": PY,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
