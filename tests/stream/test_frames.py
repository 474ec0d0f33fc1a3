"""RFC 6455 server frames cut out of plain bytes: no socket, every case a server may (or must not) send."""

from __future__ import annotations

import struct

import pytest

from surge.stream.frames import MAX_FRAME, NO_STATUS, Chunk, FrameReader

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(payload: bytes, opcode: int = TEXT, fin: bool = True, mask: bool = False, rsv: int = 0) -> bytes:
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((first, mbit | n))
    elif n < 65536:
        head = bytes((first, mbit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, mbit | 127)) + struct.pack("!Q", n)
    if mask:
        key = b"\x01\x02\x03\x04"
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


def read_all(data: bytes, reader: FrameReader | None = None) -> Chunk:
    reader = reader or FrameReader()
    return reader.read(data, len(data))


def test_text_frames_in_one_read_are_all_cut_out_in_order() -> None:
    data = frame(b"a") + frame(b"bb") + frame(b"ccc")
    chunk = read_all(data)
    assert chunk.messages == [b"a", b"bb", b"ccc"]
    assert chunk.consumed == len(data) and chunk.frames == 3
    assert chunk.pings == [] and chunk.close is None and chunk.error is None


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 70_000])
def test_7_16_and_64_bit_lengths(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = frame(payload) + frame(b"next")
    chunk = read_all(data)
    assert chunk.messages == [payload, b"next"] and chunk.consumed == len(data)


def test_a_frame_split_anywhere_across_reads_arrives_whole() -> None:
    """Every cut point, through the 2-byte header, the 16- and 64-bit lengths and the payload."""
    stream = frame(b"x" * 10) + frame(b"y" * 300) + frame(b"z" * 70_000) + frame(b"end")
    for cut in [1, 2, 3, 4, 12, 13, 14, 15, 200, 316, 317, 318, 320, 324, 325, 1000, len(stream) - 1]:
        reader = FrameReader()
        first = reader.read(stream[:cut], cut)
        rest = stream[first.consumed :]
        second = reader.read(rest, len(rest))
        assert first.messages + second.messages == [b"x" * 10, b"y" * 300, b"z" * 70_000, b"end"], cut
        assert first.consumed + second.consumed == len(stream)


def test_a_header_alone_is_not_consumed() -> None:
    for partial in (b"\x81", b"\x81\x7e\x01", b"\x81\x7f\x00\x00\x00\x00", frame(b"abc")[:4]):
        chunk = read_all(partial)
        assert chunk.messages == [] and chunk.consumed == 0 and chunk.error is None


def test_fragmented_message_with_control_frames_between_fragments() -> None:
    data = (
        frame(b"he", fin=False)
        + frame(b"ping-1", opcode=PING)
        + frame(b"ll", opcode=CONT, fin=False)
        + frame(b"", opcode=PONG)
        + frame(b"o", opcode=CONT)
        + frame(b"after")
    )
    chunk = read_all(data)
    assert chunk.messages == [b"hello", b"after"]
    assert chunk.pings == [b"ping-1"] and chunk.frames == 6 and chunk.consumed == len(data)


def test_fragments_spread_over_reads_are_joined() -> None:
    reader = FrameReader()
    first = read_all(frame(b"ab", fin=False) + frame(b"cd", opcode=CONT, fin=False), reader)
    second = read_all(frame(b"ef", opcode=CONT), reader)
    assert first.messages == [] and second.messages == [b"abcdef"]


def test_binary_messages_are_messages_too() -> None:
    chunk = read_all(
        frame(b"\x00\x01", opcode=BINARY) + frame(b"x", opcode=BINARY, fin=False) + frame(b"y", opcode=CONT)
    )
    assert chunk.messages == [b"\x00\x01", b"xy"]


def test_masked_frame_from_a_server_is_a_protocol_error_after_the_frames_before_it() -> None:
    good = frame(b"good")
    chunk = read_all(good + frame(b"bad", mask=True) + frame(b"never"))
    assert chunk.messages == [b"good"]
    assert chunk.error == "masked frame from server" and chunk.consumed == len(good)


def test_close_frame_with_code_and_reason_stops_reading() -> None:
    data = frame(b"last") + frame(struct.pack("!H", 1001) + b"going away", opcode=CLOSE)
    chunk = read_all(data + frame(b"after close"))
    assert chunk.messages == [b"last"] and chunk.close == (1001, "going away") and chunk.error is None
    assert chunk.consumed == len(data)


def test_close_frame_without_a_code() -> None:
    assert read_all(frame(b"", opcode=CLOSE)).close == (NO_STATUS, "")
    assert read_all(frame(struct.pack("!H", 1011), opcode=CLOSE)).close == (1011, "")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (frame(b"x", rsv=0x40), "reserved bits set (no extension was negotiated)"),
        (frame(b"x", opcode=CONT), "continuation frame without a start"),
        (frame(b"x", opcode=0x3), "unknown opcode 3"),
        (b"\x81\x7f" + struct.pack("!Q", MAX_FRAME + 1), f"frame of {MAX_FRAME + 1} bytes"),
    ],
)
def test_protocol_errors(data: bytes, error: str) -> None:
    chunk = read_all(frame(b"ok") + data)
    assert chunk.messages == [b"ok"] and chunk.error == error


def test_a_new_message_start_drops_an_unfinished_fragmented_one() -> None:
    """As before the framing moved here: a server restarting a fragmented message is taken at its word."""
    chunk = read_all(frame(b"old", fin=False) + frame(b"new", fin=False) + frame(b"!", opcode=CONT))
    assert chunk.messages == [b"new!"]


def test_only_part_of_the_buffer_is_read() -> None:
    data = frame(b"a") + frame(b"b")
    chunk = FrameReader().read(data + b"garbage beyond end", len(data))
    assert chunk.messages == [b"a", b"b"] and chunk.consumed == len(data)
