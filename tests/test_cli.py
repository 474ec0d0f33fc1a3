"""The `surge` command as a user runs it: a real process, real exit codes, one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from surge import __version__

SURGE = [sys.executable, "-m", "surge"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SURGE, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0 and __version__ in result.stdout


def test_help_on_every_command() -> None:
    top = run("--help")
    assert top.returncode == 0 and "Exit codes" in top.stdout
    commands = [line.split()[0] for line in top.stdout.split("Commands:")[1].splitlines() if line.strip()]
    assert "sim" in commands
    for command in commands:
        result = run(command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage:" in result.stdout and "Traceback" not in result.stderr


def test_commands_run_never_uses_are_imported_only_when_used() -> None:
    # cron restarts `surge run` every few minutes: it should not import the backtest, history,
    # report, watch and notify commands (their modules and what they pull in)
    code = (
        "import sys, surge.cli\n"
        "print(sorted(m for m in sys.modules if m.endswith('.command')))\n"
        "ctx = surge.cli.click.Context(surge.cli.main)\n"
        "for name, where in surge.cli.LAZY_COMMANDS.items():\n"
        "    assert surge.cli.main.get_command(ctx, name).name == name, where\n"
        "print(sorted(m for m in sys.modules if m.endswith('.command')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.splitlines()
    assert before == "[]"
    assert "surge.backtest.command" in after and "surge.history.command" in after


def test_usage_errors_exit_2_without_traceback() -> None:
    for args in (("no-such-command",), ("sim", "--port", "-5"), ("sim", "--symbols", "many")):
        result = run(*args)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr and result.stderr.strip()


def test_bad_config_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "surge.toml"
    cfg.write_text("[filter_4h]\nworkers = 4\n")
    for env in ({"SURGE_CONFIG": str(cfg)}, {"SURGE_HOME": str(tmp_path)}):
        result = run("filter-4h", "--symbols", "BTCUSDT", env={**env, "SURGE_REST_URL": "http://127.0.0.1:9"})
        assert result.returncode == 2, result.stderr
        assert "filter_4h.workers" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_sim_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [*SURGE, "sim", "--symbols", "20", "--seed", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()  # blocks until the simulator is listening
        assert first[0] == "REST" and first[2] == "WS", first
        rest_url, ws_url = first[1], first[3]
        assert rest_url.startswith("http://127.0.0.1:") and ws_url.startswith("ws://127.0.0.1:")
        info = requests.get(f"{rest_url}/fapi/v1/exchangeInfo", timeout=30)
        assert info.status_code == 200 and "X-MBX-USED-WEIGHT-1M" in info.headers
        tradable = [
            s
            for s in info.json()["symbols"]
            if s["status"] == "TRADING" and s["contractType"] == "PERPETUAL" and s["quoteAsset"] == "USDT"
        ]
        assert len(tradable) == 20
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sim_port_in_use_is_a_clear_error() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("sim", "--port", str(port), "--symbols", "5")
    assert result.returncode == 1 and "cannot listen" in result.stderr and "Traceback" not in result.stderr
