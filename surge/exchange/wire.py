"""Binance USD-M wire format <-> models, in one place.

Both sides of the wire use this module: the bot parses with it, the simulator serialises with it,
so a format mistake shows up as a failing round-trip test rather than as two modules that agree
with each other and not with Binance. Every parse failure raises :class:`WireError` and nothing
else, so callers can count and drop a bad frame with one ``except``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from surge.models import INTERVALS, Kline

try:  # orjson decodes a kline frame in ~0.9 µs against ~2.6 µs for json: a fifth of the stream's budget.
    import orjson as _orjson
except ImportError:  # pragma: no cover - optional speed-up, the stdlib path is complete
    _orjson = None

_INTERVAL_SET = frozenset(INTERVALS)


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


def loads(payload: str | bytes) -> Any:
    """json.loads that fails with WireError (non-JSON, bad UTF-8) instead of three other types.

    Uses orjson when it is installed (3x faster on a kline frame). orjson is stricter than the
    stdlib: it refuses NaN/Infinity literals, integers beyond 64 bits and non-UTF-8 encodings, none of
    which Binance sends; those land in WireError like every other malformed payload.
    """
    if _orjson is not None:
        try:
            return _orjson.loads(payload)
        except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise WireError(f"not JSON: {exc}") from None
    try:
        return json.loads(payload)
    except (ValueError, TypeError, RecursionError) as exc:  # bad JSON or UTF-8; deep nesting
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
    return value


_KLINE_FIELDS = ("symbol", "interval", "open_time", "close_time", "open", "high", "low", "close", "volume",
                 "quote_volume", "trades", "closed", "event_time")


def _kline_builder() -> Callable[..., Kline]:
    """``Kline(*values)`` for the stream's hot path, 0.5 µs instead of 0.9 µs per event.

    A frozen dataclass's ``__init__`` assigns each of the 13 fields through
    ``object.__setattr__``; writing the slots through their descriptors directly builds the same
    object (same fields, ``==``, hash, repr) in about half the time. Used only while Kline is exactly
    the frozen, slotted, 13-field dataclass this was written for with no ``__post_init__``; any change
    to the model falls back to the real constructor.
    """
    names = tuple(f.name for f in fields(Kline))
    if (names != _KLINE_FIELDS or getattr(Kline, "__slots__", None) != names
            or hasattr(Kline, "__post_init__") or not Kline.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        return Kline
    new = object.__new__
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12 = (getattr(Kline, n).__set__ for n in names)

    def build(a: str, b: str, c: int, d: int, e: float, f: float, g: float, h: float, i: float, j: float,
              k: int, m: bool, n: int) -> Kline:
        obj = new(Kline)
        s0(obj, a); s1(obj, b); s2(obj, c); s3(obj, d); s4(obj, e); s5(obj, f); s6(obj, g)  # noqa: E702
        s7(obj, h); s8(obj, i); s9(obj, j); s10(obj, k); s11(obj, m); s12(obj, n)  # noqa: E702
        return obj

    return build


_new_kline = _kline_builder()


def kline_from_event(data: Any) -> Kline:
    """The ``data`` object of a kline event (``{"e": "kline", "E": ..., "k": {...}}``) -> Kline.

    Hot path of the stream (100,000+ events/s on one connection): a well-formed event is read with
    plain indexing and exact type checks (~1.5 µs instead of ~3.3 µs); anything else falls through to
    the checked path, which raises the precise WireError. The fast path only accepts inputs the checked
    path accepts too (decimal strings, int times, bool ``x``, finite numbers) and builds the same Kline.
    """
    try:
        if type(data) is dict and data["e"] == "kline":
            k = data["k"]
            e_time = data["E"]
            o, h, low, c, v, q = k["o"], k["h"], k["l"], k["c"], k["v"], k["q"]
            t, t_end, n, x, sym, iv = k["t"], k["T"], k["n"], k["x"], k["s"], k["i"]
            if (
                type(o) is str and type(h) is str and type(low) is str and type(c) is str
                and type(v) is str and type(q) is str and type(t) is int and type(t_end) is int
                and type(n) is int and type(x) is bool and type(e_time) is int
                and type(sym) is str and sym and iv in _INTERVAL_SET
            ):
                fo, fh, fl, fc, fv, fq = float(o), float(h), float(low), float(c), float(v), float(q)
                total = fo + fh + fl + fc + fv + fq
                if total - total == 0.0:  # every one finite (NaN/inf poison the sum); else the checked path
                    return _new_kline(sym, iv, t, t_end, fo, fh, fl, fc, fv, fq, n, x, e_time)
    except (KeyError, TypeError, ValueError):
        pass
    return _kline_from_event_checked(data)


def _kline_from_event_checked(data: Any) -> Kline:
    """Field-by-field validation with a message that names what is wrong."""
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
    return Kline(
        symbol=symbol,
        interval=interval,
        open_time=_int(k, "t"),
        close_time=_int(k, "T"),
        open=_num(k, "o"),
        high=_num(k, "h"),
        low=_num(k, "l"),
        close=_num(k, "c"),
        volume=_num(k, "v"),
        quote_volume=_num(k, "q"),
        trades=_int(k, "n"),
        closed=closed,
        event_time=_int(data, "E"),
    )


def parse_combined(message: Any) -> tuple[str, Kline]:
    """A combined-stream envelope ``{"stream": name, "data": event}`` -> (stream name, Kline)."""
    if not isinstance(message, dict):
        raise WireError(f"combined message must be an object, got {type(message).__name__}")
    stream = message.get("stream")
    if not isinstance(stream, str):
        raise WireError("combined message without a 'stream' name")
    return stream, kline_from_event(message.get("data"))


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
    close_time = _int(fields, "T")
    return Kline(
        symbol=symbol,
        interval=interval,
        open_time=_int(fields, "t"),
        close_time=close_time,
        open=_num(fields, "o"),
        high=_num(fields, "h"),
        low=_num(fields, "l"),
        close=_num(fields, "c"),
        volume=_num(fields, "v"),
        quote_volume=_num(fields, "q"),
        trades=_int(fields, "n"),
        closed=True if now_ms is None else close_time < now_ms,
    )


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
