"""The desk's one price rule for protective orders, and the position a fill becomes."""

from __future__ import annotations

from decimal import Decimal

from surge.config import TradeSettings
from surge.exchange.precision import SymbolRules
from surge.trading.desk_rules import new_position, protective_prices

RULES = SymbolRules("XUSDT", Decimal("0.01"), Decimal("0.001"), Decimal("0.001"), Decimal(1000), Decimal(5))
SETTINGS = TradeSettings(
    mode="live", take_profit_pct=2.0, stop_loss_pct=1.0, max_hold_s=60, taker_fee_pct=0.05
)


def test_protective_prices_on_the_tick() -> None:
    assert protective_prices(SETTINGS, RULES, Decimal("100.003")) == (102.0, 99.0)


def test_new_position_from_a_fill() -> None:
    p = new_position(SETTINGS, RULES, "XUSDT:1", "XUSDT", Decimal("2"), Decimal("100"), 1_000)
    assert (p.qty, p.entry_price, p.take_profit, p.stop_loss) == (2.0, 100.0, 102.0, 99.0)
    assert p.deadline == 61_000 and p.fees == 0.1 and p.is_open


def test_an_adopted_position_keeps_the_triggers_on_the_exchange() -> None:
    kept = {"STOP_MARKET": 95.5}
    p = new_position(SETTINGS, RULES, "k", "XUSDT", Decimal("1"), Decimal("100"), 0, triggers=kept)
    assert p.stop_loss == 95.5 and p.take_profit == 102.0  # the missing one from the settings
