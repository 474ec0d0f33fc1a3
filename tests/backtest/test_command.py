"""``surge backtest``: the contract's --json shapes, the text report, files, and its exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from surge.backtest.trades import MAX_HOLD
from surge.cli import main
from surge.history.store import HistoryStore
from tests.backtest.candles import T0, build, flat
from tests.backtest.test_engine import SURGE

# T0 is 2023-11-14 20:00 UTC; the series run past midnight
DAYS = ["--from", "2023-11-14", "--to", "2023-11-15"]
CONFIG = """
[surge]
volume_lookback = 5
min_quote_volume = 1000
[filter_4h]
min_quote_volume = 100000
[trade]
max_hold_s = 600
"""
TOTALS = {"trades", "wins", "win_rate", "pnl", "profit_factor", "max_drawdown"}
TRADE = {
    "symbol",
    "signal_time",
    "entry_time",
    "entry_price",
    "qty",
    "exit_time",
    "exit_price",
    "exit_reason",
    "fees",
    "pnl",
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    store = HistoryStore.for_home(tmp_path)
    store.write("ABCUSDT", build("ABCUSDT", [*flat(100.0, 250), SURGE, *flat(104.0, 300)]))
    store.write("XYZUSDT", build("XYZUSDT", flat(100.0, 551)))
    (tmp_path / "surge.toml").write_text(CONFIG)
    return tmp_path


def invoke(home: Path, *args: str) -> Result:
    env = {"SURGE_HOME": str(home), "SURGE_CONFIG": None}
    return CliRunner().invoke(main, ["backtest", *args], env=env, catch_exceptions=False)


def test_json_is_the_contracts_single_run_object(home: Path) -> None:
    result = invoke(home, *DAYS, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"from", "to", "symbols", "candles", "elapsed_s", "totals", "trades"} <= set(out)
    assert (out["from"], out["to"], out["symbols"], out["candles"]) == (
        1699920000000,  # 2023-11-14 00:00 UTC
        1700092800000,  # 2023-11-16 00:00 UTC: --to is inclusive
        2,
        551 * 2,
    )
    assert set(out["totals"]) >= TOTALS and out["totals"]["trades"] == 1
    (trade,) = out["trades"]
    assert set(trade) == TRADE
    assert (trade["symbol"], trade["signal_time"], trade["exit_reason"]) == (
        "ABCUSDT",
        T0 + 250 * 60_000 + 59_999,
        MAX_HOLD,
    )


def test_text_report_csv_and_plot(home: Path, tmp_path: Path) -> None:
    csv_path, png_path = tmp_path / "trades.csv", tmp_path / "equity.png"
    result = invoke(
        home, *DAYS, "--csv", str(csv_path), "--plot", str(png_path), "--symbols", "ABCUSDT,NOPEUSDT"
    )
    assert result.exit_code == 0, result.output
    assert "ABCUSDT" in result.stdout and "1 symbol, " in result.stdout
    assert "no candles stored in that range for NOPEUSDT" in result.stderr
    assert csv_path.read_text().count("\n") == 2  # the header and the trade
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_split_adds_in_and_out_of_sample(home: Path) -> None:
    out = json.loads(invoke(home, *DAYS, "--json", "--split", "0.3").stdout)
    assert out["in_sample"]["trades"] + out["out_of_sample"]["trades"] == 1
    text = invoke(home, *DAYS, "--split", "0.9").stdout
    assert "in-sample: 1 trade," in text and "out-of-sample: 0 trades," in text


def test_sweep_json(home: Path) -> None:
    result = invoke(
        home,
        *DAYS,
        "--json",
        "--sweep",
        "surge.min_change_pct=3,5",
        "--sweep",
        "trade.max_hold_s=60,600",
        "--split",
        "0.5",
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    rows = out["combinations"]
    assert isinstance(out["elapsed_s"], float) and len(rows) == 4
    assert all(set(r) == {"params", "totals", "in_sample", "out_of_sample"} for r in rows)
    # a 4 % surge is no 5 % one; its trade loses the fees and slippage, so no trade ranks first
    assert [r["totals"]["trades"] for r in rows] == [0, 0, 1, 1]
    assert [r["params"]["surge.min_change_pct"] for r in rows] == [5, 5, 3, 3]
    text = invoke(home, *DAYS, "--sweep", "surge.min_change_pct=3,5")
    assert text.exit_code == 0 and "surge.min_change_pct" in text.stdout and "2 combinations" in text.stdout


def test_nothing_stored_says_to_download(tmp_path: Path) -> None:
    result = invoke(tmp_path, "--from", "2023-11-14", "--to", "2023-11-14")
    assert result.exit_code == 1
    assert "surge history download" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--from", "2023-13-01"], "--from must be a date"),
        (["--from", "2023-11-15", "--to", "2023-11-14"], "before --from"),
        (["--split", "1.5"], "--split must be a fraction"),
        (["--sweep", "surge.bogus=1"], "surge.bogus"),
        (["--sweep", "surge.volume_lookback=1.5"], "surge.volume_lookback must be an integer"),
        (["--symbols", "not a symbol"], ""),
    ],
)
def test_bad_flags_exit_2_with_one_line(home: Path, args: list[str], said: str) -> None:
    result = invoke(home, *args)
    assert result.exit_code == 2, result.output
    assert said in result.stderr and "Traceback" not in result.stderr


def test_without_pyarrow_it_names_the_extra(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    result = invoke(home, *DAYS)
    assert result.exit_code == 2 and "pip install 'surge[history]'" in result.stderr
