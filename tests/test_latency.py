import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surge.latency import BIN_MS, LatencyWindow
from tests.memory import growth_in


def test_empty_window_has_no_percentiles():
    w = LatencyWindow(10)
    assert len(w) == 0
    assert w.percentiles() == (None, None)


def test_percentiles_before_the_window_is_full():
    w = LatencyWindow(1000)
    for v in range(1, 101):  # 1..100
        w.add(float(v))
    assert len(w) == 100
    assert w.percentiles() == (51.01, 100.0)  # the upper edge of the sample's 10 µs bin; 100+ exact


def test_only_the_last_samples_count_once_it_wraps():
    w = LatencyWindow(100)
    for _ in range(250):
        w.add(1000.0)  # old, slow samples: pushed out below
    for v in range(100):
        w.add(float(v))
    assert len(w) == 100
    p50, p99 = w.percentiles()
    assert p50 == 50.01 and p99 == 99.01


def test_memory_is_fixed_from_the_first_sample():
    # a deque of floats grows for its first N samples; the window must not (issue 14's soak)
    w = LatencyWindow(20_000)

    def run() -> None:
        for i in range(50_000):
            w.add(i * 0.001)

    grown = growth_in("*/surge/latency.py", lambda: None, run)
    assert grown < 4096, grown


def test_size_must_be_positive():
    with pytest.raises(ValueError):
        LatencyWindow(0)


def test_percentiles_match_a_sort_within_one_bin() -> None:
    """The bins stand in for sorting the window (3-4 ms of the loop at every heartbeat): the same
    ranks, never below the sample and at most one bin above it, slow samples past 100 ms exact."""
    rng = random.Random(7)
    w = LatencyWindow(5_000)
    samples = [
        rng.choice([rng.uniform(-2.0, 8.0), rng.expovariate(0.2), rng.uniform(90.0, 400.0)])
        for _ in range(12_000)
    ]
    for v in samples:
        w.add(v)
    window = sorted(samples[-5_000:])
    p50, p99 = w.percentiles()
    for got, exact in ((p50, window[2_500]), (p99, window[int(5_000 * 0.99)])):
        assert got is not None
        if exact >= 100.0:
            assert got == exact
        else:
            assert max(exact, 0.0) <= got <= max(exact, 0.0) + BIN_MS + 1e-9


def test_an_overwritten_sample_leaves_its_bin() -> None:
    w = LatencyWindow(3)
    for v in (1.0, 1.0, 1.0, 9.0, 9.0, 9.0):
        w.add(v)
    assert w.percentiles() == (9.01, 9.01)


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 40),
    chunks=st.lists(st.lists(st.integers(-200, 30), min_size=1, max_size=90), max_size=12),
)
def test_a_chunk_of_decisions_is_one_sample_each_in_order(size: int, chunks: list[list[int]]) -> None:
    """add_decided writes runs as slices; the window must be what one sample per decision, in order,
    gives: the last ``size`` of them, the same count and total, and percentiles read from a sort
    (latencies from -5 ms, clamped to the first bin, to 225 ms, read exactly past 100 ms)."""
    w = LatencyWindow(size)
    model: list[float] = []
    now = 25.0
    for chunk in chunks:
        w.add_decided(now, chunk)
        model.extend(now - e for e in chunk)
        last = model[-size:]
        assert (len(w), w.total) == (len(last), len(model))
        assert list(w.since(0)[0]) == last
        ranked = sorted(last)

        def edge(v: float) -> float:
            return v if v >= 100.0 else round((max(0, int(v * 100.0)) + 1) * BIN_MS, 2)

        n = len(ranked)
        assert w.percentiles() == (edge(ranked[n // 2]), edge(ranked[min(n - 1, int(n * 0.99))]))


def test_stamp_adds_the_pending_decisions_once() -> None:
    w = LatencyWindow(100)
    w.stamp(lambda: pytest.fail("no clock read without a pending decision"))
    w.pending.extend([1_000, 1_000, 1_001])
    w.stamp(lambda: 1.004)  # seconds: 1,004 ms
    assert w.pending == [] and w.total == 3
    assert list(w.since(0)[0]) == pytest.approx([4.0, 4.0, 3.0])
    w.stamp(lambda: 9.0)
    assert w.total == 3
