"""The backtest's totals, per-symbol table, text report and CSV, checked against figures worked out by
hand on a few trades (the definitions are those of surge/backtest/report.py's docstring)."""

from __future__ import annotations

import csv
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surge.backtest.report import (
    SHOWN_TRADES,
    format_report,
    per_symbol,
    read_trades_csv,
    totals,
    write_trades_csv,
)
from surge.backtest.trades import END_OF_DATA, MAX_HOLD, STOP_LOSS, TAKE_PROFIT, Trade
from surge.errors import SurgeError

MIN = 60_000
DAY = 1_440 * MIN
T0 = 1_790_812_800_000  # 2026-10-01 00:00 UTC


def trade(
    symbol: str,
    entry: int,
    exit_: int,
    pnl: float,
    reason: str = TAKE_PROFIT,
    price: float = 10.0,
) -> Trade:
    """A trade entered at T0 + entry minutes and closed at T0 + exit_ minutes with the given pnl."""
    return Trade(
        symbol=symbol,
        signal_time=T0 + entry * MIN - 1,
        entry_time=T0 + entry * MIN,
        entry_price=price,
        qty=10.0,
        exit_time=T0 + exit_ * MIN,
        exit_price=price + pnl / 10.0,
        exit_reason=reason,
        fees=0.1,
        pnl=pnl,
    )


def test_no_trades() -> None:
    assert totals([], T0, T0 + DAY) == {
        "trades": 0,
        "wins": 0,
        "win_rate": 0.0,
        "pnl": 0.0,
        "profit_factor": None,
        "max_drawdown": 0.0,
        "exposure": 0.0,
    }
    assert per_symbol([]) == []
    text = format_report(totals([], T0, T0 + DAY), [], [])
    assert "No trades." in text
    assert "Profit factor" in text and "no losing trade" in text


def test_all_winners_have_no_profit_factor_and_no_drawdown() -> None:
    trades = [trade("AUSDT", 0, 10, 2.0), trade("BUSDT", 5, 20, 3.0)]
    got = totals(trades, T0, T0 + 100 * MIN)
    assert got["trades"] == 2 and got["wins"] == 2 and got["win_rate"] == 1.0
    assert got["pnl"] == pytest.approx(5.0)
    assert got["profit_factor"] is None
    assert got["max_drawdown"] == 0.0


def test_drawdown_in_the_middle_follows_exit_order() -> None:
    # given out of order; by exit time the pnl is +5, -3, -4, +10, -2:
    # equity 5, 2, -2, 8, 6 -> the worst fall is from the peak 5 to -2 = 7 (the later 8 -> 6 is only 2)
    trades = [
        trade("DUSDT", 30, 40, 10.0),
        trade("AUSDT", 0, 10, 5.0),
        trade("EUSDT", 35, 50, -2.0, STOP_LOSS),
        trade("CUSDT", 15, 30, -4.0, STOP_LOSS),
        trade("BUSDT", 5, 20, -3.0, MAX_HOLD),
    ]
    got = totals(trades, T0, T0 + 100 * MIN)
    assert got["trades"] == 5 and got["wins"] == 2
    assert got["win_rate"] == pytest.approx(0.4)
    assert got["pnl"] == pytest.approx(6.0)
    assert got["profit_factor"] == pytest.approx(15.0 / 9.0)
    assert got["max_drawdown"] == pytest.approx(7.0)


def test_drawdown_counts_from_zero_when_the_first_trade_loses() -> None:
    trades = [trade("AUSDT", 0, 10, -3.0, STOP_LOSS), trade("AUSDT", 20, 30, 1.0)]
    assert totals(trades, T0, T0 + 100 * MIN)["max_drawdown"] == pytest.approx(3.0)


def test_a_zero_pnl_trade_is_neither_a_win_nor_a_loss() -> None:
    trades = [trade("AUSDT", 0, 10, 0.0, END_OF_DATA), trade("BUSDT", 0, 10, 4.0)]
    got = totals(trades, T0, T0 + 100 * MIN)
    assert got["wins"] == 1 and got["win_rate"] == 0.5
    assert got["profit_factor"] is None


def test_exposure_counts_overlapping_positions_once_and_clips_to_the_period() -> None:
    # period: 100 minutes; [10, 30) and [20, 40) overlap -> 30 minutes; [60, 70) -> 10; [90, 120) is
    # clipped to [90, 100) -> 10; [-50, -10) lies before the period -> 0. 50 of 100 minutes.
    trades = [
        trade("AUSDT", 10, 30, 1.0),
        trade("BUSDT", 20, 40, -1.0, STOP_LOSS),
        trade("AUSDT", 60, 70, 1.0),
        trade("CUSDT", 90, 120, 1.0, END_OF_DATA),
        trade("DUSDT", -50, -10, 1.0),
    ]
    assert totals(trades, T0, T0 + 100 * MIN)["exposure"] == pytest.approx(0.5)
    assert totals(trades, T0, T0)["exposure"] == 0.0  # an empty period has no exposure


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-20, 120), st.integers(0, 60), st.floats(-50, 50, allow_nan=False)),
        max_size=25,
    )
)
def test_exposure_and_drawdown_match_a_brute_force(rows: list[tuple[int, int, float]]) -> None:
    trades = [trade(f"S{i}USDT", start, start + length, pnl) for i, (start, length, pnl) in enumerate(rows)]
    got = totals(trades, T0, T0 + 100 * MIN)
    held = [any(t.entry_time <= T0 + m * MIN < t.exit_time for t in trades) for m in range(100)]
    assert got["exposure"] == pytest.approx(sum(held) / 100)
    equity, worst = 0.0, 0.0
    curve = [0.0]
    for t in sorted(trades, key=lambda t: (t.exit_time, t.entry_time, t.symbol)):
        equity += t.pnl
        curve.append(equity)
    worst = max(max(curve[: i + 1]) - v for i, v in enumerate(curve))
    assert got["max_drawdown"] == pytest.approx(worst)
    assert 0.0 <= got["exposure"] <= 1.0


def test_per_symbol_best_first() -> None:
    trades = [
        trade("AUSDT", 0, 10, -1.0, STOP_LOSS),
        trade("BUSDT", 0, 10, 2.0),
        trade("BUSDT", 20, 30, -0.5, STOP_LOSS),
        trade("CUSDT", 0, 10, 2.0),
        trade("BUSDT", 40, 50, 0.5),
    ]
    assert per_symbol(trades) == [
        {"symbol": "BUSDT", "trades": 3, "wins": 2, "win_rate": pytest.approx(2 / 3), "pnl": 2.0},
        {"symbol": "CUSDT", "trades": 1, "wins": 1, "win_rate": 1.0, "pnl": 2.0},
        {"symbol": "AUSDT", "trades": 1, "wins": 0, "win_rate": 0.0, "pnl": -1.0},
    ]


def test_text_report_shows_totals_symbols_and_the_latest_trades() -> None:
    trades = [trade(f"S{i:02d}USDT", i * 10, i * 10 + 5, 1.5 if i % 3 else -2.0) for i in range(25)]
    text = format_report(totals(trades, T0, T0 + DAY), per_symbol(trades), trades)
    lines = text.splitlines()
    assert lines[0].split() == ["Trades", "25"]
    assert any(line.startswith("Wins") and "16 (64.0 %)" in line for line in lines)
    assert any(line.startswith("PnL after fees") and "+6.00 USDT" in line for line in lines)
    assert any(line.startswith("Profit factor") and "1.33" in line for line in lines)  # 24 / 18
    assert any(line.startswith("Max drawdown") and "2.00 USDT" in line for line in lines)
    assert "Exposure" in text and "8.7 %" in text  # 25 x 5 minutes of 1,440
    assert f"the last {SHOWN_TRADES} of 25" in text
    trade_part = text.split("Trades (")[1]
    # the five earliest trades are left out of the list, the latest is in it with its UTC times
    assert "S04USDT" not in trade_part and "S05USDT" in trade_part and "S24USDT" in trade_part
    assert "2026-10-01 04:00:00" in trade_part and "take_profit" in trade_part
    symbol_part = text.split("Per symbol\n")[1].split("\n\n")[0].splitlines()
    assert symbol_part[0].split()[:3] == ["symbol", "trades", "wins"]
    assert len(symbol_part) == 1 + 25


def test_short_trade_list_has_no_note() -> None:
    trades = [trade("AUSDT", 0, 10, 1.0)]
    text = format_report(totals(trades, T0, T0 + DAY), per_symbol(trades), trades)
    assert "\nTrades\n" in text and "of 1" not in text


def test_csv_round_trip(tmp_path: Path) -> None:
    trades = [
        trade("AUSDT", 0, 10, 0.1 + 0.2),
        trade("1000PEPEUSDT", 3, 7, -1 / 3, STOP_LOSS, price=0.000012345678901),
        trade("BUSDT", 5, 9, 1e-12, END_OF_DATA),
    ]
    path = tmp_path / "trades.csv"
    write_trades_csv(trades, path)
    with path.open(newline="") as src:
        rows = list(csv.reader(src))
    assert rows[0] == [f.name for f in fields(Trade)]
    assert len(rows) == 1 + len(trades)
    assert rows[1][2] == str(T0)  # times as integer ms
    assert read_trades_csv(path) == trades  # every float back bit for bit
    assert [p.name for p in tmp_path.iterdir()] == ["trades.csv"]  # no temporary file left


def test_csv_of_no_trades_is_the_header(tmp_path: Path) -> None:
    path = tmp_path / "none.csv"
    write_trades_csv([], path)
    assert path.read_text().strip() == ",".join(f.name for f in fields(Trade))
    assert read_trades_csv(path) == []


def test_csv_to_a_missing_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SurgeError, match="cannot write .*nowhere"):
        write_trades_csv([trade("AUSDT", 0, 1, 1.0)], tmp_path / "nowhere" / "t.csv")
