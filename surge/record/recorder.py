"""``surge run --record DIR``: the strategy loop's input written to disk, off the loop.

The loop's side costs two clock reads and one ``SimpleQueue.put`` per item it consumes (a chunk of
klines is one item) and per round of periodic work: no encoding, compression or file I/O there, and
never a wait. One named thread (``surge-recorder``, joined by :meth:`Recorder.stop`) turns the queued
items into records (:mod:`surge.record.format`), compresses them a frame at a time (at least every
:data:`FRAME_S` seconds) and writes them, one file per UTC hour.

Nothing is lost silently: when the backlog passes :data:`MAX_BACKLOG` items (the writer cannot keep
up) or the disk refuses a write, the items are counted, the first loss of a spell is logged, a
:class:`~surge.record.format.Lost` record marks the place in the recording (a replay warns there),
and the stop logs the totals. The trading never waits for the recorder.

Disk use is bounded by ``max_mb``: when the files in DIR (every session's) pass it, the oldest are
deleted, never the one being written.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from io import FileIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from surge.errors import ConfigError
from surge.filter4h import ScanResult
from surge.record import DEFAULT_MAX_MB
from surge.record.format import (
    FORMAT_VERSION,
    MAGIC,
    RECORDED_TYPES,
    Header,
    Lost,
    Start,
    encode_frame,
    file_name,
    record_of,
    recording_files,
    scan_of,
    session_name,
    settings_sections,
)
from surge.runtime import DIR_MODE, FILE_MODE, Spell

if TYPE_CHECKING:
    from surge.app import Bot

log = logging.getLogger("surge.record")

THREAD_NAME = "surge-recorder"
MAX_BACKLOG = 50_000  # items queued for the writer; beyond it they are dropped (and counted)
FRAME_S = 1.0  # a frame is written at least this often: a crash loses about this much
FRAME_ITEMS = 5_000
LIMIT_CHECK_BYTES = 16 << 20  # the size bound is enforced at every new file and every 16 MB written
_STOP = object()

Handler = Callable[[Any], None]


def check_record_dir(directory: Path) -> Path:
    """Create DIR if needed and prove it is writable, before the bot starts (exit 2 otherwise)."""
    directory = directory.expanduser()
    try:
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        probe = directory / ".surge-record-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--record: cannot write to {directory}: {exc.strerror or exc}") from None
    return directory


class Recorder:
    """The writer of one recording session (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_mb: float = DEFAULT_MAX_MB,
        max_backlog: int = MAX_BACKLOG,
        frame_s: float = FRAME_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.max_bytes = int(max_mb * (1 << 20))
        self.max_backlog = max_backlog
        self.frame_s = frame_s
        self._clock = clock  # times the frames, not the records (those carry the loop's readings)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._abort = threading.Event()
        self.session = ""
        self.item_mono = 0.0  # the loop's monotonic reading of the item it is handling
        # counters: the loop thread writes ``overflow``, the writer the rest
        self.overflow = 0
        self.lost = 0
        self.records = 0
        self.bytes = 0
        self.files: list[Path] = []
        self.deleted: list[Path] = []  # files the size bound removed
        self._lost_marked = 0  # losses already marked in the recording
        self._overflow_seen = 0
        self._overflow_spell = Spell(log, "recording (the writer cannot keep up)")
        self._disk_spell = Spell(log, "writing the recording")
        self._file: FileIO | None = None
        self._path: Path | None = None
        self._base = ""  # the current file's name without its suffix
        self._good = 0  # where the current file's last whole frame ends
        self._broken = 0  # files of this hour abandoned after a write that could not be undone
        self._hour = -1
        self._part = 0
        self._header: Header | None = None
        self._since_check = 0

    # ----------------------------------------------------------------- the loop's side

    def begin(self, bot: Bot, mono: float, handlers: dict[type, Handler]) -> dict[type, Handler]:
        """At the loop's start (``mono``: its monotonic reading): the header and the start state,
        the writer thread, and ``handlers`` with every recorded message type tapped."""
        wall = bot.clock.wall()
        assert bot.store is not None
        self.prepare(
            Header(
                FORMAT_VERSION,
                session_name(wall),
                0,
                int(wall * 1000),
                bot.venue,
                bot.live,
                sorted(bot.only) if bot.only is not None else None,
                settings_sections(bot.settings),
            )
        )
        self._queue.put(
            Start(
                mono,
                wall,
                bot.clock_offset_ms,
                sorted(bot.filters.universe),
                scan_of(bot.start_scan or ScanResult()),
                bot.store.last_signal_times(venue=bot.venue),
                bot.book.positions(),
            )
        )
        self.start_writer()
        log.info("recording the loop's input under %s (session %s)", self.directory, self.session)
        return {t: self._tap(h, bot.clock) if t in RECORDED_TYPES else h for t, h in handlers.items()}

    def prepare(self, header: Header) -> None:
        """The session every file of this recording belongs to, and the header each one starts with."""
        self._header, self.session = header, header.session

    def start_writer(self) -> None:
        """Start the ``surge-recorder`` thread (after :meth:`prepare`); :meth:`stop` joins it."""
        # a daemon only so that a disk hung in a write cannot keep the process from exiting: stop()
        # joins it (bounded) like every other thread the bot owns
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def _tap(self, handler: Handler, clock: Any) -> Handler:
        put, qsize, limit = self._queue.put, self._queue.qsize, self.max_backlog
        monotonic, wall = clock.monotonic, clock.wall

        def tapped(item: Any) -> None:
            mono = self.item_mono = monotonic()
            if qsize() < limit:
                put((mono, wall(), item))
            else:
                self.overflow += 1
            handler(item)

        return tapped

    def tick(self, mono: float, wall: float) -> None:
        """A round of the loop's periodic work, with the readings it runs on."""
        if self._queue.qsize() < self.max_backlog:
            self._queue.put((mono, wall, None))
        else:
            self.overflow += 1

    def stop(self, timeout: float) -> None:
        """Write what is queued (at most ``timeout`` seconds), close the file, join the thread."""
        if self._thread is None:
            self._close()  # written directly (tests), or never started
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()  # the rest of the backlog is dropped, and counted
            self._thread.join(0.5)
        self._thread = None
        lost = self.lost + self.overflow
        log.log(
            logging.WARNING if lost else logging.INFO,
            "recording: %d records, %.1f MB in %d file(s) under %s%s",
            self.records,
            self.bytes / (1 << 20),
            len(self.files),
            self.directory,
            f"; {lost} item(s) of the loop NOT recorded (a replay warns where)" if lost else "",
        )

    # ----------------------------------------------------------------- the writer thread

    def _run(self) -> None:
        pending: list[Any] = []
        flush_at = math.inf
        get = self._queue.get
        done = False
        while not done:
            try:
                item = get(timeout=max(0.0, min(self.frame_s, flush_at - self._clock())))
            except queue.Empty:
                item = None
            while item is not None:
                if item is _STOP:
                    done = True
                    break
                if self._abort.is_set():
                    self.lost += 1
                else:
                    pending.append(item)
                if len(pending) >= FRAME_ITEMS:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            if pending and flush_at == math.inf:
                flush_at = self._clock() + self.frame_s
            if pending and (done or len(pending) >= FRAME_ITEMS or self._clock() >= flush_at):
                try:
                    self.write_items(pending)
                except Exception:  # a bug here must not end the recording unseen (logged with its traceback)
                    self.lost += len(pending)
                    log.exception("recording: %d item(s) could not be written", len(pending))
                pending, flush_at = [], math.inf
        self._close()

    def write_items(self, items: list[Any]) -> None:
        """Write ``items`` as one frame (a file per UTC hour): the writer thread's step, and the
        unit tests' way in (with the wall readings they choose)."""
        records: list[Any] = []
        for item in items:
            record: Any = item if isinstance(item, Start) else record_of(*item)
            wall: float = record.wall
            hour = int(wall // 3600)
            if hour != self._hour:
                self._frame(records)
                records = []
                self._rotate(wall, hour)
            records.append(record)
        self._mark_losses(records)
        self._frame(records)

    def _mark_losses(self, records: list[Any]) -> None:
        """Put a Lost record where items went missing; the first backlog loss of a spell is logged."""
        unmarked = self.lost + self.overflow - self._lost_marked
        if unmarked > 0:
            at = 1 if records and isinstance(records[0], Start) else 0  # the start state comes first
            records.insert(at, Lost(unmarked, "backlog" if self.overflow > self._overflow_seen else "disk"))
        if self.overflow > self._overflow_seen:
            self._overflow_seen = self.overflow
            self._overflow_spell.failed(
                RuntimeError(f"{self.overflow} item(s) of the loop dropped so far"), "the trading goes on"
            )
        else:
            self._overflow_spell.ok()

    def _frame(self, records: list[Any]) -> None:
        if not records:
            return
        frame = encode_frame(records)
        try:
            if self._file is None:
                self._open()
            if self._file is None:
                raise OSError(f"cannot open {self._path}")
            if self._file.write(frame) != len(frame):
                raise OSError(errno.ENOSPC, "a frame was written in part (disk full?)")
        except OSError as exc:
            # the loop's items are lost (a file's header or a loss mark is written again later)
            self.lost += sum(1 for r in records if not isinstance(r, Header | Lost))
            self._disk_spell.failed(exc, "records dropped until it works again")
            self._cut_partial_frame()
            return
        self._lost_marked += sum(r.count for r in records if isinstance(r, Lost))
        self._good = self._file.tell()
        self._disk_spell.ok()
        self.records += len(records)
        self.bytes += len(frame)
        self._since_check += len(frame)
        if self._since_check >= LIMIT_CHECK_BYTES:
            self.enforce_limit()

    def _cut_partial_frame(self) -> None:
        """After a failed write: cut the file back to its last whole frame (a full disk still allows
        it), else leave it and write on in a new file of the hour (``..._1.srec``, sorting after)."""
        if self._file is None:
            return
        try:
            self._file.truncate(self._good)
        except OSError:
            self._close()
            assert self._path is not None
            self._broken += 1
            self._path = self._path.with_name(f"{self._base}_{self._broken}{self._path.suffix}")

    def _rotate(self, wall: float, hour: int) -> None:
        """A new file for the UTC hour of ``wall``: its header first, then the size bound."""
        self._close()
        assert self._header is not None
        self._hour, self._broken = hour, 0
        self._path = self.directory / file_name(self.session, wall)
        self._base = self._path.stem
        header = msgspec.structs.replace(self._header, part=self._part)
        self._part += 1
        self._frame([header])
        self.enforce_limit()

    def _open(self) -> None:
        assert self._path is not None
        try:
            # unbuffered: a failed write leaves nothing in a buffer to be written again later; the
            # owner's alone, like everything surge writes (the start state holds the positions)
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
            file = os.fdopen(fd, "ab", buffering=0)
            if file.tell() == 0:
                file.write(MAGIC)
            self._good = file.tell()
        except OSError as exc:
            self._disk_spell.failed(exc, "records dropped until it works again")
            return
        self._file = file
        if self._path not in self.files:
            self.files.append(self._path)

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self._disk_spell.failed(exc)
            self._file = None

    def enforce_limit(self) -> None:
        """Delete the oldest recording files in DIR while they take more than ``max_mb``."""
        self._since_check = 0
        try:
            files = [(p, p.stat().st_size) for p in recording_files(self.directory)]
        except OSError as exc:
            self._disk_spell.failed(exc)
            return
        total = sum(size for _, size in files)
        for path, size in files:
            if total <= self.max_bytes or path == self._path:
                break
            try:
                path.unlink()
            except OSError as exc:
                self._disk_spell.failed(exc)
                return
            total -= size
            self.deleted.append(path)
            log.info(
                "recording: deleted the oldest file %s (%.1f MB): over --record-max-mb %g",
                path.name,
                size / (1 << 20),
                self.max_bytes / (1 << 20),
            )


__all__ = ["THREAD_NAME", "Recorder", "check_record_dir"]
