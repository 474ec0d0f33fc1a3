"""Single-flight resubscribe: no lost wake-up under any interleaving, and the seed's race reproduced.

The seed guarded "start a resubscribe thread" with an in-progress flag that the runner cleared after
applying its snapshot. A subscription landing between the snapshot and that clear saw the flag set,
did nothing, and was never applied. The seed's logic is re-implemented here (and only here) so the
same checks can show it losing while :class:`SingleFlight` does not.
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


# --------------------------------------------------------------------------- step-by-step models
# Each model exposes trigger() (what subscribe_kline calls after recording the wish) and runnable
# "threads" as generators that yield between steps, so a test can interleave them deterministically.


class OurModel:
    """SingleFlight as the manager uses it: one long-lived worker; claim, snapshot, apply, finish."""

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

    def runnable(self) -> list[Iterator[str]]:
        if self.worker is None and self.flight.pending:  # the idle worker thread is woken
            self.worker = self._worker()
        return [self.worker] if self.worker is not None else []

    def retire(self, gen: Iterator[str]) -> None:
        self.worker = None


class SeedModel:
    """The seed: one thread per trigger unless the in-progress flag is set; flag cleared at the end."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.in_progress = False
        self.threads: list[Iterator[str]] = []

    def trigger(self) -> None:
        if self.in_progress:
            return
        self.in_progress = True
        self.threads.append(self._run())

    def _run(self) -> Iterator[str]:
        yield "claimed"
        snapshot = set(self.state.wanted)
        yield "snapshot"
        self.state.applied = snapshot
        yield "applied"
        self.in_progress = False
        yield "finished"

    def runnable(self) -> list[Iterator[str]]:
        return list(self.threads)

    def retire(self, gen: Iterator[str]) -> None:
        self.threads.remove(gen)


def _scenario(model_cls: type, inject_after: int) -> _State:
    """Subscribe "a", let the worker take ``inject_after`` steps, subscribe "b", run to quiescence."""
    state = _State()
    model = model_cls(state)
    model.trigger()
    steps = 0
    injected = False
    while True:
        if not injected and steps == inject_after:
            state.wanted.add("b")
            model.trigger()
            injected = True
        runnable = model.runnable()
        if not runnable:
            if injected:
                return state
            steps = inject_after  # worker already idle: inject now
            continue
        gen = runnable[0]
        try:
            next(gen)
            steps += 1
        except StopIteration:
            model.retire(gen)


@pytest.mark.parametrize("inject_after", range(8))
def test_single_flight_applies_a_request_made_at_any_step(inject_after: int) -> None:
    state = _scenario(OurModel, inject_after)
    assert state.applied == state.wanted == {"a", "b"}


def test_seed_logic_loses_a_subscription_made_between_snapshot_and_idle() -> None:
    # Step 2 = after "snapshot" (and after "applied"), before the flag is cleared.
    for inject_after in (2, 3):
        state = _scenario(SeedModel, inject_after)
        assert state.wanted == {"a", "b"}
        assert state.applied == {"a"}, "the seed's race did not reproduce"


@pytest.mark.xfail(strict=True, reason="the seed's in-progress flag drops the wake-up (the bug surge fixes)")
@pytest.mark.parametrize("inject_after", [2, 3])
def test_seed_logic_fails_the_no_lost_request_check(inject_after: int) -> None:
    state = _scenario(SeedModel, inject_after)
    assert state.applied == state.wanted


# --------------------------------------------------------------------------- real threads


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


@pytest.mark.xfail(strict=True, reason="the seed's in-progress flag drops the wake-up (the bug surge fixes)")
def test_real_threads_seed_logic_loses_the_late_subscription() -> None:
    state = _State()
    snapshotted, proceed = threading.Event(), threading.Event()
    flag = {"in_progress": False}
    spawned: list[threading.Thread] = []

    def resubscribe() -> None:
        snapshot = set(state.wanted)
        snapshotted.set()
        proceed.wait(10)
        state.applied = snapshot
        flag["in_progress"] = False

    def trigger() -> None:
        if flag["in_progress"]:
            return
        flag["in_progress"] = True
        t = threading.Thread(target=resubscribe, daemon=True)
        spawned.append(t)
        t.start()

    trigger()
    assert snapshotted.wait(10)
    state.wanted.add("b")
    trigger()
    proceed.set()
    for t in spawned:
        t.join(5)
    assert state.applied == {"a", "b"}


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
        wait_for(lambda: state.applied == state.wanted and not flight.pending and not flight.running, 10,
                 "every request applied and the worker idle")
        assert flight.requests == 16000
        assert applied_runs[0] < flight.requests / 10  # bursts coalesced
    finally:
        flight.close()
        worker.join(5)
