"""The words of the notifications (pure functions): short, and every figure a trader needs."""

from __future__ import annotations

from dataclasses import replace

from surge.models import Position
from surge.notify.messages import (
    MAX_BODY,
    DailySummary,
    Message,
    Outage,
    more_text,
    render,
)

OPENED = Position("ETHUSDT:1", "ETHUSDT", 0.5, 2000.0, 0, 2040.0, 1980.0, 3_600_000)


def test_an_exit_states_reason_pnl_move_and_time_held() -> None:
    closed = replace(OPENED, exit_price=1950.0, exit_time=5_400_000, exit_reason="stop_loss", pnl=-25.5)
    message = render("exit", closed)
    assert message.title == "surge: EXIT ETHUSDT -25.50 USDT" and message.type == "warning"
    assert message.body == "ETHUSDT stop_loss: PnL -25.50 USDT (-2.50%)\n2000 -> 1950, held 90m"


def test_an_entry_and_an_exit_are_told_apart_by_kind() -> None:
    assert render("entry", OPENED).title == "surge: ENTER ETHUSDT"
    assert "max hold until 01:00 UTC" in render("entry", OPENED).body


def test_outage_names_at_most_four_connections() -> None:
    names = tuple(f"surge-ws-{i}" for i in range(6))
    body = render("outage", Outage(True, names, 3700.0)).body
    assert body == "no market data on surge-ws-0, surge-ws-1, surge-ws-2, surge-ws-3 and 2 more for 62m"


def test_a_quiet_day_and_a_long_error() -> None:
    assert render("daily", DailySummary("2026-11-29", 0, 0, 0.0)).body == "2026-11-29: no trade closed"
    long = render("error", "x" * 5000)
    assert len(long.body) == MAX_BODY and long.body.endswith("...") and long.type == "failure"


def test_the_overflow_note_and_a_ready_message() -> None:
    assert (
        more_text({"signal": 12, "exit": 1})
        == "... and 1 more exit, 12 more signals (not sent: too many at once)"
    )
    assert more_text({}) == ""
    ready = Message("surge: test", "hello")
    assert render("test", ready) is ready
