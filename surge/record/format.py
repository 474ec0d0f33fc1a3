"""The recording's file format: what ``surge run --record`` writes and ``surge replay`` reads.

What is recorded is the strategy loop's input, in the order the loop consumed it, each item with the
loop's clock readings (monotonic and wall seconds) when it took it: the stream's kline chunks, the
REST answers that come back as messages (1m backfills, 4h rescans, universe refreshes, failures),
stream gaps, and a tick for every round of the loop's periodic work (max-hold exits, filter
refreshes). Why the loop's input and not the raw WebSocket frames: the volume baselines come from
REST backfills and the 4h verdicts from scans, and the periodic work runs on the loop's clocks, so
frames alone cannot reproduce a decision; the loop's one queue, consumed on one thread, can.

Layout: ``DIR/<session>-<YYYYmmddTHH>.srec``, ``session`` being the run's start (UTC,
``YYYYmmddTHHMMSS``), one file per hour of wall clock (names sort in time order). A file is
:data:`MAGIC`, then frames: a 4-byte little-endian length and that many bytes of zlib-compressed
msgpack, an array of records. Every hour's file starts with a :class:`Header` numbering it (``part``,
so a replay notices a missing hour); the session's first file has the :class:`Start` record (the
start's 4h scan, the clock offset, restored cooldowns and positions) right after it. A write the
disk refused and that could not be cut back goes on in ``..._1.srec`` (no header), sorting after.
Why frames rather than one gzip stream: a crash or a full disk leaves at most one partial frame at
the end of a file, and every frame before it is readable on its own.

Messages the desk posts (live fills and closes) are not recorded: a replay always trades on paper,
and its paper desk makes its own.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from msgspec.structs import astuple

from surge.backfill import BackfillAbandoned, BackfillDeferred, Backfilled
from surge.errors import EXIT_RUNTIME, EXIT_USAGE, SurgeError
from surge.filter4h import Decision, ScanResult
from surge.filter_refresh import Rescanned
from surge.jobs import JobFailed
from surge.models import Kline, Position
from surge.stream import StreamGap

FORMAT_VERSION = 1
MAGIC = b"SURGEREC"
SUFFIX = ".srec"
FRAME_LENGTH = struct.Struct("<I")
#: The writer shares 2 cores with the loop: level 1 is within 5 % of level 6's size at a third of the CPU.
ZLIB_LEVEL = 1
#: The settings sections a decision depends on (the header keeps them for a replay).
DECISION_SECTIONS = ("filter_4h", "surge", "trade")


class RecordingError(SurgeError):
    """No recording, or one that cannot be read at all: a usage error (exit 2)."""

    exit_code = EXIT_USAGE


class TruncatedRecording(SurgeError):
    """A file ends in the middle of a frame, or a frame is corrupt: what came before it is usable."""

    exit_code = EXIT_RUNTIME


# --------------------------------------------------------------------------- records


#: A kline as an array in :class:`~surge.models.Kline`'s field order: half the bytes of a map with
#: its field names, and half the compression time.
KlineRow = tuple[str, str, int, int, float, float, float, float, float, float, int, bool, int]


def rows_of(klines: list[Kline]) -> list[Any]:
    return [astuple(k) for k in klines]


def klines_of(rows: list[KlineRow]) -> list[Kline]:
    return [Kline(*row) for row in rows]


class Scan(msgspec.Struct, array_like=True):
    """The parts of a :class:`~surge.filter4h.ScanResult` the loop reads."""

    decisions: list[Decision]
    errors: dict[str, str]
    refused: list[str]
    server_time: int


class Header(msgspec.Struct, tag="header", array_like=True):
    """First record of every file: enough to replay with the recording's own settings."""

    version: int
    session: str
    part: int  # 0 for the session's first file
    started_ms: int  # wall clock when the run's loop started
    venue: str
    live: bool
    symbols: list[str] | None  # --symbols, None for the whole universe
    settings: dict[str, dict[str, Any]]  # DECISION_SECTIONS as their TOML keys


class Start(msgspec.Struct, tag="start", array_like=True):
    """The state ``surge.startup.start`` left for the loop, taken when the loop started."""

    mono: float
    wall: float
    clock_offset_ms: int
    universe: list[str]
    scan: Scan
    cooldowns: dict[str, int]
    resumed: list[Position]


class Tick(msgspec.Struct, tag="t", array_like=True):
    """A round of the loop's periodic work, at these clock readings."""

    mono: float
    wall: float


class Klines(msgspec.Struct, tag="k", array_like=True):
    mono: float
    wall: float
    klines: list[KlineRow]


class OneKline(msgspec.Struct, tag="1", array_like=True):
    mono: float
    wall: float
    kline: KlineRow


class Gap(msgspec.Struct, tag="g", array_like=True):
    mono: float
    wall: float
    streams: list[str]
    start_ms: int
    end_ms: int
    connection: str
    reason: str


class Backfill(msgspec.Struct, tag="b", array_like=True):
    mono: float
    wall: float
    symbol: str
    klines: list[KlineRow]


class Deferred(msgspec.Struct, tag="d", array_like=True):
    mono: float
    wall: float
    symbols: list[str]
    error: str


class Abandoned(msgspec.Struct, tag="a", array_like=True):
    mono: float
    wall: float
    job: str
    error: str


class Rescan(msgspec.Struct, tag="r", array_like=True):
    mono: float
    wall: float
    scan: Scan
    universe: list[str] | None


class Failed(msgspec.Struct, tag="f", array_like=True):
    mono: float
    wall: float
    job: str
    error: str


class Lost(msgspec.Struct, tag="x", array_like=True):
    """The recorder dropped ``count`` of the loop's items here (a backlog or a disk error)."""

    count: int
    reason: str


Record = (
    Header | Start | Tick | Klines | OneKline | Gap | Backfill | Deferred | Abandoned | Rescan | Failed | Lost
)
#: Records that carry one of the loop's messages (see :func:`message_of`).
MESSAGE_RECORDS = (Klines, OneKline, Gap, Backfill, Deferred, Abandoned, Rescan, Failed)


# --------------------------------------------------------------------------- loop items <-> records


def scan_of(result: ScanResult) -> Scan:
    return Scan(
        list(result.decisions.values()), dict(result.errors), sorted(result.refused()), result.server_time
    )


def scan_result(scan: Scan) -> ScanResult:
    return ScanResult(
        decisions={d.symbol: d for d in scan.decisions},
        errors=dict(scan.errors),
        server_time=scan.server_time,
        refused_symbols=set(scan.refused),
    )


_TO_RECORD: dict[type, Callable[[float, float, Any], Any]] = {
    list: lambda m, w, batch: Klines(m, w, rows_of(batch)),
    Kline: lambda m, w, k: OneKline(m, w, astuple(k)),
    StreamGap: lambda m, w, g: Gap(m, w, sorted(g.streams), g.start_ms, g.end_ms, g.connection, g.reason),
    Backfilled: lambda m, w, b: Backfill(m, w, b.symbol, rows_of(b.klines)),
    BackfillDeferred: lambda m, w, d: Deferred(m, w, list(d.symbols), d.error),
    BackfillAbandoned: lambda m, w, a: Abandoned(m, w, a.job, a.error),
    Rescanned: lambda m, w, r: Rescan(
        m, w, scan_of(r.result), None if r.universe is None else sorted(r.universe)
    ),
    JobFailed: lambda m, w, f: Failed(m, w, f.job, f.error),
}
#: The loop's message types a recording carries (the recorder taps exactly these handlers).
RECORDED_TYPES = frozenset(_TO_RECORD)


def record_of(mono: float, wall: float, item: Any) -> Record:
    """The record of one item the loop consumed (None: a tick of its periodic work)."""
    if item is None:
        return Tick(mono, wall)
    made: Record = _TO_RECORD[type(item)](mono, wall, item)
    return made


def message_of(record: Any) -> Any:
    """The loop's message a record carries, as the live loop received it."""
    if isinstance(record, Klines):
        return klines_of(record.klines)
    if isinstance(record, OneKline):
        return Kline(*record.kline)
    if isinstance(record, Gap):
        return StreamGap(
            frozenset(record.streams), record.start_ms, record.end_ms, record.connection, record.reason
        )
    if isinstance(record, Backfill):
        return Backfilled(record.symbol, klines_of(record.klines))
    if isinstance(record, Deferred):
        return BackfillDeferred(tuple(record.symbols), record.error)
    if isinstance(record, Abandoned):
        return BackfillAbandoned(record.job, record.error)
    if isinstance(record, Rescan):
        universe = None if record.universe is None else frozenset(record.universe)
        return Rescanned(scan_result(record.scan), universe)
    if isinstance(record, Failed):
        return JobFailed(record.job, record.error)
    raise TypeError(f"not a message record: {type(record).__name__}")


def settings_sections(settings: Any) -> dict[str, dict[str, Any]]:
    return {name: asdict(getattr(settings, name)) for name in DECISION_SECTIONS}


# --------------------------------------------------------------------------- files and frames


def session_name(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=UTC).strftime("%Y%m%dT%H%M%S")


def file_name(session: str, wall: float) -> str:
    """The file of ``session`` holding the records of the UTC hour of ``wall``."""
    return f"{session}-{datetime.fromtimestamp(wall, tz=UTC).strftime('%Y%m%dT%H')}{SUFFIX}"


def recording_files(directory: Path) -> list[Path]:
    """Every recording file in ``directory``, oldest first (their names sort in time order)."""
    return sorted(p for p in directory.glob(f"*{SUFFIX}") if p.is_file())


def session_of(path: Path) -> str:
    return path.name.split("-", 1)[0]


_encoder = msgspec.msgpack.Encoder()


def encode_frame(records: list[Any]) -> bytes:
    """One frame: length, then the zlib-compressed msgpack array of ``records``."""
    data = zlib.compress(_encoder.encode(records), ZLIB_LEVEL)
    return FRAME_LENGTH.pack(len(data)) + data


_decoder = msgspec.msgpack.Decoder(list[Record])


def read_frames(path: Path) -> Iterator[list[Record]]:
    """The records of ``path``, frame by frame. Raises RecordingError when the file is not a
    recording at all, TruncatedRecording at the first frame that cannot be read (after yielding
    every frame before it)."""
    try:
        file = path.open("rb")
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}") from None
    with file:
        if file.read(len(MAGIC)) != MAGIC:
            raise RecordingError(f"{path} is not a surge recording")
        offset = len(MAGIC)
        while True:
            head = file.read(FRAME_LENGTH.size)
            if not head:
                return
            try:
                if len(head) < FRAME_LENGTH.size:
                    raise ValueError("a frame's length is cut short")
                (size,) = FRAME_LENGTH.unpack(head)
                data = file.read(size)
                if len(data) < size:
                    raise ValueError(f"a frame of {size} bytes has only {len(data)}")
                records = _decoder.decode(zlib.decompress(data))
            except (ValueError, zlib.error, msgspec.DecodeError) as exc:
                raise TruncatedRecording(f"{path} is unreadable from byte {offset} on ({exc})") from None
            yield records
            offset += FRAME_LENGTH.size + size


__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MESSAGE_RECORDS",
    "RECORDED_TYPES",
    "SUFFIX",
    "Header",
    "Lost",
    "Record",
    "RecordingError",
    "Start",
    "Tick",
    "TruncatedRecording",
    "encode_frame",
    "file_name",
    "message_of",
    "read_frames",
    "record_of",
    "recording_files",
    "scan_of",
    "scan_result",
    "session_name",
    "session_of",
    "settings_sections",
]
