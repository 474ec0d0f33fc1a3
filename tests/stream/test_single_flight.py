"""SingleFlight: no request is lost under any interleaving, bursts are coalesced, close wakes the worker.

The worker clears ``requested`` before it snapshots; a request that lands after that clear must make
the next :meth:`~surge.stream.single_flight.SingleFlight.claim` return at once. The step-by-step model
below interleaves a request at every point of a run to check it, and the thread tests check the same
with real threads.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest

from surge.stream.single_flight import SingleFlight
from tests.waiting import wait_for


class _State:
    def __init__(self) -> None:
        self.wanted: set[str] = {"a"}
        self.applied: set[str] = set()


class _SteppedWorker:
    """SingleFlight as the manager uses it: one long-lived worker; claim, snapshot, apply, finish.

    The worker is a generator that yields between steps, so a test can interleave a request with it
    deterministically.
    """

    def __init__(self, state: _State) -> None:
        self.state = state
        self.flight = SingleFlight()
        self.worker: Iterator[str] | None = None

    def trigger(self) -> None:
        self.flight.request()

    def _worker(self) -> Iterator[str]:
        while self.flight.claim(timeout=0):
            yield "claimed"
            snapshot = set(self.state.wanted)
            yield "snapshot"
            self.state.applied = snapshot
            yield "applied"
            self.flight.finish()
            yield "finished"

    def runnable(self) -> Iterator[str] | None:
        if self.worker is None and self.flight.pending:  # the idle worker thread is woken
            self.worker = self._worker()
        return self.worker


def _scenario(inject_after: int) -> _State:
    """Subscribe "a", let the worker take ``inject_after`` steps, subscribe "b", run to quiescence."""
    state = _State()
    model = _SteppedWorker(state)
    model.trigger()
    steps = 0
    injected = False
    while True:
        if not injected and steps == inject_after:
            state.wanted.add("b")
            model.trigger()
            injected = True
        gen = model.runnable()
        if gen is None:
            if injected:
                return state
            steps = inject_after  # worker already idle: inject now
            continue
        try:
            next(gen)
            steps += 1
        except StopIteration:
            model.worker = None


@pytest.mark.parametrize("inject_after", range(8))
def test_single_flight_applies_a_request_made_at_any_step(inject_after: int) -> None:
    state = _scenario(inject_after)
    assert state.applied == state.wanted == {"a", "b"}


class _GatedWorker:
    """SingleFlight worker thread whose first run blocks right after its snapshot."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.flight = SingleFlight()
        self.snapshotted = threading.Event()
        self.proceed = threading.Event()
        self.first = True
        self.thread = threading.Thread(target=self._loop, name="test-resub", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.flight.closed:
            if not self.flight.claim(timeout=0.5):
                continue
            snapshot = set(self.state.wanted)
            if self.first:
                self.first = False
                self.snapshotted.set()
                self.proceed.wait(10)
            self.state.applied = snapshot
            self.flight.finish()


def test_real_threads_single_flight_picks_up_the_late_subscription() -> None:
    state = _State()
    worker = _GatedWorker(state)
    try:
        worker.flight.request()
        assert worker.snapshotted.wait(10)
        state.wanted.add("b")  # lands between snapshot and idle
        worker.flight.request()
        worker.proceed.set()
        wait_for(lambda: state.applied == {"a", "b"}, 10, "both applied")
    finally:
        worker.flight.close()
        worker.thread.join(5)
    assert not worker.thread.is_alive()


def test_finish_reports_a_request_made_during_the_run() -> None:
    flight = SingleFlight()
    flight.request()
    assert flight.claim(timeout=0)
    assert flight.running and not flight.pending
    flight.request()
    assert flight.finish() is True
    assert not flight.running and flight.pending
    assert flight.claim(timeout=0)
    assert flight.finish() is False
    assert (flight.requests, flight.runs) == (2, 2)


def test_claim_times_out_without_a_request() -> None:
    flight = SingleFlight()
    assert flight.claim(timeout=0) is False
    assert flight.runs == 0


def test_close_wakes_a_waiting_worker_and_refuses_further_claims() -> None:
    flight = SingleFlight()
    returned: list[bool] = []
    waiter = threading.Thread(target=lambda: returned.append(flight.claim(timeout=30)), daemon=True)
    waiter.start()
    flight.close()
    waiter.join(10)
    assert returned == [False]
    flight.request()
    assert flight.closed
    assert flight.claim(timeout=0) is False


def test_concurrent_requests_are_coalesced_and_never_lost() -> None:
    state = _State()
    lock = threading.Lock()
    flight = SingleFlight(debounce_s=0.002, max_debounce_s=0.02)
    applied_runs = [0]

    def loop() -> None:
        while not flight.closed:
            if not flight.claim(timeout=0.5):
                continue
            with lock:
                snapshot = set(state.wanted)
            time.sleep(0.001)  # the apply takes time: requests land meanwhile
            state.applied = snapshot
            applied_runs[0] += 1
            flight.finish()

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()

    def caller(seed: int) -> None:
        rng = random.Random(seed)
        for i in range(2000):
            name = f"s{rng.randrange(300)}"
            with lock:
                if rng.random() < 0.6:
                    state.wanted.add(name)
                else:
                    state.wanted.discard(name)
            flight.request()
            if i % 500 == 0:
                time.sleep(0.001)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        wait_for(
            lambda: state.applied == state.wanted and not flight.pending and not flight.running,
            10,
            "every request applied and the worker idle",
        )
        assert flight.requests == 16000
        assert applied_runs[0] < flight.requests / 10  # bursts coalesced
    finally:
        flight.close()
        worker.join(5)
