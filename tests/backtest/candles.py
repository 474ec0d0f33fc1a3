"""Building ``SymbolCandles`` by hand for the backtest tests: minute rows, gaps, planted surges."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from surge.history.store import SymbolCandles
from surge.models import Kline
from surge.strategy import MINUTE_MS

H4_MS = 4 * 60 * MINUTE_MS
#: A 4h boundary, so minute 240 opens the second 4h window of a series starting at T0.
T0 = 1_700_000_000_000 - 1_700_000_000_000 % H4_MS

#: (open, high, low, close, volume, quote_volume) of one minute, or None for a minute without a candle
Row = tuple[float, float, float, float, float, float] | None


def flat(price: float, minutes: int, volume: float = 10.0, quote_volume: float = 1000.0) -> list[Row]:
    """Quiet minutes: open = close = price, a 0.2 % range, the background volume."""
    return [(price, price * 1.002, price * 0.998, price, volume, quote_volume)] * minutes


def build(symbol: str, rows: Sequence[Row], t0: int = T0) -> SymbolCandles:
    """Minute i of ``rows`` opens at ``t0 + i`` minutes; None rows are gaps."""
    kept = [(i, r) for i, r in enumerate(rows) if r is not None]
    columns = {
        "open_time": np.array([t0 + i * MINUTE_MS for i, _ in kept], dtype=np.int64),
        "trades": np.ones(len(kept), dtype=np.int64),
    }
    for n, name in enumerate(("open", "high", "low", "close", "volume", "quote_volume")):
        columns[name] = np.array([r[n] for _, r in kept], dtype=np.float64)
    return SymbolCandles(symbol, **columns)


def klines(candles: SymbolCandles) -> list[Kline]:
    """The candles as the closed klines the live rule is fed (event time 0: its time is the close)."""
    return [
        Kline(
            candles.symbol,
            "1m",
            int(t),
            int(t) + MINUTE_MS - 1,
            float(o),
            float(h),
            float(lo),
            float(c),
            float(v),
            float(q),
            1,
            True,
        )
        for t, o, h, lo, c, v, q in zip(
            candles.open_time.tolist(),
            candles.open.tolist(),
            candles.high.tolist(),
            candles.low.tolist(),
            candles.close.tolist(),
            candles.volume.tolist(),
            candles.quote_volume.tolist(),
            strict=True,
        )
    ]
