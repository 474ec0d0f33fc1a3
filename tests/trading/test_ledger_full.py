"""A ledger that refuses writes (a full disk) while positions are held: the paper and live desks.

The rule: an entry that cannot be recorded is not made, and for live trading not sent; a
position already held is still protected and closed, its rows kept in memory and written, in order,
once the database takes writes again. The full disk is played by the store's write methods raising
:class:`StoreWriteError` while a switch is on (what SQLITE_FULL becomes in the store; the store's own
test proves that translation, and tests/test_app_home.py a real full disk under a real bot).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import surge.store
from surge.config import TradeSettings
from surge.models import PROTECTED, SENT, Position, Signal
from surge.store import Store, open_store
from surge.trading.live import client_id
from surge.trading.outcomes import Outcome, TradeClosed, TradeOpened
from surge.trading.paper import MAX_HOLD, TAKE_PROFIT, PaperDesk
from tests.trading.test_desk import SYMBOL, VENUE, Env
from tests.waiting import wait_for

#: What the store raises when SQLite answers SQLITE_FULL (an older store let sqlite3's own error out).
FULL: type[Exception] = getattr(surge.store, "StoreWriteError", sqlite3.OperationalError)
WRITES = (
    "record_entry",
    "close_position",
    "record_intent",
    "save_trade",
    "record_fill",
    "void_trade",
    "record_trade_close",
    "adopt_trade",
    "update_position",
)


class FullDisk:
    """Switches the store's writes to failing as on a full disk (and back), counting the refusals."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on = threading.Event()
        self.refused = 0
        for name in WRITES:
            real = getattr(store, name)

            def write(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
                if self.on.is_set():
                    self.refused += 1
                    raise FULL(f"cannot write {store.path}: database or disk is full")
                return _real(*args, **kwargs)

            monkeypatch.setattr(store, name, write)


def test_paper_close_happens_on_a_full_disk_and_is_written_when_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes: list[Outcome] = []
    settings = TradeSettings(position_usdt=100.0, take_profit_pct=2.0, stop_loss_pct=1.0, max_hold_s=60.0)
    with open_store(tmp_path) as store:
        disk = FullDisk(store, monkeypatch)
        desk = PaperDesk(settings, store, "sim", outcomes.append)
        signal = Signal("BTCUSDT", 1_000, 0, 4.0, 5.0, 1e6, 100.0)
        assert desk.enter(signal)
        [opened] = outcomes
        assert isinstance(opened, TradeOpened)
        disk.on.set()
        with pytest.raises(FULL):  # no room to record it: no entry (the bot logs it)
            desk.enter(Signal("ETHUSDT", 1_000, 0, 4.0, 5.0, 1e6, 100.0))
        desk.close(opened.position, TAKE_PROFIT, 103.0, 2_000)
        assert isinstance(outcomes[-1], TradeClosed)  # closed all the same: the book lets it go
        desk.flush_unsaved()  # still full: kept
        assert [p.key for p in store.open_positions(venue="sim")] == [signal.key]
        disk.on.clear()
        desk.flush_unsaved()  # the bot's next heartbeat
        assert store.open_positions(venue="sim") == []
        [closed] = store.positions(include_closed=True, venue="sim")
        assert closed.exit_reason == TAKE_PROFIT and closed == outcomes[-1].position
        assert store.signal_count() == 1  # the refused entry left no trace


def test_live_close_is_sent_on_a_full_disk_and_recorded_when_there_is_room(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    desk = env.desk()
    pos = env.protected(desk)
    disk = FullDisk(env.store, monkeypatch)
    disk.on.set()
    with pytest.raises(Exception, match="full"):
        env.enter(desk, "ETHUSDT")  # not recordable: not sent
    assert env.account.snapshot()["client_order_counts"] == {client_id(pos.key, "e"): 1}
    with caplog.at_level(logging.ERROR, logger="surge.trading.desk"):
        desk.close(pos, MAX_HOLD)
        wait_for(
            lambda: env.account.position(SYMBOL).amount == 0,
            30,
            "the close to reach the exchange",
            detail=env.describe,
        )
        wait_for(lambda: disk.refused >= 3, 30, "the desk to try the ledger again")
    assert desk.alive and env.state(pos.key) == PROTECTED  # the row could not say more yet
    assert not env.of(TradeClosed)
    said = [r for r in caplog.records if "ledger cannot be written" in r.getMessage()]
    assert len(said) == 1  # once per spell, not per attempt
    disk.on.clear()
    closed = env.wait_outcome(TradeClosed, pos.key).position
    assert closed.exit_reason == MAX_HOLD and env.state(pos.key) == "closed"
    assert env.store.position(pos.key, venue=VENUE) == closed
    assert env.open_algo_ids() == set()


def test_live_fill_is_protected_on_a_full_disk_and_recorded_when_there_is_room(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills between the entry's "sent" row and its fill: both protective orders go out
    all the same (a position without its stop is the one thing that must not wait)."""
    desk = env.desk()
    disk = FullDisk(env.store, monkeypatch)
    save = env.store.save_trade

    def full_after_sent(trade: Any, **kwargs: Any) -> None:
        save(trade, **kwargs)
        if trade.state == SENT:
            disk.on.set()

    monkeypatch.setattr(env.store, "save_trade", full_after_sent)
    sig = env.enter(desk)
    opened = env.wait_outcome(TradeOpened, sig.key)
    wanted = {client_id(sig.key, "sl"), client_id(sig.key, "tp")}
    wait_for(lambda: env.open_algo_ids(SYMBOL) == wanted, 30, "both protective orders", detail=env.describe)
    assert env.state(sig.key) == SENT and env.store.position(sig.key, venue=VENUE) is None
    disk.on.clear()
    env.wait_state(sig.key, PROTECTED)
    assert env.store.position(sig.key, venue=VENUE) == opened.position
    assert isinstance(opened.position, Position) and env.entries(sig.key) == 1


def test_a_live_desk_stopped_while_the_disk_is_full_says_what_it_could_not_write(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The held-back rows live in memory only: a stop before the disk has room must say so (the next
    start reconciles with the exchange, which holds the truth)."""
    desk = env.desk()
    pos = env.protected(desk)
    disk = FullDisk(env.store, monkeypatch)
    disk.on.set()
    desk.close(pos, MAX_HOLD)
    wait_for(
        lambda: env.account.position(SYMBOL).amount == 0,
        30,
        "the close to reach the exchange",
        detail=env.describe,
    )
    wait_for(lambda: disk.refused >= 2, 30, "the desk to try the ledger again")
    with caplog.at_level(logging.ERROR, logger="surge.trading.desk"):
        desk.stop(timeout=2.0)
    assert not desk.alive
    said = [r.getMessage() for r in caplog.records if "stopping with" in r.getMessage()]
    assert len(said) == 1 and "full disk refused" in said[0] and SYMBOL in said[0], said


def test_a_ledger_write_failing_for_another_reason_is_not_queued_and_the_desk_lives(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a full disk holds a write back for later: any other failure (a bug, a constraint) fails
    its step, which is retried from its row. Queued, it was retried by the desk's loop outside any
    guard, and its second failure ended the desk thread with the position unprotected."""
    desk = env.desk()
    save = env.store.save_trade
    failures = [0]

    def flaky(trade: Any, **kwargs: Any) -> None:
        if trade.state == PROTECTED and failures[0] < 2:
            failures[0] += 1
            raise RuntimeError("a write that is not about disk space")
        save(trade, **kwargs)

    monkeypatch.setattr(env.store, "save_trade", flaky)
    sig = env.enter(desk)
    env.wait_state(sig.key, PROTECTED)
    assert failures[0] == 2 and desk.alive and desk.step_errors >= 2
    assert env.open_algo_ids(SYMBOL) == {client_id(sig.key, "sl"), client_id(sig.key, "tp")}
