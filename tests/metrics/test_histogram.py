"""The decision-latency histogram folded from the loop's ring: bucket edges, cumulative counts,
folds that only add what is new, an overflow reported rather than hidden, the lock-free read under a
concurrent writer, and how long one slice of a fold holds the interpreter."""

from __future__ import annotations

import math
import sys
import threading
import time

import pytest

import surge.metrics.histogram as histogram_module
from surge.latency import LatencyWindow
from surge.metrics.histogram import BOUNDS_MS, CHUNK, LatencyHistogram


def counts(h: LatencyHistogram) -> dict[float, int]:
    return dict(h.buckets())


def test_a_sample_on_a_bound_is_in_that_bucket_and_buckets_are_cumulative() -> None:
    w = LatencyWindow(100)
    h = LatencyHistogram(w, bounds_ms=(1.0, 5.0, 10.0))
    for ms in (0.2, 1.0, 1.0000001, 5.0, 9.99, 10.0, 10.01, 250.0, -3.0):
        w.add(ms)
    assert h.fold() == 9
    assert counts(h) == {0.001: 3, 0.005: 5, 0.01: 7, math.inf: 9}  # -3 (clock skew) is <= every bound
    assert h.count == 9 and h.unbucketed == 0
    assert h.sum_ms == pytest.approx(0.2 + 1.0 + 1.0000001 + 5.0 + 9.99 + 10.0 + 10.01 + 250.0 - 3.0)


def test_a_fold_adds_only_what_arrived_since_the_last_one() -> None:
    w = LatencyWindow(50)
    h = LatencyHistogram(w, bounds_ms=(2.0,))
    for _ in range(30):
        w.add(1.0)
    h.fold()
    assert h.fold() == 0  # nothing new: nothing counted twice
    for _ in range(30):  # wraps the ring: the first 10 slots are overwritten by these
        w.add(3.0)
    assert h.fold() == 30
    assert counts(h) == {0.002: 30, math.inf: 60} and h.unbucketed == 0


def test_more_than_the_ring_between_two_folds_is_counted_as_unbucketed() -> None:
    w = LatencyWindow(100)
    h = LatencyHistogram(w, bounds_ms=(1.0,))
    for i in range(350):
        w.add(0.5 if i < 300 else 2.0)  # the last 50 are slow
    folded = h.fold()
    # what the ring still holds: no write is under way, so every slot is whole
    assert folded == 100
    assert h.unbucketed == 350 - 100
    assert h.count + h.unbucketed == w.total == 350
    assert counts(h) == {0.001: 50, math.inf: 100}  # 50 fast ones left in the ring, 50 slow


def test_the_default_buckets_are_ascending_and_cover_the_5_ms_budget() -> None:
    assert list(BOUNDS_MS) == sorted(set(BOUNDS_MS)) and 5.0 in BOUNDS_MS
    with pytest.raises(ValueError):
        LatencyHistogram(LatencyWindow(4), bounds_ms=(2.0, 1.0))


def _chunks(n: int) -> list[list[int]]:
    """``n`` event times as the loop stamps them: runs of 1 to 9 equal stamps, cut into chunks of 1 to
    13 (a chunk holds one run, a part of one, or several)."""
    stamps = [r for r in range(n) for _ in range(1 + r % 9)][:n]
    chunks, k, c = [], 0, 0
    while k < n:
        chunks.append(stamps[k : k + 1 + c % 13])
        k += len(chunks[-1])
        c += 1
    return chunks


@pytest.mark.parametrize("writes", ["one add a sample", "chunks of runs"])
def test_since_under_a_concurrent_writer_returns_only_whole_consecutive_samples(writes: str) -> None:
    """The loop writes while the metrics thread reads, no lock: every sample read must be one the
    writer stored (its value is known from its number), in order, and none counted twice or lost
    silently, whether the loop adds one sample at a time or a chunk's runs as slices."""
    w = LatencyWindow(64)  # small: the writer laps the reader often
    n = 300_000
    done = threading.Event()
    if writes == "one add a sample":
        expected = [float(k) for k in range(n)]
    else:
        chunks = _chunks(n)
        expected = [-float(e) for chunk in chunks for e in chunk]  # now 0 - event time

    def writer() -> None:
        if writes == "one add a sample":
            for k in range(n):
                w.add(float(k))
        else:
            for chunk in chunks:
                w.add_decided(0.0, chunk)
        done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads as often as the interpreter allows
    thread = threading.Thread(target=writer, name="test-latency-writer")
    thread.start()
    try:
        mark, seen, lost_total = 0, 0, 0
        while not (done.is_set() and mark == w.total):
            data, lost, new_mark = w.since(mark)
            assert list(data) == expected[new_mark - len(data) : new_mark]
            assert lost == new_mark - mark - len(data) >= 0
            seen, lost_total, mark = seen + len(data), lost_total + lost, new_mark
    finally:
        sys.setswitchinterval(old)
        thread.join(30)
    assert seen + lost_total == n
    assert seen > 0


def test_one_slice_of_a_fold_holds_the_interpreter_briefly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full ring (20,000 decisions) is folded in slices of CHUNK with the GIL handed back between
    them: measured here, the longest slice (sorting 1,024 doubles and bisecting the bounds) is about
    0.1 ms on an idle core; the bound is loose for a loaded 2-core machine, the report is exact."""
    w = LatencyWindow(20_000)
    for i in range(20_000):
        w.add((i * 7919) % 1000 / 100.0)
    yields: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        yields.append(time.perf_counter())
        real_sleep(seconds)

    monkeypatch.setattr(histogram_module.time, "sleep", sleep)
    h = LatencyHistogram(w)
    started = time.perf_counter()
    assert h.fold() == 20_000  # the whole ring (see the overflow test)
    slices = [b - a for a, b in zip([started, *yields], yields, strict=False)]
    assert len(yields) == math.ceil(20_000 / CHUNK)
    longest = max(slices)
    print(
        f"fold of 19,999 samples: {sum(slices) * 1000:.2f} ms in {len(slices)} slices, "
        f"longest {longest * 1000:.3f} ms"
    )
    assert longest < 0.010  # ten milliseconds: only a starved machine comes near it
