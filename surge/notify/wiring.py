"""The notifications of one ``surge run``: started with the bot when URLs are configured, stopped
with it, within a bound.

:class:`Notifications` holds the three parts (the :class:`~surge.notify.notifier.Notifier` thread,
the log handler, the periodic :class:`~surge.notify.sources.Watch`) so that :mod:`surge.startup` and
the loop each make one call. With no URL configured nothing is made: no thread, no apprise import.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from surge.notify.notifier import SEND_TIMEOUT_S, Notifier
from surge.notify.sources import EventLogHandler, Watch

if TYPE_CHECKING:
    from surge.app import Bot

log = logging.getLogger("surge.notify")

#: How long a stop may spend sending what is still queued (it runs beside the streams' stop).
DRAIN_S = 2.0


class Notifications:
    """One bot's notifier, log handler and watch (see the module docstring)."""

    def __init__(self, bot: Bot) -> None:
        settings = bot.settings.notify
        self.notifier = Notifier(settings.urls, settings.events)
        root = logging.getLogger("surge")
        redaction = [f for h in root.handlers if getattr(h, "_surge", False) for f in h.filters]
        self.handler = EventLogHandler(self.notifier, redaction)
        self.watch = Watch(bot, self.notifier, settings.outage_s)
        self._stop_by = 0.0

    @classmethod
    def start(cls, bot: Bot) -> Notifications | None:
        """Started notifications for ``bot``, or None when no URL is configured."""
        if not bot.settings.notify.urls:
            return None
        self = cls(bot)
        self.notifier.start()
        logging.getLogger("surge").addHandler(self.handler)
        log.info(
            "notifications (%s) to %s",
            ", ".join(sorted(self.notifier.kinds)) or "no event",
            ", ".join(s.shown for s in self.notifier.services),
        )
        return self

    def close(self, drain_s: float = DRAIN_S) -> None:
        """No more events; what is queued goes out meanwhile (the rest of the stop runs beside it).
        A send under way when this is called may still take its whole timeout."""
        self._stop_by = time.monotonic() + max(drain_s, SEND_TIMEOUT_S) + 0.5
        self.notifier.close(drain_s)

    def stop(self) -> bool:
        """Remove the log handler and join the thread, by the bound set when it was closed."""
        logging.getLogger("surge").removeHandler(self.handler)
        if not self._stop_by:
            self.close()
        return self.notifier.join(max(0.0, self._stop_by - time.monotonic()))


def check(bot: Bot, now: float) -> None:
    """The loop's periodic look, at ``now`` (its monotonic clock): nothing without notifications."""
    notifications = bot.trades.notifications
    if notifications is not None:
        notifications.watch.check(now)


__all__ = ["DRAIN_S", "Notifications", "check"]
