"""One bot's notifications: nothing at all without a URL (no thread, no apprise import), and with one
a started ``surge-notify`` thread, the log handler on ``surge``, the trade flow's posts, and a stop
that removes the handler and joins the thread."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from surge.app import Bot
from surge.config import load_settings
from surge.models import Position
from surge.notify.notifier import THREAD_NAME
from surge.notify.sources import EventLogHandler
from surge.notify.wiring import Notifications, check
from surge.trading import TradeClosed
from tests.notify.receiver import Receiver
from tests.waiting import wait_for


def notify_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def test_no_url_starts_nothing_and_imports_no_apprise(tmp_path: Path) -> None:
    bot = Bot(load_settings(env={"SURGE_HOME": str(tmp_path)}))
    assert Notifications.start(bot) is None and bot.trades.notifications is None
    check(bot, 1.0)  # the loop's call costs one attribute read
    assert notify_threads() == []
    code = "import sys, surge.cli, surge.app; sys.exit('apprise' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.fixture
def started(tmp_path: Path, receiver: Receiver) -> Iterator[tuple[Bot, Notifications]]:
    env = {"SURGE_HOME": str(tmp_path), "SURGE_NOTIFY_URLS": receiver.url()}
    bot = Bot(load_settings(env=env))
    notifications = Notifications.start(bot)
    assert notifications is not None
    bot.trades.notifications = notifications
    yield bot, notifications
    notifications.stop()


def test_started_with_the_bot_and_stopped_with_it(
    started: tuple[Bot, Notifications], receiver: Receiver
) -> None:
    bot, notifications = started
    assert len(notify_threads()) == 1
    handlers = [h for h in logging.getLogger("surge").handlers if isinstance(h, EventLogHandler)]
    assert handlers == [notifications.handler]
    closed = Position(
        "ETHUSDT:1", "ETHUSDT", 1.0, 100.0, 0, 104.0, 97.5, 3_600_000, 0.1, 97.4, 60_000, "stop_loss", -2.7
    )
    bot.book.add(Position("ETHUSDT:1", "ETHUSDT", 1.0, 100.0, 0, 104.0, 97.5, 3_600_000))
    bot.trades.closing.add(closed.key)
    assert bot.trades.on_outcome(TradeClosed(closed))  # the loop's path: one post
    wait_for(lambda: receiver.requests == 1, what="the exit", detail=receiver.messages)
    assert "ETHUSDT stop_loss: PnL -2.70 USDT (-2.60%)" in receiver.messages()[0]
    notifications.close()
    assert notifications.stop() is True
    assert notify_threads() == []
    assert not [h for h in logging.getLogger("surge").handlers if isinstance(h, EventLogHandler)]
