"""The notifier against real HTTP receivers on loopback (apprise's json:// plugin, real sockets).

What it proves: every event's text arrives; a service answering 500 is logged once per period while
the others get everything; a hanging service never makes ``post()`` wait (the queue stays bounded
and what does not fit is said as "... and N more"); ``stop()`` returns within its bound with a
hanging receiver and leaves no thread; no token reaches a log or the console.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from surge.config import NOTIFY_EVENTS
from surge.models import Position, Signal
from surge.notify.messages import DailySummary, Outage, RateLimited, SignalSeen
from surge.notify.notifier import THREAD_NAME, Notifier
from tests.notify.receiver import TOKEN, Receiver
from tests.waiting import wait_for

SIGNAL = Signal("BTCUSDT", 1_764_115_260_000, 1_764_115_200_000, 4.2, 6.5, 123_456.0, 101.5)
OPENED = Position("BTCUSDT:1", "BTCUSDT", 0.98, 101.5, 1_764_115_261_000, 103.53, 100.48, 1_764_118_861_000)
CLOSED = Position(
    "BTCUSDT:1", "BTCUSDT", 0.98, 101.5, 1_764_115_261_000, 103.53, 100.48, 1_764_118_861_000,
    fees=0.1, exit_price=103.6, exit_time=1_764_115_561_000, exit_reason="take_profit", pnl=1.9580,
)  # fmt: skip


def make(notifiers: list[Notifier], urls: list[str], **kwargs: object) -> Notifier:
    notifier = Notifier(urls, NOTIFY_EVENTS, **kwargs).start()  # type: ignore[arg-type]
    notifiers.append(notifier)
    return notifier


def test_every_event_text_arrives(receiver: Receiver, notifiers: list[Notifier]) -> None:
    notifier = make(notifiers, [receiver.url()])
    events: list[tuple[str, object]] = [
        ("signal", SignalSeen(SIGNAL, "max_open_positions (5) reached")),
        ("entry", OPENED),
        ("exit", CLOSED),
        ("outage", Outage(True, ("surge-ws-2",), 75.0)),
        ("outage", Outage(False, (), 0.0, 190.0)),
        ("ban", RateLimited(3, 42.0)),
        ("ban", RateLimited(0, 0.0, 600.0)),
        ("error", "stopping with the live entry of ETHUSDT unresolved"),
        ("reconcile", "reconcile: SOLUSDT: entry SOLUSDT:1 was never sent: void"),
        ("daily", DailySummary("2026-11-29", 7, 4, 12.345)),
    ]
    for kind, event in events:
        assert notifier.post(kind, event)
    wait_for(lambda: receiver.requests == len(events), what="every message", detail=receiver.messages)
    got = receiver.messages()
    assert "BTCUSDT +4.20% in 1m, volume x6.5, at 101.5" in got[0] and "not entered: max_open" in got[0]
    assert "ENTER BTCUSDT" in got[1] and "long 0.98 at 101.5" in got[1] and "TP 103.53 / SL 100.48" in got[1]
    assert "EXIT BTCUSDT +1.96 USDT" in got[2] and "take_profit: PnL +1.96 USDT (+2.07%)" in got[2]
    assert "no market data on surge-ws-2 for 75s" in got[3]
    assert "the outage lasted 3m" in got[4]
    assert "3 rate-limit answer(s)" in got[5] and "IP banned by the exchange (HTTP 418) for 10m" in got[6]
    assert "ERROR" in got[7] and "ETHUSDT unresolved" in got[7]
    assert "never sent: void" in got[8]
    assert "2026-11-29: PnL +12.35 USDT, 7 trade(s), 4 win(s) (57%)" in got[9]
    # apprise's json:// payload, and the URL's password sent as HTTP basic auth (not in the body)
    assert set(receiver.bodies[0]) >= {"title", "message", "type"}
    assert receiver.bodies[2]["type"] == "success" and receiver.bodies[3]["type"] == "failure"
    assert all(a.startswith("Basic ") for a in receiver.auth)


def test_a_disabled_kind_is_not_queued(receiver: Receiver, notifiers: list[Notifier]) -> None:
    notifier = Notifier([receiver.url()], ["exit"]).start()
    notifiers.append(notifier)
    assert not notifier.post("signal", SignalSeen(SIGNAL))
    assert notifier.post("exit", CLOSED)
    wait_for(lambda: receiver.requests == 1, what="the exit")
    assert notifier.posted == 1 and notifier.dropped == 0


def test_a_failing_service_is_logged_once_per_period_and_the_others_get_everything(
    receiver_factory: Callable[[str], Receiver],
    notifiers: list[Notifier],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good, bad = receiver_factory("ok"), receiver_factory("fail")
    caplog.set_level(logging.INFO, logger="surge.notify")
    notifier = make(notifiers, [bad.url("/bad"), good.url("/good")], retry_s=(0.0, 0.0), log_period_s=3600)
    for i in range(6):
        assert notifier.post("error", f"failure number {i}")
    wait_for(lambda: good.requests == 6, what="every message at the good service", detail=good.messages)
    wait_for(lambda: notifier.sent == 6, what="the six sends")
    assert bad.requests == 6  # tried each time (no back-off here), answered 500 each time
    lines = [
        r.getMessage() for r in caplog.records if r.name == "surge.notify" and r.levelno == logging.WARNING
    ]
    assert len(lines) == 1, lines
    assert "notification to json://surge:****@127.0.0.1" in lines[0] and "/bad" in lines[0]
    assert "error=500" in lines[0]
    assert notifier.alive and notifier.post("error", "still going")
    wait_for(lambda: good.requests == 7, what="a message after the failures")
    out = capsys.readouterr()
    assert TOKEN not in caplog.text and TOKEN not in out.out and TOKEN not in out.err


def test_a_failure_is_said_again_after_its_period_with_the_count(
    receiver_factory: Callable[[str], Receiver], notifiers: list[Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    bad = receiver_factory("fail")
    caplog.set_level(logging.INFO, logger="surge.notify")
    notifier = make(notifiers, [bad.url()], retry_s=(0.0, 0.0), log_period_s=0.3)

    def warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "surge.notify" and r.levelno == logging.WARNING
        ]

    def second_line() -> bool:
        notifier.post("error", "again")
        return len(warnings()) >= 2

    wait_for(second_line, what="a second line about the failing service", poll=0.05)
    assert bad.requests > len(warnings())  # failures in between were counted, not logged
    assert "failure(s) since the last line" in warnings()[1]
    assert TOKEN not in caplog.text


def test_a_hanging_service_never_blocks_post_and_the_overflow_is_said(
    receiver_factory: Callable[[str], Receiver], notifiers: list[Notifier]
) -> None:
    hanging = receiver_factory("hang")
    notifier = make(notifiers, [hanging.url()], capacity=64, send_timeout_s=60.0)
    assert notifier.post("signal", SignalSeen(SIGNAL))
    wait_for(lambda: hanging.requests == 1, what="the first send to hang")  # the thread now waits on it
    accepted = [notifier.post("signal", SignalSeen(SIGNAL)) for _ in range(200)]
    assert len(accepted) == 200  # every call returned while the only sender was stuck
    assert sum(accepted) == 64 and notifier.queued() == 64 and notifier.dropped == 136
    hanging.release()
    wait_for(lambda: hanging.requests == 65, what="the queued messages", detail=lambda: hanging.requests)
    wait_for(lambda: notifier.queued() == 0 and notifier.sent == 65, what="the notifier to be idle")
    notes = [m for m in hanging.messages() if "more signals" in m]
    assert len(notes) == 1 and "... and 136 more signals" in notes[0], notes
    assert hanging.messages()[-1] == notes[0]  # said after what it follows


def test_stop_with_a_hanging_service_returns_within_its_bound(
    receiver_factory: Callable[[str], Receiver], notifiers: list[Notifier]
) -> None:
    hanging = receiver_factory("hang")
    notifier = Notifier([hanging.url()], NOTIFY_EVENTS, send_timeout_s=1.0).start()
    notifiers.append(notifier)
    for i in range(10):
        notifier.post("error", f"message {i}")
    wait_for(lambda: hanging.requests >= 1, what="a send to hang")
    started = time.monotonic()
    assert notifier.stop(timeout=3.0) is True
    assert time.monotonic() - started < 3.5
    assert not notifier.alive and not [t for t in threading.enumerate() if t.name == THREAD_NAME]
    assert not notifier.post("error", "after the stop")  # a stopped notifier takes nothing


def test_a_failed_service_is_backed_off_and_told_what_it_missed(
    receiver_factory: Callable[[str], Receiver], notifiers: list[Notifier]
) -> None:
    bad, good = receiver_factory("fail"), receiver_factory("ok")
    now = [0.0]
    notifier = make(notifiers, [bad.url(), good.url()], retry_s=(10.0, 10.0), clock=lambda: now[0])
    notifier.post("error", "first")
    wait_for(lambda: good.requests == 1 and notifier.sent == 1, what="the first message")
    assert bad.requests == 1  # answered 500: backed off for 10 s of the notifier's clock
    notifier.post("error", "second")
    wait_for(lambda: good.requests == 2 and notifier.sent == 2, what="the second message")
    assert bad.requests == 1  # skipped, not waited on
    bad.mode, now[0] = "ok", 11.0
    notifier.post("error", "third")
    # both services, not the first alone: the good one is sent to after the bad one (CI once read
    # its last message between the two sends)
    wait_for(lambda: bad.requests == 2 and good.requests == 3, what="the retry after the back-off")
    assert "third\n(1 earlier message(s) could not be delivered here)" in bad.messages()[-1]
    assert good.messages()[-1].endswith("third")
