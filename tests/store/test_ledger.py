"""The trade ledger: a signal enters at most once, venues stay apart, a live trade moves with its
signal and position in one transaction."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from surge.models import CLOSED, FILLED, INTENT, SENT, VOID, Trade
from surge.store import DEFAULT_VENUE, PositionRecord, SignalRecord, Store
from surge.store.ledger import _POSITION_COLUMNS
from tests.store.samples import closed, pos, sig


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
        store._db.execute(
            f"INSERT INTO positions (venue, {_POSITION_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (DEFAULT_VENUE, s.key, s.symbol, 1.0, 1.0, 0, 2.0, 0.5, 9, 0.0, *[None] * 4),
        )
        store._db.execute("PRAGMA foreign_keys = ON")
        assert store.record_entry(s, pos(s)) is False
        assert store.signal_count() == 0 and len(store.positions(True)) == 1


CRASH_BETWEEN = """
import os, sys
from surge.store import Store
from tests.store.samples import pos, sig

store = Store(sys.argv[1])
def die_before_position(statement: str) -> None:
    if statement.lstrip().upper().startswith("INSERT INTO POSITIONS"):
        os._exit(9)  # like kill -9: signal row written in the open transaction, position not yet
store._db.set_trace_callback(die_before_position)
store.record_entry(sig(), pos(sig()))
os._exit(0)
"""


def test_crash_between_signal_and_position_leaves_neither(tmp_path: Path) -> None:
    """The one crash window an entry could have: dying after the signal's INSERT and before the
    position's, with both in one transaction, leaves neither."""
    path = tmp_path / "surge.db"
    Store(path).close()
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_BETWEEN, str(path)],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=30,
    )
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
        assert store.position_count() == 3  # every position entered, open or closed


def test_signals_newest_first_and_last_times_per_symbol(tmp_path: Path) -> None:
    with Store(tmp_path / "surge.db") as store:
        store.record_entry(sig("A", 0), pos(sig("A", 0)))
        store.record_entry(sig("B", 5), None, "cooldown")
        store.record_entry(sig("A", 20), None, "max_open_positions")
        store.record_entry(sig("C", 3), pos(sig("C", 3)))
        newest_first = [sig("A", 20), sig("B", 5), sig("C", 3), sig("A", 0)]
        assert [r.signal for r in store.signals()] == newest_first
        assert [r.signal for r in store.signals(limit=2)] == [sig("A", 20), sig("B", 5)]
        assert store.last_signal_times() == {
            "A": sig("A", 20).time,
            "B": sig("B", 5).time,
            "C": sig("C", 3).time,
        }
        assert store.signal_count() == 4


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
        assert store.position_count(venue="sim") == 1 and store.position_count() == 2
        assert store.realised_pnl(venue="sim") == pytest.approx(closed(pos(s), 101.0).pnl)
        assert {(r.venue, r.position.qty) for r in store.position_records(True)} == {
            ("sim", 1.0),
            ("https://fapi.binance.com", 2.0),
        }
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
        assert (record.signal.key, record.signal.price, record.signal.time) == (
            p.key,
            p.entry_price,
            p.entry_time,
        )
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
