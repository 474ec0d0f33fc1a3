"""The recorder on its own: hourly files, the disk bound, losses marked, truncated files found.

Records are written with the wall readings a test chooses (the loop's readings are what a record
carries, and what rotates the files), so hours pass in microseconds.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from surge.models import Kline
from surge.record.format import (
    FORMAT_VERSION,
    Header,
    Klines,
    Lost,
    RecordingError,
    Tick,
    TruncatedRecording,
    message_of,
    read_frames,
    recording_files,
)
from surge.record.recorder import THREAD_NAME, Recorder

HOUR = 3600.0
T0 = datetime(2026, 9, 22, 12, tzinfo=UTC).timestamp()  # the session starts on a UTC hour


def header(session: str = "20260922T120000") -> Header:
    return Header(FORMAT_VERSION, session, 0, int(T0 * 1000), "sim", False, ["BTCUSDT"], {})


def kline(i: int) -> Kline:
    t = int(T0 * 1000) + i * 60_000
    return Kline(
        "BTCUSDT", "1m", t, t + 59_999, 100.0 + i, 101.0 + i, 99.0, 100.5 + i, 7.0 + i, 700.0, 3, True, t + 5
    )


def batch(wall: float, n: int = 50) -> tuple[float, float, list[Kline]]:
    """A chunk of klines the loop took at ``wall`` (its monotonic reading: wall - T0)."""
    return (wall - T0, wall, [kline(int(wall) % 997 + i) for i in range(n)])


def records_of(path: Path) -> list[Any]:
    return [r for frame in read_frames(path) for r in frame]


def test_one_file_per_utc_hour_each_starting_with_the_header(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    rec.prepare(header())
    walls = [T0 + 1, T0 + 1800, T0 + HOUR - 0.001, T0 + HOUR, T0 + 2 * HOUR + 5]
    for wall in walls:
        rec.write_items([batch(wall)])
    rec.write_items([(T0 + 2 * HOUR + 6 - T0, T0 + 2 * HOUR + 6, None)])  # a tick of the loop
    rec.stop(5)  # no thread: closes nothing twice

    files = recording_files(tmp_path)
    assert [p.name for p in files] == [
        "20260922T120000-20260922T12.srec",
        "20260922T120000-20260922T13.srec",
        "20260922T120000-20260922T14.srec",
    ]
    assert {p.stat().st_mode & 0o777 for p in files} == {0o600}  # the trader's business alone
    contents = [records_of(p) for p in files]
    assert [c[0].part for c in contents] == [0, 1, 2] and all(isinstance(c[0], Header) for c in contents)
    assert [[r.wall for r in c[1:]] for c in contents] == [walls[:3], walls[3:4], [walls[4], walls[4] + 1]]
    assert isinstance(contents[2][-1], Tick) and isinstance(contents[0][1], Klines)
    assert message_of(contents[0][1]) == batch(walls[0])[2]  # the klines come back as they went in


def test_the_oldest_files_are_deleted_beyond_the_size_bound_never_the_current_one(tmp_path: Path) -> None:
    other = tmp_path / "20260921T000000-20260921T00.srec"  # an older session's file counts too
    other.write_bytes(b"SURGEREC" + b"\0" * 3000)
    rec = Recorder(tmp_path, max_mb=6000 / (1 << 20))  # about two hours of these files
    rec.prepare(header())
    for hour in range(4):
        rec.write_items([batch(T0 + hour * HOUR + s, 200) for s in range(3)])
    sizes = {p.name: p.stat().st_size for p in recording_files(tmp_path)}

    assert not other.exists() and other in rec.deleted
    assert "20260922T120000-20260922T12.srec" not in sizes  # the oldest hours went first
    assert "20260922T120000-20260922T15.srec" in sizes  # the hour being written stays
    assert sum(sizes.values()) - sizes["20260922T120000-20260922T15.srec"] <= 6000
    assert [p.name for p in rec.deleted] == sorted(p.name for p in rec.deleted)


def test_a_single_file_over_the_bound_is_kept_while_it_is_written(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, max_mb=100 / (1 << 20))
    rec.prepare(header())
    rec.write_items([batch(T0 + s, 200) for s in range(5)])
    rec.enforce_limit()
    assert len(recording_files(tmp_path)) == 1 and rec.deleted == []


def test_a_backlog_beyond_its_limit_is_dropped_counted_and_marked_and_the_writer_is_joined(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder(tmp_path, max_backlog=2, frame_s=0.05)
    rec.prepare(header())
    for i in range(5):
        rec.tick(float(i), T0 + i)  # the writer is not running yet: 2 queued, 3 dropped
    assert rec.overflow == 3
    with caplog.at_level(logging.INFO, logger="surge.record"):
        rec.start_writer()
        assert any(t.name == THREAD_NAME for t in threading.enumerate())
        rec.stop(10)
    assert not any(t.name == THREAD_NAME for t in threading.enumerate())
    [path] = recording_files(tmp_path)
    records = records_of(path)
    assert isinstance(records[0], Header)
    assert [type(r) for r in records[1:]] == [Lost, Tick, Tick]
    assert records[1] == Lost(3, "backlog")
    assert "3 item(s) of the loop NOT recorded" in caplog.text


def test_a_disk_error_drops_records_logs_once_and_marks_the_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder(tmp_path)
    rec.prepare(header())
    rec.write_items([batch(T0 + 1)])
    (tmp_path / "20260922T120000-20260922T13.srec").mkdir()  # the next hour's file cannot be opened
    with caplog.at_level(logging.ERROR, logger="surge.record"):
        for s in range(3):
            rec.write_items([batch(T0 + HOUR + s)])
    assert rec.lost == 3  # that hour's three chunks
    assert caplog.text.count("writing the recording failed") == 1
    rec.write_items([batch(T0 + 2 * HOUR)])  # the hour after: it works again
    last = records_of(tmp_path / "20260922T120000-20260922T14.srec")
    assert last[1] == Lost(3, "disk") and isinstance(last[2], Klines)


def test_a_file_cut_in_a_frame_yields_what_comes_before_then_says_where(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    rec.prepare(header())
    for s in range(3):
        rec.write_items([batch(T0 + s)])
    [path] = recording_files(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # the last frame loses its end

    seen: list[Any] = []
    with pytest.raises(TruncatedRecording, match="unreadable from byte"):
        for frame in read_frames(path):
            seen += frame
    assert [type(r) for r in seen] == [Header, Klines, Klines]


def test_a_file_that_is_not_a_recording_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.srec"
    path.write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(RecordingError, match="not a surge recording"):
        list(read_frames(path))
