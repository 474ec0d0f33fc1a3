"""Process-level plumbing for ``surge run``: the state directory, the single-instance lock, the
heartbeat file and the log file.

The lock is an OS file lock (``flock`` on Unix, ``msvcrt.locking`` on Windows), not a pid file: the
kernel releases it when the process dies, even by ``kill -9``, so a cron restart never finds a stale
lock. The holder's pid is written inside the locked file for the "already running (pid N)" message,
in bytes that are never locked (Windows refuses to read a locked byte, even to the holder's rivals).

Why the lock is checked against the path: a lock lives on an inode, not on a name. A ``surge.lock``
deleted or replaced while a bot runs would let a second bot lock a new file and run beside the
first. So :meth:`InstanceLock.acquire` verifies, after locking, that the path still names the locked
inode (and tries again if not), and the bot re-checks it at every heartbeat (:meth:`InstanceLock.check`),
re-creating a deleted lock file and stopping if another bot took the path over.

Why ``surge status`` never takes the lock: a probe that locks, even for a microsecond, makes a
``surge run`` starting at that instant see the lock held and exit 3. On Linux the bot also holds an
open-file-description (OFD) lock on the file, which another process can *query* (``F_OFD_GETLK``)
without taking anything; elsewhere the probe still locks briefly, and :meth:`InstanceLock.acquire`
tries again for a moment before it believes that a bot runs.

Permissions: the home is created 0700 and every file surge creates in it (database, lock, heartbeat,
logs) is 0600 whatever the umask: positions, balances and logs are the trader's business alone.

The heartbeat is rewritten atomically (temp file + ``os.replace``), so a reader in another process
(``surge status``) sees the previous or the next version, never half of one.
"""

from __future__ import annotations

import ctypes
import errno
import io
import json
import logging
import logging.handlers
import os
import stat
import struct
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from surge.errors import EXIT_LOCKED, EXIT_RUNTIME, EXIT_USAGE, SurgeError

if TYPE_CHECKING:
    from surge.heartbeat import Heartbeat

LOCK_NAME = "surge.lock"
HEARTBEAT_NAME = "heartbeat.json"
#: The home directory and every file surge creates in it: the owner's alone.
DIR_MODE = 0o700
FILE_MODE = 0o600
#: The pid is written in the lock file's first PID_BYTES bytes; Windows locks the byte at LOCK_BYTE,
#: well past them, so reading the pid never touches the locked byte.
PID_BYTES = 32
LOCK_BYTE = 1 << 20
#: How long acquire() keeps trying when the lock looks held, where a probe may hold it for a moment.
PROBE_GRACE_S = 0.5
#: A fresh heartbeat (running, written this recently) of a live other pid means a bot runs here even
#: if the lock file it holds was deleted: a new bot must not start beside it.
FRESH_HEARTBEAT_S = 10.0
#: errno values that mean "no room" (runtime, exit 1); other OSErrors at start are the home's set-up
#: (a file where a directory should be, read-only, permissions: exit 2).
NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EIO})


class HomeError(SurgeError):
    """``$SURGE_HOME`` (or a file in it) cannot be used: exit 2 when the set-up is wrong (a file where
    the directory should be, a directory where a file should be, read-only, no permission), 1 when
    the disk is full (it may work on the next start without any change)."""

    def __init__(self, message: str, exc: OSError | None = None) -> None:
        super().__init__(message)
        self.exit_code = EXIT_RUNTIME if exc is not None and exc.errno in NO_SPACE else EXIT_USAGE


def _os_message(exc: OSError) -> str:
    return exc.strerror or str(exc)


def prepare_home(home: Path) -> Path:
    """Create ``home`` (0700, whatever the umask) or check that the existing one is a directory.

    An existing directory keeps its mode: it may be shared on purpose (or be ``~`` itself).
    """
    home = Path(home)
    if home.exists() and not home.is_dir():
        raise HomeError(f"SURGE_HOME {home} is not a directory: point SURGE_HOME at a directory")
    if not home.is_dir():
        missing = [p for p in (home, *home.parents) if not p.exists()]
        try:
            home.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            for p in missing:  # mkdir's mode is filtered by the umask
                os.chmod(p, DIR_MODE)
        except OSError as exc:
            raise HomeError(f"cannot create SURGE_HOME {home}: {_os_message(exc)}", exc) from None
    return home


def open_private(path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """``os.open`` of a file of ours, 0600 even if it existed with a looser mode or the umask is 0."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        if os.name == "posix" and stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


# --------------------------------------------------------------------------- the lock, per platform
# Windows: msvcrt.locking locks LOCK_BYTE (never the pid's bytes). The functions take the module as an
# argument so the byte arithmetic is unit-tested on any platform (tests/test_runtime.py).


def _win_try_lock(fd: int, locking: Any) -> bool:
    os.lseek(fd, LOCK_BYTE, os.SEEK_SET)
    try:
        locking.locking(fd, locking.LK_NBLCK, 1)
    except OSError:
        return False
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
    return True


def _win_unlock(fd: int, locking: Any) -> None:
    os.lseek(fd, LOCK_BYTE, os.SEEK_SET)
    try:
        locking.locking(fd, locking.LK_UNLCK, 1)
    finally:
        os.lseek(fd, 0, os.SEEK_SET)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        return _win_try_lock(fd, msvcrt)

    def _unlock(fd: int) -> None:
        _win_unlock(fd, msvcrt)

    def _probe(fd: int) -> bool | None:
        return None  # no query-only lock on Windows: lock_holder tries and undoes

else:
    import fcntl

    _OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)
    _OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", None)
    # struct flock on 64-bit Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
    _FLOCK = struct.Struct("hhqqi4x")

    def _ofd(fd: int, cmd: int, kind: int) -> int:
        """An OFD lock request on the whole file; the l_type the kernel answers."""
        answer = fcntl.fcntl(fd, cmd, _FLOCK.pack(kind, os.SEEK_SET, 0, 0, 0))
        return int(_FLOCK.unpack(answer)[0])

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if _OFD_SETLK is not None:  # only for probes (lock_holder): flock already excludes other bots
            try:
                _ofd(fd, _OFD_SETLK, fcntl.F_WRLCK)
            except OSError:
                pass
        return True

    def _unlock(fd: int) -> None:
        if _OFD_SETLK is not None:
            try:
                _ofd(fd, _OFD_SETLK, fcntl.F_UNLCK)
            except OSError:
                pass
        fcntl.flock(fd, fcntl.LOCK_UN)

    def _probe(fd: int) -> bool | None:
        """Whether a bot holds the lock, asked without taking it (None: this system cannot tell)."""
        if _OFD_GETLK is None:
            return None
        try:
            return _ofd(fd, _OFD_GETLK, fcntl.F_RDLCK) != fcntl.F_UNLCK
        except OSError:
            return None


class AlreadyRunning(SurgeError):
    """Another ``surge run`` holds the lock of this SURGE_HOME."""

    exit_code = EXIT_LOCKED

    def __init__(self, pid: int | None) -> None:
        super().__init__(f"already running (pid {pid if pid is not None else 'unknown'})")
        self.pid = pid


class LockLost(SurgeError):
    """Another ``surge run`` holds ``surge.lock`` now (ours was deleted or replaced): this bot stops."""


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, PID_BYTES).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _write_pid(fd: int) -> None:
    """The pid, padded to PID_BYTES, written over the old one without truncating the file first: a
    probe reading meanwhile sees the old pid or the new one, never an empty file."""
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()}".ljust(PID_BYTES - 1).encode() + b"\n")
    os.fsync(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not deleted, not replaced)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # pragma: no cover - os.kill(pid, 0) would terminate it on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed bot nobody has reaped yet (a container's init may never do it) is not running
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know
    return proc_stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


class InstanceLock:
    """Held for the life of ``surge run``; a second holder gets :class:`AlreadyRunning` (exit 3)."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.path = self.home / LOCK_NAME
        self._fd: int | None = None
        self._contested = 0  # heartbeats in a row that found another holder at the path

    def _lock_path(self, *, grace_s: float) -> int:
        """A locked fd on the file the path names now (re-opened if it was replaced meanwhile)."""
        deadline = time.monotonic() + grace_s
        for _ in range(100):
            try:
                fd = open_private(self.path)
            except IsADirectoryError:
                message = f"{self.path} is a directory: remove it (surge makes its lock file there)"
                raise HomeError(message) from None
            except OSError as exc:
                raise HomeError(f"cannot open {self.path}: {_os_message(exc)}", exc) from None
            if not _try_lock(fd):
                if _probe(fd) is None and time.monotonic() < deadline:
                    os.close(fd)  # perhaps a `surge status` probing it this instant: ask again
                    time.sleep(0.02)
                    continue
                pid = _read_pid(fd)
                os.close(fd)
                raise AlreadyRunning(pid)
            if _same_file(fd, self.path):
                return fd
            _unlock(fd)  # deleted or replaced between open and lock: lock what the path names now
            os.close(fd)
        raise HomeError(f"{self.path} keeps being replaced: is another program deleting it?")

    def acquire(self) -> InstanceLock:
        prepare_home(self.home)
        fd = self._lock_path(grace_s=PROBE_GRACE_S)
        try:
            other = _running_elsewhere(self.home)
            if other is not None:
                raise AlreadyRunning(other)
            _write_pid(fd)
        except AlreadyRunning:
            _unlock(fd)
            os.close(fd)
            raise
        except OSError as exc:
            _unlock(fd)
            os.close(fd)
            raise HomeError(f"cannot write {self.path}: {_os_message(exc)}", exc) from None
        self._fd = fd
        return self

    def check(self) -> str | None:
        """Called at every heartbeat: still ours at the path? Returns what was repaired, or None.

        A deleted or replaced lock file is re-created (or the new one locked) at once, so a second
        bot cannot start on it. If another bot holds the path (it started in between), this one
        raises :class:`LockLost` after three beats in a row (the other may be a starting bot that is
        about to give up on seeing our heartbeat): two bots on one home must not go on.
        """
        if self._fd is None or _same_file(self._fd, self.path):
            self._contested = 0
            return None
        try:
            fd = self._lock_path(grace_s=0.0)
        except AlreadyRunning as exc:
            self._contested += 1
            if self._contested >= 3:
                raise LockLost(
                    f"{self.path} was deleted or replaced and another surge run (pid "
                    f"{exc.pid if exc.pid is not None else 'unknown'}) holds it now"
                ) from None
            return f"{self.path} was deleted or replaced and is held by pid {exc.pid}: checking again"
        try:
            _write_pid(fd)
        except OSError:
            pass  # a full disk: the lock is what matters; the pid is only for the messages
        old, self._fd = self._fd, fd
        _unlock(old)
        os.close(old)
        self._contested = 0
        return f"{self.path} was deleted or replaced: locked it again"

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _unlock(fd)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> InstanceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _running_elsewhere(home: Path) -> int | None:
    """The pid of another bot whose fresh heartbeat says it runs here although we got the lock (its
    lock file was deleted under it), else None."""
    hb = read_heartbeat(home)
    if not hb or hb.get("running") is not True:
        return None
    pid, written = hb.get("pid"), hb.get("written_at")
    if not isinstance(pid, int) or pid == os.getpid() or not isinstance(written, int | float):
        return None
    if time.time() - written > FRESH_HEARTBEAT_S or not _pid_alive(pid):
        return None
    return pid


def lock_holder(home: Path) -> tuple[bool, int | None]:
    """(held, pid): whether a ``surge run`` holds this home's lock now, and its pid if it wrote one.

    Asked without taking the lock where the system allows it (see the module docstring).
    """
    if Path(home).exists() and not Path(home).is_dir():
        raise HomeError(f"SURGE_HOME {home} is not a directory: point SURGE_HOME at a directory")
    try:
        fd = os.open(Path(home) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False, None
    except OSError as exc:
        raise HomeError(f"cannot read {Path(home) / LOCK_NAME}: {_os_message(exc)}", exc) from None
    try:
        held = _probe(fd)
        if held is None:
            if _try_lock(fd):
                _unlock(fd)
                held = False
            else:
                held = True
        return (True, _read_pid(fd)) if held else (False, None)
    finally:
        os.close(fd)


#: glibc's mallopt() parameters: the size from which an allocation gets its own mapping (pinned at
#: glibc's default starting value), and how many malloc arenas the threads may spread over.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 128 * 1024


def _libc_function(name: str, *argtypes: Any) -> Any:
    """The C library's ``name`` (returning an int) with its argument types set, or None where the
    process's C library has no such function."""
    try:
        func = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    func.argtypes = list(argtypes)
    func.restype = ctypes.c_int
    return func


def tune_malloc() -> list[str]:
    """Two glibc malloc settings for a process that runs for weeks; returns the ones applied.

    Why, measured in hour-long soaks of ``surge run`` (``scripts/bench_soak.py``):

    * mmap threshold pinned at 128 KiB. glibc raises it to the size of any mapped block freed (up to
      32 MiB), and the trim threshold to twice that. Once the hourly exchangeInfo body (~640 KB,
      twice that while requests joins its chunks) has been freed, such bodies come from the heap
      and are not given back: the first universe refresh left about 1.2 MB of RSS for good.
    * one arena. Each thread that mallocs gets an arena of its own (up to 8 per core), and each
      keeps the free memory of its busiest moment: the connection threads' arenas added about
      1 MB of RSS in the first minute of streaming that never went back. The threads run Python
      under the GIL, so sharing one arena costs them no waiting.

    Skipped where it does not apply (not Linux, a C library without mallopt); a setting the user
    made in the environment (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_ARENA_MAX``) wins. Call it before
    the first thread starts: a thread keeps the arena it was given.
    """
    if not sys.platform.startswith("linux"):
        return []
    mallopt = _libc_function("mallopt", ctypes.c_int, ctypes.c_int)
    if mallopt is None:
        return []
    applied = []
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1:
        applied.append("mmap_threshold")
    if "MALLOC_ARENA_MAX" not in os.environ and mallopt(M_ARENA_MAX, 1) == 1:
        applied.append("arena_max")
    return applied


class HeapTrimmer:
    """Gives the C heap's free pages back to the system once a minute, a few seconds after the
    minute turns (glibc's ``malloc_trim``).

    Why: glibc returns freed memory only from the top of the heap. In ``surge run`` every chunk of
    klines passes through buffers of tens of kB, and now and then something long-lived (a ledger
    page in SQLite's cache, a dict that grew) is allocated above a freed one: what was freed below it
    stays resident, and over weeks such ratchets add up. ``malloc_trim(0)`` releases every free page
    inside the heap too (``madvise``), so the bot's RSS follows what it holds. A call costs about a
    millisecond on a fragmented heap several times the bot's; it runs from the loop's heartbeat.

    Why on the wall clock's minute: every stream's candle closes on the minute, and that burst leaves
    ~0.3 MB of freed heap resident until the next trim. Trimming every 60 s from whenever the heartbeat
    came (60-62 s apart) let the trim drift through the minute: hour-long soaks read RSS high for a
    quarter of each minute, then half, then three quarters, a slope of ~0.3 MB/h in memory nobody
    held. ``offset_s`` after each boundary, the burst is over and RSS is low for the rest of the minute.
    Does nothing where the C library has no ``malloc_trim``.
    """

    def __init__(self, every_s: float = 60.0, offset_s: float = 5.0) -> None:
        self.every_s = every_s
        self.offset_s = offset_s
        self._next = 0.0
        self.trims = 0
        self._trim = _libc_function("malloc_trim", ctypes.c_size_t)

    def tick(self, wall: float) -> None:
        """Trim if a period's boundary plus ``offset_s`` has passed since the last trim (``wall``: the
        wall clock in seconds, whose minutes the exchange's candles follow)."""
        if wall < self._next or self._trim is None:
            return
        boundary = (wall - self.offset_s) // self.every_s * self.every_s
        self._next = boundary + self.every_s + self.offset_s
        self._trim(0)
        self.trims += 1


@contextmanager
def replaced_atomically(path: Path, mode: int = 0o600) -> Iterator[str]:
    """The name of a temporary file beside ``path`` to write; when the block ends without an error it
    replaces ``path`` (``os.replace``), otherwise it is removed. Readers see the old file or the new
    one, never a torn one. ``mode``: 0600 as everything in ``$SURGE_HOME``; a chart or a CSV the user
    asked for elsewhere is 0644."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp: 0600
    os.close(fd)
    try:
        yield tmp
        if mode != 0o600:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON so that readers see the old file or the new one, never a torn one (0600).

    The strategy loop writes its heartbeat with this every 2 s, between two bursts of klines: one
    ``dumps`` and one ``write`` (``json.dump`` writes each token on its own), and the directory made
    only when it is missing, keep it to a few hundred microseconds."""
    text = json.dumps(data, separators=(",", ":")).encode()
    try:
        _write_replacing(path, text)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_replacing(path, text)


def _write_replacing(path: Path, data: bytes) -> None:
    with replaced_atomically(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


class Spell:
    """A failure that lasts (a full disk): logged once when it starts and once when it ends, not at
    every failed attempt, so a full disk does not fill the log (or stderr) with the same line."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.log = logger
        self.what = what
        self.since: float | None = None
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, consequence: str = "retrying") -> None:
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            self.log.error(
                "%s failed: %s (%s; logged once until it works again)", self.what, exc, consequence
            )

    def ok(self) -> None:
        if self.since is not None:
            self.log.warning(
                "%s works again after %d failure(s) over %.0fs",
                self.what,
                self.failures,
                time.monotonic() - self.since,
            )
            self.since, self.failures = None, 0


def read_heartbeat(home: Path) -> Heartbeat | None:
    """The last heartbeat ``surge run`` wrote, or None if there is none (or it is unreadable).

    Its values are as read: a reader checks each one's type (an older version, a hand edit)."""
    try:
        data = json.loads((Path(home) / HEARTBEAT_NAME).read_text())
    except (OSError, ValueError):
        return None
    return cast("Heartbeat", data) if isinstance(data, dict) else None


def current_heartbeat(home: Path) -> tuple[bool, int | None, Heartbeat | None, Heartbeat | None]:
    """(running, pid, the heartbeat as read, the running bot's heartbeat or None): what ``status`` and
    ``watch`` tell from. Running and pid come from the lock, never from the heartbeat alone (kill -9
    leaves a heartbeat behind but the kernel releases the lock); a heartbeat written by another pid
    than the lock holder's is from an earlier run and is not the running bot's."""
    from surge.heartbeat import number_of

    running, pid = lock_holder(home)
    heartbeat = read_heartbeat(home)
    current = running and heartbeat is not None and (pid is None or number_of(heartbeat, "pid") == pid)
    return running, pid, heartbeat, heartbeat if current else None


# --------------------------------------------------------------------------- logging

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _Redact(logging.Filter):
    """Replaces every secret's text in a record before any handler formats it."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
        return True


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """The log file: 0600 (every rotated file too), and a write that fails (disk full) reported on
    stderr once per spell, not as a traceback per record; records written meanwhile are lost."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._failing = False
        self._wrote = True
        super().__init__(*args, **kwargs)

    def _open(self) -> io.TextIOWrapper:
        os.close(open_private(Path(self.baseFilename), os.O_WRONLY | os.O_CREAT | os.O_APPEND))
        return super()._open()

    def emit(self, record: logging.LogRecord) -> None:
        was_failing, self._wrote = self._failing, True
        super().emit(record)  # a failure calls handleError, which clears _wrote
        if was_failing and self._wrote:
            self._failing = False
            sys.stderr.write(f"surge: the log file {self.baseFilename} is written again\n")

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        self._wrote = False
        if not self._failing:
            self._failing = True
            sys.stderr.write(
                f"surge: cannot write the log file {self.baseFilename}: {exc} "
                "(said once until it works again)\n"
            )


def setup_logging(
    home: Path, *, secrets: Sequence[str | None] = (), level: int = logging.INFO, stderr: bool = True
) -> Path:
    """The ``surge`` logger: a rotating file under ``home/logs`` (10 MB x 5, 0600) and stderr.

    Secrets (API key and secret) are redacted from every record, whatever logged them. Calling it
    again replaces the handlers it installed, so tests and repeated runs do not pile them up. A home
    that cannot be used raises :class:`HomeError` (one line, exit 2; 1 when the disk is full).
    """
    prepare_home(Path(home))
    logs = Path(home) / "logs"
    path = logs / "surge.log"
    try:
        if not logs.is_dir():
            logs.mkdir(mode=DIR_MODE, exist_ok=True)
            os.chmod(logs, DIR_MODE)
        os.close(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
    except OSError as exc:
        raise HomeError(f"cannot write the log file {path}: {_os_message(exc)}", exc) from None
    logger = logging.getLogger("surge")
    for handler in [h for h in logger.handlers if getattr(h, "_surge", False)]:
        logger.removeHandler(handler)
        handler.close()
    redact = _Redact([s for s in secrets if s and len(s) >= 4])
    file_handler = _PrivateRotatingFile(path, maxBytes=10_000_000, backupCount=5, encoding="utf-8")
    handlers: list[logging.Handler] = [file_handler]
    if stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler._surge = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(redact)
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return path


def check_lock(lock: InstanceLock, log: logging.Logger) -> bool:
    """At every beat: is surge.lock still ours (False: another bot holds it, stop)? Repairs logged."""
    try:
        repaired = lock.check()
    except LockLost as exc:
        log.error("%s: stopping, so that two bots never run on one SURGE_HOME", exc)
        return False
    except (OSError, HomeError) as exc:  # re-creating a deleted lock file on a full disk: next beat
        repaired = f"{lock.path} was deleted and cannot be re-created yet: {exc}"
    if repaired:
        log.warning("%s", repaired)
    return True
