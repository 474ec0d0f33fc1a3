"""Pre-serialised WebSocket frames for the simulated market streams.

Why this module exists: the simulator must push well over 150,000 kline events per second to one
connection, and every event must carry its own event time ``E`` taken when it is sent. Building a
dict and calling ``json.dumps`` per event is far too slow for that; a frame here is one bytes
``%``-format of a prefix, the ``E`` digits and a suffix (``scripts/bench_sim.py`` measures the
rate it reaches). The JSON comes from :func:`wire.kline_to_event`, so
the bytes are exactly what the bot's parser is tested against; only the ``E`` slot is cut out.

A frame is a complete, unmasked server-to-client WebSocket text frame (RFC 6455 header + payload),
ready for ``transport.write``: the header is part of the prefix because the payload length does not
change while ``E`` has 13 digits (every millisecond timestamp between 2001 and 2286).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from surge.exchange import wire
from surge.models import Kline

_MARK = "\x01E\x01"  # placeholder for E; json.dumps escapes it to a string we can split on
_MARK_JSON = json.dumps(_MARK)
_E_DIGITS = 13
_E_MIN = 10 ** (_E_DIGITS - 1)
_E_MAX = 10**_E_DIGITS


def frame_header(length: int, opcode: int = 0x1) -> bytes:
    """RFC 6455 header of a final, unmasked frame of ``length`` payload bytes (server side)."""
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


def text_frame(payload: bytes) -> bytes:
    """One complete text frame carrying ``payload`` (already UTF-8)."""
    return frame_header(len(payload)) + payload


def dumps(obj: object) -> bytes:
    """Compact JSON as Binance sends it (no spaces), UTF-8."""
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class EventTemplate:
    """One event split around its ``E`` value.

    ``head`` is the frame header plus the JSON before ``E`` (valid for a 13-digit ``E``),
    ``prefix`` the same JSON without the header, ``suffix`` everything after ``E``.
    """

    head: bytes
    prefix: bytes
    suffix: bytes

    def frame(self, event_time: int) -> bytes:
        """The full frame for one event stamped ``event_time`` (ms)."""
        if _E_MIN <= event_time < _E_MAX:
            return b"%b%d%b" % (self.head, event_time, self.suffix)
        payload = b"%b%d%b" % (self.prefix, event_time, self.suffix)
        return frame_header(len(payload)) + payload


def _template(prefix: bytes, suffix: bytes) -> EventTemplate:
    head = frame_header(len(prefix) + _E_DIGITS + len(suffix)) + prefix
    return EventTemplate(head=head, prefix=prefix, suffix=suffix)


@dataclass(frozen=True, slots=True)
class KlineTemplates:
    """The raw (``/ws``) and combined (``/stream``) forms of one kline event."""

    kline: Kline
    raw: EventTemplate
    combined: EventTemplate


def kline_templates(stream: str, kline: Kline, price_decimals: int, qty_decimals: int) -> KlineTemplates:
    """Serialise ``kline`` once, for both envelopes, leaving a hole where ``E`` goes."""
    event = wire.kline_to_event(kline, 0, price_decimals, qty_decimals)
    event["E"] = _MARK
    raw = json.dumps(event, separators=(",", ":"))
    before, sep, after = raw.partition(_MARK_JSON)
    if not sep:  # pragma: no cover - kline_to_event always has E
        raise ValueError("kline event without an E field")
    stream_json = json.dumps(stream)
    comb_before = '{"stream":' + stream_json + ',"data":' + before
    return KlineTemplates(
        kline=kline,
        raw=_template(before.encode(), after.encode()),
        combined=_template(comb_before.encode(), (after + "}").encode()),
    )
