"""The universe: every symbol the bot may trade, from exchangeInfo.

Exact match on ``status == "TRADING"``, ``contractType == "PERPETUAL"`` and ``quoteAsset == "USDT"``:
exchangeInfo also lists ``TRADIFI_PERPETUAL``, delivery contracts, USDC-quoted and settling symbols,
and a substring or case-insensitive test lets some of them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from surge.errors import ConfigError
from surge.exchange.rest import symbol_infos
from surge.models import SymbolInfo


def universe_from_exchange_info(info: Mapping[str, Any]) -> list[SymbolInfo]:
    """TRADING USDT perpetuals of an exchangeInfo body, in the exchange's order."""
    return [s for s in symbol_infos(info) if s.is_usdt_perpetual]


#: Longest symbol name accepted on the command line (Binance's longest today are ~20 characters).
MAX_SYMBOL_LEN = 32


def symbol_name_problem(name: str) -> str | None:
    """Why ``name`` (already upper-cased) cannot be a USD-M symbol, or None.

    Letters and digits only: that is every perpetual Binance lists (``1000PEPEUSDT``; Unicode letters
    too, as in ``币安人生USDT``), while a dot, slash or underscore is a path, a typo or a delivery
    contract. Checked before any request, so ``--symbols ../etc`` never reaches a URL.
    """
    if not name:
        return "empty"
    if len(name) > MAX_SYMBOL_LEN:
        return f"longer than {MAX_SYMBOL_LEN} characters"
    if not name.isalnum():
        return "only letters and digits"
    return None


def parse_symbol_list(text: str) -> list[str]:
    """``"btcusdt, ETHUSDT,,BTCUSDT"`` -> ``["BTCUSDT", "ETHUSDT"]``; a malformed name is a ConfigError.

    The error (exit 2) names every malformed entry, shortened and with control characters escaped,
    so one line on stderr says what to fix.
    """
    names: list[str] = []
    bad: list[str] = []
    for part in text.split(","):
        name = part.strip().upper()
        if not name:
            continue
        if symbol_name_problem(name) is not None:
            bad.append(f"{part.strip()!r:.40}")
        elif name not in names:
            names.append(name)
    if bad:
        raise ConfigError(
            f"--symbols: not a symbol name (letters and digits only, at most "
            f"{MAX_SYMBOL_LEN}): {', '.join(bad)}"
        )
    return names


def not_tradable(info: Mapping[str, Any], names: Iterable[str]) -> dict[str, str]:
    """Of ``names``, those that are not a TRADING USDT perpetual of exchangeInfo, with why.

    Unknown symbols get the message the exchange itself gives for them (code -1121), so a scan's
    ``errors`` read the same whether the symbol was asked about or caught here without a request.
    """
    listed = {s.symbol: s for s in symbol_infos(info)}
    out: dict[str, str] = {}
    for name in names:
        s = listed.get(name)
        if s is None:
            out[name] = UNKNOWN_SYMBOL
        elif not s.is_usdt_perpetual:
            out[name] = (
                f"not a TRADING USDT perpetual (status {s.status or '?'}, contract "
                f"{s.contract_type or '?'}, quote {s.quote_asset or '?'})"
            )
    return out


#: What Binance answers about a symbol it does not list; kept as the scan's error for such a symbol.
UNKNOWN_SYMBOL = "code -1121: Invalid symbol."
