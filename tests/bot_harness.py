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
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, TypeVar

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


def wait_for(
    pred: Callable[[], T],
    timeout: float = 60.0,
    what: str = "condition",
    every: float = 0.1,
    detail: Callable[[], object] | None = None,
) -> T:
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


def make_simulator(
    passing: Iterable[str], *, minute_second: float | None = None, ws_port: int = 0, n_symbols: int = 40
) -> Simulator:
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


def bot_env(
    home: Path, sim: Simulator | None = None, rest_url: str | None = None, ws_url: str | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURGE_")}
    env["SURGE_HOME"] = str(home)
    env["SURGE_REST_URL"] = rest_url or (sim.rest_url if sim else "http://127.0.0.1:9")
    env["SURGE_WS_URL"] = ws_url or (sim.ws_url if sim else "ws://127.0.0.1:9")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def surge_cli(
    home: Path,
    *args: str,
    sim: Simulator | None = None,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """One ``python -m surge ...`` command run to completion."""
    return subprocess.run(
        [sys.executable, "-m", "surge", *args],
        env=env or bot_env(home, sim),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_json(home: Path, *args: str) -> Any:
    proc = surge_cli(home, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


class BotProcess:
    """``python -m surge run`` in the background, for every end-to-end test of the command.

    Its stderr goes to a file the test reads, or with ``pipe_stderr`` to a pipe that a named thread
    reads line by line (a test that fills the disk cannot have the bot write its stderr to a file).
    Its stdout is discarded unless ``capture_stdout`` keeps it in a file beside the home (a test
    that checks what the bot prints). Without ``config`` the bot reads ``$SURGE_HOME/surge.toml``;
    ``umask`` is the bot's umask (the test's own otherwise).
    """

    def __init__(
        self,
        home: Path,
        sim: Simulator | None,
        symbols: Iterable[str],
        *,
        config: Path | None = None,
        extra: Iterable[str] = (),
        env: dict[str, str] | None = None,
        pipe_stderr: bool = False,
        capture_stdout: bool = False,
        umask: int | None = None,
    ) -> None:
        self.home = home
        stem = f"{home.name}-bot-{time.monotonic_ns()}"
        self.stderr_path = home.parent / f"{stem}.stderr"
        self.stdout_path = home.parent / f"{stem}.stdout"
        args = [sys.executable, "-m", "surge", "run", *extra]
        if config is not None:
            args += ["--config", str(config)]
        symbols = list(symbols)
        if symbols:
            args += ["--symbols", ",".join(symbols)]
        self._files: list[IO[str]] = []  # closed once the bot has exited
        stdout: IO[str] | int = self._open(self.stdout_path) if capture_stdout else subprocess.DEVNULL
        stderr: IO[str] | int = subprocess.PIPE if pipe_stderr else self._open(self.stderr_path)
        self._lines: list[str] | None = [] if pipe_stderr else None
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            args,
            env=env or bot_env(home, sim),
            stdout=stdout,
            stderr=stderr,
            text=True,
            umask=-1 if umask is None else umask,
        )
        self.pid = self.proc.pid
        self._reader: threading.Thread | None = None
        if pipe_stderr:
            self._reader = threading.Thread(target=self._read_stderr, name="test-bot-stderr", daemon=True)
            self._reader.start()

    def _open(self, path: Path) -> IO[str]:
        file = open(path, "w")  # noqa: SIM115 - closed in _close() once the bot has exited
        self._files.append(file)
        return file

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None and self._lines is not None
        for line in self.proc.stderr:
            self._lines.append(line.rstrip("\n"))

    def log(self) -> str:
        """Everything the bot wrote to stderr so far."""
        if self._lines is not None:
            return "\n".join(list(self._lines))
        return self.stderr_path.read_text(errors="replace")

    def count(self, needle: str) -> int:
        """How many lines of the bot's stderr contain ``needle``."""
        return sum(needle in line for line in self.log().splitlines())

    def wait_log(self, needle: str, timeout: float = 60.0) -> str:
        """Wait for ``needle`` in the bot's stderr; fail early (with the log) if the bot exited."""

        def seen() -> bool:
            text = self.log()
            if needle in text:
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"bot exited {self.proc.returncode} before {needle!r}:\n{text[-3000:]}")
            return False

        wait_for(seen, timeout, f"{needle!r} in the bot's log", detail=lambda: self.log()[-2000:])
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
                self._close()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and the exit code (a stop is due within 10 s; the deadline is for a loaded machine)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

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
        self._close()

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.join(10)  # the pipe ends with the process
            if not self._reader.is_alive() and self.proc.stderr is not None:
                self.proc.stderr.close()
        for file in self._files:
            file.close()


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
