"""The order desk's reads of the account, checked for the shape the desk relies on, and the account
settings it makes before a symbol is traded (its trading rules, its leverage).

Why a checked read: the desk closes its books only on proof, so an answer that does not say what it
must (not a list, a row of a hedge-mode account) raises :class:`Malformed`, which the desk treats as
an outage: the step is retried, nothing is concluded from it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from surge.config import TradeSettings
from surge.exchange.answers import PositionRisk
from surge.exchange.codes import ErrorCode
from surge.exchange.orders import ExchangeError, SignedRest, SymbolRules, rules_from_exchange_info

__all__ = ["AccountReads", "Malformed", "listed"]


class Malformed(Exception):
    """An exchange answer that does not have the shape it must have: treated like an outage."""


def listed(answer: Any) -> list[Any]:
    """``answer`` when it is a list (of rows); anything else is malformed."""
    if not isinstance(answer, list):
        raise Malformed(f"expected a list, got {answer!r:.200}")
    return answer


class AccountReads:
    """Positions, trading rules and leverage, as the desk thread asks for them (not thread-safe:
    the desk thread owns it once it runs)."""

    def __init__(
        self,
        settings: TradeSettings,
        client: SignedRest,
        rules: Mapping[str, SymbolRules] | None,
        log: logging.Logger,
    ) -> None:
        self.settings = settings
        self.client = client
        self.rules: dict[str, SymbolRules] = dict(rules or {})
        self.log = log
        #: symbols whose leverage is set (this run), and those queued to be set ahead of a signal
        self.leverage_set: set[str] = set()
        self.leverage_queued: set[str] = set()

    # ------------------------------------------------------------------ positions

    def risk_rows(self, symbol: str | None) -> list[PositionRisk]:
        """positionRisk rows (all symbols, or one by name); a hedge-mode row is malformed here."""
        rows = listed(self.client.position_risk(symbol))
        for row in rows:
            if not isinstance(row, PositionRisk):
                raise Malformed(f"positionRisk row {row!r:.200}")
            if row.position_side != "BOTH":
                raise Malformed(f"positionRisk has a {row.position_side} row: the account is in hedge mode")
        return rows

    @staticmethod
    def amounts(rows: list[PositionRisk]) -> dict[str, Decimal]:
        return {r.symbol: r.position_amt for r in rows}

    def amount(self, symbol: str) -> Decimal:
        """The position on ``symbol``, asked about by name. positionRisk v3 has rows only for symbols
        with a position or open orders: no row is its answer "flat" (one flat read; it takes two)."""
        return self.amounts(self.risk_rows(symbol)).get(symbol, Decimal(0))

    def entry_price_from_position(self, symbol: str) -> Decimal:
        """The position's ``entryPrice`` (0 when flat): the fill price an answer did not carry."""
        for row in self.risk_rows(symbol):
            if row.symbol == symbol and row.position_amt > 0:
                return row.entry_price
        return Decimal(0)

    # ------------------------------------------------------------------ rules and leverage

    def rules_of(self, symbol: str) -> SymbolRules:
        if symbol not in self.rules:
            self.rules.update(rules_from_exchange_info(self.client.rest.exchange_info()))
        try:
            return self.rules[symbol]
        except KeyError:
            raise ExchangeError(ErrorCode.BAD_SYMBOL, "Invalid symbol.") from None

    def ensure_leverage(self, symbol: str) -> None:
        if symbol in self.leverage_set:
            return
        self.client.set_leverage(symbol, self.settings.leverage)
        self.leverage_set.add(symbol)
        self.log.info("leverage %dx set on %s", self.settings.leverage, symbol)
