"""The reconnect policy: exponential backoff with full jitter, never giving up, until stopped.

Kept apart from the socket code so the policy reads on one screen: each attempt is a callable that
raises :class:`Retry` when its session failed before it proved healthy (back off longer) and returns
when it was healthy (the backoff starts over); :class:`Stopped` ends everything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import tenacity


class Retry(Exception):
    """A session failed before it proved healthy: back off before the next attempt."""


class Stopped(Exception):
    """The connection was told to stop while waiting."""


class Reconnector:
    """Runs attempts forever with full-jitter backoff between failed ones; ``stop`` ends it."""

    def __init__(
        self,
        name: str,
        log: logging.Logger,
        stop: threading.Event,
        base_s: float,
        max_s: float,
        last_error: Callable[[], str],
    ) -> None:
        self.name = name
        self.log = log
        self._stop = stop
        self.max_s = max_s
        self._last_error = last_error
        self._retrying = tenacity.Retrying(
            wait=tenacity.wait_random_exponential(multiplier=base_s, max=max_s),
            retry=tenacity.retry_if_exception_type(Retry),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def run(self, attempt: Callable[[], None]) -> None:
        """Call ``attempt`` until stopped (``stop`` set, or it raises :class:`Stopped`)."""
        while not self._stop.is_set():
            # A fresh Retrying call per healthy period: the backoff restarts after a session
            # that proved itself, and keeps growing across sessions that did not.
            try:
                self._retrying(attempt)
            except Stopped:
                return
            except Exception:  # pragma: no cover - a bug: say so loudly (logged), but never give up
                self.log.exception("%s: connection attempt crashed; retrying", self.name)
                if self._stop.wait(self.max_s):
                    return

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise Stopped

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        sleep = state.next_action.sleep if state.next_action else 0.0
        self.log.info(
            "%s: reconnecting in %.2fs (attempt %d): %s",
            self.name,
            sleep,
            state.attempt_number,
            self._last_error(),
        )
