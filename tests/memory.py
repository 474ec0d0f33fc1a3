"""What a piece of surge still holds after running longer: the bytes allocated by code in the
files it names, not the process's total, which another thread of the test worker can move."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable


def growth_in(files: str, warm: Callable[[], None], run: Callable[[], None]) -> int:
    """Bytes still allocated by code in ``files`` (a tracemalloc filename pattern) after ``run``,
    beyond what was after ``warm``. Tracing starts before ``warm``: what exists at the first
    snapshot was traced, so replacing it later does not show as growth."""
    only = [tracemalloc.Filter(True, files)]
    tracemalloc.start()
    try:
        warm()
        before = tracemalloc.take_snapshot().filter_traces(only)
        run()
        after = tracemalloc.take_snapshot().filter_traces(only)
    finally:
        tracemalloc.stop()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))
