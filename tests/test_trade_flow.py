"""The loop's side of trading: entries on their way count as held, outcomes mirrored, no double close."""

from __future__ import annotations

import logging
from typing import Any

from surge.config import SurgeSettings
from surge.models import Position, Signal, Trade
from surge.runtime import Spell
from surge.strategy import SurgeRule
from surge.trade_flow import TradeFlow
from surge.trading import PositionBook, TradeClosed, TradeOpened, TradeVoid


class FakeStore:
    def __init__(self) -> None:
        self.skipped: list[tuple[str, str | None]] = []
        self.signals: set[str] = set()

    def has_signal(self, key: str, *, venue: str) -> bool:
        return key in self.signals

    def record_entry(self, signal: Signal, position: Any, *, skip_reason: str | None, venue: str) -> bool:
        self.skipped.append((signal.key, skip_reason))
        return True

    def last_signal_times(self, *, venue: str) -> dict[str, int]:
        return {}


class FakeDesk:
    """A live desk as the loop sees it: enter() and close() only queue work, outcomes come later."""

    def __init__(self, unresolved: list[Any] | None = None) -> None:
        self.entered: list[str] = []
        self.closed: list[tuple[str, str, float | None]] = []
        self.unresolved = unresolved or []

    def enter(self, signal: Signal) -> bool:
        self.entered.append(signal.key)
        return True

    def close(self, position: Position, reason: str, price: float | None, now_ms: int) -> None:
        self.closed.append((position.key, reason, price))

    def stop(self) -> list[Any]:
        return self.unresolved


NO_PRICE: dict[str, float] = {}


def signal(symbol: str, minute: int = 0) -> Signal:
    return Signal(symbol, 60_000 * minute + 30_000, 60_000 * minute, 5.0, 4.0, 90_000.0, 10.0)


def position(symbol: str, deadline: int = 10**15) -> Position:
    return Position(f"{symbol}:0", symbol, 1.0, 10.0, 0, 10.2, 9.9, deadline)


def flow(max_open: int = 2, desk: FakeDesk | None = None) -> tuple[TradeFlow, FakeDesk, FakeStore]:
    trades = TradeFlow(
        PositionBook(max_open), SurgeRule(SurgeSettings()), "sim", Spell(logging.getLogger("t"), "x")
    )
    desk = desk or FakeDesk()
    store = FakeStore()
    trades.start(desk, store)  # type: ignore[arg-type]
    return trades, desk, store


def test_an_entry_on_its_way_counts_as_held() -> None:
    trades, desk, store = flow(max_open=2)
    trades.on_signal(signal("AUSDT"))
    assert desk.entered == ["AUSDT:0"] and trades.entering == {"AUSDT:0": "AUSDT"}
    trades.on_signal(signal("AUSDT", 1))  # same symbol, entry unconfirmed
    trades.on_signal(signal("BUSDT"))
    trades.on_signal(signal("CUSDT"))  # A and B on their way: the limit of 2 is reached
    assert desk.entered == ["AUSDT:0", "BUSDT:0"]
    assert store.skipped == [
        ("AUSDT:60000", "an entry on AUSDT is still unconfirmed"),
        ("CUSDT:0", "max_open_positions (2) reached"),
    ]
    assert trades.signals_seen == 4


def test_outcomes_are_mirrored_in_the_book() -> None:
    trades, _, _ = flow()
    trades.on_signal(signal("AUSDT"))
    trades.on_signal(signal("BUSDT"))
    assert trades.on_outcome(TradeOpened(position("AUSDT"))) is True
    assert trades.on_outcome(TradeOpened(position("AUSDT"))) is False  # known already
    assert trades.on_outcome(TradeVoid("BUSDT:0", "BUSDT", "too small")) is False
    assert trades.entering == {} and trades.book.symbols() == {"AUSDT"}
    closed = TradeClosed(position("AUSDT"))
    assert trades.on_outcome(closed) is True and trades.book.symbols() == set()
    assert trades.on_outcome(closed) is False  # not held any more


def test_a_position_is_never_closed_twice_and_max_hold_waits_for_a_price_on_paper() -> None:
    trades, desk, _ = flow()
    held = position("AUSDT", deadline=1_000)
    trades.on_outcome(TradeOpened(held))
    trades.check_max_hold(999, NO_PRICE.get, live=False)
    assert desk.closed == []
    trades.check_max_hold(1_000, NO_PRICE.get, live=False)  # due, but no price yet on paper
    assert desk.closed == []
    trades.check_max_hold(1_000, {"AUSDT": 10.1}.get, live=False)
    trades.check_max_hold(1_001, {"AUSDT": 10.1}.get, live=False)
    trades.close(held, 10.0, 1_002, "stop_loss")
    assert desk.closed == [("AUSDT:0", "max_hold", 10.1)]


def test_live_max_hold_closes_without_a_price() -> None:
    trades, desk, _ = flow()
    trades.on_outcome(TradeOpened(position("AUSDT", deadline=1_000)))
    trades.check_max_hold(1_000, NO_PRICE.get, live=True)
    assert desk.closed == [("AUSDT:0", "max_hold", None)]


def test_the_stop_ends_entries_and_names_what_stays_unresolved() -> None:
    stuck = Trade("AUSDT:0", "AUSDT", "sent")
    trades, desk, store = flow(desk=FakeDesk(unresolved=[stuck]))
    assert trades.stop() == [stuck]
    trades.on_signal(signal("BUSDT"))
    assert desk.entered == [] and store.skipped == [("BUSDT:0", "shutting down")]
