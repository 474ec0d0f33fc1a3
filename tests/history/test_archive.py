"""The download's pure parts: planning (monthly vs daily, skips, today over REST), CSV parsing (with
and without header, microseconds), the manifest, and the checksum check."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from surge.history.archive import (
    FileFailed,
    Manifest,
    Unit,
    candles_from_csv,
    file_path,
    parse_archive_zip,
    parse_kline_csv,
    plan_symbol,
)

HEADER = (
    b"open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    b"taker_buy_quote_volume,ignore\n"
)
ROWS = (
    b"1795564800000,95000.10,95010.00,94990.50,95005.00,12.345,1795564859999,1172839.1234,321,6.1,579000.1,0\n"
    b"1795564860000,95005.00,95020.00,95000.00,95019.90,3.000,1795564919999,285000.5000,99,1.5,142500.2,0\n"
)


def kinds(units: list[Unit]) -> list[tuple[str, str]]:
    return [(u.kind, u.label) for u in units]


# --------------------------------------------------------------------------- planning


def test_whole_months_over_are_monthly_other_days_daily_today_rest() -> None:
    today = date(2026, 11, 25)
    units, skipped = plan_symbol(date(2026, 9, 28), today, today, Manifest())
    assert skipped == 0
    labels = kinds(units)
    assert labels[:3] == [("daily", "2026-09-28"), ("daily", "2026-09-29"), ("daily", "2026-09-30")]
    assert labels[3] == ("monthly", "2026-10")
    assert labels[4:] == [("daily", f"2026-11-{d:02d}") for d in range(1, 25)] + [("rest", "2026-11-25")]
    assert units[3].days == tuple(date(2026, 10, 1) + timedelta(days=i) for i in range(31))


def test_month_ending_today_or_cut_by_the_range_is_daily() -> None:
    today = date(2026, 10, 31)
    units, _ = plan_symbol(date(2026, 10, 1), today, today, Manifest())
    assert "monthly" not in {u.kind for u in units}  # the month is not over: today is its last day
    units, _ = plan_symbol(date(2026, 9, 1), date(2026, 9, 29), today, Manifest())
    assert {u.kind for u in units} == {"daily"} and len(units) == 29
    units, _ = plan_symbol(date(2026, 9, 1), date(2026, 9, 30), today, Manifest())
    assert kinds(units) == [("monthly", "2026-09")]


def test_days_after_today_are_not_planned() -> None:
    today = date(2026, 11, 25)
    units, _ = plan_symbol(date(2026, 11, 24), date(2026, 11, 30), today, Manifest())
    assert kinds(units) == [("daily", "2026-11-24"), ("rest", "2026-11-25")]


def test_manifest_days_are_skipped_and_a_part_stored_month_goes_daily() -> None:
    today = date(2026, 11, 25)
    manifest = Manifest(complete={date(2026, 10, 5)}, absent={date(2026, 11, 23)})
    units, skipped = plan_symbol(date(2026, 10, 1), date(2026, 11, 24), today, manifest)
    labels = kinds(units)
    assert ("monthly", "2026-10") not in labels
    assert ("daily", "2026-10-05") not in labels and ("daily", "2026-10-06") in labels
    assert ("daily", "2026-11-23") not in labels
    assert skipped == 2 and len(units) == 31 + 24 - 2
    done = Manifest(complete=set(d for d in (date(2026, 10, 1) + timedelta(days=i) for i in range(31))))
    units, skipped = plan_symbol(date(2026, 10, 1), date(2026, 10, 31), today, done)
    assert units == [] and skipped == 1  # the monthly file it would have been


def test_today_is_always_planned_even_if_partial() -> None:
    today = date(2026, 11, 25)
    units, _ = plan_symbol(today, today, today, Manifest(partial={today: 123}))
    assert kinds(units) == [("rest", "2026-11-25")]


def test_file_paths_follow_binance_layout() -> None:
    assert file_path("BTCUSDT", Unit("daily", (date(2026, 11, 2),))) == (
        "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2026-11-02.zip"
    )
    assert file_path("BTCUSDT", Unit("monthly", (date(2026, 10, 1), date(2026, 10, 2)))) == (
        "data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2026-10.zip"
    )


# --------------------------------------------------------------------------- parsing


def test_csv_with_and_without_header_read_the_same() -> None:
    a = parse_kline_csv(HEADER + ROWS)
    b = parse_kline_csv(ROWS)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert a["open_time"].tolist() == [1795564800000, 1795564860000]
    assert a["close"].tolist() == [95005.0, 95019.9]
    assert a["count"].tolist() == [321, 99]
    assert a["open_time"].dtype == np.int64


def test_microsecond_timestamps_become_milliseconds() -> None:
    micro = ROWS.replace(b"1795564800000,", b"1795564800000000,").replace(
        b"1795564860000,", b"1795564860000000,"
    )
    assert parse_kline_csv(micro)["open_time"].tolist() == [1795564800000, 1795564860000]


def test_empty_and_malformed_csv() -> None:
    assert parse_kline_csv(HEADER)["open_time"].size == 0
    assert parse_kline_csv(b"")["open_time"].size == 0
    with pytest.raises(FileFailed):
        parse_kline_csv(b"1795564800000,abc,1,1,1,1,1,1,1,1,1,0\n")
    with pytest.raises(FileFailed):
        parse_archive_zip(b"not a zip at all")


def test_rows_outside_the_files_period_are_refused() -> None:
    columns = parse_kline_csv(ROWS)
    start = 1795564800000
    candles = candles_from_csv("BTCUSDT", columns, start, start + 86_400_000)
    assert len(candles) == 2 and candles.trades.tolist() == [321, 99]
    with pytest.raises(FileFailed):
        candles_from_csv("BTCUSDT", columns, start + 86_400_000, start + 2 * 86_400_000)


def test_zip_with_one_csv() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("BTCUSDT-1m-2026-11-24.csv", HEADER + ROWS)
    assert parse_archive_zip(buffer.getvalue())["open_time"].size == 2
    assert hashlib.sha256(buffer.getvalue()).hexdigest()  # what the CHECKSUM names


def test_manifest_round_trip_and_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    m = Manifest(complete={date(2026, 11, 1)}, absent={date(2026, 10, 2)}, partial={date(2026, 11, 3): 42})
    m.save(path)
    back = Manifest.load(path)
    assert (back.complete, back.absent, back.partial) == (m.complete, m.absent, m.partial)
    path.write_text("{not json")
    assert Manifest.load(path) == Manifest()
    assert Manifest.load(tmp_path / "none.json") == Manifest()
