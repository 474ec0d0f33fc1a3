#!/usr/bin/env python3
"""Benchmark of ``surge run``; prints ONE JSON object on stdout, progress on stderr.

The simulator runs in its own process (``surge sim --latency-ms 147``: what a trader far from Tokyo
sees per REST request), the bot as ``python -m surge run``, exactly as a trader or cron starts it.

* ``restart_ready_s``: from ``Popen`` of the bot to its "ready in" log line (4h filter decided and
  every kline_1m / kline_4h stream confirmed by the exchange), cold (empty ``$SURGE_HOME``) and warm
  (a second start right after a clean SIGTERM stop), each with its REST requests and weight (the
  simulator's own count of what arrived, weighted as Binance weighs it), to "ready" and to "every
  volume baseline complete" (the 1m backfill that lets the symbols signal).
  Targets: warm <= 3 s and <= 10 % of the cold weight. The old program: 26 s on every start.
* Steady state with every symbol passing (531 symbols -> 1,062 streams, ~4,250 kline events/s):
  ``threads`` (target <= connections + 4), ``decision_latency_p99_ms`` from the kline's event time
  (stamped by the exchange as it sends) to the surge decision (the bot's heartbeat, over its last
  20,000 decisions; the median and worst of those windows over the soak; target <= 5 ms), and
  ``rss_mb`` with its growth over ``--soak-s`` seconds (target <= 5 % over 10 minutes). Each
  connection gets its updates every 250 ms at its own phase, as connections on different Binance edge
  servers do; ``aligned_decision_latency_*`` is the worst case after it, every connection pushed in
  the same instant (``--aligned-s``; reported, no target).
* ``--operator``: the steady state runs with what an unattended user turns on, notifications (every
  event, to a local receiver that answers each message after 2 s) and ``--metrics-port`` scraped every
  second; ``operator`` reports what arrived and the scrapes. Target unchanged: p99 <= 5 ms, threads
  within connections + 4 plus the notifier and the metrics server.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from surge.exchange.ratelimit import endpoint_weight

PY = sys.executable
BASELINE = {"restart_ready_s": 26.0, "note": "the program surge replaces: 26 s on every start"}
ALL_PASS = """
[filter_4h]
min_change_pct = -100.0
max_change_pct = 1000.0
min_quote_volume = 0
[stream]
streams_per_connection = 200
"""


def say(msg: str) -> None:
    print(f"bench_run: {msg}", file=sys.stderr, flush=True)


class Sim:
    """``surge sim`` in its own process, driven through its ``/_sim`` HTTP controls."""

    def __init__(self, latency_ms: float, symbols: int, push_mode: str | None = "every_tick") -> None:
        mode = ["--push-mode", push_mode] if push_mode else []  # every stream pushing: comparable figures
        self.proc = subprocess.Popen(
            [
                PY,
                "-m",
                "surge",
                "sim",
                "--port",
                "0",
                "--latency-ms",
                str(latency_ms),
                "--symbols",
                str(symbols),
                *mode,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 4 or line[0] != "REST":
            raise SystemExit(f"bench_run: unexpected first line from surge sim: {line}")
        self.rest_url, self.ws_url = line[1], line[3]

    def control(self, name: str, **args: Any) -> Any:
        query = "&".join(f"{k}={v}" for k, v in args.items())
        with urllib.request.urlopen(f"{self.rest_url}/_sim/{name}?{query}", timeout=30) as resp:
            return json.loads(resp.read())["result"]

    def weight(self) -> tuple[int, int]:
        """(requests, weight) since the last reset (every klines request of the bot has limit < 100)."""
        by_path = self.control("stats")["by_path"]
        weight = 0
        for path, n in by_path.items():
            params = {"limit": 22} if path.endswith("/klines") else {}
            weight += endpoint_weight(path, params) * n
        return sum(by_path.values()), weight

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Bot:
    """One ``surge run``; its stderr is read line by line so the "ready in" line is timed as it comes."""

    def __init__(self, home: Path, sim: Sim, config: Path, args: tuple[str, ...] = ()) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SURGE_")}
        env.update(
            SURGE_HOME=str(home),
            SURGE_REST_URL=sim.rest_url,
            SURGE_WS_URL=sim.ws_url,
            SURGE_CONFIG=str(config),
            PYTHONUNBUFFERED="1",
        )
        self.home = home
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [PY, "-m", "surge", "run", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_line(self, needle: str, timeout: float) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for t, line in self.lines[seen:]:
                if needle in line:
                    return t - self.t0, line
            seen = len(self.lines)
            if self.proc.poll() is not None:
                break
            time.sleep(0.005)
        tail = "\n".join(line for _, line in self.lines[-20:])
        raise SystemExit(f"bench_run: no {needle!r} from the bot (exit {self.proc.poll()}):\n{tail}")

    def heartbeat(self) -> dict[str, Any]:
        try:
            return json.loads((self.home / "heartbeat.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def status(self) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SURGE_")}
        env["SURGE_HOME"] = str(self.home)
        out = subprocess.run(
            [PY, "-m", "surge", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(out.stdout)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def cpu_s(self) -> float:
        """User + system CPU seconds used by the bot so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> float:
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        if code != 0:
            raise SystemExit(f"bench_run: the bot exited {code} on SIGTERM")
        return time.monotonic() - t


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"bench_run: timed out waiting for {what}")


def one_start(
    label: str, home: Path, sim: Sim, config: Path, args: tuple[str, ...] = ()
) -> tuple[dict[str, Any], Bot]:
    sim.control("reset")
    bot = Bot(home, sim, config, args)
    ready_s, ready_line = bot.wait_line("ready in", 300)
    requests_ready, weight_ready = sim.weight()
    _, filter_line = bot.wait_line("4h filter:", 5)
    scan_weight = int(filter_line.rsplit("weight ", 1)[1].split(",")[0])
    hb = wait_for(
        lambda: (
            (h := bot.heartbeat()).get("ready_at")
            and h.get("backfill_pending") == 0
            and h.get("baseline_ready") == h.get("passing")
            and h
        ),
        300,
        f"{label}: every baseline",
    )
    baseline_s = time.monotonic() - bot.t0
    requests_all, weight_all = sim.weight()
    say(
        f"{label}: ready in {ready_s:.2f}s (weight {weight_ready}), baselines in {baseline_s:.2f}s "
        f"(weight {weight_all}); {ready_line.split(': ', 1)[1]}"
    )
    return {
        "ready_s": round(ready_s, 3),
        "ready_s_own": float(ready_line.split("ready in ", 1)[1].split("s", 1)[0]),
        "requests_to_ready": requests_ready,
        "weight_to_ready": weight_ready,
        "scan_weight": scan_weight,
        "baselines_complete_s": round(baseline_s, 3),
        "requests_to_baselines": requests_all,
        "weight_to_baselines": weight_all,
        "passing": hb.get("passing"),
        "streams": hb.get("streams"),
    }, bot


class Percentiles:
    """The latency percentiles of each new heartbeat (one snapshot every ~2 s)."""

    def __init__(self) -> None:
        self.p99s: list[float] = []
        self.p50s: list[float] = []
        self.threads: list[int] = []
        self._last_written = 0.0

    def poll(self, bot: Bot) -> None:
        hb = bot.heartbeat()
        if hb.get("written_at", 0) != self._last_written and hb.get("latency_ms_p99") is not None:
            self._last_written = hb["written_at"]
            self.p99s.append(hb["latency_ms_p99"])
            self.p50s.append(hb["latency_ms_p50"])
            self.threads.append(hb["threads"])


def aligned_latency(bot: Bot, sim: Sim, seconds: float) -> Percentiles:
    """Decision latency with every connection pushed in the same instant (the worst case): the
    heartbeat's percentiles cover the last 20,000 decisions (~10 s), so sampling starts after 12 s."""
    sim.control("ws/set_push_phases", mode="aligned")
    try:
        time.sleep(12.0)
        seen = Percentiles()
        end = time.monotonic() + max(0.0, seconds - 12.0)
        while time.monotonic() < end:
            time.sleep(1.0)
            seen.poll(bot)
        return seen
    finally:
        sim.control("ws/set_push_phases", mode="per_connection")


class SlowReceiver:
    """A notification service that takes 2 s to answer each message (apprise ``json://`` posts)."""

    def __init__(self, delay_s: float = 2.0) -> None:
        received: list[bytes] = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay_s)  # the slow service this bench is about
                received.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/notify"
        self.thread = threading.Thread(target=self.server.serve_forever, name="bench-receiver", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Scraper:
    """GET /metrics every second, as a Prometheus server set to a 1 s interval would."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.ok = self.failed = 0
        self.errors: list[str] = []  # the first few failures, so a failed scrape can be told apart
        self.durations_ms: list[float] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-scraper", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    r.read()
                self.ok += 1
                self.durations_ms.append((time.perf_counter() - t) * 1000)
            except OSError as exc:
                self.failed += 1
                if len(self.errors) < 5:
                    self.errors.append(f"{time.monotonic():.1f}: {exc!r}")

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


OPERATOR_EVENTS = '["signal", "entry", "exit", "error", "outage", "ban", "reconcile", "daily"]'


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--soak-s", type=float, default=120.0, help="steady-state run for latency and RSS")
    ap.add_argument("--latency-ms", type=float, default=147.0, help="simulated REST latency")
    ap.add_argument("--symbols", type=int, default=531)
    ap.add_argument("--skip-restart", action="store_true", help="only the steady-state part")
    ap.add_argument(
        "--aligned-s",
        type=float,
        default=40.0,
        help="then this long with every connection pushed in the same instant (worst case)",
    )
    ap.add_argument(
        "--record",
        metavar="DIR",
        default=None,
        help="the steady-state bot runs with --record DIR (decision latency while recording; the "
        "recording's size is reported)",
    )
    ap.add_argument(
        "--operator",
        action="store_true",
        help="steady state with notifications (to a receiver answering after 2 s) and metrics "
        "scraped every second",
    )
    args = ap.parse_args()

    sim = Sim(args.latency_ms, args.symbols)
    out: dict[str, Any] = {"symbols": args.symbols, "rest_latency_ms": args.latency_ms}
    try:
        with tempfile.TemporaryDirectory(prefix="surge-bench-run-") as tmp:
            root = Path(tmp)
            default_cfg = root / "default.toml"
            default_cfg.write_text("")
            home = root / "home"
            if not args.skip_restart:
                cold, bot = one_start("cold", home, sim, default_cfg)
                stop_s = bot.stop()
                warm, bot = one_start("warm", home, sim, default_cfg)
                bot.stop()
                out["restart_ready_s"] = {
                    "cold": cold["ready_s"],
                    "warm": warm["ready_s"],
                    "cold_weight": cold["weight_to_ready"],
                    "warm_weight": warm["weight_to_ready"],
                    "warm_weight_pct_of_cold": round(
                        100.0 * warm["weight_to_ready"] / max(1, cold["weight_to_ready"]), 1
                    ),
                    "cold_weight_with_backfill": cold["weight_to_baselines"],
                    "warm_weight_with_backfill": warm["weight_to_baselines"],
                    "warm_weight_with_backfill_pct": round(
                        100.0 * warm["weight_to_baselines"] / max(1, cold["weight_to_baselines"]), 1
                    ),
                    "cold_detail": cold,
                    "warm_detail": warm,
                    "sigterm_stop_s": round(stop_s, 3),
                    "targets": {"warm_s": 3.0, "warm_weight_pct": 10.0},
                }

            # steady state: every symbol passes, so every symbol streams 1m and 4h
            all_cfg = root / "all.toml"
            all_cfg.write_text(ALL_PASS)
            home2 = root / "home-all"
            run_args: tuple[str, ...] = ("--record", args.record) if args.record else ()
            receiver = scraper = None
            if args.operator:
                receiver = SlowReceiver()
                notify = f'[notify]\nurls = ["{receiver.url}"]\nevents = {OPERATOR_EVENTS}\n'
                all_cfg.write_text(ALL_PASS + notify)
                metrics_port = free_port()
                run_args += ("--metrics-port", str(metrics_port))
            steady, bot = one_start("steady", home2, sim, all_cfg, run_args)
            if args.operator:
                scraper = Scraper(metrics_port)
            try:
                time.sleep(10.0)  # let the first baselines and subscriptions settle
                hb0, t0, cpu0 = bot.heartbeat(), time.monotonic(), bot.cpu_s()
                rss = [bot.rss_mb()]
                seen = Percentiles()
                status = bot.status()
                deadline = t0 + args.soak_s
                next_report = t0 + 60
                by_minute: list[float] = [round(rss[0], 1)]
                while time.monotonic() < deadline:
                    time.sleep(1.0)
                    seen.poll(bot)
                    rss.append(bot.rss_mb())
                    if time.monotonic() >= next_report:
                        next_report += 60
                        by_minute.append(round(rss[-1], 1))
                        p99 = seen.p99s[-1] if seen.p99s else float("nan")
                        say(f"soak {time.monotonic() - t0:.0f}s: rss {rss[-1]:.1f} MB, p99 {p99:.2f} ms")
                hb1, t1, cpu1 = bot.heartbeat(), time.monotonic(), bot.cpu_s()
                status_end = bot.status()
                events_per_s = (hb1["events"] - hb0["events"]) / (hb1["written_at"] - hb0["written_at"])
                aligned = aligned_latency(bot, sim, args.aligned_s)
            finally:
                if scraper is not None:
                    scraper.stop()  # first: a scrape of a bot shutting down is refused, not a failure
                bot.stop()
                if receiver is not None:
                    receiver.stop()
            if scraper is not None and receiver is not None:
                out["operator"] = {
                    "notifications_received": len(receiver.received),
                    "receiver_delay_s": 2.0,
                    "scrapes_ok": scraper.ok,
                    "scrapes_failed": scraper.failed,
                    "scrape_errors": scraper.errors,
                    "scrape_ms_p50": round(statistics.median(scraper.durations_ms), 2)
                    if scraper.durations_ms
                    else None,
                    "threads_target": f"<= connections + 4 + 2 = {status['connections'] + 6}",
                }
            warm_rss = statistics.mean(rss[: max(1, min(10, len(rss)))])
            end_rss = statistics.mean(rss[-10:])
            out["steady"] = {
                "passing": steady["passing"],
                "streams": status_end["streams"],
                "connections": status_end["connections"],
                "events_per_s": round(events_per_s, 1),
                "bot_cpu_pct": round(100.0 * (cpu1 - cpu0) / (t1 - t0), 1),
                "bot_cpu_us_per_event": round(1e6 * (cpu1 - cpu0) / (t1 - t0) / max(events_per_s, 1.0), 2),
                "push_phases": "per connection: each gets its updates every 250 ms at its own phase "
                f"({status_end['streams']} streams, {status_end['connections']} connections)",
                "signals": status_end["signals"],
            }
            out["threads"] = status["threads"]
            out["threads_max_in_soak"] = max(seen.threads) if seen.threads else None
            out["threads_target"] = f"<= connections + 4 = {status['connections'] + 4}"
            out["decision_latency_p99_ms"] = round(statistics.median(seen.p99s), 3) if seen.p99s else None
            out["decision_latency_p99_ms_worst_window"] = round(max(seen.p99s), 3) if seen.p99s else None
            out["decision_latency_p50_ms"] = round(statistics.median(seen.p50s), 3) if seen.p50s else None
            if aligned.p99s:
                out["aligned_decision_latency_p99_ms"] = round(statistics.median(aligned.p99s), 3)
                out["aligned_decision_latency_p50_ms"] = round(statistics.median(aligned.p50s), 3)
                out["aligned_note"] = (
                    "worst case, no target: every connection pushed in the same instant, one burst of "
                    f"{status_end['streams']} events every 250 ms ({args.aligned_s:.0f} s)"
                )
            out["rss_mb"] = round(end_rss, 1)
            out["rss_mb_start"] = round(warm_rss, 1)
            out["rss_mb_max"] = round(max(rss), 1)
            out["rss_growth_pct"] = round(100.0 * (end_rss - warm_rss) / warm_rss, 2)
            out["rss_mb_by_minute"] = by_minute
            out["soak_s"] = round(t1 - t0, 1)
            out["baseline"] = BASELINE
            if args.record:
                recorded = sum(p.stat().st_size for p in Path(args.record).glob("*.srec")) / 1e6
                lasted_h = (time.monotonic() - bot.t0) / 3600.0
                out["recording"] = {
                    "dir": args.record,
                    "mb": round(recorded, 1),
                    "mb_per_hour": round(recorded / lasted_h, 1),
                    "events_per_s": out["steady"]["events_per_s"],
                }
    finally:
        sim.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
