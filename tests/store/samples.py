"""Candles, signals and positions the store tests write, and a database as the version-1 surge left it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from surge.models import Kline, Position, Signal

H4 = 4 * 3600 * 1000
M1 = 60_000


def k(sym: str, t: int, *, closed: bool = True, q: float = 1e6) -> Kline:
    return Kline(sym, "4h", t, t + H4 - 1, 1.0, 2.0, 0.5, 1.5, 10.0, q, 7, closed)


def sig(sym: str = "BTCUSDT", minute: int = 0, *, price: float = 100.0) -> Signal:
    t = 1_700_000_000_000 + minute * M1
    return Signal(sym, t + 30_000, t, 3.5, 4.25, 75_000.5, price)


def pos(signal: Signal, *, qty: float = 1.0) -> Position:
    entry = signal.price * 1.0005
    return Position(
        signal.key,
        signal.symbol,
        qty,
        entry,
        signal.time,
        entry * 1.02,
        entry * 0.99,
        signal.time + 3_600_000,
        fees=0.04,
    )


def closed(p: Position, price: float, *, reason: str = "take_profit", after_ms: int = 60_000) -> Position:
    fees = p.fees + price * p.qty * 0.0004
    return replace(
        p,
        exit_price=price,
        exit_time=p.entry_time + after_ms,
        exit_reason=reason,
        fees=fees,
        pnl=(price - p.entry_price) * p.qty - fees,
    )


def make_v1_database(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database exactly as the version-1 surge wrote it (migration 1 is never edited)."""
    import surge.store as store_mod

    with monkeypatch.context() as m:
        m.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS[:1])
        m.setattr(store_mod, "SCHEMA_VERSION", 1)
        with store_mod.Store(path) as store:
            assert store.schema_version == 1
            store.put_candles([k("A", 0), k("A", H4)])
