"""RFC 6455 frames from a server, cut out of a receive buffer: the stream's hot path.

Why not websocket-client's ``recv()``: it costs several microseconds per frame (one call, several
reads and objects per frame), which alone would cap a connection far below what a Binance burst
needs. Here one call cuts every complete frame out of a whole received chunk and returns the data
messages as one list, so the caller decodes them in a tight loop of its own; control frames and
fragments, which Binance practically never sends, leave that loop for :meth:`FrameReader._other`.
The cost per frame is measured end to end by ``scripts/bench_stream.py`` (``events_per_s``).

Server frames are never masked (RFC 6455 5.1); a masked, oversized or malformed frame is a protocol
error, reported in the :class:`Chunk` after the messages before it, and the caller drops the socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_FRAME = 16 * 1024 * 1024  # far above any Binance frame; beyond it the stream is corrupt
NO_STATUS = 1005  # RFC 6455 7.4.1: a close frame without a status code
_FINAL_TEXT = 0x81  # FIN + text opcode, no reserved bits: every kline event and reply


class ProtocolError(Exception):
    """The byte stream is not a valid server-to-client WebSocket stream."""


@dataclass(slots=True)
class Chunk:
    """What one read held, in order: complete data messages, pings to answer, and how it ended."""

    messages: list[bytes]  # complete text or binary messages (fragments joined)
    consumed: int = 0  # bytes used; the rest of the buffer is the start of a frame still arriving
    frames: int = 0  # frames of any kind, fragments and control frames included
    pings: list[bytes] = field(default_factory=list)  # ping payloads, to be answered with pongs
    close: tuple[int, str] | None = None  # the server's close frame (code, reason): nothing after it
    error: str | None = None  # a protocol violation: nothing from it on was used


class FrameReader:
    """Cuts server frames out of successive reads; keeps a fragmented message between reads."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []  # a fragmented message's frames so far

    def read(self, data: bytes, end: int) -> Chunk:
        """Every complete frame of ``data[:end]``; an incomplete last frame is left unconsumed.

        Locals and one inline test for the usual frame (final, text, unmasked): this loop runs
        once per event.
        """
        messages: list[bytes] = []
        append = messages.append
        chunk = Chunk(messages)
        pos = count = 0
        while end - pos >= 2:
            b1 = data[pos + 1]
            length = b1 & 0x7F
            if length < 126:
                hdr = 2
            elif length == 126:
                if end - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                hdr = 4
            else:
                if end - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hdr = 10
                if length > MAX_FRAME:
                    chunk.error = f"frame of {length} bytes"
                    break
            if b1 & 0x80:
                chunk.error = "masked frame from server"
                break
            stop = pos + hdr + length
            if stop > end:
                break
            count += 1
            b0 = data[pos]
            if b0 == _FINAL_TEXT:
                append(data[pos + hdr : stop])
            elif not self._other(b0, data[pos + hdr : stop], chunk):
                pos = stop if chunk.error is None else pos
                break
            pos = stop
        chunk.consumed = pos
        chunk.frames = count
        return chunk

    def _other(self, b0: int, payload: bytes, chunk: Chunk) -> bool:
        """Any frame but a final unfragmented text one. False when reading must stop (close, error)."""
        opcode = b0 & 0x0F
        if b0 & 0x70:
            chunk.error = "reserved bits set (no extension was negotiated)"
        elif opcode == OP_PING:
            chunk.pings.append(payload)
        elif opcode == OP_PONG:
            pass
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NO_STATUS
            chunk.close = (code, payload[2:].decode("utf-8", "replace"))
        elif opcode in (OP_TEXT, OP_BINARY):
            if b0 & 0x80:
                chunk.messages.append(payload)
            else:
                self._parts = [payload]
        elif opcode == OP_CONT:
            self._continue(b0, payload, chunk)
        else:
            chunk.error = f"unknown opcode {opcode}"
        return chunk.error is None and chunk.close is None

    def _continue(self, b0: int, payload: bytes, chunk: Chunk) -> None:
        parts = self._parts
        if not parts:
            chunk.error = "continuation frame without a start"
            return
        parts.append(payload)
        if b0 & 0x80:
            chunk.messages.append(b"".join(parts))
            self._parts = []
