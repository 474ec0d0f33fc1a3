"""``surge report``: figures computed by hand from a ledger written through the Store API."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from surge.operator.report import build_report
from surge.store import open_store, read_store
from surge.store.reports import closed_positions
from tests.operator.ledger import DAY, HOUR, T0, enter, run, trade

TOTAL_KEYS = [
    "trades",
    "wins",
    "losses",
    "win_rate",
    "pnl",
    "fees",
    "profit_factor",
    "max_drawdown",
    "exposure",
]
ROW_KEYS = ["trades", "wins", "losses", "win_rate", "pnl", "fees", "profit_factor"]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """Four closed trades over two UTC days (+3, -1 on day 1; -2.5, +1.75 on day 2), one open position
    and one skipped signal, on the simulator's venue."""
    home = tmp_path / "home"
    with open_store(home) as store:
        trade(store, "AUSDT", T0 + 1 * HOUR, T0 + 2 * HOUR, 3.0)
        trade(store, "BUSDT", T0 + 3 * HOUR, T0 + 5 * HOUR, -1.0)
        trade(store, "AUSDT", T0 + DAY + 1 * HOUR, T0 + DAY + HOUR + HOUR // 2, -2.5)
        trade(store, "BUSDT", T0 + DAY + 2 * HOUR, T0 + DAY + 4 * HOUR, 1.75)
        enter(store, "CUSDT", T0 + DAY + 5 * HOUR)  # open: not realised, not in the report
    yield home


def report_json(home: Path, *args: str) -> dict:
    result = run(home, "report", "--json", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1  # exactly one JSON object
    return json.loads(result.stdout)


def test_totals_per_day_and_per_symbol_by_hand(home: Path) -> None:
    out = report_json(home)
    assert list(out) == ["since", "until", "venues", "totals", "per_day", "per_symbol", "per_venue"]
    assert out["since"] is None and out["venues"] == ["sim"]
    t = out["totals"]
    assert list(t) == TOTAL_KEYS
    assert (t["trades"], t["wins"], t["losses"]) == (4, 2, 2)
    assert t["win_rate"] == pytest.approx(0.5)
    assert t["pnl"] == pytest.approx(1.25)
    assert t["fees"] == pytest.approx(0.4)
    assert t["profit_factor"] == pytest.approx(4.75 / 3.5)
    # realised equity in exit order: 3, 2, -0.5, 1.25 -> from the peak of 3 down to -0.5
    assert t["max_drawdown"] == pytest.approx(3.5)

    assert [r["day"] for r in out["per_day"]] == ["2025-11-26", "2025-11-27"]
    day1, day2 = out["per_day"]
    assert list(day1) == ["day", *ROW_KEYS]
    assert (day1["trades"], day1["wins"], day1["pnl"], day1["profit_factor"]) == (
        2,
        1,
        pytest.approx(2.0),
        3.0,
    )
    assert (day2["trades"], day2["losses"], day2["pnl"]) == (2, 1, pytest.approx(-0.75))
    assert day2["profit_factor"] == pytest.approx(0.7)

    assert [(r["symbol"], r["trades"]) for r in out["per_symbol"]] == [
        ("BUSDT", 2),
        ("AUSDT", 2),
    ]  # best first
    b, a = out["per_symbol"]
    assert (b["pnl"], b["profit_factor"]) == (pytest.approx(0.75), pytest.approx(1.75))
    assert (a["pnl"], a["profit_factor"], a["win_rate"]) == (pytest.approx(0.5), pytest.approx(1.2), 0.5)
    assert out["per_venue"] == [{"venue": "sim", **{k: t[k] for k in ROW_KEYS}}]


def test_since_counts_the_positions_that_exited_from_that_utc_day_on(home: Path) -> None:
    out = report_json(home, "--since", "2025-11-27")
    assert out["since"] == T0 + DAY
    t = out["totals"]
    assert (t["trades"], t["pnl"]) == (2, pytest.approx(-0.75))
    assert t["max_drawdown"] == pytest.approx(2.5)  # equity starts at 0 on the day: -2.5, then -0.75
    assert [r["day"] for r in out["per_day"]] == ["2025-11-27"]


def test_exposure_is_the_share_of_the_period_with_a_position_open(home: Path) -> None:
    store = read_store(home)
    assert store is not None
    with store:
        closed = closed_positions(store, T0, T0 + 2 * DAY)
    report = build_report(closed, T0, T0 + 2 * DAY)
    assert report.totals["exposure"] == pytest.approx(5.5 / 48)  # 1 h + 2 h + 30 min + 2 h of 48 h
    assert [t.signal_time for t in report.trades] == [
        T0 + HOUR,
        T0 + 3 * HOUR,
        T0 + DAY + HOUR,
        T0 + DAY + 2 * HOUR,
    ]


def test_text_report_has_the_totals_and_both_tables(home: Path) -> None:
    result = run(home, "report")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "Realised PnL   +1.2500 USDT" in text
    assert "Trades         4 (2 won, 2 lost)" in text
    assert "Win rate       50.0 %" in text
    assert "Profit factor  1.36" in text
    assert "Max drawdown   3.5000 USDT" in text
    day_rows = [line.split() for line in text.splitlines() if line.startswith("2025-11-2")]
    assert [(r[0], r[1], r[-1]) for r in day_rows] == [
        ("2025-11-26", "2", "+2.0000"),
        ("2025-11-27", "2", "-0.7500"),
    ]
    assert "Per venue" not in text  # one venue: no venue table


def test_no_losing_trade_has_no_profit_factor(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with open_store(home) as store:
        trade(store, "AUSDT", T0, T0 + HOUR, 1.0)
        trade(store, "AUSDT", T0 + 2 * HOUR, T0 + 3 * HOUR, 2.0)
    out = report_json(home)
    assert out["totals"]["profit_factor"] is None and out["totals"]["max_drawdown"] == 0.0
    assert "Profit factor  - (no losing trade)" in run(home, "report").stdout


def test_a_trade_counts_on_the_utc_day_it_exited(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with open_store(home) as store:
        trade(store, "AUSDT", T0 + DAY - HOUR // 2, T0 + DAY + HOUR // 2, 2.0)  # 23:30 -> 00:30
    assert [(r["day"], r["pnl"]) for r in report_json(home)["per_day"]] == [("2025-11-27", 2.0)]
    assert report_json(home, "--since", "2025-11-27")["totals"]["trades"] == 1


def test_every_venue_counts_and_gets_a_table_when_there_are_several(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with open_store(home) as store:
        trade(store, "AUSDT", T0, T0 + HOUR, 1.0, venue="sim")
        trade(store, "AUSDT", T0, T0 + 2 * HOUR, -4.0, venue="live:fapi.binance.com")  # same key, other book
    out = report_json(home)
    assert out["venues"] == ["live:fapi.binance.com", "sim"]
    assert [(r["venue"], r["pnl"]) for r in out["per_venue"]] == [
        ("sim", 1.0),
        ("live:fapi.binance.com", -4.0),
    ]
    assert out["totals"]["pnl"] == pytest.approx(-3.0)
    assert "Per venue" in run(home, "report").stdout


def test_empty_or_missing_ledger_exits_0_and_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "nowhere"
    result = run(home, "report")
    assert result.exit_code == 0 and result.stdout == "no closed positions yet\n"
    result = run(home, "report", "--since", "2026-11-01", "--plot", str(tmp_path / "x.png"))
    assert result.exit_code == 0 and result.stdout == "no closed positions since 2026-11-01\n"
    assert not (tmp_path / "x.png").exists()
    out = report_json(home)
    assert out["totals"]["trades"] == 0 and out["per_day"] == [] and out["totals"]["profit_factor"] is None
    assert not home.exists()


def test_a_bad_date_is_a_usage_error(home: Path) -> None:
    result = run(home, "report", "--since", "26-11-2025")
    assert result.exit_code == 2
    assert "not a date like 2026-11-01" in result.output and "Traceback" not in result.output


def test_reads_while_a_writer_holds_a_transaction(home: Path) -> None:
    writer = sqlite3.connect(home / "surge.db", isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute("DELETE FROM positions")
        assert report_json(home)["totals"]["trades"] == 4  # the uncommitted delete is invisible
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_plot_writes_the_equity_png(home: Path, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "equity.png"
    result = run(home, "report", "--plot", str(path))
    assert result.exit_code == 0, result.output
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1200, 700)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert colours is not None and len(colours) > 20  # a drawing, not a blank canvas
    darkest = min(sum(rgb) for _, rgb in colours if isinstance(rgb, tuple))
    assert darkest < 200  # text and lines, not only a white background


def test_plot_without_matplotlib_is_one_line_and_exit_2(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # what `import matplotlib` finds when not installed
    result = run(home, "report", "--plot", str(tmp_path / "equity.png"))
    assert result.exit_code == 2
    assert (
        result.stderr.startswith("surge: error: --plot needs matplotlib") and result.stderr.count("\n") == 1
    )
    assert not (tmp_path / "equity.png").exists()


def test_report_and_watch_leave_the_database_as_it_was(home: Path) -> None:
    db = home / "surge.db"
    before = (db.stat().st_mtime_ns, db.read_bytes())
    assert run(home, "report").exit_code == 0 and run(home, "watch", "--once").exit_code == 0
    assert (db.stat().st_mtime_ns, db.read_bytes()) == before
    # SQLite's WAL index files may appear beside it (any reader's); nothing else does
    assert {p.name for p in home.iterdir()} <= {"surge.db", "surge.db-wal", "surge.db-shm"}
