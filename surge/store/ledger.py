"""The trade ledger: signals, positions and live trades, each write one transaction.

Why it looks like this:

* **A signal enters at most once.** A signal and its position are written in ONE transaction
  (:meth:`TradeLedger.record_entry`), and both tables are keyed by (venue, the signal's key
  "SYMBOL:open_time"), so a replay after a crash or restart finds the key and writes nothing: there is
  no moment at which the signal is stored and its position is not, and no way to store a second
  position.
* **Venues keep books apart.** The venue ("sim" for the simulator, the exchange's host, "live:" before
  either for live trading) is part of every key, so a simulator demo and real trading on one
  SURGE_HOME never resume or deduplicate each other's state. Readers that leave it out see every venue.
* **A live trade moves with its signal and position.** Each trade method is one transaction that moves
  the trade row (written BEFORE each exchange call that depends on it) and, where it must, its signal
  and position together: there is no crash window in which the ledger says two different things.
* **Every writer inserts the signal first**, in the same transaction: foreign keys refuse a trade or
  position row without one.
* **Readers never write.** A file opened read-only from before the signals/positions tables (or the
  trades table) reads as empty instead of failing: looking must not migrate.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields, replace
from typing import Any

from surge.models import CLOSED, INTENT, VOID, Position, Signal, Trade
from surge.store.database import Database, StoreError
from surge.store.schema import STATE_VERSION, TRADES_VERSION

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
_SET_EXIT = "UPDATE positions SET exit_price = ?, exit_time = ?, exit_reason = ?, fees = ?, pnl = ? "


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


class TradeLedger(Database):
    """The ``signals``, ``positions`` and ``trades`` tables of a surge database."""

    # ------------------------------------------------------------------ entries, skips and exits

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
        # BEGIN IMMEDIATE: nothing can be recorded between the checks and the writes
        with self._transaction() as db:
            if position is not None and _position_exists(db, venue, signal.key):
                return False  # a position without its signal row (a file from before foreign keys)
            if not _insert_signal(db, signal, venue, outcome, skip_reason):
                return False  # a replay: the signal is recorded, and with it whatever it became
            if position is not None:
                _insert_position(db, position, venue, replacing=False)
        return True

    def close_position(self, position: Position, *, venue: str | None = None) -> None:
        """Record a position's exit (price, time, reason, total fees, PnL).

        Idempotent: the first exit recorded wins and a repeat (a replayed exit after a restart) changes
        nothing. ``venue=None`` finds the position by key alone, which must then be unambiguous. An
        unknown key or a position without exit fields is a programming error (ValueError).
        """
        if position.exit_time is None or position.exit_price is None or position.exit_reason is None:
            raise ValueError(f"position {position.key} has no exit to record")
        with self._transaction() as db:
            where, params = _position_where(db, position.key, venue)
            cur = db.execute(
                f"{_SET_EXIT} WHERE {where} AND exit_time IS NULL", (*_exit_values(position), *params)
            )
            if (
                cur.rowcount == 0
                and not db.execute(f"SELECT 1 FROM positions WHERE {where}", params).fetchone()
            ):
                raise ValueError(f"no stored position {position.key}")

    def update_position(self, position: Position, *, venue: str = DEFAULT_VENUE) -> bool:
        """Overwrite an OPEN position's quantity, entry, exits, deadline and fees with ``position``'s
        (live reconciliation adopts what the exchange says). False when no such open position."""
        with self._writing() as db:  # one statement: atomic without a transaction of its own
            cur = db.execute(
                "UPDATE positions SET qty = ?, entry_price = ?, take_profit = ?, stop_loss = ?, "
                "deadline = ?, fees = ? WHERE venue = ? AND key = ? AND exit_time IS NULL",
                (position.qty, position.entry_price, position.take_profit, position.stop_loss,
                 position.deadline, position.fees, venue, position.key),
            )  # fmt: skip
            return cur.rowcount == 1

    # ------------------------------------------------------------------ live trade lifecycle

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
            _put_trade(db, trade, venue)
        return True

    def save_trade(self, trade: Trade, *, venue: str = DEFAULT_VENUE) -> None:
        """Write a trade's new state (the row must exist; a final trade is never reopened)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT state FROM trades WHERE venue = ? AND key = ?", (venue, trade.key)
            ).fetchone()
            if row is None:
                raise ValueError(f"no stored trade {trade.key}")
            if row[0] in (CLOSED, VOID) and trade.state != row[0]:
                raise ValueError(f"trade {trade.key} is {row[0]}: it cannot become {trade.state}")
            _put_trade(db, trade, venue)

    def record_fill(self, trade: Trade, position: Position, *, venue: str = DEFAULT_VENUE) -> None:
        """The entry filled: the trade's new state and its open position, together."""
        if position.key != trade.key or not position.is_open:
            raise ValueError(f"position {position.key} does not fit trade {trade.key}")
        with self._transaction() as db:
            _put_trade(db, trade, venue)
            _insert_position(db, position, venue, replacing=True)

    def void_trade(self, trade: Trade, reason: str, *, venue: str = DEFAULT_VENUE) -> None:
        """The trade never entered (refused, too small, proven never executed): the trade is void and
        its signal "skipped" with ``reason``, together."""
        with self._transaction() as db:
            _put_trade(db, replace(trade, state=VOID, note=reason), venue)
            db.execute(
                "UPDATE signals SET outcome = ?, skip_reason = ? WHERE venue = ? AND key = ?",
                (SKIPPED, reason, venue, trade.key),
            )

    def record_trade_close(self, trade: Trade, closed: Position, *, venue: str = DEFAULT_VENUE) -> None:
        """The position is flat (proven): the trade closed and the position's exit, together."""
        if closed.is_open or closed.key != trade.key:
            raise ValueError(f"position {closed.key} is not the closed position of trade {trade.key}")
        with self._transaction() as db:
            _put_trade(db, replace(trade, state=CLOSED), venue)
            db.execute(
                f"{_SET_EXIT} WHERE venue = ? AND key = ? AND exit_time IS NULL",
                (*_exit_values(closed), venue, closed.key),
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
            )  # fmt: skip
            db.execute(
                "UPDATE signals SET outcome = ?, skip_reason = NULL WHERE venue = ? AND key = ?",
                (ENTERED, venue, position.key),
            )
            _insert_position(db, position, venue, replacing=True)
            _put_trade(db, trade, venue)

    # ------------------------------------------------------------------ reading

    def has_signal(self, key: str, *, venue: str = DEFAULT_VENUE) -> bool:
        """Whether the signal ``key`` is already recorded on ``venue`` (entered or skipped).

        Live trading asks before it sends an order: :meth:`record_entry` refusing a replay comes
        too late once an order has reached the exchange.
        """
        return bool(self._read("SELECT 1 FROM signals WHERE venue = ? AND key = ?", (venue, key)))

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

    def position(self, key: str, *, venue: str = DEFAULT_VENUE) -> Position | None:
        rows = self._read(
            f"SELECT {_POSITION_COLUMNS} FROM positions WHERE venue = ? AND key = ?", (venue, key)
        )
        return Position(*rows[0]) if rows else None

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
        return self._count("signals", venue)

    def position_count(self, *, venue: str | None = None) -> int:
        """Positions ever entered (on ``venue``), open or closed: a count in SQL, so a scrape every
        second does not load months of trades as objects."""
        return self._count("positions", venue)

    def open_position_count(self, *, venue: str | None = None) -> int:
        """How many positions have no exit yet (``surge status`` without loading them)."""
        return self._count("positions", venue, "WHERE exit_time IS NULL")

    def _count(self, table: str, venue: str | None, where: str = "") -> int:
        where, params = _venue_filter(venue, where)
        rows = self._read(f"SELECT count(*) FROM {table} {where}", params)
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

    def trade(self, key: str, *, venue: str = DEFAULT_VENUE) -> Trade | None:
        rows = self._read(f"SELECT {_TRADE_COLUMNS} FROM trades WHERE venue = ? AND key = ?", (venue, key))
        return Trade(*rows[0]) if rows else None

    def trades(self, *, venue: str | None = None, unfinished: bool = False) -> list[Trade]:
        """Trades (every one, or those not closed or void), oldest signal first."""
        where, params = _venue_filter(venue, "WHERE state NOT IN ('closed', 'void')" if unfinished else "")
        if self._version < TRADES_VERSION:
            return []
        rows = self._read(f"SELECT {_TRADE_COLUMNS} FROM trades {where} ORDER BY rowid", params)
        return [Trade(*r) for r in rows]

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run a query on the state tables; a database from before them reads as empty.

        SQLite errors become :class:`StoreError` so that a damaged file is one line from the CLI,
        not a traceback.
        """
        with self._lock:
            if self._version < STATE_VERSION:
                return []
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot read {self.path}: {exc}") from None


def _venue_filter(venue: str | None, where: str = "") -> tuple[str, tuple[object, ...]]:
    """``where`` narrowed to one venue (None: every venue), and its parameters."""
    if venue is None:
        return where, ()
    return (f"{where} AND venue = ?" if where else "WHERE venue = ?"), (venue,)


def _position_where(db: sqlite3.Connection, key: str, venue: str | None) -> tuple[str, tuple[object, ...]]:
    """The WHERE clause (and parameters) that finds position ``key``: on ``venue``, or with ``venue``
    None on the one venue where it is open (ValueError when several), else by key alone."""
    if venue is not None:
        return "venue = ? AND key = ?", (venue, key)
    venues = [
        r[0] for r in db.execute("SELECT venue FROM positions WHERE key = ? AND exit_time IS NULL", (key,))
    ]
    if len(venues) > 1:
        raise ValueError(f"position {key} is open on venues {venues}: name one")
    if venues:
        return "venue = ? AND key = ?", (venues[0], key)
    return "key = ?", (key,)


def _position_exists(db: sqlite3.Connection, venue: str, key: str) -> bool:
    row = db.execute("SELECT 1 FROM positions WHERE venue = ? AND key = ?", (venue, key)).fetchone()
    return row is not None


def _insert_signal(
    db: sqlite3.Connection, signal: Signal, venue: str, outcome: str, skip_reason: str | None
) -> bool:
    """Insert the signal row unless its (venue, key) exists; True when it was new."""
    cur = db.execute(
        f"INSERT OR IGNORE INTO signals (venue, key, {_SIGNAL_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (venue, signal.key, signal.symbol, signal.time, signal.open_time, signal.change_pct,
         signal.volume_multiple, signal.quote_volume, signal.price, outcome, skip_reason),
    )  # fmt: skip
    return cur.rowcount > 0


def _insert_position(db: sqlite3.Connection, p: Position, venue: str, *, replacing: bool) -> None:
    """Write position ``p``; ``replacing``: over a stored one (the trade methods own their row), else
    a stored one is a constraint error (an entry checks first)."""
    row = (venue, p.key, p.symbol, p.qty, p.entry_price, p.entry_time, p.take_profit, p.stop_loss,
           p.deadline, p.fees, p.exit_price, p.exit_time, p.exit_reason, p.pnl)  # fmt: skip
    db.execute(
        f"INSERT {'OR REPLACE ' if replacing else ''}INTO positions (venue, {_POSITION_COLUMNS}) "
        f"VALUES ({', '.join('?' for _ in row)})",
        row,
    )


def _exit_values(p: Position) -> tuple[object, ...]:
    """The values of :data:`_SET_EXIT`'s placeholders."""
    return (p.exit_price, p.exit_time, p.exit_reason, p.fees, p.pnl)


def _put_trade(db: sqlite3.Connection, trade: Trade, venue: str) -> None:
    marks = ", ".join("?" for _ in fields(Trade))
    db.execute(
        f"INSERT OR REPLACE INTO trades (venue, {_TRADE_COLUMNS}) VALUES (?, {marks})",
        (venue, *astuple(trade)),
    )
