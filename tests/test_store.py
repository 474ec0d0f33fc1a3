"""The SQLite store: schema version, WAL, candle cache, and refusing files that are not ours."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from surge.models import Kline
from surge.store import APPLICATION_ID, SCHEMA_VERSION, Store, StoreError, open_store

H4 = 4 * 3600 * 1000


def k(sym: str, t: int, *, closed: bool = True, q: float = 1e6) -> Kline:
    return Kline(sym, "4h", t, t + H4 - 1, 1.0, 2.0, 0.5, 1.5, 10.0, q, 7, closed)


def test_fresh_database_is_stamped_and_in_wal_mode(tmp_path: Path) -> None:
    with open_store(tmp_path / "home") as store:
        assert store.schema_version == SCHEMA_VERSION
    db = sqlite3.connect(tmp_path / "home" / "surge.db")
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


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
        odd = Kline("X", "4h", 0, H4 - 1, 0.1 + 0.2, 1 / 3, 1e-9, 123456.789012345, 1e12, 5_000_000.0001, 1,
                    True)
        store.put_candles([odd])
        store.put_candles([odd])  # the same candle twice: still one row
        assert store.candles("X", "4h") == [odd]


def test_prune_drops_old_candles(tmp_path: Path) -> None:
    with Store(tmp_path / "surge.db") as store:
        store.put_candles([k("A", i * H4) for i in range(10)])
        assert store.prune_candles("4h", 5 * H4) == 5
        assert [c.open_time for c in store.candles("A", "4h")] == [i * H4 for i in range(5, 10)]


def test_text_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "surge.db"
    path.write_text("my precious notes\n")
    with pytest.raises(StoreError, match="not an SQLite database"):
        Store(path)
    assert path.read_text() == "my precious notes\n"


def test_corrupt_sqlite_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "surge.db"
    with Store(path) as store:
        store.put_candles([k("A", i * H4) for i in range(200)])
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(path.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # keep the header, trash every page
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged|integrity|another program"):
        Store(path)
    assert path.read_bytes() == bytes(data)


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "surge.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="another program"):
        Store(path)
    assert path.read_bytes() == before


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "surge.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 5,))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_migrations_apply_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A later issue appends a migration: an existing database gains it on open, data intact."""
    import surge.store as store_mod

    path = tmp_path / "surge.db"
    with Store(path) as store:
        store.put_candles([k("A", 0)])
    extra = (SCHEMA_VERSION + 1, "signals",
             "CREATE TABLE signals (time INTEGER NOT NULL, symbol TEXT NOT NULL)")
    monkeypatch.setattr(store_mod, "MIGRATIONS", (*store_mod.MIGRATIONS, extra))
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", extra[0])
    with Store(path) as store:
        assert store.schema_version == extra[0]
        assert store.candles("A", "4h") == [k("A", 0)]
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM signals").fetchone()[0] == 0
    db.close()


def test_directory_in_the_way_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "surge.db").mkdir()
    with pytest.raises(StoreError, match="directory"):
        Store(tmp_path / "surge.db")
