"""Wire format: Binance payloads <-> Kline, and one error type for everything malformed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from surge.exchange import wire
from surge.exchange.wire import WireError
from surge.models import Kline

# A kline event as Binance documents it (USD-M futures market streams).
EVENT = {
    "e": "kline",
    "E": 1638747660000,
    "s": "BTCUSDT",
    "k": {
        "t": 1638747660000,
        "T": 1638747719999,
        "s": "BTCUSDT",
        "i": "1m",
        "f": 100,
        "L": 200,
        "o": "0.0010",
        "c": "0.0020",
        "h": "0.0025",
        "l": "0.0015",
        "v": "1000",
        "n": 100,
        "x": False,
        "q": "1.0000",
        "V": "500",
        "Q": "0.500",
        "B": "123456",
    },
}
# A REST kline row as Binance documents it (GET /fapi/v1/klines).
ROW = [
    1499040000000,
    "0.01634790",
    "0.80000000",
    "0.01575800",
    "0.01577100",
    "148976.11427815",
    1499644799999,
    "2434.19055334",
    308,
    "1756.87402397",
    "28.46694368",
    "17928899.62484339",
]


def test_stream_names() -> None:
    assert wire.stream_name("BTCUSDT", "1m") == "btcusdt@kline_1m"
    assert wire.stream_name("1000PEPEUSDT", "4h") == "1000pepeusdt@kline_4h"
    assert wire.parse_stream_name("btcusdt@kline_1m") == ("BTCUSDT", "1m")
    assert wire.parse_stream_name("ethusdt@kline_1M") == ("ETHUSDT", "1M")


@pytest.mark.parametrize(
    "bad", ["btcusdt@kline_2m", "btcusdt@depth", "@kline_1m", "btc-usdt@kline_1m", "", 5]
)
def test_bad_stream_names(bad: object) -> None:
    with pytest.raises(WireError):
        wire.parse_stream_name(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("symbol", "interval"), [("BTCUSDT", "2m"), ("", "1m"), ("BTC/USDT", "1m")])
def test_stream_name_refuses_bad_input(symbol: str, interval: str) -> None:
    with pytest.raises(WireError):
        wire.stream_name(symbol, interval)


def test_parse_combined_event() -> None:
    text = json.dumps({"stream": "btcusdt@kline_1m", "data": EVENT})
    stream, k = wire.parse_combined(wire.loads(text))
    assert stream == "btcusdt@kline_1m"
    assert k == Kline(
        "BTCUSDT",
        "1m",
        1638747660000,
        1638747719999,
        0.001,
        0.0025,
        0.0015,
        0.002,
        1000.0,
        1.0,
        100,
        False,
        event_time=1638747660000,
    )
    assert k.change_pct == pytest.approx(100.0)


def test_parse_rest_row() -> None:
    k = wire.kline_from_rest_row("BTCUSDT", "1w", ROW)
    assert (k.open_time, k.close_time, k.trades, k.closed) == (1499040000000, 1499644799999, 308, True)
    assert (k.open, k.high, k.low, k.close) == (0.0163479, 0.8, 0.015758, 0.015771)
    assert (k.volume, k.quote_volume) == (148976.11427815, 2434.19055334)
    assert not wire.kline_from_rest_row("BTCUSDT", "1w", ROW, now_ms=1499644799999).closed
    assert wire.kline_from_rest_row("BTCUSDT", "1w", ROW, now_ms=1499644800000).closed


def _without(obj: dict, *path: str) -> dict:
    obj = json.loads(json.dumps(obj))
    target = obj
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return obj


def _with(obj: dict, value: object, *path: str) -> dict:
    obj = json.loads(json.dumps(obj))
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return obj


MALFORMED_EVENTS = [
    None,
    [],
    "kline",
    _with(EVENT, "trade", "e"),
    _without(EVENT, "k"),
    _with(EVENT, [], "k"),
    _without(EVENT, "E"),
    _with(EVENT, "123", "E"),
    _without(EVENT, "k", "o"),
    _with(EVENT, "abc", "k", "c"),
    _with(EVENT, "NaN", "k", "c"),
    _with(EVENT, "inf", "k", "l"),
    _with(EVENT, None, "k", "h"),
    _with(EVENT, True, "k", "v"),
    _with(EVENT, "1", "k", "t"),
    _with(EVENT, 1.5, "k", "T"),
    _with(EVENT, "false", "k", "x"),
    _with(EVENT, "7m", "k", "i"),
    _with(EVENT, "", "k", "s"),
    _without(EVENT, "k", "n"),
]


@pytest.mark.parametrize("event", MALFORMED_EVENTS)
def test_malformed_events_raise_wire_error_only(event: object) -> None:
    with pytest.raises(WireError):
        wire.parse_combined({"stream": "btcusdt@kline_1m", "data": event})


@pytest.mark.parametrize(
    "text", ["", "{", "not json", b"\xff\xfe", "[1,2", "nan"[:2], '{"stream": 1, "data": {}}', "[]", "42"]
)
def test_non_json_and_wrong_shapes(text: str | bytes) -> None:
    with pytest.raises(WireError):
        wire.parse_combined(wire.loads(text))


@pytest.mark.parametrize(
    "row",
    [
        None,
        [],
        ROW[:8],
        [str(ROW[0])] + ROW[1:],
        ROW[:1] + ["x"] + ROW[2:],
        ROW[:6] + [None] + ROW[7:],
        "row",
    ],
)
def test_malformed_rest_rows(row: object) -> None:
    with pytest.raises(WireError):
        wire.kline_from_rest_row("BTCUSDT", "1m", row)


def test_replies() -> None:
    ok = wire.parse_reply({"result": None, "id": 3})
    assert ok.ok and ok.id == 3 and ok.result is None
    listed = wire.parse_reply({"result": ["btcusdt@kline_1m"], "id": 4})
    assert listed.result == ["btcusdt@kline_1m"]
    err = wire.parse_reply({"error": {"code": 2, "msg": "Invalid request: unknown stream"}, "id": 5})
    assert not err.ok and err.error_code == 2 and "Invalid request" in err.error_msg
    for bad in ({"result": None}, {"id": "1", "result": None}, {"id": 1}, {"id": 1, "error": "x"}, [], None):
        with pytest.raises(WireError):
            wire.parse_reply(bad)


def test_error_bodies() -> None:
    assert wire.parse_error({"code": -1121, "msg": "Invalid symbol."}) == (-1121, "Invalid symbol.")
    for bad in ({"msg": "x"}, {"code": "x"}, {"code": True}, [], None):
        with pytest.raises(WireError):
            wire.parse_error(bad)


finite = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(
    open_time=st.integers(min_value=0, max_value=2**42),
    prices=st.lists(finite, min_size=4, max_size=4),
    volume=finite,
    trades=st.integers(min_value=0, max_value=10**7),
    closed=st.booleans(),
    event_time=st.integers(min_value=0, max_value=2**42),
)
def test_round_trip_through_both_formats(open_time, prices, volume, trades, closed, event_time) -> None:
    """What the simulator serialises, the bot parses back to the same candle (to the wire's precision)."""
    o, c = prices[0], prices[3]
    h, low = max(prices), min(prices)  # a real candle: low <= open, close <= high
    k = Kline(
        "ETHUSDT", "1m", open_time, open_time + 59_999, o, h, low, c, volume, volume * c, trades, closed
    )
    event = wire.kline_to_event(k, event_time, price_decimals=8, qty_decimals=8)
    stream, back = wire.parse_combined(wire.loads(json.dumps({"stream": "ethusdt@kline_1m", "data": event})))
    assert stream == "ethusdt@kline_1m" and back.event_time == event_time and back.closed == closed
    row_back = wire.kline_from_rest_row(
        "ETHUSDT", "1m", json.loads(json.dumps(wire.kline_to_rest_row(k, 8, 8)))
    )
    for parsed in (back, row_back):
        assert (parsed.open_time, parsed.close_time, parsed.trades) == (k.open_time, k.close_time, trades)
        for a, b in zip(
            (parsed.open, parsed.high, parsed.low, parsed.close, parsed.volume),
            (o, h, low, c, volume),
            strict=True,
        ):
            assert a == pytest.approx(b, abs=1e-8)


@given(st.one_of(st.text(), st.binary()))
def test_arbitrary_input_only_raises_wire_error(payload: str | bytes) -> None:
    try:
        wire.parse_combined(wire.loads(payload))
    except WireError:
        pass


# --------------------------------------------------------------------------- frames no candle can be


def _combined(stream: str, event: dict) -> bytes:
    return json.dumps({"stream": stream, "data": event}, separators=(",", ":")).encode()


def _event(**k: object) -> dict:
    """EVENT with fields of its kline object replaced (``E`` for the event time)."""
    event = json.loads(json.dumps(EVENT))
    if "E" in k:
        event["E"] = k.pop("E")
    event["k"].update(k)
    return event


def _refused_both_ways(stream: str, event: dict) -> None:
    """Neither the stream's typed decoder nor the checked path delivers it: a malformed frame."""
    payload = _combined(stream, event)
    assert wire.combined_kline_frame(payload) is None
    with pytest.raises(WireError):
        wire.parse_combined(wire.loads(payload))


def test_a_frame_must_carry_its_own_streams_symbol_and_interval() -> None:
    good = _combined("btcusdt@kline_1m", EVENT)
    assert wire.combined_kline_frame(good) is not None  # the reference frame itself is fine
    _refused_both_ways("btcusdt@kline_1m", _event(s="ETHUSDT"))  # ETHUSDT's candle as BTCUSDT's stream
    _refused_both_ways("ethusdt@kline_1m", EVENT)
    _refused_both_ways("btcusdt@kline_4h", EVENT)  # another interval
    _refused_both_ways("BTCUSDT@kline_1m", _event(s="btcusdt"))  # the symbol is upper case, the stream not
    with pytest.raises(WireError, match="carries"):
        wire.kline_from_event(_event(s="ETHUSDT"), "btcusdt@kline_1m")
    assert wire.kline_from_event(EVENT, "btcusdt@kline_1m").symbol == "BTCUSDT"


@pytest.mark.parametrize(
    "change",
    [
        {"o": "-0.0010"},  # a negative open makes any close a +100 % "surge"
        {"l": "0"},
        {"o": "0", "l": "0"},
        {"c": "-1"},
        {"h": "0.0010", "l": "0.0020"},  # high below low
        {"v": "-1000"},
        {"q": "-1.0"},
        {"h": "1e300"},  # finite, and no market's price
        {"q": "9e307", "v": "9e307"},  # finite each, their sum is not
        {"t": 2**70},  # beyond int64: an OverflowError in SQLite
        {"T": 2**64},
        {"t": -1},
        {"T": 1638747600000},  # closes before it opens
        {"n": -5},
        {"n": 2**63},
        {"E": 2**64},
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_values_no_candle_can_have_are_malformed(change: dict) -> None:
    _refused_both_ways("btcusdt@kline_1m", _event(**change))


@pytest.mark.parametrize(
    ("index", "value"),
    [(0, 2**70), (6, 2**64), (8, 2**63), (0, -1), (1, "-0.5"), (3, "0"), (2, "1e300"), (5, "-3")],
)
def test_rest_rows_beyond_int64_or_with_absurd_values_are_wire_errors(index: int, value: object) -> None:
    row = list(ROW)
    row[index] = value
    with pytest.raises(WireError):
        wire.kline_from_rest_row("BTCUSDT", "1d", row)


def test_the_largest_sane_values_still_pass() -> None:
    """The bounds refuse nonsense, not big markets: int64 times and a 1e11 quote volume are fine."""
    row = list(ROW)
    row[0], row[6], row[7] = 2**63 - 2, 2**63 - 1, "123456789012.5"
    k = wire.kline_from_rest_row("BTCUSDT", "1d", row)
    assert k.close_time == 2**63 - 1 and k.quote_volume == 123456789012.5


def test_exchange_info_keeps_only_what_surge_reads() -> None:
    """The hourly exchangeInfo is decoded lean: the fields of the universe, the trading rules
    and the limits, nothing else built; a body of another shape comes back as it is."""
    from surge.exchange.wire import loads_exchange_info

    body = json.dumps(
        {
            "timezone": "UTC",
            "serverTime": 1,
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "limit": 2400}],
            "assets": [{"asset": "USDT"}],
            "symbols": [
                {
                    "symbol": "BTCUSDT",
                    "status": "TRADING",
                    "contractType": "PERPETUAL",
                    "quoteAsset": "USDT",
                    "baseAsset": "BTC",
                    "orderTypes": ["LIMIT"] * 50,
                    "liquidationFee": "0.0125",
                    "filters": [
                        {"filterType": "PRICE_FILTER", "tickSize": "0.10", "minPrice": "556.80"},
                        {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "1000"},
                    ],
                }
            ],
        }
    ).encode()
    info = loads_exchange_info(body)
    assert set(info) == {"serverTime", "rateLimits", "symbols"}
    (sym,) = info["symbols"]
    assert sym == {
        "symbol": "BTCUSDT",
        "status": "TRADING",
        "contractType": "PERPETUAL",
        "quoteAsset": "USDT",
        "baseAsset": "BTC",
        "filters": [
            {"filterType": "PRICE_FILTER", "tickSize": "0.10"},
            {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "1000"},
        ],
    }
    listing = loads_exchange_info(body, filters=False)  # the hourly universe refresh: no trading rules
    assert listing["symbols"] == [
        {
            "symbol": "BTCUSDT",
            "status": "TRADING",
            "contractType": "PERPETUAL",
            "quoteAsset": "USDT",
            "baseAsset": "BTC",
        }
    ]
    assert listing["rateLimits"] == info["rateLimits"] and listing["serverTime"] == 1
    assert loads_exchange_info(b'{"symbols": "odd"}') == {"symbols": "odd"}  # the caller says what is wrong
    with pytest.raises(WireError):
        loads_exchange_info(b"<html>")
