"""The kline fast path in wire.kline_from_event must accept and build exactly what the checked path
does (the stream's 100,000 events/s depend on it; the one-error-type contract too)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from surge.exchange import wire
from surge.exchange.wire import WireError
from surge.models import Kline

BASE = wire.kline_to_event(
    Kline("BTCUSDT", "1m", 1_700_000_000_000, 1_700_000_059_999, 43000.1, 43100.5, 42950.2, 43050.7,
          1234.567, 53123456.7891, 4567, False),
    1_700_000_012_345,
)
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**20), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "1.5", "nan", "inf", "-inf", "1e999", "abc", " 2 ", "1m", "4h", "7m", "kline"]),
    st.binary(max_size=4), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers()),
)
K_KEYS = ["t", "T", "s", "i", "o", "c", "h", "l", "v", "n", "x", "q"]


def _outcome(fn: Any, data: Any) -> Any:
    try:
        return fn(data)
    except WireError:
        return "WireError"


@settings(max_examples=400, deadline=None)
@given(
    top=st.dictionaries(st.sampled_from(["e", "E", "k"]), ODD_VALUES, max_size=2),
    kv=st.dictionaries(st.sampled_from(K_KEYS), ODD_VALUES, max_size=3),
    drop=st.lists(st.sampled_from(["e", "E", "k"] + ["k." + k for k in K_KEYS]), max_size=2),
)
def test_fast_path_matches_checked_path(top: dict, kv: dict, drop: list[str]) -> None:
    data = copy.deepcopy(BASE)
    data["k"].update(kv)
    data.update({k: v for k, v in top.items() if k != "k" or not isinstance(v, dict)})
    for key in drop:
        if key.startswith("k.") and isinstance(data.get("k"), dict):
            data["k"].pop(key[2:], None)
        else:
            data.pop(key, None)
    assert _outcome(wire.kline_from_event, data) == _outcome(wire._kline_from_event_checked, data)


def test_well_formed_event_takes_the_fast_path_and_round_trips() -> None:
    k = wire.kline_from_event(BASE)
    assert k == wire._kline_from_event_checked(BASE)
    assert k.close == 43050.7 and k.event_time == 1_700_000_012_345


def test_loads_maps_every_decoder_failure_to_wire_error() -> None:
    for bad in (b"", b"{", b"\xff\xfe", b"NaN-ish", "[" * 5000, b'{"a":1}x'):
        try:
            wire.loads(bad)
        except WireError:
            continue
        raise AssertionError(f"{bad!r:.20} decoded")


def test_fast_kline_builder_builds_an_identical_kline() -> None:
    values = ("ETHUSDT", "4h", 1, 2, 1.5, 2.5, 0.5, 2.0, 10.0, 20.0, 7, True, 3)
    fast = wire._new_kline(*values)
    real = Kline(*values)
    assert type(fast) is Kline and fast == real and hash(fast) == hash(real) and repr(fast) == repr(real)
    try:
        fast.close = 1.0  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("the fast Kline is not frozen")


def test_fast_kline_builder_falls_back_when_the_model_changes(monkeypatch: Any) -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True, slots=True)
    class Other:
        symbol: str

    monkeypatch.setattr(wire, "Kline", Other)
    assert wire._kline_builder() is Other
