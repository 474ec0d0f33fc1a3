"""Where notifications come from besides the trade flow: log records, and the loop's periodic check.

* :class:`EventLogHandler` sits on the ``surge`` logger: ERROR records become "error" events, the
  live desk's reconciliation findings (WARNING records starting with ``reconcile:``) "reconcile"
  events. It only sees WARNING and above (an INFO record costs the logger one level comparison) and
  never its own package's records, so a failing service cannot notify about itself in a loop.
* :class:`Watch` is called from the loop's periodic work and does at most one look every
  ``CHECK_EVERY_S``: stream outage (a connection, or the whole feed, silent for ``outage_s``: one
  message when it begins, one when it ends), REST rate limiting (the weight limiter's count of
  429/418 answers growing, or a 418 ban), and the daily summary at the UTC day change.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from surge.notify.messages import DailySummary, Outage, RateLimited
from surge.notify.notifier import Notifier

if TYPE_CHECKING:
    from surge.app import Bot

log = logging.getLogger("surge.notify")

CHECK_EVERY_S = 2.0
#: After a rate-limit message, more 429s are summed into the next one, at most this often.
BAN_QUIET_S = 300.0
DAY_MS = 86_400_000
WHOLE_FEED = "the whole feed"


class EventLogHandler(logging.Handler):
    """ERROR records and reconcile findings as events (see the module docstring)."""

    def __init__(self, notifier: Notifier, filters: list[Any] | None = None) -> None:
        super().__init__(logging.WARNING)
        self.notifier = notifier
        for f in filters or ():  # the log's redaction of API keys applies to notifications too
            self.addFilter(f)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("surge.notify"):
            return
        try:
            if record.levelno >= logging.ERROR:
                kind = "error"
            elif isinstance(record.msg, str) and record.msg.startswith("reconcile:"):
                kind = "reconcile"
            else:
                return
            if not self.notifier.wants(kind):
                return
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text += f" ({type(exc).__name__}: {exc})"
            self.notifier.post(kind, text)
        except Exception:  # noqa: BLE001 - logging must never fail because of a notification
            pass


class Watch:
    """The periodic checks of one running bot (see the module docstring); loop thread only."""

    def __init__(self, bot: Bot, notifier: Notifier, outage_s: float) -> None:
        self.bot = bot
        self.notifier = notifier
        self.outage_s = outage_s
        self._next = 0.0
        self._outage_since: float | None = None
        self._rate_limited = 0  # the limiter's count already told
        self._ban_told_at: float | None = None
        self._banned_told = False
        self._day: int | None = None

    def check(self, now: float) -> None:
        """At most one look every CHECK_EVERY_S (``now``: the loop's monotonic clock)."""
        if now < self._next:
            return
        self._next = now + CHECK_EVERY_S
        wants = self.notifier.wants
        if wants("outage") and self.bot.ready_at is not None and self.bot.manager is not None:
            self._check_outage(now, self.bot.manager.stats())
        limiter = getattr(self.bot.rest, "limiter", None)
        if wants("ban") and limiter is not None:
            self._check_rate_limit(now, limiter)
        if wants("daily") and self.bot.store is not None:
            self._check_day(self.bot.now_ms())

    # ----------------------------------------------------------------- outage

    def _check_outage(self, now: float, stats: dict[str, Any]) -> None:
        silent, longest = silent_connections(stats, self.outage_s)
        if silent and self._outage_since is None:
            self._outage_since = now - longest
            self.notifier.post("outage", Outage(True, tuple(silent), longest))
        elif not silent and self._outage_since is not None:
            self.notifier.post("outage", Outage(False, (), 0.0, now - self._outage_since))
            self._outage_since = None

    # ----------------------------------------------------------------- rate limit

    def _check_rate_limit(self, now: float, limiter: Any) -> None:
        banned = limiter.banned
        if banned is not None and not self._banned_told:
            self._banned_told = True
            self.notifier.post("ban", RateLimited(0, 0.0, float(getattr(banned, "retry_after_s", 0.0))))
        count = int(limiter.rate_limited)
        new = count - self._rate_limited
        quiet = self._ban_told_at is not None and now - self._ban_told_at < BAN_QUIET_S
        if new > 0 and not quiet and banned is None:
            self._rate_limited, self._ban_told_at = count, now
            self.notifier.post("ban", RateLimited(new, float(limiter.gate_open_in)))

    # ----------------------------------------------------------------- daily summary

    def _check_day(self, now_ms: int) -> None:
        day = now_ms // DAY_MS
        if self._day is None or day <= self._day:
            self._day = day if self._day is None else self._day
            return
        yesterday, self._day = day - 1, day
        try:
            self.notifier.post("daily", daily_summary(self.bot, yesterday * DAY_MS))
        except Exception as exc:  # noqa: BLE001 - a failed read costs one summary, never the loop
            log.warning("daily summary not sent: %s", exc)


def silent_connections(stats: dict[str, Any], outage_s: float) -> tuple[list[str], float]:
    """The connections silent (no frame of any kind) for longer than ``outage_s``, or the whole
    feed when every one is, and the longest silence in seconds."""
    silent: list[tuple[str, float]] = []
    conns = stats.get("per_connection") or []
    if not conns and stats.get("wanted"):  # streams wanted but not one connection open
        feed_age = stats.get("last_message_age_s")
        if feed_age is None or feed_age > outage_s:
            return [WHOLE_FEED], float(feed_age if feed_age is not None else outage_s)
    for c in conns:
        age = c.get("last_message_age_s")
        age = float(c.get("age_s", 0.0)) if age is None else float(age)
        if age > outage_s:
            silent.append((str(c.get("name", "?")), age))
    if not silent:
        return [], 0.0
    longest = max(age for _, age in silent)
    if len(silent) == len(conns) and len(conns) > 1:
        return [WHOLE_FEED], longest
    return [name for name, _ in silent], longest


def daily_summary(bot: Bot, day_start_ms: int) -> DailySummary:
    """The UTC day's closed positions of the bot's venue, read from the ledger as ``surge report``
    reads them (one indexed query, once a day)."""
    from surge.store.reports import closed_positions

    assert bot.store is not None
    closed = closed_positions(bot.store, day_start_ms, day_start_ms + DAY_MS, venue=bot.venue)
    pnls = [c.position.pnl or 0.0 for c in closed]
    day = datetime.fromtimestamp(day_start_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    return DailySummary(day, len(pnls), sum(1 for p in pnls if p > 0), sum(pnls))


__all__ = ["EventLogHandler", "Watch", "daily_summary", "silent_connections"]
