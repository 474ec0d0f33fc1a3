"""The housekeeping worker: the REST jobs ``surge run`` does after its start, off the strategy loop.

Backfills, 4h rescans and universe refreshes run one at a time on a single named thread
(``surge-housekeeping``), so the loop never waits for the exchange. A job is a plain callable; what
it returns (a message, or None) is put on the loop's queue, and a job that raises becomes a failure
message: once ``surge run`` is up, an exchange outage is ridden out, never turned into an exit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("surge.app")

THREAD_NAME = "surge-housekeeping"


@dataclass(frozen=True, slots=True)
class JobFailed:
    """A housekeeping job raised (the loop logs it; the job's next occasion tries again)."""

    job: str
    error: str


#: Makes the failure message of a job from its name and the error's text.
FailureMessage = Callable[[str, str], object]


class Housekeeper:
    """One worker thread running submitted jobs in order; their results go to ``post``.

    A :class:`~concurrent.futures.ThreadPoolExecutor` of one worker: :meth:`submit` after
    :meth:`stop` raises ``RuntimeError`` as the executor does, and a stop whose jobs finished in
    time leaves no thread behind.
    """

    def __init__(self, post: Callable[[Any], None], thread_name: str = THREAD_NAME) -> None:
        self._post = post
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._lock = threading.Lock()
        self._futures: set[Future[object]] = set()

    @property
    def busy(self) -> bool:
        """A job is queued or running (for diagnostics)."""
        return bool(self._futures)

    def submit(
        self, name: str, job: Callable[[], object], failed: FailureMessage = JobFailed
    ) -> Future[object]:
        """Queue ``job``; its result (unless None) or ``failed(name, error)`` goes to the loop."""
        with self._lock:
            fut = self._pool.submit(job)
            self._futures.add(fut)
        fut.add_done_callback(lambda f: self._done(name, failed, f))
        return fut

    def stop(self, timeout: float) -> None:
        """Take no more jobs, finish the queued ones (at most ``timeout`` seconds), end the thread.

        Jobs still queued at the timeout are cancelled; one still running then finishes on its own
        (a REST call is bounded by its timeouts) and its result is dropped with the loop.
        """
        with self._lock:
            pending = set(self._futures)
            self._pool.shutdown(wait=False)
        _, late = wait(pending, timeout)
        if late:
            self._pool.shutdown(wait=False, cancel_futures=True)
            log.warning("stopping with %d housekeeping job(s) unfinished", len(late))
            return
        self._pool.shutdown(wait=True)  # the worker is idle: joined at once

    def _done(self, name: str, failed: FailureMessage, fut: Future[object]) -> None:
        with self._lock:
            self._futures.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self._post(failed(name, f"{type(exc).__name__}: {exc}"))
            return
        result = fut.result()
        if result is not None:
            self._post(result)


__all__ = ["FailureMessage", "Housekeeper", "JobFailed"]
