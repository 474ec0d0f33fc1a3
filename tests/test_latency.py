import tracemalloc

import pytest

from surge.latency import LatencyWindow


def test_empty_window_has_no_percentiles():
    w = LatencyWindow(10)
    assert len(w) == 0
    assert w.percentiles() == (None, None)


def test_percentiles_before_the_window_is_full():
    w = LatencyWindow(1000)
    for v in range(1, 101):  # 1..100
        w.add(float(v))
    assert len(w) == 100
    assert w.percentiles() == (51.0, 100.0)


def test_only_the_last_samples_count_once_it_wraps():
    w = LatencyWindow(100)
    for _ in range(250):
        w.add(1000.0)  # old, slow samples: pushed out below
    for v in range(100):
        w.add(float(v))
    assert len(w) == 100
    p50, p99 = w.percentiles()
    assert p50 == 50.0 and p99 == 99.0


def test_memory_is_fixed_from_the_first_sample():
    # a deque of floats grows for its first N samples; the window must not (issue 14's soak)
    w = LatencyWindow(20_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(50_000):
            w.add(i * 0.001)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 4096, after - before


def test_size_must_be_positive():
    with pytest.raises(ValueError):
        LatencyWindow(0)
