"""Ledger writes on a full disk: held positions' rows wait in order, an entry's row never does."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from surge.models import FILLED, PROTECTED, SENT, Trade
from surge.store import StoreWriteError
from surge.trading.ledger_writes import LedgerWriter


class DiskStore:
    """A store whose disk can be full; it records the rows it wrote."""

    def __init__(self) -> None:
        self.full = False
        self.rows: list[tuple[str, str]] = []

    def save_trade(self, trade: Trade, *, venue: str) -> None:
        if self.full:
            raise StoreWriteError("database or disk is full")
        self.rows.append((trade.key, trade.state))


def writer(
    store: DiskStore, clock: Callable[[], float] = lambda: 0.0
) -> tuple[LedgerWriter, dict[str, Trade]]:
    trades: dict[str, Trade] = {}
    store_: Any = store
    return LedgerWriter(store_, "live:test", trades, logging.getLogger("test"), clock), trades


def test_a_held_row_waits_for_the_disk_and_is_written_in_order() -> None:
    store = DiskStore()
    ledger, trades = writer(store)
    store.full = True
    ledger.save(Trade("k", "XUSDT", FILLED))
    ledger.save(Trade("k", "XUSDT", PROTECTED))
    assert trades["k"].state == PROTECTED and len(ledger.pending) == 2 and ledger.failing
    with pytest.raises(StoreWriteError):
        ledger.flush()
    store.full = False
    ledger.flush()
    assert store.rows == [("k", FILLED), ("k", PROTECTED)] and not ledger.pending and not ledger.failing


def test_an_entry_row_the_disk_refuses_raises_and_is_not_kept() -> None:
    store = DiskStore()
    ledger, trades = writer(store)
    store.full = True
    with pytest.raises(StoreWriteError):
        ledger.save(Trade("k", "XUSDT", SENT))
    assert "k" not in trades and not ledger.pending


def test_a_write_failing_for_another_reason_is_not_kept() -> None:
    store = DiskStore()
    ledger, _ = writer(store)

    def broken() -> None:
        raise RuntimeError("constraint")

    with pytest.raises(RuntimeError):
        ledger.write(broken, held=True)
    assert not ledger.pending
    ledger.save(Trade("k", "XUSDT", FILLED))
    assert store.rows == [("k", FILLED)]
