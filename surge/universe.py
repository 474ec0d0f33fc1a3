"""The universe: every symbol the bot may trade, from exchangeInfo.

Exact match on ``status == "TRADING"``, ``contractType == "PERPETUAL"`` and ``quoteAsset == "USDT"``:
exchangeInfo also lists ``TRADIFI_PERPETUAL``, delivery contracts, USDC-quoted and settling symbols,
and a substring or case-insensitive test lets some of them in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from surge.exchange.rest import BinanceRest, symbol_infos
from surge.models import SymbolInfo


def universe_from_exchange_info(info: Mapping[str, Any]) -> list[SymbolInfo]:
    """TRADING USDT perpetuals of an exchangeInfo body, in the exchange's order."""
    return [s for s in symbol_infos(info) if s.is_usdt_perpetual]


def fetch_universe(rest: BinanceRest) -> list[SymbolInfo]:
    """One exchangeInfo request (weight 1) -> the universe; also configures the rate limiter."""
    return universe_from_exchange_info(rest.exchange_info())
