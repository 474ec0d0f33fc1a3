"""The database under the cache and the ledger: refusing files not ours, migrations, read-only opens,
durability pragmas, the busy timeout, and the one transaction helper."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from surge.models import FILLED, INTENT, Trade
from surge.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Store,
    StoreError,
    StoreWriteError,
    open_store,
    read_store,
)
from tests.store.samples import H4, k, make_v1_database, pos, sig
from tests.waiting import wait_for


def opened(store: Store | None) -> Store:
    """The store :func:`read_store` found (None would mean it found no database: a failure here)."""
    assert store is not None
    return store


def test_fresh_database_is_stamped_and_in_wal_mode(tmp_path: Path) -> None:
    with open_store(tmp_path / "home") as store:
        assert store.schema_version == SCHEMA_VERSION
    db = sqlite3.connect(tmp_path / "home" / "surge.db")
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


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
    with pytest.raises(StoreError, match="newer"):
        Store(path, readonly=True)


def test_migrations_apply_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration appended to the list: an existing database gains it on open, data intact."""
    import surge.store as store_mod

    path = tmp_path / "surge.db"
    with Store(path) as store:
        store.put_candles([k("A", 0)])
    extra = (
        SCHEMA_VERSION + 1,
        "a later table",
        "CREATE TABLE later_table (time INTEGER NOT NULL, symbol TEXT NOT NULL)",
    )
    monkeypatch.setattr(store_mod, "MIGRATIONS", (*store_mod.MIGRATIONS, extra))
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", extra[0])
    with Store(path) as store:
        assert store.schema_version == extra[0]
        assert store.candles("A", "4h") == [k("A", 0)]
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM later_table").fetchone()[0] == 0
    db.close()


def test_directory_in_the_way_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "surge.db").mkdir()
    with pytest.raises(StoreError, match="directory"):
        Store(tmp_path / "surge.db")


def test_version_1_database_migrates_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "surge.db"
    make_v1_database(path, monkeypatch)
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 3
        assert store.candles("A", "4h") == [k("A", 0), k("A", H4)]
        assert store.signals() == [] and store.open_positions() == []
        assert store.record_entry(sig(), pos(sig()))
    with Store(path) as store:
        assert store.open_positions() == [pos(sig())]


def test_readonly_never_creates_or_migrates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    assert read_store(home) is None and not home.exists()
    home.mkdir()
    path = home / "surge.db"
    make_v1_database(path, monkeypatch)
    with opened(read_store(home)) as ro:
        assert ro.schema_version == 1  # not migrated by looking
        assert ro.signals() == [] and ro.signal_count() == 0 and ro.positions(True) == []
        assert ro.realised_pnl() == 0.0 and ro.last_signal_times() == {}
        with pytest.raises(StoreError, match="read-only"):
            ro.record_entry(sig(), None, "x")
    with Store(path) as store:
        store.record_entry(sig(), pos(sig()))
    with opened(read_store(home)) as ro:
        assert ro.open_positions() == [pos(sig())]


def test_reader_is_not_blocked_by_a_writer_in_a_transaction(tmp_path: Path) -> None:
    """WAL: ``surge positions`` answers at once while ``surge run`` holds a write transaction."""
    path = tmp_path / "surge.db"
    with Store(path) as store:
        store.record_entry(sig("A"), pos(sig("A")))
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")  # would lock every reader out of a rollback-journal database
        writer.execute(
            "INSERT INTO signals (venue, key, symbol, time, open_time, change_pct, "
            "volume_multiple, quote_volume, price, outcome) "
            "VALUES ('x', 'B:0', 'B', 0, 0, 1, 1, 1, 1, 'skipped')"
        )
        start = time.monotonic()
        # blocked, the reader would wait out its 30 s busy timeout; 10 s leaves room for a stalled CI box
        with Store(path, readonly=True, busy_timeout_s=30.0) as ro:
            assert [r.signal.symbol for r in ro.signals()] == ["A"]  # committed data only
            assert ro.open_positions() == [pos(sig("A"))]
        assert time.monotonic() - start < 10.0
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_the_ledger_syncs_every_commit_and_enforces_its_foreign_keys(tmp_path: Path) -> None:
    """synchronous = FULL: in WAL mode NORMAL may lose the last commits on a power loss (SQLite's
    docs), and the last commit may be the position just entered. Foreign keys: a trade or position
    row without its signal is refused, not stored as an orphan no command can explain."""
    with Store(tmp_path / "surge.db") as store:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        s = sig()
        orphan = Trade(s.key, s.symbol, FILLED, qty="1")
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            store.record_fill(orphan, pos(s))  # no intent, no signal: nothing to hang it on
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            store._db.execute(
                "INSERT INTO trades (venue, key, symbol, state) VALUES ('x', 'K:1', 'K', 'intent')"
            )
        assert store.trades() == [] and store.positions(True) == [] and store.signal_count() == 0
        assert store.record_intent(s, Trade(s.key, s.symbol, INTENT))  # the real path: signal first
        store.record_fill(replace(orphan, state=FILLED), pos(s))
        assert [t.state for t in store.trades()] == [FILLED] and len(store.open_positions()) == 1
    with opened(read_store(tmp_path)) as reader:
        assert reader._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_a_full_database_refuses_a_write_whole_and_takes_the_next_when_there_is_room(tmp_path: Path) -> None:
    """SQLITE_FULL (here from max_page_count, as a full disk gives it) is a StoreWriteError the bot rides
    out, the transaction is rolled back whole (signal and position, never one of them), and the same
    connection writes again once there is room."""
    with Store(tmp_path / "surge.db") as store:
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")
        written = 0
        with pytest.raises(StoreWriteError, match="full") as info:
            for minute in range(10_000):
                s = replace(sig(minute=minute), symbol="X" * 500 + "USDT")  # fat rows: full sooner
                assert store.record_entry(s, pos(s))
                written += 1
        assert isinstance(info.value, StoreError) and info.value.exit_code == 1
        assert not store._db.in_transaction
        failed = replace(sig(minute=written), symbol="X" * 500 + "USDT")
        assert not store.has_signal(failed.key) and store.position(failed.key) is None
        assert store.signal_count() == written == len(store.positions(True))
        store._db.execute(f"PRAGMA max_page_count = {pages * 100}")
        assert store.record_entry(failed, pos(failed))
        assert store.signal_count() == written + 1 == len(store.positions(True))


# --------------------------------------------------------------------------- the busy timeout


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's writer (a ``surge filter-4h`` storing candles) in the middle of a transaction."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_the_busy_timeout_is_the_one_asked_for(tmp_path: Path) -> None:
    """``busy_timeout_s`` reaches SQLite, for writers and readers (a fixed pragma once overrode it)."""
    path = tmp_path / "surge.db"
    with Store(path, busy_timeout_s=0.25) as store, Store(path, busy_timeout_s=42.0, readonly=True) as ro:
        assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] == 250
        assert ro._db.execute("PRAGMA busy_timeout").fetchone()[0] == 42_000
    with Store(path) as default:
        assert default._db.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000


def test_a_short_busy_timeout_gives_up_and_a_longer_one_waits_for_the_lock(tmp_path: Path) -> None:
    """Another connection holds the write lock: the store with the short timeout gives up after it (a
    StoreWriteError, nothing written), while the one with the long timeout, which started waiting
    first, is still waiting then and writes as soon as the lock is released."""
    path = tmp_path / "surge.db"
    short_s = 0.25
    with Store(path, busy_timeout_s=short_s) as short, Store(path, busy_timeout_s=120.0) as patient:
        waiting = threading.Event()  # the patient writer's BEGIN IMMEDIATE has reached SQLite
        patient._db.set_trace_callback(lambda sql: waiting.set() if sql == "BEGIN IMMEDIATE" else None)
        done: list[object] = []
        holder = hold_write_lock(path)
        try:
            writer = threading.Thread(
                target=lambda: done.append(patient.record_entry(sig("A"), pos(sig("A"))))
            )
            writer.start()
            assert waiting.wait(30), "the patient writer never began its transaction"
            start = time.monotonic()
            with pytest.raises(StoreWriteError, match="locked"):
                short.record_entry(sig("B"), pos(sig("B")))
            gave_up_after = time.monotonic() - start
            assert gave_up_after >= short_s
            assert gave_up_after < 8.0  # far below the 10 s default: the short timeout, not the default
            assert writer.is_alive() and done == []  # waited longer than the short one, and still waits
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        wait_for(lambda: done, 30, "the patient writer to write once the lock is free")
        writer.join(30)
        assert done == [True]
        assert [r.signal.symbol for r in short.signals()] == ["A"]


def test_a_file_locked_at_open_is_a_store_error_not_a_write_error(tmp_path: Path) -> None:
    """Opening migrates under the write lock: held too long by another writer, the open fails as a
    plain StoreError (the command cannot start), not as a write the bot would ride out."""
    path = tmp_path / "surge.db"
    Store(path).close()
    holder = hold_write_lock(path)
    try:
        with pytest.raises(StoreError, match="cannot use database .* locked") as info:
            Store(path, busy_timeout_s=0.25)
        assert type(info.value) is StoreError
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# --------------------------------------------------------------------------- transactions


def test_a_transaction_that_raises_writes_nothing_and_the_error_is_unchanged(tmp_path: Path) -> None:
    with Store(tmp_path / "surge.db") as store:
        with pytest.raises(RuntimeError, match="half way"), store._transaction() as db:
            db.execute("INSERT INTO candle_opens VALUES ('A', '4h', 0, 1.0)")
            raise RuntimeError("half way")
        assert not store._db.in_transaction
        assert store.candle_states("4h", ["A"])["A"].current_open is None
        with store._transaction() as db:  # and the connection writes again
            db.execute("INSERT INTO candle_opens VALUES ('A', '4h', 0, 1.0)")
        assert store.candle_states("4h", ["A"])["A"].current_open == 1.0


def test_an_immediate_transaction_takes_the_write_lock_at_once(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE (the ledger: what it read cannot change before it writes) locks other writers
    out from its start; a deferred one (the candle cache's blind upserts) only from its first write."""
    path = tmp_path / "surge.db"
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        with Store(path) as store:
            with store._transaction(), pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            with store._transaction(immediate=False):
                other.execute("BEGIN IMMEDIATE")  # nothing written yet: the lock is free
                other.execute("ROLLBACK")
    finally:
        other.close()


def test_a_readonly_store_refuses_a_transaction(tmp_path: Path) -> None:
    path = tmp_path / "surge.db"
    Store(path).close()
    with Store(path, readonly=True) as ro:
        with pytest.raises(StoreError, match="read-only"), ro._transaction():
            pass
        assert not ro._db.in_transaction
