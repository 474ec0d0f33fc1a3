"""One SQLite connection to a surge database: opening it safely, migrating it, and writing in transactions.

The candle cache and the trade ledger (:mod:`surge.store.candles`, :mod:`surge.store.ledger`) are
built on :class:`Database`, so both share what must be done once per file: refusing a file that is not
ours, the pragmas, the migrations, the lock and the one way to write (:meth:`Database._transaction`).

Why the pragmas:

* **WAL** journal: ``surge run`` and a cron ``surge filter-4h`` may use the file at the same time;
  readers never block the writer and a crash never leaves a half-written page.
* **``synchronous = FULL``**: in WAL mode NORMAL syncs only at checkpoints, so a power loss may undo
  the last commits (SQLite's documentation says so), and the last commit may be the position just
  entered. FULL syncs the WAL at every commit, for a handful of commits a minute.
* **``foreign_keys = ON``** (off by default in SQLite): the schema declares them, so a trade or
  position row without its signal row is refused instead of stored as an orphan no command can
  explain.
* **The busy timeout is the caller's** (``busy_timeout_s``): how long a write waits for another
  process holding the write lock (a ``surge filter-4h`` storing candles while ``surge run`` enters)
  before it fails as a :class:`StoreWriteError`, which a running bot rides out.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from surge.errors import SurgeError
from surge.runtime import FILE_MODE, HomeError, open_private, prepare_home
from surge.store.schema import APPLICATION_ID, MIGRATIONS, Migration

_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(SurgeError):
    """The database cannot be used as is (not SQLite, corrupt, foreign, too new, unwritable)."""


class StoreWriteError(StoreError):
    """A write failed and wrote nothing (disk or database full, I/O error, read-only): it may work
    later. A running bot keeps going and tries again; what it could not record it does not do."""


class Database:
    """An open surge database file. Use as a context manager or call :meth:`close`.

    ``readonly=True`` is for the commands that only look (``surge status``, ``signals``,
    ``positions``): the file must exist, nothing is created, written or migrated.
    ``migrations``: the schema the file is brought to on a writable open (the last entry's version is
    the newest this surge understands). One connection, shared by threads under a lock
    (``check_same_thread=False``): the filter writes from one thread, the bot's threads write rarely.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = 10.0,
        readonly: bool = False,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._version = 0
        self._migrations = tuple(migrations)
        _check_file_header(self.path)
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"no database at {self.path}")
        else:
            self._create_private_file()
        self._db = self._connect(busy_timeout_s)
        self._initialise_or_close()

    # ------------------------------------------------------------------ opening

    def _create_private_file(self) -> None:
        try:
            if not self.path.parent.is_dir():
                prepare_home(self.path.parent)
            _make_private(self.path)
        except HomeError as exc:
            raise StoreError(str(exc)) from None
        except OSError as exc:
            raise StoreError(f"cannot create {self.path}: {exc.strerror or exc}") from None

    def _connect(self, busy_timeout_s: float) -> sqlite3.Connection:
        """The connection, in autocommit mode (``isolation_level=None``): every transaction is an
        explicit BEGIN (:func:`_atomic`), never one sqlite3 opened behind the code's back. ``timeout``
        sets SQLite's busy timeout, the one place it is set."""
        target = self.path.resolve().as_uri() + "?mode=ro" if self.readonly else str(self.path)
        try:
            return sqlite3.connect(
                target,
                uri=self.readonly,
                timeout=busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None

    def _initialise_or_close(self) -> None:
        """:meth:`_initialise`, its failures told as what the user can do about them."""
        try:
            self._initialise()
        except sqlite3.OperationalError as exc:  # permissions, read-only file system, locked for too long
            self._db.close()
            raise StoreError(f"cannot use database {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(
                f"{self.path} is damaged or not a surge database ({exc}); it was left untouched: "
                "move it away (or point SURGE_HOME elsewhere) and run again"
            ) from None
        except StoreError:
            self._db.close()
            raise

    def _initialise(self) -> None:
        db = self._db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise StoreError(
                f"{self.path} is an SQLite database of another program (application_id {app_id:#x}, "
                f"tables: {', '.join(sorted(tables)) or 'none'}); surge will not touch it: "
                "move it away or point SURGE_HOME elsewhere"
            )
        check = db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if check != "ok":
            raise StoreError(f"{self.path} failed SQLite's integrity check ({check}); it was left untouched")
        db.execute("PRAGMA foreign_keys = ON")  # the schema declares them: a trade needs its signal
        if self.readonly:
            self._version = self._read_version()
            return
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch to WAL journal mode (got {mode})")
        db.execute("PRAGMA synchronous = FULL")  # see the module docstring: durability
        self._migrate()

    def _migrate(self) -> None:
        """Bring the file to the newest schema in ONE transaction: a file is at one version or the next,
        never between. BEGIN IMMEDIATE: two processes opening a fresh file, one migrates, one waits.

        Not :meth:`_transaction`: a failure here is the open's, a :class:`StoreError` the caller cannot
        ride out, not a :class:`StoreWriteError`.
        """
        with self._lock, _atomic(self._db, immediate=True) as db:
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                db.execute("INSERT INTO schema_version (version) VALUES (0)")
            current = self._refuse_newer(int(row[0]) if row else 0)
            for version, _what, sql in self._migrations:
                if version > current:
                    for statement in _statements(sql):
                        db.execute(statement)
                    db.execute("UPDATE schema_version SET version = ?", (version,))
                    current = version
        self._version = current

    def _read_version(self) -> int:
        """Schema version of a file opened read-only (0 if it has none yet); refuses a newer one."""
        has_table = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        row = self._db.execute("SELECT version FROM schema_version").fetchone() if has_table else None
        return self._refuse_newer(int(row[0]) if row else 0)

    def _refuse_newer(self, version: int) -> int:
        """``version``, unless a newer surge wrote the file: its tables may mean things we do not know."""
        newest = self._migrations[-1][0]
        if version > newest:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this surge understands "
                f"({newest}); upgrade surge or use another SURGE_HOME"
            )
        return version

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ writing

    @contextmanager
    def _transaction(self, *, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        """The one way data is written: ``BEGIN`` ... ``COMMIT`` under the store's lock, ``ROLLBACK``
        on any exception, so a write that fails writes nothing.

        ``immediate`` (BEGIN IMMEDIATE) takes the write lock at once: what the block reads cannot
        change before it writes (a signal already recorded, a trade's state). Without it the lock is
        taken at the first write, enough for blind upserts (the candle cache). SQLite's operational
        errors (full disk or database, I/O error, read-only file system, locked longer than the busy
        timeout) become :class:`StoreWriteError`.
        """
        with self._writing() as db, _atomic(db, immediate=immediate):
            yield db

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The connection under the store's lock, for a write (a single statement may use it without
        :meth:`_transaction`: SQLite makes it atomic by itself). SQLite's operational errors become
        :class:`StoreWriteError`, which the bot rides out instead of dying of."""
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only")
        with self._lock:
            try:
                yield self._db
            except sqlite3.OperationalError as exc:
                raise StoreWriteError(f"cannot write {self.path}: {exc}") from exc


@contextmanager
def _atomic(db: sqlite3.Connection, *, immediate: bool) -> Iterator[sqlite3.Connection]:
    """BEGIN ... COMMIT, ROLLBACK on any exception (a failed COMMIT included): the only place a
    transaction is opened and closed."""
    db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise


def _rollback(db: sqlite3.Connection) -> None:
    """ROLLBACK if a transaction is still open: after SQLITE_FULL or an I/O error SQLite may have
    rolled it back already, and a failing ROLLBACK must not hide the error that caused it."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def _make_private(path: Path) -> None:
    """The database (created empty if missing, which SQLite accepts as a new database) and its WAL
    and shared-memory files 0600, whatever the umask: SQLite creates -wal and -shm with the mode of
    the database file, so setting it on the database first covers the files to come."""
    os.close(open_private(path))
    for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if os.name == "posix" and stat.S_IMODE(extra.stat().st_mode) != FILE_MODE:
                os.chmod(extra, FILE_MODE)
        except FileNotFoundError:
            pass


def _check_file_header(path: Path) -> None:
    """Refuse a file that is not SQLite before sqlite3 gets a chance to write to it."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a database file")
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head and head != _SQLITE_MAGIC:
        raise StoreError(
            f"{path} is not an SQLite database (it starts with {head[:8]!r}); surge will not "
            "overwrite it: move it away or point SURGE_HOME elsewhere"
        )
