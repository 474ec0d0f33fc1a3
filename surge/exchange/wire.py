"""Binance USD-M wire format <-> models, in one place.

Both sides of the wire use this module: the bot parses with it, the simulator serialises with it,
so a format mistake shows up as a failing round-trip test rather than as two modules that agree
with each other and not with Binance. Every parse failure raises :class:`WireError` and nothing
else, so callers can count and drop a bad frame with one ``except``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypedDict

import msgspec

from surge.models import INTERVALS, Kline

_INTERVAL_SET = frozenset(INTERVALS)
#: Times, trade counts and ids go to SQLite INTEGER columns and int64 arithmetic: anything outside
#: 0..2**63-1 is not a Binance value (and would be an OverflowError deep in the store).
MAX_INT64 = 2**63 - 1
#: Bound of the sum of a kline's four prices and two volumes: many orders of magnitude above any real
#: market (a 4h quote volume of all of Binance is ~1e11), and far from where a float sum, product or
#: mean of them loses every digit or overflows. A sum because one comparison bounds all six at once.
MAX_KLINE_SUM = 1e18


class WireError(ValueError):
    """A payload that does not have the shape Binance documents."""


# --------------------------------------------------------------------------- stream names


def stream_name(symbol: str, interval: str) -> str:
    """``("BTCUSDT", "1m") -> "btcusdt@kline_1m"`` (stream names are lower-case on Binance)."""
    if not isinstance(interval, str) or interval not in _INTERVAL_SET:
        raise WireError(f"unknown kline interval {interval!r}")
    if not isinstance(symbol, str) or not symbol or not symbol.isalnum():
        raise WireError(f"invalid symbol {symbol!r}")
    return f"{symbol.lower()}@kline_{interval}"


def parse_stream_name(name: str) -> tuple[str, str]:
    """``"btcusdt@kline_1m" -> ("BTCUSDT", "1m")``; anything that is not a kline stream is an error."""
    if not isinstance(name, str):
        raise WireError(f"stream name must be a string, got {type(name).__name__}")
    sym, sep, rest = name.partition("@kline_")
    if not sep or not sym or not sym.isalnum() or rest not in _INTERVAL_SET:
        raise WireError(f"not a kline stream name: {name!r}")
    return sym.upper(), rest


# --------------------------------------------------------------------------- decoding


_json_decode = msgspec.json.decode


class _ExchangeFilter(TypedDict, total=False):
    filterType: Any
    tickSize: Any
    stepSize: Any
    minQty: Any
    maxQty: Any
    notional: Any


class _ExchangeSymbol(TypedDict, total=False):
    symbol: Any
    status: Any
    contractType: Any
    quoteAsset: Any
    baseAsset: Any
    marginAsset: Any
    filters: list[_ExchangeFilter]


class _ExchangeInfo(TypedDict, total=False):
    serverTime: Any
    rateLimits: Any
    symbols: list[_ExchangeSymbol]


class _ListedSymbol(TypedDict, total=False):
    symbol: Any
    status: Any
    contractType: Any
    quoteAsset: Any
    baseAsset: Any


class _ExchangeListing(TypedDict, total=False):
    serverTime: Any
    rateLimits: Any
    symbols: list[_ListedSymbol]


_decode_exchange_info = msgspec.json.Decoder(_ExchangeInfo).decode
_decode_exchange_listing = msgspec.json.Decoder(_ExchangeListing).decode


def loads_exchange_info(payload: bytes, *, filters: bool = True) -> Any:
    """exchangeInfo with only the fields surge reads (the universe, the trading rules, the limits).

    Why: the whole body is ~640 KB of JSON for ~540 symbols, ~2.7 MB as Python objects, fetched at
    start and every hour. Decoded whole, each hourly copy left the allocator fragmented around the
    objects made meanwhile (+6 MB of RSS after the first two refreshes in a soak). Unknown fields are
    skipped by the decoder without being built. A body of another shape is decoded as it is, so its
    callers' own checks say what is wrong with it.

    ``filters=False`` leaves out the trading rules as well (about a third of the objects again): the
    hourly universe refresh only needs who is listed and how, and what it builds there sets the
    process's memory high-water for the rest of the run.
    """
    try:
        return (_decode_exchange_info if filters else _decode_exchange_listing)(payload)
    except msgspec.ValidationError:
        return loads(payload)
    except (msgspec.DecodeError, ValueError, TypeError, RecursionError) as exc:
        raise WireError(f"not JSON: {exc}") from None


def loads(payload: str | bytes) -> Any:
    """json.loads that fails with WireError (non-JSON, bad UTF-8) instead of three other types.

    msgspec's decoder is about 3x faster than the stdlib's on a kline frame and stricter: it refuses
    NaN/Infinity literals and non-UTF-8 input, which Binance never sends; those land in WireError
    like every other malformed payload.
    """
    try:
        return _json_decode(payload)
    except (msgspec.DecodeError, ValueError, TypeError, RecursionError) as exc:
        raise WireError(f"not JSON: {exc}") from None


def _num(obj: dict[str, Any], key: str) -> float:
    try:
        value = obj[key]
    except KeyError:
        raise WireError(f"missing field {key!r}") from None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise WireError(f"field {key!r} must be a decimal string, got {type(value).__name__}")
    try:
        number = float(value)
    except ValueError:
        raise WireError(f"field {key!r} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise WireError(f"field {key!r} is not a finite number: {value!r}")
    return number


def _int(obj: dict[str, Any], key: str) -> int:
    try:
        value = obj[key]
    except KeyError:
        raise WireError(f"missing field {key!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(f"field {key!r} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_INT64:
        raise WireError(f"field {key!r} is out of range: {value!r:.40}")
    return value


def _checked(k: Kline) -> Kline:
    """The kline if its numbers can be a real candle; a WireError naming what cannot.

    Prices are positive with low <= high, volumes are not negative, the candle ends after it
    starts, and no value is absurdly large: a frame that says otherwise is corrupt or not from
    Binance, and feeding it to the rule would mean a bogus signal (a negative open makes any close
    a surge) or a baseline poisoned for ``volume_lookback`` minutes.
    """
    prices = (k.open, k.high, k.low, k.close)
    if not min(prices) > 0.0:
        raise WireError(f"kline of {k.symbol} with a price <= 0: {prices}")
    if k.low > k.high:
        raise WireError(f"kline of {k.symbol} with low {k.low} above high {k.high}")
    if not (k.volume >= 0.0 and k.quote_volume >= 0.0):
        raise WireError(f"kline of {k.symbol} with a negative volume")
    if not sum(prices) + k.volume + k.quote_volume <= MAX_KLINE_SUM:
        raise WireError(f"kline of {k.symbol} with absurd values: {prices}, {k.volume}, {k.quote_volume}")
    if k.close_time < k.open_time:
        raise WireError(f"kline of {k.symbol} closing ({k.close_time}) before it opens ({k.open_time})")
    return k


#: stream name -> (symbol, interval) it carries; filled on first sight, so the hot path checks a
#: frame's payload against its stream name with one dict lookup. Cleared when full: a server
#: inventing names cannot grow it without bound.
_STREAM_KEYS: dict[str, tuple[str, str]] = {}
_STREAM_KEYS_MAX = 8192


def _stream_key(stream: str) -> tuple[str, str] | None:
    key = _STREAM_KEYS.get(stream)
    if key is None:
        try:
            key = parse_stream_name(stream)
        except WireError:
            return None
        if len(_STREAM_KEYS) >= _STREAM_KEYS_MAX:
            _STREAM_KEYS.clear()
        _STREAM_KEYS[stream] = key
    return key


def kline_from_event(data: Any, stream: str | None = None) -> Kline:
    """The ``data`` object of a kline event (``{"e": "kline", "E": ..., "k": {...}}``) -> Kline.

    Field by field, with a WireError that names what is wrong. (The stream decodes well-formed
    frames with :func:`combined_kline_frame` and comes here only for the rest.) With ``stream``, the
    event must be that stream's symbol and interval: a frame of ``btcusdt@kline_1m`` carrying
    ETHUSDT would otherwise be delivered as ETHUSDT's candle.
    """
    if not isinstance(data, dict):
        raise WireError(f"kline event must be an object, got {type(data).__name__}")
    if data.get("e") != "kline":
        raise WireError(f"not a kline event: e={data.get('e')!r}")
    k = data.get("k")
    if not isinstance(k, dict):
        raise WireError("kline event without a 'k' object")
    symbol = k.get("s")
    interval = k.get("i")
    if not isinstance(symbol, str) or not symbol:
        raise WireError("kline event without a symbol")
    if not isinstance(interval, str) or interval not in _INTERVAL_SET:  # a list is unhashable
        raise WireError(f"kline event with unknown interval {interval!r}")
    closed = k.get("x")
    if not isinstance(closed, bool):
        raise WireError("kline event field 'x' must be a boolean")
    if stream is not None and _stream_key(stream) != (symbol, interval):
        raise WireError(f"stream {stream!r:.60} carries a kline of {symbol!r:.40} {interval}")
    return _kline_of(symbol, interval, k, closed=closed, event_time=_int(data, "E"))


def _kline_of(
    symbol: str,
    interval: str,
    f: dict[str, Any],
    *,
    closed: bool | None = None,
    now_ms: int | None = None,
    event_time: int = 0,
) -> Kline:
    """A checked Kline from Binance's one-letter fields: a stream event's ``k`` object, or a REST
    row zipped to the same letters. ``closed`` None: closed when it ended before ``now_ms``
    (exchange time), or always without it."""
    open_time, close_time = _int(f, "t"), _int(f, "T")
    if closed is None:
        closed = True if now_ms is None else close_time < now_ms
    return _checked(
        Kline(
            symbol=symbol,
            interval=interval,
            open_time=open_time,
            close_time=close_time,
            open=_num(f, "o"),
            high=_num(f, "h"),
            low=_num(f, "l"),
            close=_num(f, "c"),
            volume=_num(f, "v"),
            quote_volume=_num(f, "q"),
            trades=_int(f, "n"),
            closed=closed,
            event_time=event_time,
        )
    )


class _KlineBody(
    msgspec.Struct,
    gc=False,
    rename={
        "open_time": "t",
        "close_time": "T",
        "symbol": "s",
        "interval": "i",
        "open": "o",
        "high": "h",
        "low": "l",
        "close": "c",
        "volume": "v",
        "quote_volume": "q",
        "trades": "n",
        "closed": "x",
    },
):
    """The ``k`` object of a kline event exactly as Binance sends it (decimals are strings)."""

    open_time: int
    close_time: int
    symbol: str
    interval: str
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int
    closed: bool


class _KlineEvent(msgspec.Struct, gc=False, rename={"kind": "e", "event_time": "E", "body": "k"}):
    kind: str
    event_time: int
    body: _KlineBody


class _CombinedKline(msgspec.Struct, gc=False):
    stream: str
    data: _KlineEvent


_decode_combined_kline = msgspec.json.Decoder(_CombinedKline).decode


def combined_kline_frame(payload: bytes) -> tuple[str, Kline] | None:
    """A combined-stream kline frame -> (stream name, Kline) in one typed decode, or None.

    The stream's hot path: each connection's streams (up to 200 here, 1,024 on Binance) arrive as one
    burst every 250 ms, and under the GIL the last event of a burst waits for every one before it,
    so each microsecond per event adds to the burst's tail latency. Decoding straight into typed fields (no
    dicts, exact types checked in C) costs about a third of a generic decode followed by
    :func:`parse_combined` (``scripts/bench_stream.py`` measures the path end to end).

    None means "not a well-formed kline event": a reply, a malformed frame, numbers where Binance
    sends strings, a payload of another symbol than its stream's, values no candle can have. The
    caller then takes :func:`loads` + :func:`parse_combined`, which decide the precise outcome;
    whatever this accepts, that path accepts too and builds the same Kline (strict types: a string
    where an integer belongs is refused here as it is there).
    """
    try:
        msg = _decode_combined_kline(payload)
        event = msg.data
        k = event.body
        if (
            event.kind == "kline"
            and (_STREAM_KEYS.get(msg.stream) or _stream_key(msg.stream)) == (k.symbol, k.interval)
            and 0 <= k.open_time <= k.close_time <= MAX_INT64
            and 0 <= k.trades <= MAX_INT64
            and 0 <= event.event_time <= MAX_INT64
        ):
            o, h, low, c = float(k.open), float(k.high), float(k.low), float(k.close)
            v, q = float(k.volume), float(k.quote_volume)
            # the same rules as _checked, in as few comparisons: NaN fails every one, and with
            # everything non-negative the bound on the sum bounds each value (and refuses inf)
            if (
                0.0 < low <= h
                and o > 0.0
                and c > 0.0
                and v >= 0.0
                and q >= 0.0
                and o + h + low + c + v + q <= MAX_KLINE_SUM
            ):
                return msg.stream, Kline(
                    k.symbol,
                    k.interval,
                    k.open_time,
                    k.close_time,
                    o,
                    h,
                    low,
                    c,
                    v,
                    q,
                    k.trades,
                    k.closed,
                    event.event_time,
                )
    except (msgspec.DecodeError, ValueError):  # ValidationError is a DecodeError; float() a ValueError
        pass
    return None


def parse_combined(message: Any) -> tuple[str, Kline]:
    """A combined-stream envelope ``{"stream": name, "data": event}`` -> (stream name, Kline)."""
    if not isinstance(message, dict):
        raise WireError(f"combined message must be an object, got {type(message).__name__}")
    stream = message.get("stream")
    if not isinstance(stream, str):
        raise WireError("combined message without a 'stream' name")
    return stream, kline_from_event(message.get("data"), stream)


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer to a SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS request, matched by ``id``."""

    id: int
    result: Any = None
    error_code: int | None = None
    error_msg: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None


def parse_reply(message: Any) -> Reply:
    """``{"result": null, "id": 1}`` or ``{"error": {"code": 2, "msg": "..."}, "id": 1}`` -> Reply."""
    if not isinstance(message, dict) or "id" not in message:
        raise WireError("reply without an 'id'")
    msg_id = message["id"]
    if isinstance(msg_id, bool) or not isinstance(msg_id, int):
        raise WireError(f"reply id must be an integer, got {msg_id!r}")
    error = message.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise WireError("reply 'error' must be an object")
        return Reply(id=msg_id, error_code=error.get("code"), error_msg=str(error.get("msg", "")))
    if "result" not in message:
        raise WireError("reply with neither 'result' nor 'error'")
    return Reply(id=msg_id, result=message["result"])


def kline_from_rest_row(symbol: str, interval: str, row: Any, now_ms: int | None = None) -> Kline:
    """One ``GET /fapi/v1/klines`` row -> Kline.

    Rows do not say whether the candle is closed; it is when its close time lies before ``now_ms``
    (the exchange's clock). Without ``now_ms`` every row is taken as closed.
    """
    if not isinstance(row, list) or len(row) < 9:
        raise WireError(f"kline row must be a list of at least 9 fields, got {row!r:.80}")
    if not isinstance(interval, str) or interval not in _INTERVAL_SET:
        raise WireError(f"unknown kline interval {interval!r}")
    fields = dict(zip(("t", "o", "h", "l", "c", "v", "T", "q", "n"), row, strict=False))
    return _kline_of(symbol, interval, fields, now_ms=now_ms)


def parse_error(body: Any) -> tuple[int, str]:
    """A Binance error body ``{"code": -1121, "msg": "Invalid symbol."}`` -> (code, msg)."""
    if (
        not isinstance(body, dict)
        or isinstance(body.get("code"), bool)
        or not isinstance(body.get("code"), int)
    ):
        raise WireError("not a Binance error body")
    return body["code"], str(body.get("msg", ""))


# --------------------------------------------------------------------------- encoding (simulator side)


def fmt(value: float, decimals: int) -> str:
    """Binance sends prices and quantities as fixed-point decimal strings."""
    return f"{value:.{decimals}f}"


def kline_to_event(kline: Kline, event_time: int, price_decimals: int = 4, qty_decimals: int = 3) -> dict:
    """Kline -> the ``data`` object of a kline stream event, Binance field for field."""
    p, q = price_decimals, qty_decimals
    taker_base = kline.volume / 2.0
    taker_quote = kline.quote_volume / 2.0
    first_trade = kline.open_time // 10
    return {
        "e": "kline",
        "E": event_time,
        "s": kline.symbol,
        "k": {
            "t": kline.open_time,
            "T": kline.close_time,
            "s": kline.symbol,
            "i": kline.interval,
            "f": first_trade,
            "L": first_trade + max(kline.trades - 1, 0),
            "o": fmt(kline.open, p),
            "c": fmt(kline.close, p),
            "h": fmt(kline.high, p),
            "l": fmt(kline.low, p),
            "v": fmt(kline.volume, q),
            "n": kline.trades,
            "x": kline.closed,
            "q": fmt(kline.quote_volume, 4),
            "V": fmt(taker_base, q),
            "Q": fmt(taker_quote, 4),
            "B": "0",
        },
    }


def kline_to_rest_row(kline: Kline, price_decimals: int = 4, qty_decimals: int = 3) -> list:
    """Kline -> one ``GET /fapi/v1/klines`` row (12 fields, decimals as strings)."""
    p, q = price_decimals, qty_decimals
    return [
        kline.open_time,
        fmt(kline.open, p),
        fmt(kline.high, p),
        fmt(kline.low, p),
        fmt(kline.close, p),
        fmt(kline.volume, q),
        kline.close_time,
        fmt(kline.quote_volume, 4),
        kline.trades,
        fmt(kline.volume / 2.0, q),
        fmt(kline.quote_volume / 2.0, 4),
        "0",
    ]
