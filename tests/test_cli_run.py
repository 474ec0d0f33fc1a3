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
from tests.bot_harness import bot_env, cli_json, make_simulator, surge_cli, wait_for, write_config

REPO = Path(__file__).resolve().parents[1]
CRON = REPO / "scripts" / "surge-cron.sh"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("surge: error:")]


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[surge]\nbogus = 1\n", "surge.bogus"),
        ("[filter_4h]\nworkers = 9\n", "filter_4h.workers"),
        ('[trade]\nmax_hold_s = "long"\n', "trade.max_hold_s"),
        ("[trade\n", "surge.toml"),
        ("[trade]\nmax_hold_s = 1e17\n", "trade.max_hold_s"),
        ("[surge]\ncooldown_s = 1e308\n", "surge.cooldown_s"),
        ("[surge]\nvolume_lookback = 150\n", "surge.volume_lookback"),
        ("[trade]\nposition_usdt = 1e308\n", "trade.position_usdt"),
        ('[exchange]\nvenue = "mainnet"\n', "exchange.venue"),
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


def test_non_utf8_config_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "surge.toml"
    config.write_bytes(b"[trade]\n# caf\xe9\nmax_hold_s = 60\n")
    proc = surge_cli(tmp_path / "home", "run", "--sim", "--config", str(config), "--duration", "5")
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc.stderr)
    assert "not UTF-8" in line and proc.stderr.strip() == line and "Traceback" not in proc.stderr


@pytest.mark.parametrize("var", ["SURGE_API_KEY", "SURGE_API_SECRET"])
def test_a_key_with_a_carriage_return_exits_2_without_showing_it(tmp_path: Path, var: str) -> None:
    home = tmp_path / "home"
    env = bot_env(home) | {
        "SURGE_API_KEY": "K3yOfTheTrader",
        "SURGE_API_SECRET": "S3cretOfTheTrader",
        var: "V4lu3FromDotEnv\r",
    }
    config = write_config(tmp_path / "surge.toml", {"trade": {"mode": "live"}})
    proc = surge_cli(home, "run", "--sim", "--live", "--config", str(config), "--duration", "5", env=env)
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc.stderr)
    assert var in line and proc.stderr.strip() == line
    for secret in ("V4lu3FromDotEnv", "K3yOfTheTrader", "S3cretOfTheTrader"):
        assert secret not in proc.stderr and secret not in proc.stdout
    assert not home.exists()


@pytest.mark.parametrize("symbols", ["../etc", "BTCUSDT,ETH/USDT", "BTC USDT", "A" * 33, "BTCUSDT_260327"])
def test_malformed_symbols_exit_2_before_any_request(tmp_path: Path, symbols: str) -> None:
    home = tmp_path / "home"
    proc = surge_cli(home, "run", "--symbols", symbols, "--duration", "5")  # exchange: 127.0.0.1:9
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc.stderr)
    assert "--symbols" in line and proc.stderr.strip() == line and "Traceback" not in proc.stderr
    assert not home.exists()


def test_symbols_the_exchange_does_not_trade_exit_2_naming_them(tmp_path: Path) -> None:
    sim = make_simulator([])
    try:
        listed = {s["symbol"]: s for s in _exchange_info(sim)["symbols"]}
        decoy = next(
            n
            for n, s in listed.items()
            if n.isalnum()
            and (s["status"], s["contractType"], s["quoteAsset"]) != ("TRADING", "PERPETUAL", "USDT")
        )
        good = sim.market.tradable_symbols()[0]
        home = tmp_path / "home"
        t0 = time.monotonic()
        proc = surge_cli(
            home, "run", "--symbols", f"{good},NOPEUSDT,{decoy.lower()}", "--duration", "60", sim=sim
        )
        assert proc.returncode == 2, proc.stderr
        [line] = error_lines(proc.stderr)
        assert "NOPEUSDT" in line and decoy in line and good not in line.split(":")[-1]
        assert "Traceback" not in proc.stderr and time.monotonic() - t0 < 60  # it does not idle
        assert sim.rest.stats()["by_path"].get("/fapi/v1/klines", 0) == 0
    finally:
        sim.stop()


def _exchange_info(sim: Simulator) -> dict:
    import requests

    return requests.get(f"{sim.rest_url}/fapi/v1/exchangeInfo", timeout=30).json()


def test_live_without_opt_in_exits_2(tmp_path: Path) -> None:
    proc = surge_cli(tmp_path / "home", "run", "--live", "--duration", "5")
    assert proc.returncode == 2 and len(error_lines(proc.stderr)) == 1
    assert not (tmp_path / "home").exists()


def test_exchange_unreachable_at_start_exits_1_with_one_clear_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    t0 = time.monotonic()
    proc = surge_cli(
        home,
        "run",
        "--symbols",
        "BTCUSDT",
        "--duration",
        "30",
        env=bot_env(home, rest_url="http://127.0.0.1:9", ws_url="ws://127.0.0.1:9"),
    )
    assert proc.returncode == 1, proc.stderr
    [line] = error_lines(proc.stderr)
    assert "exchange unavailable" in line and "127.0.0.1:9" in line
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 30  # it gives up at start, it does not wait for --duration
    status = cli_json(home, "status")
    assert status["running"] is False and status["signals"] == 0


def test_run_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "surge", "run", "--help"], capture_output=True, text=True, timeout=60
    )
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


def cron(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(CRON)], env=env, cwd="/", capture_output=True, text=True, timeout=60
    )


def counting_bin(tmp_path: Path, env: dict[str, str]) -> Path:
    """SURGE_BIN wrapped so that every Python the script starts leaves a line in a file."""
    calls = tmp_path / "starts"
    wrapper = tmp_path / "surge-counted"
    real = env.get("SURGE_BIN") or f"{sys.executable} -m surge"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >>{calls}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    env.pop("SURGE_PYTHON", None)
    env["SURGE_BIN"] = str(wrapper)
    return calls


def cron_lines(home: Path) -> list[str]:
    path = home / "logs" / "cron.log"
    return path.read_text().splitlines() if path.exists() else []


def test_cron_script_every_minute_starts_one_bot_and_logs_only_changes(
    sim: Simulator, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = cron_env(home, sim, write_config(tmp_path / "surge.toml"))
    starts = counting_bin(tmp_path, env)
    first = cron(env)
    pid = None
    try:
        assert first.returncode == 0, first.stderr
        status = wait_for(lambda: (s := cli_json(home, "status"))["running"] and s, 60, "the bot to run")
        pid = status["pid"]
        assert [line.split("surge-cron: ")[1] for line in cron_lines(home)] == [f"started pid {pid}"]
        for _ in range(3):  # the next minutes: the lock is held, so no Python starts and nothing is logged
            again = cron(env)
            assert again.returncode == 0 and again.stdout == again.stderr == "", again.stderr
        assert len(starts.read_text().splitlines()) == 1
        assert len(cron_lines(home)) == 1
        assert cli_json(home, "status")["pid"] == pid  # still the first one
        wait_for(lambda: "ready in" in (home / "logs" / "surge.log").read_text(), 60, "the bot ready")
        assert "ready in" not in (home / "logs" / "cron.log").read_text()  # the bot logs to surge.log only
        os.kill(pid, signal.SIGKILL)  # dies without a word
        wait_for(lambda: not cli_json(home, "status")["running"], 30, "the lock released by the kernel")
        pid = None
        # cron's next minutes: the dead bot's heartbeat is fresh for a few seconds more (a new copy may
        # wait for it to go stale: exit 3, silent), then one starts
        status = wait_for(
            lambda: cron(env).returncode == 0 and (s := cli_json(home, "status"))["running"] and s,
            90,
            "a new bot to run",
            every=1.0,
        )
        pid = status["pid"]
        lines = [line.split("surge-cron: ")[1] for line in cron_lines(home)]
        assert len(lines) == 3 and "is no longer running" in lines[1] and lines[2] == f"started pid {pid}"
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not cli_json(home, "status")["running"], 30, "the bot to stop")


def test_cron_script_logs_a_repeated_failure_once_and_bounds_its_log(sim: Simulator, tmp_path: Path) -> None:
    home = tmp_path / "home"
    bad = tmp_path / "bad.toml"
    bad.write_text("[surge]\nbogus = 1\n")
    env = cron_env(home, sim, bad) | {"SURGE_CRON_LOG_BYTES": "4000"}
    for _ in range(3):
        proc = cron(env)
        assert proc.returncode == 2
    [line] = cron_lines(home)
    assert "surge run exited 2" in line and "surge.bogus" in line
    (home / "logs" / "cron.log").write_text("x" * 5000 + "\n")  # a log at its bound
    env["SURGE_CONFIG"] = str(write_config(tmp_path / "surge.toml"))
    env["SURGE_RUN_ARGS"] = "--symbols NOSUCHUSDT"  # a different failure: logged, into a fresh file
    assert cron(env).returncode == 2
    [line] = cron_lines(home)
    assert "surge run exited 2" in line and "NOSUCHUSDT" in line
    assert (home / "logs" / "cron.log.1").read_text().startswith("x" * 5000)
