"""Exchange precision: prices to tickSize, quantities down to stepSize, MIN_NOTIONAL and minQty.

Why Decimal: Binance rejects a quantity with more decimals than the symbol's step (-1111) and a
price that is not a whole number of ticks (-4014). Float arithmetic turns 0.1 + 0.2 into
0.30000000000000004, which formats to a string the exchange refuses; Decimal built from the
exchange's own strings ("0.001") keeps every value an exact multiple of its step.

Why quantities round *down*: a quantity rounded up could exceed the margin the user budgeted
(``position_usdt``); a price rounds to the *nearest* tick (a trigger one tick off is harmless).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Decimal, InvalidOperation
from typing import Any

__all__ = [
    "SizeDecision",
    "SymbolRules",
    "ceil_to_step",
    "fmt_decimal",
    "round_price",
    "rules_from_exchange_info",
    "size_order",
    "to_decimal",
    "floor_to_step",
]


def to_decimal(value: Any) -> Decimal:
    """A Decimal from an exchange string, int or float (floats via ``repr``: 0.1 -> Decimal("0.1"))."""
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"not a number: {value!r}") from exc


def _quantize(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    if step <= 0:
        return value
    units = (value / step).to_integral_value(rounding=rounding)
    # quantize to the step's exponent so "0.0010" and "0.001" both give 3 decimals
    exponent = step.normalize().as_tuple().exponent  # a letter only for NaN or infinity
    return (units * step).quantize(
        step.normalize() if isinstance(exponent, int) and exponent < 0 else Decimal(1)
    )


def round_price(price: Any, tick_size: Any) -> Decimal:
    """``price`` to the nearest multiple of ``tick_size`` (half up), exact."""
    return _quantize(to_decimal(price), to_decimal(tick_size), ROUND_HALF_UP)


def floor_to_step(qty: Any, step_size: Any) -> Decimal:
    """``qty`` down to a multiple of ``step_size``: never more than the budget allows."""
    return _quantize(to_decimal(qty), to_decimal(step_size), ROUND_DOWN)


def ceil_to_step(value: Any, step_size: Any) -> Decimal:
    """``value`` up to a multiple of ``step_size`` (e.g. the least quantity meeting MIN_NOTIONAL)."""
    return _quantize(to_decimal(value), to_decimal(step_size), ROUND_UP)


def fmt_decimal(value: Decimal) -> str:
    """Plain decimal string without exponent or trailing zeros: what the exchange accepts."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """The trading rules of one symbol, from its exchangeInfo filters, as exact Decimals.

    ``step_size`` / ``min_qty`` / ``max_qty`` are MARKET_LOT_SIZE's when the symbol has that filter
    (it binds MARKET orders, the only orders this bot sends), else LOT_SIZE's.
    """

    symbol: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal

    @classmethod
    def from_symbol_entry(cls, entry: Mapping[str, Any]) -> SymbolRules:
        """One exchangeInfo ``symbols`` element -> rules (missing filters mean "no constraint")."""
        filters = {f.get("filterType"): f for f in entry.get("filters") or () if isinstance(f, Mapping)}
        price = filters.get("PRICE_FILTER", {})
        lot = filters.get("LOT_SIZE", {})
        market = filters.get("MARKET_LOT_SIZE") or lot
        notional = filters.get("MIN_NOTIONAL", {})

        def dec(f: Mapping[str, Any], key: str, default: str) -> Decimal:
            raw = f.get(key)
            return to_decimal(raw) if raw not in (None, "") else Decimal(default)

        step = dec(market, "stepSize", "0")
        if step == 0:
            step = dec(lot, "stepSize", "0")
        return cls(
            symbol=str(entry["symbol"]),
            tick_size=dec(price, "tickSize", "0"),
            step_size=step,
            min_qty=max(dec(market, "minQty", "0"), dec(lot, "minQty", "0")),
            max_qty=dec(market, "maxQty", "0") or dec(lot, "maxQty", "0"),
            min_notional=dec(notional, "notional", "0"),
        )

    def price(self, value: Any) -> Decimal:
        return round_price(value, self.tick_size)

    def quantity(self, value: Any) -> Decimal:
        return floor_to_step(value, self.step_size)


def rules_from_exchange_info(info: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> dict[str, SymbolRules]:
    """exchangeInfo body (or its ``symbols`` list) -> rules per symbol."""
    symbols = info.get("symbols", ()) if isinstance(info, Mapping) else info
    out: dict[str, SymbolRules] = {}
    for entry in symbols or ():
        if isinstance(entry, Mapping) and isinstance(entry.get("symbol"), str):
            out[entry["symbol"]] = SymbolRules.from_symbol_entry(entry)
    return out


@dataclass(frozen=True, slots=True)
class SizeDecision:
    """The quantity to send for a notional budget, or why nothing can be sent (``reason``)."""

    symbol: str
    quantity: Decimal
    price: Decimal
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def notional(self) -> Decimal:
        return self.quantity * self.price


def size_order(rules: SymbolRules, budget_usdt: Any, price: Any) -> SizeDecision:
    """How much of ``rules.symbol`` ``budget_usdt`` buys at ``price``, within the exchange's filters.

    The quantity is ``budget / price`` rounded down to the step. The decision carries a reason
    instead when that quantity is below minQty, above maxQty, or its notional below MIN_NOTIONAL:
    such an order would be refused (-4164 and friends), so it is not sent at all.
    """
    budget = to_decimal(budget_usdt)
    px = to_decimal(price)
    if px <= 0:
        return SizeDecision(rules.symbol, Decimal(0), px, f"{rules.symbol}: no usable price ({price!r})")
    qty = floor_to_step(budget / px, rules.step_size)
    sym = rules.symbol
    if qty <= 0 or qty < rules.min_qty:
        need = max(max(rules.min_qty, rules.step_size) * px, rules.min_notional)
        return SizeDecision(
            sym,
            qty,
            px,
            f"{sym}: position_usdt {fmt_decimal(budget)} buys "
            f"{fmt_decimal(qty)}, below the minimum quantity {fmt_decimal(rules.min_qty)} "
            f"(needs about {fmt_decimal(round_price(need, '0.01'))} USDT)",
        )
    if rules.max_qty > 0 and qty > rules.max_qty:
        return SizeDecision(
            sym,
            qty,
            px,
            f"{sym}: quantity {fmt_decimal(qty)} exceeds the maximum "
            f"{fmt_decimal(rules.max_qty)} for a MARKET order",
        )
    notional = qty * px
    if notional < rules.min_notional:
        return SizeDecision(
            sym,
            qty,
            px,
            f"{sym}: notional {fmt_decimal(round_price(notional, '0.0001'))} "
            f"USDT ({fmt_decimal(qty)} x {fmt_decimal(px)}) is below MIN_NOTIONAL "
            f"{fmt_decimal(rules.min_notional)} USDT",
        )
    return SizeDecision(sym, qty, px)
