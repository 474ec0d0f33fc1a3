"""What becomes a notification besides the trade flow: ERROR records and reconcile findings on the
``surge`` logger, and the loop's periodic look at a real (unstarted) Bot: stream outage from the
stream manager's stats, rate limiting from the real weight limiter, the daily summary from a real
ledger. Every message is read back from a real receiver on loopback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from surge.app import Bot
from surge.clock import Clock
from surge.config import NOTIFY_EVENTS, load_settings
from surge.exchange.ratelimit import RateLimitBanned
from surge.exchange.rest import BinanceRest
from surge.notify.notifier import Notifier
from surge.notify.sources import WHOLE_FEED, EventLogHandler, Watch, silent_connections
from surge.store import open_store
from tests.notify.receiver import Receiver
from tests.operator.ledger import DAY, HOUR, T0, trade
from tests.waiting import wait_for


def conn(name: str, age: float | None, up: float = 600.0) -> dict[str, object]:
    """One ``stats()["per_connection"]`` entry as the stream manager reports it."""
    return {"name": name, "connected": True, "last_message_age_s": age, "age_s": up}


def test_silent_connections() -> None:
    healthy = {"per_connection": [conn("surge-ws-1", 0.2), conn("surge-ws-2", 1.0)]}
    assert silent_connections(healthy, 60) == ([], 0.0)
    one = {"per_connection": [conn("surge-ws-1", 0.2), conn("surge-ws-2", 75.0)]}
    assert silent_connections(one, 60) == (["surge-ws-2"], 75.0)
    every = {"per_connection": [conn("surge-ws-1", 61.0), conn("surge-ws-2", 90.0)]}
    assert silent_connections(every, 60) == ([WHOLE_FEED], 90.0)
    never = {"per_connection": [conn("surge-ws-1", None, up=120.0), conn("surge-ws-2", 0.5)]}
    assert silent_connections(never, 60) == (["surge-ws-1"], 120.0)  # up 2 min, not one frame
    assert silent_connections({"per_connection": [], "wanted": 0}, 60) == ([], 0.0)
    gone = {"per_connection": [], "wanted": 12, "last_message_age_s": 95.0}
    assert silent_connections(gone, 60) == ([WHOLE_FEED], 95.0)  # every connection closed


def test_errors_and_reconcile_findings_are_posted(receiver: Receiver, notifiers: list[Notifier]) -> None:
    notifier = Notifier([receiver.url()], NOTIFY_EVENTS).start()
    notifiers.append(notifier)
    handler = EventLogHandler(notifier)
    logger = logging.getLogger("surge")
    logger.addHandler(handler)
    try:
        logging.getLogger("surge.trading.reconcile").warning(
            "reconcile: %s: entry %s was never sent: void", "SOLUSDT", "k"
        )
        logging.getLogger("surge.app").warning("stream gap on surge-ws-1: not an event")
        logging.getLogger("surge.app").info("ENTER ... (an INFO record is never one)")
        logging.getLogger("surge.notify").error("the notifier's own failure: never notified")
        try:
            raise ValueError("disk on fire")
        except ValueError:
            logging.getLogger("surge.store").exception("writing to the database failed")
    finally:
        logger.removeHandler(handler)
    assert notifier.posted == 2
    wait_for(lambda: receiver.requests == 2, what="the two events", detail=receiver.messages)
    reconcile, error = receiver.messages()
    assert "reconcile: SOLUSDT: entry k was never sent: void" in reconcile
    assert "ERROR" in error and "writing to the database failed (ValueError: disk on fire)" in error


@pytest.fixture
def wall() -> list[float]:
    """The bot's wall clock (seconds), set by the test."""
    return [(T0 + 5 * HOUR) / 1000]


@pytest.fixture
def bot(tmp_path: Path, wall: list[float]) -> Iterator[Bot]:
    """A real Bot, not started: its REST client (never used here) and its store, on the test's clock."""
    settings = load_settings(env={"SURGE_HOME": str(tmp_path)})
    b = Bot(settings, venue="sim", clock=Clock(wall=lambda: wall[0]))
    b.rest = BinanceRest("http://127.0.0.1:9")
    b.store = open_store(tmp_path)
    yield b
    b.store.close()
    b.rest.close()


def test_rate_limits_and_a_ban_are_told_once(bot: Bot, receiver: Receiver, notifiers: list[Notifier]) -> None:
    notifier = Notifier([receiver.url()], NOTIFY_EVENTS).start()
    notifiers.append(notifier)
    watch = Watch(bot, notifier, 60.0)
    limiter = bot.rest.limiter  # type: ignore[union-attr]
    watch.check(100.0)
    assert notifier.posted == 0
    limiter.observe(429, {"Retry-After": "30"})
    limiter.observe(429, {"Retry-After": "30"})
    watch.check(103.0)
    limiter.observe(429, {"Retry-After": "30"})
    watch.check(106.0)  # within the quiet period: summed into the next message
    with pytest.raises(RateLimitBanned):
        limiter.observe(418, {"Retry-After": "600"})
    watch.check(109.0)
    watch.check(112.0)
    assert notifier.posted == 2
    wait_for(lambda: receiver.requests == 2, what="two messages", detail=receiver.messages)
    limited, banned = receiver.messages()
    assert "2 rate-limit answer(s) (HTTP 429/418); REST paused" in limited
    assert "IP banned by the exchange (HTTP 418) for 10m" in banned


def test_the_daily_summary_at_the_utc_day_change(
    bot: Bot, wall: list[float], receiver: Receiver, notifiers: list[Notifier]
) -> None:
    assert bot.store is not None
    trade(bot.store, "BTCUSDT", T0 + HOUR, T0 + 2 * HOUR, 5.5)
    trade(bot.store, "ETHUSDT", T0 + 3 * HOUR, T0 + 4 * HOUR, -1.25)
    trade(bot.store, "SOLUSDT", T0 + 5 * HOUR, T0 + 6 * HOUR, 2.0, venue="live:sim")  # another book
    trade(bot.store, "XRPUSDT", T0 - 2 * HOUR, T0 - HOUR, 9.0)  # the day before
    notifier = Notifier([receiver.url()], NOTIFY_EVENTS).start()
    notifiers.append(notifier)
    watch = Watch(bot, notifier, 60.0)
    watch.check(10.0)  # the first look only learns the day
    wall[0] = (T0 + DAY + 60_000) / 1000
    watch.check(11.0)  # not yet: one look every 2 s
    assert notifier.posted == 0
    watch.check(12.5)
    watch.check(15.0)
    assert notifier.posted == 1
    wait_for(lambda: receiver.requests == 1, what="the summary")
    assert "2025-11-26: PnL +4.25 USDT, 2 trade(s), 1 win(s) (50%)" in receiver.messages()[0]
