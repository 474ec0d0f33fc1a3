"""Tuning options: defaults, and unknown names refused by name."""

from __future__ import annotations

import pytest

from surge.stream.tuning import StreamTuning


def test_from_options_builds_and_names_unknown_options() -> None:
    assert StreamTuning.from_options({"tick_s": 0.1}) == StreamTuning(tick_s=0.1)
    with pytest.raises(TypeError, match="unknown tuning option\\(s\\): bogus, nope"):
        StreamTuning.from_options({"nope": 1, "bogus": 2, "tick_s": 0.1})
