"""``surge run`` at the command line: exit codes before anything starts, and the cron wrapper.

Bad config exits 2 before the lock, the database or the log exist; an unreachable exchange exits 1
with one ``surge: error:`` line and no traceback; ``scripts/surge-cron.sh`` run twice (from cron's
minimal environment) leaves exactly one bot running, its second copy counted as success.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from surge.sim import Simulator
from tests.bot_harness import bot_env, cli_json, heartbeat, make_simulator, surge_cli, wait_for, write_config

REPO = Path(__file__).resolve().parents[1]
CRON = REPO / "scripts" / "surge-cron.sh"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("surge: error:")]


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[surge]\nbogus = 1\n", "surge.bogus"),
        ("[filter_4h]\nworkers = 9\n", "filter_4h.workers"),
        ("[trade]\nmax_hold_s = \"long\"\n", "trade.max_hold_s"),
        ("[trade\n", "surge.toml"),
    ],
)
def test_bad_config_exits_2_before_anything_starts(tmp_path: Path, toml: str, needle: str) -> None:
    config = tmp_path / "surge.toml"
    config.write_text(toml)
    home = tmp_path / "home"
    proc = surge_cli(home, "run", "--config", str(config), "--duration", "5")
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc.stderr)
    assert needle in line
    assert proc.stderr.strip() == line and "Traceback" not in proc.stderr
    assert not home.exists()  # no lock file, no database, no log


def test_live_without_opt_in_exits_2(tmp_path: Path) -> None:
    proc = surge_cli(tmp_path / "home", "run", "--live", "--duration", "5")
    assert proc.returncode == 2 and len(error_lines(proc.stderr)) == 1
    assert not (tmp_path / "home").exists()


def test_exchange_unreachable_at_start_exits_1_with_one_clear_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    t0 = time.monotonic()
    proc = surge_cli(home, "run", "--symbols", "BTCUSDT", "--duration", "30",
                     env=bot_env(home, rest_url="http://127.0.0.1:9", ws_url="ws://127.0.0.1:9"))
    assert proc.returncode == 1, proc.stderr
    [line] = error_lines(proc.stderr)
    assert "exchange unavailable" in line and "127.0.0.1:9" in line
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 30  # it gives up at start, it does not wait for --duration
    status = cli_json(home, "status")
    assert status["running"] is False and status["signals"] == 0


def test_run_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "surge", "run", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--duration" in proc.stdout and "--sim" in proc.stdout


# --------------------------------------------------------------------------- cron


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = make_simulator(["BTCUSDT"])
    yield simulator
    simulator.stop()


def cron_env(home: Path, sim: Simulator, config: Path) -> dict[str, str]:
    """What cron gives a job (HOME, LOGNAME, SHELL, a short PATH) plus the crontab's variables."""
    venv_bin = Path(sys.executable).parent
    env = {
        "HOME": str(home.parent),
        "LOGNAME": os.environ.get("LOGNAME", "trader"),
        "SHELL": "/bin/sh",
        "PATH": "/usr/bin:/bin",
        "SURGE_HOME": str(home),
        "SURGE_REST_URL": sim.rest_url,
        "SURGE_WS_URL": sim.ws_url,
        "SURGE_CONFIG": str(config),
        "SURGE_RUN_ARGS": "--symbols BTCUSDT,ETHUSDT",
    }
    if (venv_bin / "surge").exists():
        env["SURGE_BIN"] = str(venv_bin / "surge")
    else:  # pragma: no cover - an environment without the console script
        env["SURGE_PYTHON"] = sys.executable
    return env


def test_cron_script_twice_leaves_one_bot(sim: Simulator, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = cron_env(home, sim, write_config(tmp_path / "surge.toml"))
    first = subprocess.run(["/bin/sh", str(CRON)], env=env, cwd="/", capture_output=True, text=True,
                           timeout=60)
    pid = None
    try:
        assert first.returncode == 0, first.stderr
        status = wait_for(lambda: (s := cli_json(home, "status"))["running"] and s, 60, "the bot to run")
        pid = status["pid"]
        second = subprocess.run(["/bin/sh", str(CRON)], env=env, cwd="/", capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 0, second.stderr
        log = (home / "logs" / "cron.log").read_text()
        assert "already running, nothing to do" in log
        assert f"already running (pid {pid})" in log  # the second copy's own line, appended
        assert cli_json(home, "status")["pid"] == pid  # still the first one
        wait_for(lambda: heartbeat(home).get("pid") == pid, 30, "the first bot's heartbeat")
        os.kill(pid, 0)
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not cli_json(home, "status")["running"], 30, "the bot to stop")
    assert "ready in" in (home / "logs" / "cron.log").read_text()
