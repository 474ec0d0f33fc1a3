"""The desk's in-memory state: a final trade is forgotten everywhere, open questions are listed."""

from __future__ import annotations

from surge.models import CLOSED, INTENT, PROTECTED, SENT, Trade
from surge.trading.desk_state import DeskState, StepRetry


def test_finish_forgets_a_trade_everywhere() -> None:
    state = DeskState()
    state.trades["k"] = Trade("k", "XUSDT", PROTECTED)
    state.retry["k"] = StepRetry()
    state.flat_reads["k"] = 1
    state.checked_protection.add("k")
    state.finish("k")
    assert not (state.trades or state.retry or state.flat_reads or state.checked_protection)


def test_unresolved_keys_and_other_holders() -> None:
    state = DeskState()
    for key, st in (("a", INTENT), ("b", SENT), ("c", PROTECTED), ("d", CLOSED)):
        state.trades[key] = Trade(key, f"{key.upper()}USDT", st)
    assert state.unresolved_keys() == ["a", "b"]
    assert state.held_by_other("CUSDT", "x") == "c" and state.held_by_other("CUSDT", "c") is None
