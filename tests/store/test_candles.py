"""The closed-candle cache: what it keeps, exactly, across reopens, and what it prunes."""

from __future__ import annotations

from pathlib import Path

from surge.models import Kline
from surge.store import CandleCache, Store
from tests.store.samples import H4, k


def test_reopen_keeps_data_and_version(tmp_path: Path) -> None:
    path = tmp_path / "surge.db"
    with Store(path) as store:
        assert store.put_candles([k("BTCUSDT", 0), k("BTCUSDT", H4), k("BTCUSDT", 2 * H4, closed=False)]) == 2
        store.put_current_opens([("BTCUSDT", "4h", 2 * H4, 1.25)])
    with Store(path) as store:
        assert [c.open_time for c in store.candles("BTCUSDT", "4h")] == [0, H4]
        st = store.candle_states("4h", ["BTCUSDT", "ETHUSDT"])
        assert st["BTCUSDT"].latest_closed == k("BTCUSDT", H4)
        assert (st["BTCUSDT"].current_open_time, st["BTCUSDT"].current_open) == (2 * H4, 1.25)
        assert st["ETHUSDT"].latest_closed is None and st["ETHUSDT"].current_open is None


def test_candles_round_trip_floats_exactly_and_upsert(tmp_path: Path) -> None:
    with Store(tmp_path / "surge.db") as store:
        odd = Kline(
            "X", "4h", 0, H4 - 1, 0.1 + 0.2, 1 / 3, 1e-9, 123456.789012345, 1e12, 5_000_000.0001, 1, True
        )
        store.put_candles([odd])
        store.put_candles([odd])  # the same candle twice: still one row
        assert store.candles("X", "4h") == [odd]


def test_prune_drops_old_candles(tmp_path: Path) -> None:
    with Store(tmp_path / "surge.db") as store:
        store.put_candles([k("A", i * H4) for i in range(10)])
        assert store.prune_candles("4h", 5 * H4) == 5
        assert [c.open_time for c in store.candles("A", "4h")] == [i * H4 for i in range(5, 10)]


def test_nothing_to_cache_writes_nothing(tmp_path: Path) -> None:
    """Only open candles, or none: no transaction at all (a read-only store would refuse one)."""
    path = tmp_path / "surge.db"
    Store(path).close()
    with Store(path, readonly=True) as ro:
        assert ro.put_candles([k("A", 0, closed=False)]) == 0
        ro.put_current_opens([])


def test_the_cache_works_on_its_own_and_shares_the_file_with_the_ledger(tmp_path: Path) -> None:
    """A :class:`CandleCache` opened alone brings the file to the full schema: a :class:`Store` opened
    on it after sees the candles, and the ledger's tables are there."""
    path = tmp_path / "surge.db"
    with CandleCache(path) as cache:
        cache.put_candles([k("A", 0)])
        assert not hasattr(cache, "record_entry")
    with Store(path) as store:
        assert store.candles("A", "4h") == [k("A", 0)]
        assert store.signals() == [] and store.trades() == []
