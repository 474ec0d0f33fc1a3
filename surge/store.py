"""SQLite state at ``$SURGE_HOME/surge.db``: schema version, closed-candle cache, signals, positions.

Why it looks like this:

* **WAL** journal: ``surge run`` and a cron ``surge filter-4h`` may use the file at the same time;
  readers never block the writer and a crash never leaves a half-written page.
* **It is ours or we do not touch it.** The file is stamped with ``PRAGMA application_id`` (the
  bytes ``SRGE``) and a ``schema_version`` table. A file that is not SQLite, is corrupt, belongs to
  another program, or was written by a newer surge raises :class:`StoreError` with what to do; it
  is never deleted, recreated or "repaired" behind the user's back.
* **Migrations** are an ordered list: a later issue appends ``(2, "signals", SQL)`` and every
  existing database is brought up to date in one transaction on open.
* **A signal enters at most once.** A signal and its position are written in ONE transaction
  (:meth:`Store.record_entry`), and both tables are keyed by (venue, the signal's key
  "SYMBOL:open_time"), so a replay after a crash or restart finds the key and writes nothing: there
  is no moment at which the signal is stored and its position is not, and no way to store a second
  position. The venue ("sim", the REST URL) keeps a simulator demo and real trading apart.
* **Readers never write.** ``surge status``/``signals``/``positions`` open the file read-only
  (``readonly=True``): no migration, no directory created, and, thanks to WAL, no waiting on a
  ``surge run`` that is in the middle of a transaction.
* **Durable: ``synchronous = FULL``.** In WAL mode NORMAL syncs only at checkpoints, so a power
  loss may undo the last commits (SQLite's documentation says so), and the last commit may be the
  position just entered. FULL syncs the WAL at every commit: 0.20 ms instead of 0.12-0.16 ms per
  entry (signal + position) on the CI machine, for a handful of commits a minute.
* **Foreign keys are enforced** (``PRAGMA foreign_keys = ON``, off by default in SQLite): a trade or
  position row needs its signal row, so no code path can store an orphan no command could explain.
  Every writer inserts the signal first, in the same transaction.
* **A write that fails writes nothing** (disk or database full, I/O error, read-only file system):
  it raises :class:`StoreWriteError`, the transaction rolled back whole. ``surge run`` rides it out:
  no new entry (it could not be recorded), held positions still closed, the write tried again.
* **Private**: the home is created 0700 and the database (so its -wal and -shm, which SQLite gives
  the database's mode) 0600, whatever the umask.
* **Closed candles never change**, so they are cached forever (pruned by age) and a repeated filter
  scan asks the exchange only for what is new. The *open* of the candle in progress never changes
  either once the candle has started, so it has its own small table.

One connection per Store, shared by threads under a lock (the filter writes from one thread; the
bot's threads write rarely), ``check_same_thread=False``.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass, fields, replace
from pathlib import Path

from surge.errors import SurgeError
from surge.models import CLOSED, INTENT, VOID, Kline, Position, Signal, Trade
from surge.runtime import FILE_MODE, HomeError, open_private, prepare_home

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
    (
        2,
        "signals and positions",
        # ``key`` is Signal.key ("SYMBOL:open_time"); ``venue`` names the exchange the bot traded on
        # ("sim", a REST URL, ...), so a simulator demo and real trading on one SURGE_HOME never resume
        # or deduplicate each other's state. Signals keep what happened to them: "entered", or
        # "skipped" with the reason (max open positions, symbol already held, shutting down, ...).
        # A position's (venue, key) is its signal's and is the primary key: one position per signal.
        """
        CREATE TABLE signals (
            venue           TEXT    NOT NULL,
            key             TEXT    NOT NULL,
            symbol          TEXT    NOT NULL,
            time            INTEGER NOT NULL,
            open_time       INTEGER NOT NULL,
            change_pct      REAL    NOT NULL,
            volume_multiple REAL    NOT NULL,
            quote_volume    REAL    NOT NULL,
            price           REAL    NOT NULL,
            outcome         TEXT    NOT NULL CHECK (outcome IN ('entered', 'skipped')),
            skip_reason     TEXT,
            PRIMARY KEY (venue, key)
        );
        CREATE INDEX signals_by_time ON signals (time);
        CREATE INDEX signals_by_symbol ON signals (venue, symbol, time);
        CREATE TABLE positions (
            venue       TEXT    NOT NULL,
            key         TEXT    NOT NULL,
            symbol      TEXT    NOT NULL,
            qty         REAL    NOT NULL,
            entry_price REAL    NOT NULL,
            entry_time  INTEGER NOT NULL,
            take_profit REAL    NOT NULL,
            stop_loss   REAL    NOT NULL,
            deadline    INTEGER NOT NULL,
            fees        REAL    NOT NULL,
            exit_price  REAL,
            exit_time   INTEGER,
            exit_reason TEXT,
            pnl         REAL,
            PRIMARY KEY (venue, key),
            FOREIGN KEY (venue, key) REFERENCES signals (venue, key)
        );
        CREATE INDEX positions_open ON positions (entry_time) WHERE exit_time IS NULL;
        CREATE INDEX positions_by_entry ON positions (entry_time);
        """,
    ),
)
MIGRATIONS += (
    (
        3,
        "live trade lifecycle",
        # One row per live trade, keyed like its signal and position. It is written BEFORE each
        # exchange call that depends on it, so a restart (or kill -9) resumes from the last state the
        # exchange may have seen: see surge.models.Trade for the states.
        """
        CREATE TABLE trades (
            venue         TEXT    NOT NULL,
            key           TEXT    NOT NULL,
            symbol        TEXT    NOT NULL,
            state         TEXT    NOT NULL CHECK (state IN ('intent', 'sent', 'unknown', 'filled',
                                                            'protected', 'closing', 'closed', 'void')),
            qty           TEXT    NOT NULL DEFAULT '',
            entry_sent_at INTEGER,
            exit_reason   TEXT,
            exit_sent_at  INTEGER,
            sl_algo_id    INTEGER,
            tp_algo_id    INTEGER,
            note          TEXT,
            signal_at     REAL,
            filled_at     REAL,
            protected_at  REAL,
            recv_window   INTEGER NOT NULL DEFAULT 5000,
            PRIMARY KEY (venue, key),
            FOREIGN KEY (venue, key) REFERENCES signals (venue, key)
        );
        CREATE INDEX trades_unfinished ON trades (venue) WHERE state NOT IN ('closed', 'void');
        """,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
#: The schema version that added the ``signals`` and ``positions`` tables.
_STATE_VERSION = 2

ENTERED = "entered"
SKIPPED = "skipped"
#: The venue of state recorded without naming one.
DEFAULT_VENUE = "default"
_POSITION_COLUMNS = (
    "key, symbol, qty, entry_price, entry_time, take_profit, stop_loss, deadline, fees, "
    "exit_price, exit_time, exit_reason, pnl"
)
_TRADE_COLUMNS = ", ".join(f.name for f in fields(Trade))
_SIGNAL_COLUMNS = (
    "symbol, time, open_time, change_pct, volume_multiple, quote_volume, price, outcome, skip_reason"
)


class StoreError(SurgeError):
    """The database cannot be used as is (not SQLite, corrupt, foreign, too new, unwritable)."""


class StoreWriteError(StoreError):
    """A write failed and wrote nothing (disk or database full, I/O error, read-only): it may work
    later. A running bot keeps going and tries again; what it could not record it does not do."""


@dataclass(frozen=True, slots=True)
class CandleState:
    """What the cache knows about one symbol's candles of one interval."""

    latest_closed: Kline | None
    current_open_time: int | None  # open_time of the in-progress candle whose open is cached
    current_open: float | None


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """A stored signal, the venue it was seen on, and what became of it: entered, or skipped and why."""

    signal: Signal
    entered: bool
    skip_reason: str | None
    venue: str = DEFAULT_VENUE


@dataclass(frozen=True, slots=True)
class PositionRecord:
    """A stored position and the venue it was opened on (the model itself does not carry it)."""

    position: Position
    venue: str = DEFAULT_VENUE


class Store:
    """The surge database. Use as a context manager or call :meth:`close`.

    ``readonly=True`` is for the commands that only look (``surge status``, ``signals``,
    ``positions``): the file must exist, nothing is created or migrated, and a database from before
    the signals/positions tables simply reads as empty.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._version = 0
        _check_file_header(self.path)
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"no database at {self.path}")
        else:
            try:
                if not self.path.parent.is_dir():
                    prepare_home(self.path.parent)
                _make_private(self.path)
            except HomeError as exc:
                raise StoreError(str(exc)) from None
            except OSError as exc:
                raise StoreError(f"cannot create {self.path}: {exc.strerror or exc}") from None
        try:
            if readonly:
                self._db = sqlite3.connect(
                    self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=busy_timeout_s,
                    isolation_level=None, check_same_thread=False,
                )
            else:
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
                    current = version
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        self._version = current

    def _read_version(self) -> int:
        """Schema version of a file opened read-only (0 if it has none yet); refuses a newer one."""
        has_table = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        row = self._db.execute("SELECT version FROM schema_version").fetchone() if has_table else None
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {current}, newer than this surge understands "
                f"({SCHEMA_VERSION}); upgrade surge or use another SURGE_HOME"
            )
        return current

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
        with self._writing():
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO candles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
                self._db.execute("COMMIT")
            except BaseException:
                _rollback(self._db)
                raise
        return len(rows)

    def put_current_opens(self, items: Iterable[tuple[str, str, int, float]]) -> None:
        """Cache ``(symbol, interval, open_time, open)`` of candles in progress (one per symbol)."""
        rows = list(items)
        if not rows:
            return
        with self._writing():
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO candle_opens VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                _rollback(self._db)
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
        with self._writing():
            cur = self._db.execute(
                "DELETE FROM candles WHERE interval = ? AND open_time < ?", (interval, before_ms)
            )
            return cur.rowcount


    # ------------------------------------------------------------------ signals and positions
    # ``venue`` (keyword): the bot passes its own, so state of a simulator run and of real trading never
    # mix. Readers that leave it out (None) see every venue.

    def record_entry(
        self,
        signal: Signal,
        position: Position | None,
        skip_reason: str | None = None,
        *,
        venue: str = DEFAULT_VENUE,
    ) -> bool:
        """Store a signal and, if it entered, its position, in ONE transaction.

        Returns False and writes nothing when this signal's key is already recorded on this venue: a
        replay after a crash or restart (the same candle surging again) must not enter twice. Because
        the signal and the position commit together there is no crash window between them, and the
        position's (venue, key) is a primary key on top of that, so a second position cannot exist.
        """
        if position is not None and position.key != signal.key:
            raise ValueError(f"position key {position.key!r} is not its signal's key {signal.key!r}")
        if position is not None and skip_reason is not None:
            raise ValueError("a signal that entered has no skip reason")
        outcome = ENTERED if position is not None else SKIPPED
        with self._writing():
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if not _insert_signal(db, signal, venue, outcome, skip_reason):
                    _rollback(db)
                    return False
                if position is not None:
                    cur = db.execute(
                        f"INSERT OR IGNORE INTO positions (venue, {_POSITION_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (venue, *_position_row(position)),
                    )
                    if cur.rowcount == 0:  # a position without its signal row: still never a second one
                        _rollback(db)
                        return False
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        return True

    def close_position(self, position: Position, *, venue: str | None = None) -> None:
        """Record a position's exit (price, time, reason, total fees, PnL).

        Idempotent: the first exit recorded wins and a repeat (a replayed exit after a restart) changes
        nothing. ``venue=None`` finds the position by key alone, which must then be unambiguous. An
        unknown key or a position without exit fields is a programming error (ValueError).
        """
        if position.exit_time is None or position.exit_price is None or position.exit_reason is None:
            raise ValueError(f"position {position.key} has no exit to record")
        with self._writing():
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                where = "venue = ? AND key = ?"
                params: tuple[object, ...] = (venue, position.key)
                if venue is None:  # by key alone: the one open position with it, if any
                    venues = [r[0] for r in db.execute(
                        "SELECT venue FROM positions WHERE key = ? AND exit_time IS NULL", (position.key,)
                    )]
                    if len(venues) > 1:
                        raise ValueError(f"position {position.key} is open on venues {venues}: name one")
                    if venues:
                        params = (venues[0], position.key)
                    else:
                        where, params = "key = ?", (position.key,)
                cur = db.execute(
                    "UPDATE positions SET exit_price = ?, exit_time = ?, exit_reason = ?, fees = ?, pnl = ? "
                    f"WHERE {where} AND exit_time IS NULL",
                    (position.exit_price, position.exit_time, position.exit_reason, position.fees,
                     position.pnl, *params),
                )
                if cur.rowcount == 0 and db.execute(
                    f"SELECT 1 FROM positions WHERE {where}", params
                ).fetchone() is None:
                    raise ValueError(f"no stored position {position.key}")
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise

    def has_signal(self, key: str, *, venue: str = DEFAULT_VENUE) -> bool:
        """Whether the signal ``key`` is already recorded on ``venue`` (entered or skipped).

        Live trading asks before it sends an order: :meth:`record_entry` refusing a replay comes
        too late once an order has reached the exchange.
        """
        return bool(self._read("SELECT 1 FROM signals WHERE venue = ? AND key = ?", (venue, key)))

    def update_position(self, position: Position, *, venue: str = DEFAULT_VENUE) -> bool:
        """Overwrite an OPEN position's quantity, entry, exits, deadline and fees with ``position``'s
        (live reconciliation adopts what the exchange says). False when no such open position."""
        with self._writing():
            cur = self._db.execute(
                "UPDATE positions SET qty = ?, entry_price = ?, take_profit = ?, stop_loss = ?, "
                "deadline = ?, fees = ? WHERE venue = ? AND key = ? AND exit_time IS NULL",
                (position.qty, position.entry_price, position.take_profit, position.stop_loss,
                 position.deadline, position.fees, venue, position.key),
            )
            return cur.rowcount == 1

    def open_positions(self, *, venue: str | None = None) -> list[Position]:
        """Positions without an exit, oldest entry first: what a restart puts back in the book."""
        where, params = _venue_filter(venue, "WHERE exit_time IS NULL")
        rows = self._read(
            f"SELECT {_POSITION_COLUMNS} FROM positions {where} ORDER BY entry_time, key", params
        )
        return [Position(*r) for r in rows]

    def positions(
        self, include_closed: bool = False, limit: int | None = None, *, venue: str | None = None
    ) -> list[Position]:
        """Open (or all) positions, newest entry first, at most ``limit`` of them."""
        return [r.position for r in self.position_records(include_closed, limit, venue=venue)]

    def position_records(
        self, include_closed: bool = False, limit: int | None = None, *, venue: str | None = None
    ) -> list[PositionRecord]:
        """Like :meth:`positions`, with each position's venue (``surge positions`` shows it)."""
        where, params = _venue_filter(venue, "" if include_closed else "WHERE exit_time IS NULL")
        rows = self._read(
            f"SELECT {_POSITION_COLUMNS}, venue FROM positions {where} "
            "ORDER BY entry_time DESC, rowid DESC LIMIT ?",
            (*params, -1 if limit is None else limit),
        )
        return [PositionRecord(Position(*r[:13]), r[13]) for r in rows]

    def signals(self, limit: int | None = None, *, venue: str | None = None) -> list[SignalRecord]:
        """Recorded signals, newest first (ties: the later recorded first), at most ``limit``."""
        where, params = _venue_filter(venue)
        rows = self._read(
            f"SELECT {_SIGNAL_COLUMNS}, venue FROM signals {where} ORDER BY time DESC, rowid DESC LIMIT ?",
            (*params, -1 if limit is None else limit),
        )
        return [SignalRecord(Signal(*r[:7]), r[7] == ENTERED, r[8], r[9]) for r in rows]

    def signal_count(self, *, venue: str | None = None) -> int:
        """Every signal ever recorded (on ``venue``), entered or skipped."""
        where, params = _venue_filter(venue)
        rows = self._read(f"SELECT count(*) FROM signals {where}", params)
        return int(rows[0][0]) if rows else 0

    def open_position_count(self, *, venue: str | None = None) -> int:
        """How many positions have no exit yet (``surge status`` without loading them)."""
        where, params = _venue_filter(venue, "WHERE exit_time IS NULL")
        rows = self._read(f"SELECT count(*) FROM positions {where}", params)
        return int(rows[0][0]) if rows else 0

    def last_signal_times(self, *, venue: str | None = None) -> dict[str, int]:
        """Symbol -> time (ms) of its newest signal, entered or skipped: restores cooldowns on start."""
        where, params = _venue_filter(venue)
        rows = self._read(f"SELECT symbol, MAX(time) FROM signals {where} GROUP BY symbol", params)
        return {sym: int(t) for sym, t in rows}

    def realised_pnl(self, *, venue: str | None = None) -> float:
        """Sum of the PnL of every closed position (fees already deducted), 0.0 when none."""
        where, params = _venue_filter(venue, "WHERE exit_time IS NOT NULL")
        rows = self._read(f"SELECT total(pnl) FROM positions {where}", params)
        return float(rows[0][0]) if rows else 0.0

    # ------------------------------------------------------------------ live trade lifecycle
    # Each method is one transaction that moves a trade (and, where it must, its signal and position)
    # together, so there is no crash window in which the ledger says two different things.

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the store's lock; ROLLBACK on any exception."""
        with self._writing() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                _rollback(db)
                raise
            db.execute("COMMIT")

    def _put_trade(self, db: sqlite3.Connection, trade: Trade, venue: str) -> None:
        marks = ", ".join("?" for _ in fields(Trade))
        db.execute(f"INSERT OR REPLACE INTO trades (venue, {_TRADE_COLUMNS}) VALUES (?, {marks})",
                   (venue, *astuple(trade)))

    def record_intent(self, signal: Signal, trade: Trade, *, venue: str = DEFAULT_VENUE) -> bool:
        """The decision to enter ``signal``: its signal row ("entered") and its trade row ("intent").

        Written before anything is sent. False, writing nothing, when the signal is already recorded:
        the same candle surging again (or a replay after a restart) never becomes a second entry.
        """
        if trade.key != signal.key or trade.state != INTENT:
            raise ValueError(f"trade {trade.key!r} ({trade.state}) is not the intent of {signal.key!r}")
        with self._transaction() as db:
            if not _insert_signal(db, signal, venue, ENTERED, None):
                return False
            self._put_trade(db, trade, venue)
        return True

    def save_trade(self, trade: Trade, *, venue: str = DEFAULT_VENUE) -> None:
        """Write a trade's new state (the row must exist; a final trade is never reopened)."""
        with self._transaction() as db:
            row = db.execute("SELECT state FROM trades WHERE venue = ? AND key = ?",
                             (venue, trade.key)).fetchone()
            if row is None:
                raise ValueError(f"no stored trade {trade.key}")
            if row[0] in (CLOSED, VOID) and trade.state != row[0]:
                raise ValueError(f"trade {trade.key} is {row[0]}: it cannot become {trade.state}")
            self._put_trade(db, trade, venue)

    def record_fill(self, trade: Trade, position: Position, *, venue: str = DEFAULT_VENUE) -> None:
        """The entry filled: the trade's new state and its open position, together."""
        if position.key != trade.key or not position.is_open:
            raise ValueError(f"position {position.key} does not fit trade {trade.key}")
        with self._transaction() as db:
            self._put_trade(db, trade, venue)
            db.execute(
                f"INSERT OR REPLACE INTO positions (venue, {_POSITION_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (venue, *_position_row(position)),
            )

    def void_trade(self, trade: Trade, reason: str, *, venue: str = DEFAULT_VENUE) -> None:
        """The trade never entered (refused, too small, proven never executed): the trade is void and
        its signal "skipped" with ``reason``, together."""
        with self._transaction() as db:
            self._put_trade(db, replace(trade, state=VOID, note=reason), venue)
            db.execute("UPDATE signals SET outcome = ?, skip_reason = ? WHERE venue = ? AND key = ?",
                       (SKIPPED, reason, venue, trade.key))

    def record_trade_close(self, trade: Trade, closed: Position, *, venue: str = DEFAULT_VENUE) -> None:
        """The position is flat (proven): the trade closed and the position's exit, together."""
        if closed.is_open or closed.key != trade.key:
            raise ValueError(f"position {closed.key} is not the closed position of trade {trade.key}")
        with self._transaction() as db:
            self._put_trade(db, replace(trade, state=CLOSED), venue)
            db.execute(
                "UPDATE positions SET exit_price = ?, exit_time = ?, exit_reason = ?, fees = ?, pnl = ? "
                "WHERE venue = ? AND key = ? AND exit_time IS NULL",
                (closed.exit_price, closed.exit_time, closed.exit_reason, closed.fees, closed.pnl, venue,
                 closed.key),
            )

    def adopt_trade(self, trade: Trade, position: Position, *, venue: str = DEFAULT_VENUE) -> None:
        """A position the exchange holds that no trade row knows (reconciliation): its signal (made
        from the position if missing, flipped to "entered" if skipped), position and trade, together.

        Why not :meth:`record_entry`: the signal may be recorded already, as skipped (the bot died, or
        gave the entry up, after it was sent), or not at all (a position opened outside the bot).
        """
        if not position.is_open or position.key != trade.key:
            raise ValueError(f"position {position.key} is not an open position of trade {trade.key}")
        _, _, open_time = position.key.partition(":")
        with self._transaction() as db:
            db.execute(
                f"INSERT OR IGNORE INTO signals (venue, key, {_SIGNAL_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, 0.0, 0.0, 0.0, ?, ?, NULL)",
                (venue, position.key, position.symbol, position.entry_time,
                 int(open_time) if open_time.isdigit() else position.entry_time, position.entry_price,
                 ENTERED),
            )
            db.execute("UPDATE signals SET outcome = ?, skip_reason = NULL WHERE venue = ? AND key = ?",
                       (ENTERED, venue, position.key))
            db.execute(
                f"INSERT OR REPLACE INTO positions (venue, {_POSITION_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (venue, *_position_row(position)),
            )
            self._put_trade(db, trade, venue)

    def trade(self, key: str, *, venue: str = DEFAULT_VENUE) -> Trade | None:
        rows = self._read(f"SELECT {_TRADE_COLUMNS} FROM trades WHERE venue = ? AND key = ?", (venue, key))
        return Trade(*rows[0]) if rows else None

    def trades(self, *, venue: str | None = None, unfinished: bool = False) -> list[Trade]:
        """Trades (every one, or those not closed or void), oldest signal first."""
        where, params = _venue_filter(venue, "WHERE state NOT IN ('closed', 'void')" if unfinished else "")
        if self._version < 3:
            return []
        return [Trade(*r) for r in self._read(f"SELECT {_TRADE_COLUMNS} FROM trades {where} ORDER BY rowid",
                                              params)]

    def position(self, key: str, *, venue: str = DEFAULT_VENUE) -> Position | None:
        rows = self._read(f"SELECT {_POSITION_COLUMNS} FROM positions WHERE venue = ? AND key = ?",
                          (venue, key))
        return Position(*rows[0]) if rows else None

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """Run a query on the state tables; a database from before them reads as empty.

        SQLite errors become :class:`StoreError` so that a damaged file is one line from the CLI,
        not a traceback.
        """
        with self._lock:
            if self._version < _STATE_VERSION:
                return []
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot read {self.path}: {exc}") from None

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The connection under the store's lock, for a write: SQLite's operational errors (disk or
        database full, I/O error, read-only file system, locked too long) become
        :class:`StoreWriteError`, which the bot rides out instead of dying of."""
        self._check_writable()
        with self._lock:
            try:
                yield self._db
            except sqlite3.OperationalError as exc:
                raise StoreWriteError(f"cannot write {self.path}: {exc}") from exc

    def _check_writable(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only")


def _venue_filter(venue: str | None, where: str = "") -> tuple[str, tuple[object, ...]]:
    """``where`` narrowed to one venue (None: every venue), and its parameters."""
    if venue is None:
        return where, ()
    return (f"{where} AND venue = ?" if where else "WHERE venue = ?"), (venue,)


def _insert_signal(db: sqlite3.Connection, signal: Signal, venue: str, outcome: str,
                   skip_reason: str | None) -> bool:
    """Insert the signal row unless its (venue, key) exists; True when it was new."""
    cur = db.execute(
        f"INSERT OR IGNORE INTO signals (venue, key, {_SIGNAL_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (venue, signal.key, signal.symbol, signal.time, signal.open_time, signal.change_pct,
         signal.volume_multiple, signal.quote_volume, signal.price, outcome, skip_reason),
    )
    return cur.rowcount > 0


def _position_row(p: Position) -> tuple:
    return (p.key, p.symbol, p.qty, p.entry_price, p.entry_time, p.take_profit, p.stop_loss, p.deadline,
            p.fees, p.exit_price, p.exit_time, p.exit_reason, p.pnl)


def _kline(row: Sequence) -> Kline:
    sym, interval, t, close_t, o, h, low, c, v, q, n = row
    return Kline(sym, interval, t, close_t, o, h, low, c, v, q, n, True)


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


def open_store(home: str | Path) -> Store:
    """The store at ``home/surge.db`` (what every command uses); creates the home 0700 if missing."""
    try:
        prepare_home(Path(home))
    except HomeError as exc:
        raise StoreError(str(exc)) from None
    return Store(Path(home) / "surge.db")


def read_store(home: str | Path) -> Store | None:
    """The store at ``home/surge.db`` opened read-only, or None when there is no database yet.

    For the commands that only look: a missing home or database is "nothing recorded", and looking
    must not create the directory, the file or a migration.
    """
    path = Path(home) / "surge.db"
    if not path.exists():
        return None
    return Store(path, readonly=True)
