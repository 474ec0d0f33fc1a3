"""Paper trading: fills at the last price with slippage against you and the taker fee both ways.

A paper fill is only useful if it is not flattering: entries pay ``slippage_pct`` above the signal
price, exits receive ``slippage_pct`` below the trigger price, and each side pays ``taker_fee_pct``
of its notional. Exits are checked on the last price (the candle's close), never on the candle's
high or low, which may have been printed before the entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from surge.config import TradeSettings
from surge.models import Position, Signal

TAKE_PROFIT = "take_profit"
STOP_LOSS = "stop_loss"
MAX_HOLD = "max_hold"


class PaperBroker:
    """Opens and closes simulated long positions under the ``[trade]`` settings."""

    def __init__(self, settings: TradeSettings) -> None:
        self.settings = settings
        self._slip = settings.slippage_pct / 100.0
        self._fee = settings.taker_fee_pct / 100.0
        #: signal key -> why it was not entered: always empty here (a paper fill never fails), kept so
        #: the bot drives paper and live brokers through one interface
        self.skipped: dict[str, str] = {}

    def open(self, signal: Signal, now_ms: int | None = None) -> Position:
        s = self.settings
        entry = signal.price * (1.0 + self._slip)
        qty = s.position_usdt / entry
        entered = signal.time if now_ms is None else now_ms
        return Position(
            key=signal.key,
            symbol=signal.symbol,
            qty=qty,
            entry_price=entry,
            entry_time=entered,
            take_profit=entry * (1.0 + s.take_profit_pct / 100.0),
            stop_loss=entry * (1.0 - s.stop_loss_pct / 100.0),
            deadline=entered + int(s.max_hold_s * 1000),
            fees=s.position_usdt * self._fee,
        )

    @staticmethod
    def exit_reason(position: Position, price: float, now_ms: int) -> str | None:
        """Which exit, if any, the last price (or the clock) triggers for an open position."""
        if price >= position.take_profit:
            return TAKE_PROFIT
        if price <= position.stop_loss:
            return STOP_LOSS
        if now_ms >= position.deadline:
            return MAX_HOLD
        return None

    @staticmethod
    def sync(positions: Iterable[Position], *, force: bool = False) -> list[Position]:
        """Exits made elsewhere since the last call: none on paper (every exit is decided here)."""
        return []

    def close(self, position: Position, price: float, now_ms: int, reason: str) -> Position:
        exit_price = price * (1.0 - self._slip)
        fees = position.fees + exit_price * position.qty * self._fee
        pnl = (exit_price - position.entry_price) * position.qty - fees
        return replace(
            position, exit_price=exit_price, exit_time=now_ms, exit_reason=reason, fees=fees, pnl=pnl
        )
