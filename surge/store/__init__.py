"""SQLite state at ``$SURGE_HOME/surge.db``: schema version, closed-candle cache, signals, positions, trades.

Why it looks like this:

* **One file, two jobs, one connection.** :class:`Store` is the candle cache
  (:class:`~surge.store.candles.CandleCache`, for the 4h filter) and the trade ledger
  (:class:`~surge.store.ledger.TradeLedger`, for the desks) over one connection
  (:class:`~surge.store.database.Database`), so a process opens, migrates and locks the file once and
  every write goes through one transaction helper.
* **It is ours or we do not touch it.** The file is stamped with ``PRAGMA application_id`` (the
  bytes ``SRGE``) and a ``schema_version`` table. A file that is not SQLite, is corrupt, belongs to
  another program, or was written by a newer surge raises :class:`StoreError` with what to do; it
  is never deleted, recreated or "repaired" behind the user's back.
* **Migrations** are an ordered, append-only list (:data:`MIGRATIONS`: 1 the candle cache, 2 signals
  and positions, 3 the live trade lifecycle); every existing database is brought up to date in one
  transaction on open.
* **Readers never write.** ``surge status``/``signals``/``positions`` open the file read-only
  (:func:`read_store`): no migration, no directory created, and, thanks to WAL, no waiting on a
  ``surge run`` that is in the middle of a transaction.
* **A write that fails writes nothing** (disk or database full, I/O error, read-only file system,
  locked longer than the busy timeout): it raises :class:`StoreWriteError`, the transaction rolled
  back whole. ``surge run`` rides it out: no new entry (it could not be recorded), held positions
  still closed, the write tried again.
* **Private**: the home is created 0700 and the database (so its -wal and -shm, which SQLite gives
  the database's mode) 0600, whatever the umask.
"""

from __future__ import annotations

from pathlib import Path

from surge.runtime import HomeError, prepare_home
from surge.store.candles import CandleCache, CandleState
from surge.store.database import Database, StoreError, StoreWriteError
from surge.store.ledger import DEFAULT_VENUE, ENTERED, SKIPPED, PositionRecord, SignalRecord, TradeLedger
from surge.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, Migration


class Store(CandleCache, TradeLedger):
    """The surge database: the candle cache and the trade ledger on one connection. Use as a context
    manager or call :meth:`close`.

    ``readonly=True`` is for the commands that only look (``surge status``, ``signals``,
    ``positions``): the file must exist, nothing is created or migrated, and a database from before
    the signals/positions tables simply reads as empty. ``busy_timeout_s``: how long a write waits for
    another process's write lock before it fails as a :class:`StoreWriteError`.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0, readonly: bool = False) -> None:
        # this package's MIGRATIONS, looked up at each open rather than bound at import: a test that
        # appends a migration (or keeps only the first) sets it here
        super().__init__(path, busy_timeout_s=busy_timeout_s, readonly=readonly, migrations=MIGRATIONS)


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


__all__ = [
    "APPLICATION_ID",
    "DEFAULT_VENUE",
    "ENTERED",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SKIPPED",
    "CandleCache",
    "CandleState",
    "Database",
    "Migration",
    "PositionRecord",
    "SignalRecord",
    "Store",
    "StoreError",
    "StoreWriteError",
    "TradeLedger",
    "open_store",
    "read_store",
]
