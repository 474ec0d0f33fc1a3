"""The columnar candle store: round trip, merge (new rows win), month files, ranges, modes, atomicity."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from surge.history.store import COLUMNS, HistoryStore, HistoryStoreError, SymbolCandles

MINUTE = 60_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def candles(symbol: str, start_ms: int, n: int, base: float = 100.0) -> SymbolCandles:
    times = start_ms + np.arange(n, dtype=np.int64) * MINUTE
    price = base + np.arange(n, dtype=np.float64)
    return SymbolCandles(
        symbol,
        open_time=times,
        open=price,
        high=price + 1,
        low=price - 1,
        close=price + 0.5,
        volume=np.full(n, 2.0),
        quote_volume=price * 2,
        trades=np.arange(n, dtype=np.int64),
    )


def same(a: SymbolCandles, b: SymbolCandles) -> None:
    assert a.symbol == b.symbol
    for name in COLUMNS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_round_trip_keeps_values_and_dtypes(tmp_path: Path) -> None:
    store = HistoryStore.for_home(tmp_path)
    data = candles("BTCUSDT", ms("2026-11-03T00:00"), 1440)
    store.write("BTCUSDT", data)
    back = store.read("BTCUSDT")
    same(back, data)
    assert back.open_time.dtype == np.int64 and back.trades.dtype == np.int64
    assert back.close.dtype == np.float64
    assert store.symbols() == ["BTCUSDT"]
    assert len(back) == 1440


def test_one_file_per_month_and_ranges_cross_them(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h")
    start = ms("2026-10-31T23:00")  # 60 minutes in October, 60 in November
    store.write("ETHUSDT", candles("ETHUSDT", start, 120))
    assert store.months("ETHUSDT") == [(2026, 10), (2026, 11)]
    assert sorted(p.name for p in (tmp_path / "h" / "ETHUSDT").iterdir()) == [
        "2026-10.arrow",
        "2026-11.arrow",
    ]
    part = store.read("ETHUSDT", ms("2026-10-31T23:30"), ms("2026-11-01T00:30"))
    assert len(part) == 60
    assert part.open_time[0] == ms("2026-10-31T23:30")
    assert part.open_time[-1] == ms("2026-11-01T00:29")  # end is exclusive
    assert len(store.read("ETHUSDT", ms("2026-11-01T00:00"))) == 60
    assert len(store.read("ETHUSDT", end_ms=ms("2026-11-01T00:00"))) == 60
    assert len(store.read("ETHUSDT", ms("2026-12-01T00:00"))) == 0


def test_merge_new_rows_win_and_old_rows_stay(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    day = ms("2026-11-05T00:00")
    store.write("SOLUSDT", candles("SOLUSDT", day, 100, base=10.0))
    store.write("SOLUSDT", candles("SOLUSDT", day + 50 * MINUTE, 100, base=500.0))
    back = store.read("SOLUSDT")
    assert len(back) == 150
    assert np.all(np.diff(back.open_time) == MINUTE)
    assert back.open[49] == 10.0 + 49  # untouched old row
    assert back.open[50] == 500.0  # overlapping row: the new one
    assert back.open[149] == 500.0 + 99


def test_unsorted_duplicate_input_is_sorted_first_row_wins(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    t = ms("2026-11-05T00:00")
    data = SymbolCandles.from_columns(
        "XRPUSDT",
        {
            "open_time": np.array([t + MINUTE, t, t + MINUTE]),
            "open": np.array([2.0, 1.0, 3.0]),
            "high": np.zeros(3),
            "low": np.zeros(3),
            "close": np.zeros(3),
            "volume": np.zeros(3),
            "quote_volume": np.zeros(3),
            "trades": np.zeros(3),
        },
    )
    store.write("XRPUSDT", data)
    back = store.read("XRPUSDT")
    assert back.open_time.tolist() == [t, t + MINUTE]
    assert back.open.tolist() == [1.0, 2.0]


def test_gaps_are_kept_and_empty_reads(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    assert len(store.read("BTCUSDT")) == 0
    assert store.symbols() == []
    t = ms("2026-11-05T00:00")
    store.write("BTCUSDT", candles("BTCUSDT", t, 10))
    store.write("BTCUSDT", candles("BTCUSDT", t + 100 * MINUTE, 10))
    store.write("BTCUSDT", SymbolCandles.empty("BTCUSDT"))
    assert len(store.read("BTCUSDT")) == 20


def test_refuses_path_like_names_and_unaligned_times(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    with pytest.raises(HistoryStoreError):
        store.write("../etc", candles("../etc", ms("2026-11-05T00:00"), 3))
    with pytest.raises(HistoryStoreError):
        store.read("btc/usdt")
    bad = candles("BTCUSDT", ms("2026-11-05T00:00") + 5, 3)
    with pytest.raises(HistoryStoreError):
        store.write("BTCUSDT", bad)
    assert not (tmp_path / "BTCUSDT").exists() or not any((tmp_path / "BTCUSDT").iterdir())


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_files_0600_dirs_0700_no_temp_left(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = HistoryStore.for_home(tmp_path / "home")
        store.write("BTCUSDT", candles("BTCUSDT", ms("2026-11-05T00:00"), 5))
        store.write("BTCUSDT", candles("BTCUSDT", ms("2026-11-05T00:03"), 5))
    finally:
        os.umask(old)
    for path in (tmp_path / "home", tmp_path / "home" / "history", tmp_path / "home" / "history" / "BTCUSDT"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    files = list((tmp_path / "home" / "history" / "BTCUSDT").iterdir())
    assert [f.name for f in files] == ["2026-11.arrow"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600


def test_summary_from_files(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    start = ms("2026-10-31T23:00")
    store.write("ETHUSDT", candles("ETHUSDT", start, 120))
    info = store.summary("ETHUSDT")
    assert (info.first_ms, info.last_ms, info.candles) == (start, start + 119 * MINUTE, 120)
    assert info.bytes == sum(p.stat().st_size for p in (tmp_path / "ETHUSDT").iterdir())


def test_slice_is_half_open() -> None:
    data = candles("BTCUSDT", 0, 10)
    assert data.slice(MINUTE, 3 * MINUTE).open_time.tolist() == [MINUTE, 2 * MINUTE]
    assert data.slice(None, None) is data
