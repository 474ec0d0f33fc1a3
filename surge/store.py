"""SQLite state at ``$SURGE_HOME/surge.db``: schema version, closed-candle cache (more tables later).

Why it looks like this:

* **WAL** journal: ``surge run`` and a cron ``surge filter-4h`` may use the file at the same time;
  readers never block the writer and a crash never leaves a half-written page.
* **It is ours or we do not touch it.** The file is stamped with ``PRAGMA application_id`` (the
  bytes ``SRGE``) and a ``schema_version`` table. A file that is not SQLite, is corrupt, belongs to
  another program, or was written by a newer surge raises :class:`StoreError` with what to do; it
  is never deleted, recreated or "repaired" behind the user's back.
* **Migrations** are an ordered list: a later issue appends ``(2, "signals", SQL)`` and every
  existing database is brought up to date in one transaction on open.
* **Closed candles never change**, so they are cached forever (pruned by age) and a repeated filter
  scan asks the exchange only for what is new. The *open* of the candle in progress never changes
  either once the candle has started, so it has its own small table.

One connection per Store, shared by threads under a lock (the filter writes from one thread; the
bot's threads write rarely), ``check_same_thread=False``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from surge.errors import SurgeError
from surge.models import Kline

#: ``PRAGMA application_id`` of a surge database: the ASCII bytes "SRGE".
APPLICATION_ID = 0x53524745
_SQLITE_MAGIC = b"SQLite format 3\x00"

#: (version, what it adds, SQL). Append only; never edit a released entry.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "closed-candle cache",
        """
        CREATE TABLE candles (
            symbol       TEXT    NOT NULL,
            interval     TEXT    NOT NULL,
            open_time    INTEGER NOT NULL,
            close_time   INTEGER NOT NULL,
            open         REAL    NOT NULL,
            high         REAL    NOT NULL,
            low          REAL    NOT NULL,
            close        REAL    NOT NULL,
            volume       REAL    NOT NULL,
            quote_volume REAL    NOT NULL,
            trades       INTEGER NOT NULL,
            PRIMARY KEY (symbol, interval, open_time)
        ) WITHOUT ROWID;
        CREATE TABLE candle_opens (
            symbol    TEXT    NOT NULL,
            interval  TEXT    NOT NULL,
            open_time INTEGER NOT NULL,
            open      REAL    NOT NULL,
            PRIMARY KEY (symbol, interval)
        ) WITHOUT ROWID;
        """,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


class StoreError(SurgeError):
    """The database cannot be used as is (not SQLite, corrupt, foreign, too new, unwritable)."""


@dataclass(frozen=True, slots=True)
class CandleState:
    """What the cache knows about one symbol's candles of one interval."""

    latest_closed: Kline | None
    current_open_time: int | None  # open_time of the in-progress candle whose open is cached
    current_open: float | None


class Store:
    """The surge database. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        _check_file_header(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc.strerror or exc}") from None
        try:
            self._db = sqlite3.connect(
                str(self.path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None
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

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

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
        db.execute("PRAGMA busy_timeout = 10000")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch to WAL journal mode (got {mode})")
        db.execute("PRAGMA synchronous = NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # two processes opening a fresh file: one migrates, one waits
        try:
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            current = int(row[0]) if row else 0
            if row is None:
                db.execute("INSERT INTO schema_version (version) VALUES (0)")
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {current}, newer than this surge understands "
                    f"({SCHEMA_VERSION}); upgrade surge or use another SURGE_HOME"
                )
            for version, _what, sql in MIGRATIONS:
                if version > current:
                    for statement in _statements(sql):
                        db.execute(statement)
                    db.execute("UPDATE schema_version SET version = ?", (version,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ candle cache

    def put_candles(self, klines: Iterable[Kline]) -> int:
        """Cache closed candles (open ones are ignored: their values still change). Returns count."""
        rows = [
            (k.symbol, k.interval, k.open_time, k.close_time, k.open, k.high, k.low, k.close, k.volume,
             k.quote_volume, k.trades)
            for k in klines
            if k.closed
        ]
        if not rows:
            return 0
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO candles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def put_current_opens(self, items: Iterable[tuple[str, str, int, float]]) -> None:
        """Cache ``(symbol, interval, open_time, open)`` of candles in progress (one per symbol)."""
        rows = list(items)
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO candle_opens VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def candle_states(self, interval: str, symbols: Sequence[str]) -> dict[str, CandleState]:
        """The cache's view of each symbol: latest closed candle and the cached current open.

        One query per table for the whole universe, not one per symbol: a warm scan of 531 symbols
        must take milliseconds here.
        """
        wanted = set(symbols)
        latest: dict[str, Kline] = {}
        opens: dict[str, tuple[int, float]] = {}
        with self._lock:
            cur = self._db.execute(
                """
                SELECT c.* FROM candles c
                JOIN (SELECT symbol, MAX(open_time) AS t FROM candles WHERE interval = ? GROUP BY symbol) m
                  ON c.symbol = m.symbol AND c.open_time = m.t
                WHERE c.interval = ?
                """,
                (interval, interval),
            )
            for row in cur:
                if row[0] in wanted:
                    latest[row[0]] = _kline(row)
            for sym, open_time, open_ in self._db.execute(
                "SELECT symbol, open_time, open FROM candle_opens WHERE interval = ?", (interval,)
            ):
                if sym in wanted:
                    opens[sym] = (open_time, open_)
        return {
            s: CandleState(latest.get(s), *opens.get(s, (None, None)))
            for s in symbols
        }

    def candles(self, symbol: str, interval: str, limit: int = 1000) -> list[Kline]:
        """Cached closed candles of one symbol, oldest first (at most the newest ``limit``)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM candles WHERE symbol = ? AND interval = ? ORDER BY open_time DESC LIMIT ?",
                (symbol, interval, limit),
            ).fetchall()
        return [_kline(r) for r in reversed(rows)]

    def prune_candles(self, interval: str, before_ms: int) -> int:
        """Drop cached candles that opened before ``before_ms``; returns how many went."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM candles WHERE interval = ? AND open_time < ?", (interval, before_ms)
            )
            return cur.rowcount


def _kline(row: Sequence) -> Kline:
    sym, interval, t, close_t, o, h, low, c, v, q, n = row
    return Kline(sym, interval, t, close_t, o, h, low, c, v, q, n, True)


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


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


def open_store(home: str | Path) -> Store:
    """The store at ``home/surge.db`` (what every command uses)."""
    return Store(Path(home) / "surge.db")
