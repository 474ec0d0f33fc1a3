"""The open positions and the risk limits that decide whether a signal may enter."""

from __future__ import annotations

from collections.abc import Iterable

from surge.models import Position


class PositionBook:
    """Open positions by symbol: at most one per symbol and ``max_open`` in all.

    One position per symbol keeps a second surge on a symbol already held from doubling the risk on
    it; the database's unique signal key keeps one signal from entering twice.
    """

    def __init__(self, max_open: int, positions: Iterable[Position] = ()) -> None:
        self.max_open = max_open
        self._by_symbol: dict[str, Position] = {}
        for p in positions:
            self.add(p)

    def refusal(self, symbol: str) -> str | None:
        """Why a new entry on ``symbol`` is not allowed now, or None if it is."""
        if symbol in self._by_symbol:
            return f"a position on {symbol} is already open"
        if len(self._by_symbol) >= self.max_open:
            return f"max_open_positions ({self.max_open}) reached"
        return None

    def add(self, position: Position) -> None:
        if not position.is_open:
            raise ValueError(f"position {position.key} is closed")
        self._by_symbol[position.symbol] = position

    def remove(self, symbol: str) -> Position | None:
        return self._by_symbol.pop(symbol, None)

    def get(self, symbol: str) -> Position | None:
        return self._by_symbol.get(symbol)

    def symbols(self) -> set[str]:
        return set(self._by_symbol)

    def positions(self) -> list[Position]:
        return list(self._by_symbol.values())

    def __len__(self) -> int:
        return len(self._by_symbol)
