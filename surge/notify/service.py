"""One apprise URL as the notifier sees it: its service object, its shown (private) name, and its
failures, told once per period rather than once per message.

Why one object per URL rather than one ``apprise.Apprise`` for all of them: each is sent to on its
own, so a failing service is noticed, logged and backed off by itself, and a slow one costs the
others at most one timeout per back-off instead of one per message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from surge.notify.messages import Message
from surge.notify.urls import LAST_WARNING, instantiate, private, secrets_of

log = logging.getLogger("surge.notify")

#: A failure is logged once per service per this period (with the count of failures since).
LOG_PERIOD_S = 900.0
#: After a failure a service is skipped this long (doubling up to the second), so a dead service
#: does not cost every message a timeout.
RETRY_S = (2.0, 120.0)


class Service:
    """One configured URL (see the module docstring). Used by one thread at a time."""

    def __init__(
        self,
        url: str,
        *,
        log_period_s: float = LOG_PERIOD_S,
        retry_s: tuple[float, float] = RETRY_S,
        clock: Callable[[], float] = time.monotonic,
        log_failures: bool = True,
    ) -> None:
        plugin = instantiate(url)
        if plugin is None:  # checked with the config: only a URL changed behind its back fails here
            raise ValueError("not a URL apprise can use")
        self.plugin: Any = plugin
        self.shown = private(plugin)
        self._secrets = secrets_of(url)
        self.log_period_s = log_period_s
        self.retry_s = retry_s
        self.clock = clock
        self.log_failures = log_failures  # `surge notify --test` prints the outcome itself
        self.last_error: str | None = None  # the last failure's reason (tokens redacted)
        self.delivered = 0
        self.failures = 0  # every failed send since the start
        self.missed = 0  # messages skipped during a back-off since the last delivery
        self._unlogged = 0  # failures since the last line about them
        self._logged_at: float | None = None  # None: not failing
        self._backoff = 0.0
        self._retry_at = 0.0

    def ready(self) -> bool:
        """False during a back-off after a failure: the message is counted as missed instead."""
        if self._retry_at and self.clock() < self._retry_at:
            self.missed += 1
            return False
        return True

    def send(self, message: Message, timeout_s: float) -> bool:
        """One message, every socket wait bounded by ``timeout_s``; never raises."""
        body = message.body
        if self.missed:
            body += f"\n({self.missed} earlier message(s) could not be delivered here)"
        self.plugin.socket_connect_timeout = self.plugin.socket_read_timeout = max(0.05, timeout_s)
        LAST_WARNING.take()
        try:
            ok = bool(self.plugin.notify(body=body, title=message.title, notify_type=message.type))
            reason = None if ok else LAST_WARNING.take()
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not end the notifier
            ok, reason = False, f"{type(exc).__name__}: {exc}"
        if ok:
            self._delivered()
        else:
            self._failed(reason)
        return ok

    def _delivered(self) -> None:
        self.delivered += 1
        self.missed = 0
        self._backoff = self._retry_at = 0.0
        if self._logged_at is not None:
            log.info("notifications to %s are delivered again", self.shown)
            self._logged_at, self._unlogged = None, 0

    def _failed(self, reason: str | None) -> None:
        now = self.clock()
        self.failures += 1
        self._unlogged += 1
        self.last_error = self._redact(reason) if reason else "not delivered"
        lo, hi = self.retry_s
        self._backoff = min(hi, self._backoff * 2) if self._backoff else lo
        self._retry_at = now + self._backoff
        if self.log_failures and (self._logged_at is None or now - self._logged_at >= self.log_period_s):
            log.warning(
                "notification to %s failed%s (%d failure(s) since the last line; retried in %.0fs, "
                "said again at most every %.0f min)",
                self.shown,
                f": {self.last_error}" if reason else "",
                self._unlogged,
                self._backoff,
                self.log_period_s / 60,
            )
            self._logged_at, self._unlogged = now, 0

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:300]


__all__ = ["LOG_PERIOD_S", "RETRY_S", "Service"]
