"""The housekeeping worker: one named thread, results and failures to the loop, a stop like an executor's."""

from __future__ import annotations

import functools
import threading
from typing import Any

import pytest

from surge.jobs import THREAD_NAME, Housekeeper, JobFailed
from tests.waiting import wait_for


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


def test_jobs_run_in_order_on_one_named_thread_and_post_their_results() -> None:
    posted: list[Any] = []
    keeper = Housekeeper(posted.append)
    names: list[str] = []

    def job(i: int) -> int | None:
        names.append(threading.current_thread().name)
        return None if i == 1 else i

    for i in range(4):
        keeper.submit(f"job {i}", functools.partial(job, i))
    wait_for(lambda: len(names) == 4 and not keeper.busy, 10, "the four jobs")
    assert posted == [0, 2, 3]  # a job returning None posts nothing
    assert len(set(names)) == 1 and names[0].startswith(THREAD_NAME)
    keeper.stop(timeout=5)
    assert not workers()


def test_a_job_that_raises_becomes_a_failure_message() -> None:
    posted: list[Any] = []
    keeper = Housekeeper(posted.append)

    def boom() -> None:
        raise ValueError("no such thing")

    keeper.submit("rescan", boom)
    keeper.submit("backfill", boom, lambda job, error: ("custom", job, error))
    wait_for(lambda: len(posted) == 2, 10, "both failures")
    assert posted[0] == JobFailed("rescan", "ValueError: no such thing")
    assert posted[1] == ("custom", "backfill", "ValueError: no such thing")
    keeper.stop(timeout=5)


def test_submit_after_stop_raises_as_an_executor_does_and_no_thread_is_left() -> None:
    keeper = Housekeeper(lambda item: None)
    ran: list[int] = []
    for i in range(3):
        keeper.submit(f"job {i}", functools.partial(ran.append, i))
    keeper.stop(timeout=10)  # the queued jobs finish first
    assert ran == [0, 1, 2] and not workers()
    with pytest.raises(RuntimeError):
        keeper.submit("late", lambda: None)


def test_a_stop_past_its_timeout_cancels_the_queued_jobs() -> None:
    posted: list[Any] = []
    keeper = Housekeeper(posted.append)
    release = threading.Event()
    started = threading.Event()

    def blocking() -> str:
        started.set()
        release.wait(10)
        return "first"

    keeper.submit("blocking", blocking)
    queued = keeper.submit("queued", lambda: "second")
    wait_for(started.is_set, 10, "the first job to start")
    keeper.stop(timeout=0.05)
    assert queued.cancelled()
    release.set()
    wait_for(lambda: not workers(), 10, "the worker to end after its job")
    assert posted == ["first"]
