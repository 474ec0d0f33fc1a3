"""The stream's typed frame decoder (wire.combined_kline_frame) must accept and build exactly what the
checked path (wire.loads + wire.parse_combined) does: the stream's speed depends on the one, the
one-error-type contract on the other."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from surge.exchange import wire
from surge.exchange.wire import WireError
from surge.models import Kline

BASE = wire.kline_to_event(
    Kline(
        "BTCUSDT",
        "1m",
        1_700_000_000_000,
        1_700_000_059_999,
        43000.1,
        43100.5,
        42950.2,
        43050.7,
        1234.567,
        53123456.7891,
        4567,
        False,
    ),
    1_700_000_012_345,
)
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "1.5", "nan", "inf", "-inf", "1e999", "abc", " 2 ", "1m", "4h", "7m", "kline"]),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers()),
)
K_KEYS = ["t", "T", "s", "i", "o", "c", "h", "l", "v", "n", "x", "q"]


def _outcome(fn: Any, data: Any) -> Any:
    try:
        return fn(data)
    except WireError:
        return "WireError"


def _mutated(top: dict, kv: dict, drop: list[str]) -> dict:
    """BASE with odd values in its top level (``top``) and kline object (``kv``), keys dropped."""
    data = copy.deepcopy(BASE)
    data["k"].update(kv)
    data.update({k: v for k, v in top.items() if k != "k" or not isinstance(v, dict)})
    for key in drop:
        if key.startswith("k.") and isinstance(data.get("k"), dict):
            data["k"].pop(key[2:], None)
        else:
            data.pop(key, None)
    return data


def test_loads_maps_every_decoder_failure_to_wire_error() -> None:
    for bad in (b"", b"{", b"\xff\xfe", b"NaN-ish", "[" * 5000, b'{"a":1}x'):
        try:
            wire.loads(bad)
        except WireError:
            continue
        raise AssertionError(f"{bad!r:.20} decoded")


def _slow_frame(payload: bytes) -> Any:
    """What the stream does with a frame the fast decoder refuses (see Connection._slow_message)."""
    try:
        msg = wire.loads(payload)
    except WireError:
        return "WireError"
    if not isinstance(msg, dict) or not isinstance(msg.get("stream"), str):
        return "not a stream message"
    stream = msg["stream"]
    return stream, _outcome(lambda data: wire.kline_from_event(data, stream), msg.get("data"))


@settings(max_examples=400, deadline=None)
@given(
    top=st.dictionaries(st.sampled_from(["e", "E", "k", "s"]), ODD_VALUES, max_size=2),
    kv=st.dictionaries(st.sampled_from(K_KEYS), ODD_VALUES, max_size=3),
    drop=st.lists(st.sampled_from(["e", "E", "k"] + ["k." + k for k in K_KEYS]), max_size=2),
    stream=st.one_of(st.just("btcusdt@kline_1m"), ODD_VALUES),
)
def test_frame_decoder_accepts_only_what_the_slow_path_accepts(
    top: dict, kv: dict, drop: list[str], stream: Any
) -> None:
    data = _mutated(top, kv, drop)
    try:
        payload = json.dumps({"stream": stream, "data": data}, allow_nan=True).encode()
    except (TypeError, ValueError):  # bytes values: not JSON at all
        return
    fast = wire.combined_kline_frame(payload)
    if fast is not None:  # whatever the fast decoder accepts, the slow path builds identically
        assert fast == _slow_frame(payload)
        assert type(fast[1]) is Kline


def test_frame_decoder_takes_a_binance_frame_and_refuses_the_rest() -> None:
    def frame(data: dict) -> bytes:
        return json.dumps({"stream": "btcusdt@kline_1m", "data": data}, separators=(",", ":")).encode()

    def changed(key: str, value: Any) -> dict:
        data = copy.deepcopy(BASE)
        (data["k"] if key in K_KEYS else data)[key] = value
        return data

    stream, k = wire.combined_kline_frame(frame(BASE))  # type: ignore[misc]
    assert stream == "btcusdt@kline_1m" and k == wire.kline_from_event(BASE)
    assert k.close == 43050.7 and k.event_time == 1_700_000_012_345
    refused = [
        b"",
        b"{",
        b'{"result":null,"id":1}',
        b"\xff",
        b"[]",
        frame(changed("E", "1")),
        frame(changed("i", "7m")),
        frame(changed("c", "nan")),
        frame(changed("x", "false")),
        frame(changed("e", "trade")),
        frame(changed("t", 1.5)),
        frame(changed("o", 43000.1)),
    ]
    for bad in refused:
        assert wire.combined_kline_frame(bad) is None, bad


def test_kline_is_frozen_hashable_and_compares_by_value() -> None:
    values = ("ETHUSDT", "4h", 1, 2, 1.5, 2.5, 0.5, 2.0, 10.0, 20.0, 7, True, 3)
    a, b = Kline(*values), Kline(*values)
    assert a == b and hash(a) == hash(b) and repr(a).startswith("Kline(symbol='ETHUSDT'")
    assert a.change_pct == (2.0 - 1.5) / 1.5 * 100.0
    try:
        a.close = 1.0  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("Kline is not frozen")
