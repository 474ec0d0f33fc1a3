"""The closed-candle cache: what a repeated 4h filter scan need not ask the exchange for again.

Closed candles never change, so they are cached forever (pruned by age) and a scan asks the exchange
only for what is new. The *open* of the candle in progress never changes either once the candle has
started, so it has its own small table (one row per symbol and interval).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from surge.models import Kline
from surge.store.database import Database


@dataclass(frozen=True, slots=True)
class CandleState:
    """What the cache knows about one symbol's candles of one interval."""

    latest_closed: Kline | None
    current_open_time: int | None  # open_time of the in-progress candle whose open is cached
    current_open: float | None


class CandleCache(Database):
    """The ``candles`` and ``candle_opens`` tables of a surge database."""

    def put_candles(self, klines: Iterable[Kline]) -> int:
        """Cache closed candles (open ones are ignored: their values still change). Returns count."""
        rows = [
            (k.symbol, k.interval, k.open_time, k.close_time, k.open, k.high, k.low, k.close, k.volume,
             k.quote_volume, k.trades)
            for k in klines
            if k.closed
        ]  # fmt: skip
        if not rows:
            return 0
        with self._transaction(immediate=False) as db:  # blind upserts: nothing read first
            db.executemany("INSERT OR REPLACE INTO candles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def put_current_opens(self, items: Iterable[tuple[str, str, int, float]]) -> None:
        """Cache ``(symbol, interval, open_time, open)`` of candles in progress (one per symbol)."""
        rows = list(items)
        if not rows:
            return
        with self._transaction(immediate=False) as db:  # blind upserts: nothing read first
            db.executemany("INSERT OR REPLACE INTO candle_opens VALUES (?, ?, ?, ?)", rows)

    def candle_states(self, interval: str, symbols: Sequence[str]) -> dict[str, CandleState]:
        """The cache's view of each symbol: latest closed candle and the cached current open.

        One query per table for the whole universe, not one per symbol: a warm scan of every symbol
        must not pay a round trip per symbol.
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
        return {s: CandleState(latest.get(s), *opens.get(s, (None, None))) for s in symbols}

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
        with self._writing() as db:  # one statement: atomic without a transaction of its own
            cur = db.execute(
                "DELETE FROM candles WHERE interval = ? AND open_time < ?", (interval, before_ms)
            )
            return cur.rowcount


def _kline(row: Sequence[Any]) -> Kline:
    sym, interval, t, close_t, o, h, low, c, v, q, n = row
    return Kline(sym, interval, t, close_t, o, h, low, c, v, q, n, True)
