"""Process-level plumbing for ``surge run``: the single-instance lock and the heartbeat file.

The lock is an OS file lock (``flock`` on Unix, ``msvcrt.locking`` on Windows), not a pid file: the
kernel releases it when the process dies, even by ``kill -9``, so a cron restart never finds a stale
lock. The holder's pid is written inside the locked file for the "already running (pid N)" message.

The heartbeat is rewritten atomically (temp file + ``os.replace``), so a reader in another process
(``surge status``) sees the previous or the next version, never half of one.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from surge.errors import EXIT_LOCKED, SurgeError

LOCK_NAME = "surge.lock"
HEARTBEAT_NAME = "heartbeat.json"

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class AlreadyRunning(SurgeError):
    """Another ``surge run`` holds the lock of this SURGE_HOME."""

    exit_code = EXIT_LOCKED

    def __init__(self, pid: int | None) -> None:
        super().__init__(f"already running (pid {pid if pid is not None else 'unknown'})")
        self.pid = pid


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


class InstanceLock:
    """Held for the life of ``surge run``; a second holder gets :class:`AlreadyRunning` (exit 3)."""

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> InstanceLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's pid stays
        if not _try_lock(fd):
            pid = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(pid)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

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


def lock_holder(home: Path) -> tuple[bool, int | None]:
    """(held, pid): whether a ``surge run`` holds this home's lock now, and its pid if it wrote one."""
    try:
        fd = os.open(Path(home) / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return False, None
    try:
        if _try_lock(fd):
            _unlock(fd)
            return False, None
        return True, _read_pid(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON so that readers see the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_heartbeat(home: Path) -> dict[str, Any] | None:
    """The last heartbeat ``surge run`` wrote, or None if there is none (or it is unreadable)."""
    try:
        data = json.loads((Path(home) / HEARTBEAT_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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


def setup_logging(
    home: Path, *, secrets: list[str | None] = (), level: int = logging.INFO, stderr: bool = True
) -> Path:
    """The ``surge`` logger: a rotating file under ``home/logs`` (10 MB x 5) and stderr.

    Secrets (API key and secret) are redacted from every record, whatever logged them. Calling it
    again replaces the handlers it installed, so tests and repeated runs do not pile them up.
    """
    logs = Path(home) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / "surge.log"
    logger = logging.getLogger("surge")
    for handler in [h for h in logger.handlers if getattr(h, "_surge", False)]:
        logger.removeHandler(handler)
        handler.close()
    redact = _Redact([s for s in secrets if s and len(s) >= 4])
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=10_000_000, backupCount=5, encoding="utf-8"
    )
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
