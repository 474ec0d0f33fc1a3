"""``surge filter-4h`` end to end: the real entry point in a subprocess against an in-process simulator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from surge.filter4h import H4
from surge.sim import Simulator

CONTRACT_KEYS = {"checked", "passed", "failed", "errors", "elapsed_s", "requests", "max_used_weight"}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(n_symbols=60, seed=4, latency_ms=0, surge_interval_s=None) as s:
        now = int(time.time() * 1000)
        s.market.freeze(now - now % H4 - H4 + 5400_000)
        s.passing = sorted(s.market.tradable_symbols()[2::6])  # type: ignore[attr-defined]
        s.market.arrange_4h(s.passing)
        yield s


@pytest.fixture
def home(tmp_path: Path, sim: Simulator) -> Path:
    sim.rest.clear_faults()
    sim.rest.unban()
    sim.rest.reset_stats()
    return tmp_path / "home"


def surge(
    home: Path, *args: str, rest_url: str, extra_env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURGE_")}
    env.update({"SURGE_HOME": str(home), "SURGE_REST_URL": rest_url, **(extra_env or {})})
    return subprocess.run(
        [sys.executable, "-m", "surge", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("surge: error: ")
    return lines[0]


def test_json_is_exactly_the_contract_object_and_exact(sim: Simulator, home: Path) -> None:
    proc = surge(home, "filter-4h", "--json", rest_url=sim.rest_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # not a terminal: no progress bar
    assert proc.stdout.count("\n") == 1
    out = json.loads(proc.stdout)
    assert set(out) == CONTRACT_KEYS
    assert out["passed"] == sim.passing  # type: ignore[attr-defined]
    assert out["failed"] == sorted(set(sim.market.tradable_symbols()) - set(sim.passing))  # type: ignore[attr-defined]
    assert out["errors"] == {} and out["checked"] == 60
    assert out["requests"] == 61 and isinstance(out["elapsed_s"], float)
    assert 61 <= out["max_used_weight"] <= 2400
    assert (home / "surge.db").is_file()

    # the same scan again (the cron restart): the cache answers, about one request
    sim.rest.reset_stats()
    again = surge(home, "filter-4h", "--json", "--workers", "2", rest_url=sim.rest_url)
    assert again.returncode == 0, again.stderr
    out2 = json.loads(again.stdout)
    assert out2["requests"] == 2
    assert sim.rest.stats()["by_path"] == {"/fapi/v1/exchangeInfo": 1, "/fapi/v2/ticker/price": 1}
    assert {k: out2[k] for k in ("checked", "passed", "failed", "errors")} == {
        k: out[k] for k in ("checked", "passed", "failed", "errors")
    }


def test_table_by_default(sim: Simulator, home: Path) -> None:
    proc = surge(home, "filter-4h", "--no-progress", rest_url=sim.rest_url)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["SYMBOL", "4H", "CHANGE", "CLOSED", "4H", "QUOTE", "VOL"]
    listed = {line.split()[0] for line in lines[1:-1]}
    assert listed == set(sim.passing)  # type: ignore[attr-defined]
    assert lines[-1].startswith(f"checked 60: {len(sim.passing)} passed")  # type: ignore[attr-defined]


def test_unknown_symbol_lands_in_errors_exit_0(sim: Simulator, home: Path) -> None:
    good = sim.passing[0]  # type: ignore[attr-defined]
    proc = surge(home, "filter-4h", "--symbols", f"{good},NOPEUSDT", "--json", rest_url=sim.rest_url)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["passed"] == [good] and out["failed"] == []
    assert list(out["errors"]) == ["NOPEUSDT"] and "-1121" in out["errors"]["NOPEUSDT"]
    alone = surge(home, "filter-4h", "--symbols", "NOPEUSDT", "--json", rest_url=sim.rest_url)
    assert alone.returncode == 0, alone.stderr  # the exchange answered: it was checked
    assert json.loads(alone.stdout)["checked"] == 1


def test_symbols_that_are_not_trading_usdt_perpetuals_cost_no_request(sim: Simulator, home: Path) -> None:
    import requests

    listed = requests.get(f"{sim.rest_url}/fapi/v1/exchangeInfo", timeout=30).json()["symbols"]
    decoys = sorted(
        s["symbol"]
        for s in listed
        if s["symbol"].isalnum()
        and (s["status"], s["contractType"], s["quoteAsset"]) != ("TRADING", "PERPETUAL", "USDT")
    )[:2]
    assert decoys
    good = sim.passing[0]  # type: ignore[attr-defined]
    sim.rest.reset_stats()
    proc = surge(
        home, "filter-4h", "--symbols", ",".join([good, "NOPEUSDT", *decoys]), "--json", rest_url=sim.rest_url
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["passed"] == [good] and sorted(out["errors"]) == sorted(["NOPEUSDT", *decoys])
    assert "-1121" in out["errors"]["NOPEUSDT"]  # what the exchange says about it
    assert all("not a TRADING USDT perpetual" in out["errors"][d] for d in decoys)
    assert out["checked"] == 2 + len(decoys)
    # exchangeInfo said enough: one klines request, for the only real perpetual
    assert sim.rest.stats()["by_path"] == {"/fapi/v1/exchangeInfo": 1, "/fapi/v1/klines": 1}


@pytest.mark.parametrize("symbols", ["../etc", "BTCUSDT,../../x", "BTC%55SDT", "BTCUSDT?limit=1000"])
def test_malformed_symbol_names_exit_2_and_send_nothing(sim: Simulator, home: Path, symbols: str) -> None:
    proc = surge(home, "filter-4h", "--symbols", symbols, "--json", rest_url=sim.rest_url)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--symbols" in one_line_error(proc)
    assert sim.rest.stats()["requests"] == 0  # (the home fixture reset the counters)


def test_exchange_unreachable_exit_1_one_line(home: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = surge(home, "filter-4h", "--json", rest_url=f"http://127.0.0.1:{port}")
    assert proc.returncode == 1
    assert proc.stdout == ""
    line = one_line_error(proc)
    assert "unavailable" in line and "connection refused" in line


def test_ban_beyond_the_maximum_exit_1(sim: Simulator, home: Path) -> None:
    sim.rest.fail_next(1, 418, retry_after_s=86400)
    proc = surge(home, "filter-4h", rest_url=sim.rest_url, timeout=30)
    sim.rest.unban()
    assert proc.returncode == 1
    assert "banned" in one_line_error(proc)


def test_unknown_config_key_exit_2(sim: Simulator, home: Path) -> None:
    home.mkdir(parents=True)
    (home / "surge.toml").write_text("[filter_4h]\nworkerz = 2\n")
    proc = surge(home, "filter-4h", rest_url=sim.rest_url)
    assert proc.returncode == 2
    assert "filter_4h.workerz" in one_line_error(proc)
    assert sim.rest.stats()["requests"] == 0  # nothing was asked before the config was valid


@pytest.mark.parametrize("workers", ["4", "0"])
def test_workers_out_of_range_exit_2(sim: Simulator, home: Path, workers: str) -> None:
    proc = surge(home, "filter-4h", "--workers", workers, rest_url=sim.rest_url)
    assert proc.returncode == 2
    assert "filter_4h.workers" in one_line_error(proc)


def test_empty_symbols_is_usage_error(sim: Simulator, home: Path) -> None:
    proc = surge(home, "filter-4h", "--symbols", " , ", rest_url=sim.rest_url)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_foreign_database_exit_1_untouched(sim: Simulator, home: Path) -> None:
    home.mkdir(parents=True)
    (home / "surge.db").write_text("not a database\n")
    proc = surge(home, "filter-4h", rest_url=sim.rest_url)
    assert proc.returncode == 1
    assert "not an SQLite database" in one_line_error(proc)
    assert (home / "surge.db").read_text() == "not a database\n"
    assert sim.rest.stats()["requests"] == 0


@pytest.mark.parametrize("no_progress", [False, True])
def test_progress_bar_only_on_a_terminal(sim: Simulator, home: Path, no_progress: bool) -> None:
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURGE_")}
    env.update({"SURGE_HOME": str(home), "SURGE_REST_URL": sim.rest_url})
    args = [sys.executable, "-m", "surge", "filter-4h", "--json"] + (["--no-progress"] if no_progress else [])
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=slave) as proc:
        os.close(slave)
        out, _ = proc.communicate(timeout=60)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO once the child side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    err = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert set(json.loads(out)) == CONTRACT_KEYS  # stdout stays exactly the JSON object
    if no_progress:
        assert err == ""
    else:
        assert "filter-4h" in err and "batch 1/1" in err and "passed" in err and "60/60" in err
