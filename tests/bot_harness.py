"""Helpers for the end-to-end tests of ``surge run``: an in-process simulator, the bot as a real
``python -m surge run`` subprocess, and deadline-based waits (never bare sleeps).

Why a subprocess: the lock, the exit codes, SIGTERM, kill -9 and the log file are properties of a
process; only a real one proves them. State is read through the Store API (read-only, like
``surge status``) or the heartbeat file, polled until a deadline: a loaded 2-core machine is slow,
so deadlines are generous and a passing test returns as soon as its condition holds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from surge.sim import Simulator
from surge.sim.market import Market
from surge.store import read_store
from tests import waiting

T = TypeVar("T")

MINUTE_MS = 60_000
WINDOW_MS = 4 * 3_600_000

#: The bot's config for these tests: a fast filter refresh, exits far enough from the natural walk
#: of the simulated price that only the moves a test injects trigger them.
BASE_CONFIG: dict[str, dict[str, Any]] = {
    "filter_4h": {"refresh_s": 10},
    "surge": {"cooldown_s": 600},
    "trade": {"take_profit_pct": 4.0, "stop_loss_pct": 2.5, "max_hold_s": 3600},
}


def wait_for(pred: Callable[[], T], timeout: float = 60.0, what: str = "condition", every: float = 0.1,
             detail: Callable[[], object] | None = None) -> T:
    """:func:`tests.waiting.wait_for` with this module's defaults: a bot reacts in tenths of seconds,
    and polling a database or a file every 10 ms would only load the machine it waits on."""
    return waiting.wait_for(pred, timeout, what, poll=every, detail=detail)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def market_clock(minute_second: float | None = None) -> Callable[[], float]:
    """A wall clock shifted by a constant, so the simulated market is never within 25 minutes of a 4h
    close during a test (``arrange_4h`` holds until the 4h candle ends) and, with ``minute_second``,
    its minute is at that second right now (so a test can place an outage across a minute close).
    The bot copes with any constant offset: it takes the exchange's clock from serverTime."""
    now = time.time()
    shift = 0.0
    if minute_second is not None:
        shift = (minute_second - now % 60.0) % 60.0 - 60.0  # (-60 s, 0]: the market runs behind
    if (now + shift) * 1000 % WINDOW_MS > WINDOW_MS - 25 * MINUTE_MS:
        shift -= 3600.0
    return lambda: time.time() + shift


def make_simulator(passing: Iterable[str], *, minute_second: float | None = None, ws_port: int = 0,
                   n_symbols: int = 40) -> Simulator:
    """A started simulator with no periodic surges where exactly ``passing`` passes the 4h filter."""
    market = Market(n_symbols, seed=7, surge_interval_s=None, clock=market_clock(minute_second))
    sim = Simulator(market=market, ws_port=ws_port).start()
    sim.market.arrange_4h(list(passing))
    return sim


def write_config(path: Path, overrides: dict[str, dict[str, Any]] | None = None) -> Path:
    sections: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BASE_CONFIG.items()}
    for section, values in (overrides or {}).items():
        sections.setdefault(section, {}).update(values)
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def bot_env(home: Path, sim: Simulator | None = None, rest_url: str | None = None,
            ws_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURGE_")}
    env["SURGE_HOME"] = str(home)
    env["SURGE_REST_URL"] = rest_url or (sim.rest_url if sim else "http://127.0.0.1:9")
    env["SURGE_WS_URL"] = ws_url or (sim.ws_url if sim else "ws://127.0.0.1:9")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def surge_cli(home: Path, *args: str, sim: Simulator | None = None, timeout: float = 60.0,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One ``python -m surge ...`` command run to completion."""
    return subprocess.run([sys.executable, "-m", "surge", *args], env=env or bot_env(home, sim),
                          capture_output=True, text=True, timeout=timeout)


def cli_json(home: Path, *args: str) -> Any:
    proc = surge_cli(home, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


class BotProcess:
    """``python -m surge run`` in the background; its stderr goes to a file the test can read."""

    def __init__(self, home: Path, sim: Simulator | None, symbols: Iterable[str], *, config: Path,
                 extra: Iterable[str] = (), env: dict[str, str] | None = None) -> None:
        self.home = home
        self.stderr_path = home.parent / f"{home.name}-bot-{time.monotonic_ns()}.stderr"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in wait()
        args = [sys.executable, "-m", "surge", "run", "--config", str(config), *extra]
        symbols = list(symbols)
        if symbols:
            args += ["--symbols", ",".join(symbols)]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, env=env or bot_env(home, sim), stdout=subprocess.DEVNULL,
                                     stderr=self._stderr)
        self.pid = self.proc.pid

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 60.0) -> str:
        """Wait for ``needle`` in the bot's stderr; fail early (with the log) if the bot exited."""

        def seen() -> bool:
            text = self.log()
            if needle in text:
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"bot exited {self.proc.returncode} before {needle!r}:\n{text[-3000:]}")
            return False

        wait_for(seen, timeout, f"{needle!r} in the bot's log")
        return self.log()

    def wait_ready(self, timeout: float = 90.0) -> None:
        self.wait_log("ready in", timeout)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.returncode is not None:
                self._stderr.close()

    def kill(self) -> None:
        """SIGKILL, as ``kill -9`` does: nothing runs in the bot after this."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.wait(30)

    def ensure_stopped(self) -> None:
        """Teardown: SIGTERM, then SIGKILL if it does not stop in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        self._stderr.close()


def heartbeat(home: Path) -> dict[str, Any]:
    try:
        return json.loads((home / "heartbeat.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def signals_of(home: Path, symbol: str | None = None) -> list[Any]:
    """Signal records (Store API, read-only), optionally of one symbol."""
    store = read_store(home)
    if store is None:
        return []
    with store:
        records = store.signals()
    return [r for r in records if symbol is None or r.signal.symbol == symbol]


def positions_of(home: Path, symbol: str | None = None) -> list[Any]:
    """Every position (open and closed), optionally of one symbol."""
    store = read_store(home)
    if store is None:
        return []
    with store:
        records = store.position_records(include_closed=True)
    return [r.position for r in records if symbol is None or r.position.symbol == symbol]


def baseline_ready(home: Path, count: int) -> bool:
    """The bot says ``count`` symbols have a complete volume baseline (they can signal now)."""
    hb = heartbeat(home)
    return hb.get("running") is True and hb.get("baseline_ready") == count
