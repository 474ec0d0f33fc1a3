"""The database's schema: the migrations that build it, in order, and the stamp that says it is ours.

Why a list of migrations and not one ``CREATE``: every database a released surge wrote must open in
every later one. Each entry is applied once, in order, in the transaction that opens the file
(:class:`surge.store.database.Database`), and the file's ``schema_version`` row says how far it got. An
entry is never edited once released (a file out there already has it); a change is a new entry at
the end.
"""

from __future__ import annotations

#: ``PRAGMA application_id`` of a surge database, the ASCII bytes "SRGE": a file without it (and not
#: empty) belongs to another program and is left alone.
APPLICATION_ID = 0x53524745

#: (version, what it adds, SQL): the version the file reaches once the SQL ran.
Migration = tuple[int, str, str]

#: Append only; never edit a released entry.
MIGRATIONS: tuple[Migration, ...] = (
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
        # ``key`` is Signal.key ("SYMBOL:open_time"); ``venue`` names the book the bot traded in ("sim"
        # for the simulator, the exchange's host, "live:" before either for live trading), so a
        # simulator demo and real trading on one SURGE_HOME never resume or deduplicate each other's
        # state. Signals keep what happened to them: "entered", or "skipped" with the reason (max open
        # positions, symbol already held, shutting down, ...).
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
#: The schema version that added the ``signals`` and ``positions`` tables: a file opened read-only
#: before it reads as "nothing recorded".
STATE_VERSION = 2
#: The schema version that added the ``trades`` table (the live trade lifecycle).
TRADES_VERSION = 3
