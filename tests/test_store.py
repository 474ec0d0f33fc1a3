"""The SQLite store: schema version, WAL, candle cache, signals and positions, refusing files not ours."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from surge.models import CLOSED, FILLED, INTENT, SENT, VOID, Kline, Position, Signal, Trade
from surge.store import (
    _POSITION_COLUMNS,
    APPLICATION_ID,
    DEFAULT_VENUE,
    SCHEMA_VERSION,
    PositionRecord,
    SignalRecord,
    Store,
    StoreError,
    open_store,
    read_store,
)

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
    with pytest.raises(StoreError, match="newer"):
        Store(path, readonly=True)


def test_migrations_apply_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A later issue appends a migration: an existing database gains it on open, data intact."""
    import surge.store as store_mod

    path = tmp_path / "surge.db"
    with Store(path) as store:
        store.put_candles([k("A", 0)])
    extra = (SCHEMA_VERSION + 1, "a later table",
             "CREATE TABLE later_table (time INTEGER NOT NULL, symbol TEXT NOT NULL)")
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


# --------------------------------------------------------------------------- signals and positions

M1 = 60_000


def sig(sym: str = "BTCUSDT", minute: int = 0, *, price: float = 100.0) -> Signal:
    t = 1_700_000_000_000 + minute * M1
    return Signal(sym, t + 30_000, t, 3.5, 4.25, 75_000.5, price)


def pos(signal: Signal, *, qty: float = 1.0) -> Position:
    entry = signal.price * 1.0005
    return Position(signal.key, signal.symbol, qty, entry, signal.time, entry * 1.02, entry * 0.99,
                    signal.time + 3_600_000, fees=0.04)


def closed(p: Position, price: float, *, reason: str = "take_profit", after_ms: int = 60_000) -> Position:
    fees = p.fees + price * p.qty * 0.0004
    return replace(p, exit_price=price, exit_time=p.entry_time + after_ms, exit_reason=reason, fees=fees,
                   pnl=(price - p.entry_price) * p.qty - fees)


def test_entry_stores_signal_and_position_once(tmp_path: Path) -> None:
    s = sig(price=0.1 + 0.2)  # floats must round-trip exactly
    p = pos(s, qty=1 / 3)
    with Store(tmp_path / "surge.db") as store:
        assert store.record_entry(s, p) is True
        # the replay after a restart: same candle, same key -> nothing written, whatever is offered
        assert store.record_entry(s, pos(s, qty=99.0)) is False
        assert store.record_entry(s, None, "max_open_positions") is False
        assert store.record_entry(replace(s, time=s.time + 1, price=1.0), None, "x") is False
    with Store(tmp_path / "surge.db") as store:
        assert store.signals() == [SignalRecord(s, True, None)]
        assert store.open_positions() == [p] and store.positions(include_closed=True) == [p]
        assert store.signal_count() == 1 and store.open_position_count() == 1
        assert store.realised_pnl() == 0.0


def test_skipped_signal_has_its_reason_and_no_position(tmp_path: Path) -> None:
    with Store(tmp_path / "surge.db") as store:
        assert store.record_entry(sig("ETHUSDT"), None, "max_open_positions") is True
        assert store.signals() == [SignalRecord(sig("ETHUSDT"), False, "max_open_positions")]
        assert store.open_positions() == [] and store.positions(True) == []
        assert store.signal_count() == 1


def test_bad_entries_are_refused_and_write_nothing(tmp_path: Path) -> None:
    s = sig()
    with Store(tmp_path / "surge.db") as store:
        with pytest.raises(ValueError, match="key"):
            store.record_entry(s, pos(sig(minute=1)))
        with pytest.raises(ValueError, match="skip reason"):
            store.record_entry(s, pos(s), "why")
        assert store.signal_count() == 0
        # a position row with no signal row (never written by surge; possible in a file from before
        # foreign keys were enforced): still no second position
        store._db.execute("PRAGMA foreign_keys = OFF")
        store._db.execute(f"INSERT INTO positions (venue, {_POSITION_COLUMNS}) VALUES "
                          "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (DEFAULT_VENUE, s.key, s.symbol, 1.0, 1.0, 0, 2.0, 0.5, 9, 0.0, *[None] * 4))
        store._db.execute("PRAGMA foreign_keys = ON")
        assert store.record_entry(s, pos(s)) is False
        assert store.signal_count() == 0 and len(store.positions(True)) == 1


CRASH_BETWEEN = """
import os, sys
from surge.store import Store
from tests.test_store import pos, sig

store = Store(sys.argv[1])
def die_before_position(statement: str) -> None:
    if statement.lstrip().upper().startswith("INSERT OR IGNORE INTO POSITIONS"):
        os._exit(9)  # like kill -9: signal row written in the open transaction, position not yet
store._db.set_trace_callback(die_before_position)
store.record_entry(sig(), pos(sig()))
os._exit(0)
"""


def test_crash_between_signal_and_position_leaves_neither(tmp_path: Path) -> None:
    """The crash the issue names: dying after the signal's INSERT and before the position's."""
    path = tmp_path / "surge.db"
    Store(path).close()
    proc = subprocess.run([sys.executable, "-c", CRASH_BETWEEN, str(path)], cwd=Path(__file__).parents[1],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 9, proc.stderr
    with Store(path) as store:
        assert store.signal_count() == 0 and store.positions(True) == []
        assert store.record_entry(sig(), pos(sig())) is True  # the restart's replay enters exactly once
        assert store.record_entry(sig(), pos(sig())) is False
        assert store.open_positions() == [pos(sig())]


def test_close_position_is_idempotent_and_counts_in_pnl(tmp_path: Path) -> None:
    a, b, c = sig("A", 0), sig("B", 1), sig("C", 2)
    with Store(tmp_path / "surge.db") as store:
        for s in (a, b, c):
            assert store.record_entry(s, pos(s))
        win = closed(pos(a), 103.0)
        loss = closed(pos(b), 98.0, reason="stop_loss")
        store.close_position(win)
        store.close_position(loss)
        store.close_position(win)  # replayed exit: no change
        store.close_position(closed(pos(a), 50.0, reason="max_hold"))  # a later, different exit: first wins
        with pytest.raises(ValueError, match="no exit"):
            store.close_position(pos(c))
        with pytest.raises(ValueError, match="no stored position"):
            store.close_position(closed(pos(sig("Z")), 1.0))
    with Store(tmp_path / "surge.db") as store:
        assert store.open_positions() == [pos(c)]
        assert store.positions() == [pos(c)]
        assert store.positions(include_closed=True) == [pos(c), loss, win]  # newest entry first
        assert store.positions(True, limit=2) == [pos(c), loss]
        assert store.realised_pnl() == pytest.approx(win.pnl + loss.pnl)  # type: ignore[operator]
        assert store.open_position_count() == 1


def test_signals_newest_first_and_last_times_per_symbol(tmp_path: Path) -> None:
    with Store(tmp_path / "surge.db") as store:
        store.record_entry(sig("A", 0), pos(sig("A", 0)))
        store.record_entry(sig("B", 5), None, "cooldown")
        store.record_entry(sig("A", 20), None, "max_open_positions")
        store.record_entry(sig("C", 3), pos(sig("C", 3)))
        newest_first = [sig("A", 20), sig("B", 5), sig("C", 3), sig("A", 0)]
        assert [r.signal for r in store.signals()] == newest_first
        assert [r.signal for r in store.signals(limit=2)] == [sig("A", 20), sig("B", 5)]
        assert store.last_signal_times() == {"A": sig("A", 20).time, "B": sig("B", 5).time,
                                             "C": sig("C", 3).time}
        assert store.signal_count() == 4


def make_v1_database(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database exactly as the version-1 surge wrote it (migration 1 is never edited)."""
    import surge.store as store_mod

    with monkeypatch.context() as m:
        m.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS[:1])
        m.setattr(store_mod, "SCHEMA_VERSION", 1)
        with store_mod.Store(path) as store:
            assert store.schema_version == 1
            store.put_candles([k("A", 0), k("A", H4)])


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
    with read_store(home) as ro:  # type: ignore[union-attr]
        assert ro.schema_version == 1  # not migrated by looking
        assert ro.signals() == [] and ro.signal_count() == 0 and ro.positions(True) == []
        assert ro.realised_pnl() == 0.0 and ro.last_signal_times() == {}
        with pytest.raises(StoreError, match="read-only"):
            ro.record_entry(sig(), None, "x")
    with Store(path) as store:
        store.record_entry(sig(), pos(sig()))
    with read_store(home) as ro:  # type: ignore[union-attr]
        assert ro.open_positions() == [pos(sig())]


def test_reader_is_not_blocked_by_a_writer_in_a_transaction(tmp_path: Path) -> None:
    """WAL: ``surge positions`` answers at once while ``surge run`` holds a write transaction."""
    path = tmp_path / "surge.db"
    with Store(path) as store:
        store.record_entry(sig("A"), pos(sig("A")))
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")  # would lock every reader out of a rollback-journal database
        writer.execute("INSERT INTO signals (venue, key, symbol, time, open_time, change_pct, "
                       "volume_multiple, quote_volume, price, outcome) "
                       "VALUES ('x', 'B:0', 'B', 0, 0, 1, 1, 1, 1, 'skipped')")
        start = time.monotonic()
        with Store(path, readonly=True, busy_timeout_s=5.0) as ro:
            assert [r.signal.symbol for r in ro.signals()] == ["A"]  # committed data only
            assert ro.open_positions() == [pos(sig("A"))]
        assert time.monotonic() - start < 2.0
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_venues_keep_simulated_and_real_state_apart(tmp_path: Path) -> None:
    """The same candle surging on the simulator and on Binance: two signals, two positions, no mixing."""
    s = sig("BTCUSDT")
    with Store(tmp_path / "surge.db") as store:
        assert store.record_entry(s, pos(s), venue="sim")
        assert store.record_entry(s, pos(s, qty=2.0), venue="https://fapi.binance.com")
        assert not store.record_entry(s, pos(s), venue="sim")
        assert store.record_entry(sig("ETHUSDT"), None, "cooldown", venue="sim")
        assert store.open_positions(venue="sim") == [pos(s)]
        assert store.open_positions(venue="https://fapi.binance.com") == [pos(s, qty=2.0)]
        assert store.signal_count(venue="sim") == 2 and store.signal_count() == 3
        assert store.last_signal_times(venue="https://fapi.binance.com") == {"BTCUSDT": s.time}
        assert store.open_position_count() == 2 and store.open_position_count(venue="nowhere") == 0
        # two open positions share the key: closing by key alone is ambiguous, by venue it is not
        with pytest.raises(ValueError, match="name one"):
            store.close_position(closed(pos(s), 101.0))
        store.close_position(closed(pos(s), 101.0), venue="sim")
        store.close_position(closed(pos(s, qty=2.0), 99.0))  # now the only open one with that key
        assert store.open_positions() == []
        assert store.realised_pnl(venue="sim") == pytest.approx(closed(pos(s), 101.0).pnl)
        assert {(r.venue, r.position.qty) for r in store.position_records(True)} == {
            ("sim", 1.0), ("https://fapi.binance.com", 2.0)}
        assert PositionRecord(closed(pos(s), 101.0), "sim") in store.position_records(True, venue="sim")
        assert [r.venue for r in store.signals(venue="sim")] == ["sim", "sim"]


def test_has_signal_by_venue(tmp_path: Path) -> None:
    s = sig()
    with Store(tmp_path / "surge.db") as store:
        assert not store.has_signal(s.key, venue="live:sim")
        assert store.record_entry(s, None, "size", venue="live:sim")
        assert store.has_signal(s.key, venue="live:sim")
        assert not store.has_signal(s.key, venue="sim") and not store.has_signal("X:1", venue="live:sim")


def test_adopt_trade_without_signal_makes_one(tmp_path: Path) -> None:
    """A position the ledger lacks (opened while no trade row knew it): stored with a signal row made from
    it, and a second adoption (the same position seen again) leaves one row of each."""
    p = pos(sig("SOLUSDT", 3))
    t = Trade(p.key, p.symbol, FILLED, qty="1", note="adopted")
    with Store(tmp_path / "surge.db") as store:
        store.adopt_trade(t, p, venue="live:sim")
        store.adopt_trade(t, p, venue="live:sim")
        assert store.open_positions(venue="live:sim") == [p]
        assert store.trades(venue="live:sim") == [t]
        [record] = store.signals(venue="live:sim")
        assert record.entered and record.skip_reason is None
        assert (record.signal.key, record.signal.price, record.signal.time) == (p.key, p.entry_price,
                                                                                 p.entry_time)
        with pytest.raises(ValueError, match="not an open position"):
            store.adopt_trade(t, closed(p, 1.0), venue="live:sim")


def test_adopt_trade_turns_a_skipped_signal_into_an_entry(tmp_path: Path) -> None:
    """The entry reached the exchange after all (a late fill of an entry proven never executed)."""
    s = sig("ETHUSDT", 1)
    with Store(tmp_path / "surge.db") as store:
        assert store.record_entry(s, None, "exchange error", venue="live:sim")
        store.adopt_trade(Trade(s.key, s.symbol, FILLED), pos(s), venue="live:sim")
        assert store.signals(venue="live:sim") == [SignalRecord(s, True, None, "live:sim")]
        assert store.open_positions(venue="live:sim") == [pos(s)]


def test_trade_lifecycle_moves_signal_trade_and_position_together(tmp_path: Path) -> None:
    """Intent -> sent -> filled -> closed, and a void: each step one transaction, nothing reopened."""
    s, other = sig("SOLUSDT", 1), sig("ETHUSDT", 2)
    intent = Trade(s.key, s.symbol, INTENT, signal_at=1.0)
    with Store(tmp_path / "surge.db") as store:
        assert store.record_intent(s, intent, venue="live:sim")
        assert not store.record_intent(s, intent, venue="live:sim")  # the same candle again
        assert store.has_signal(s.key, venue="live:sim")
        with pytest.raises(ValueError, match="not the intent"):
            store.record_intent(other, intent, venue="live:sim")
        sent = replace(intent, state=SENT, qty="0.5", entry_sent_at=1000)
        store.save_trade(sent, venue="live:sim")
        assert store.trade(s.key, venue="live:sim") == sent and store.open_positions(venue="live:sim") == []
        filled = replace(sent, state=FILLED, filled_at=2.0)
        store.record_fill(filled, pos(s), venue="live:sim")
        assert store.open_positions(venue="live:sim") == [pos(s)]
        assert store.trades(venue="live:sim", unfinished=True) == [filled]
        store.record_trade_close(filled, closed(pos(s), 101.0), venue="live:sim")
        assert store.trade(s.key, venue="live:sim").state == CLOSED  # type: ignore[union-attr]
        assert store.open_positions(venue="live:sim") == [] and store.trades(unfinished=True) == []
        with pytest.raises(ValueError, match="cannot become"):
            store.save_trade(filled, venue="live:sim")
        gone = Trade(other.key, other.symbol, INTENT)
        assert store.record_intent(other, gone, venue="live:sim")
        store.void_trade(gone, "size: too small", venue="live:sim")
        [record] = [r for r in store.signals(venue="live:sim") if r.signal.key == other.key]
        assert not record.entered and record.skip_reason == "size: too small"
        assert store.trade(other.key, venue="live:sim").state == VOID  # type: ignore[union-attr]


def test_update_position_only_touches_an_open_one(tmp_path: Path) -> None:
    a, b = sig("A", 0), sig("B", 1)
    with Store(tmp_path / "surge.db") as store:
        assert store.record_entry(a, pos(a), venue="v") and store.record_entry(b, pos(b), venue="v")
        store.close_position(closed(pos(b), 101.0), venue="v")
        moved = replace(pos(a), qty=0.5, entry_price=99.0, take_profit=101.0, stop_loss=98.0, fees=0.01)
        assert store.update_position(moved, venue="v") is True
        assert store.update_position(replace(pos(b), qty=7.0), venue="v") is False  # closed: untouched
        assert store.update_position(moved, venue="other") is False
        assert store.open_positions(venue="v") == [moved]
        assert [p.qty for p in store.positions(True, venue="v") if p.key == b.key] == [1.0]


# --------------------------------------------------------------------------- durability (issue 10)


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
            store._db.execute("INSERT INTO trades (venue, key, symbol, state) "
                              "VALUES ('x', 'K:1', 'K', 'intent')")
        assert store.trades() == [] and store.positions(True) == [] and store.signal_count() == 0
        assert store.record_intent(s, Trade(s.key, s.symbol, INTENT))  # the real path: signal first
        store.record_fill(replace(orphan, state=FILLED), pos(s))
        assert [t.state for t in store.trades()] == [FILLED] and len(store.open_positions()) == 1
    with read_store(tmp_path) as reader:
        assert reader._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_a_full_database_refuses_a_write_whole_and_takes_the_next_when_there_is_room(tmp_path: Path) -> None:
    """SQLITE_FULL (here from max_page_count, as a full disk gives it) is a StoreWriteError the bot rides
    out, the transaction is rolled back whole (signal and position, never one of them), and the same
    connection writes again once there is room."""
    from surge.store import StoreWriteError

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
