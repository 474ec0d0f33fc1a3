"""The start's checks that end ``surge run`` before anything streams."""

from __future__ import annotations

from typing import Any

import pytest

from surge.errors import ConfigError
from surge.startup import check_symbols


class InfoRest:
    def __init__(self, symbols: list[dict[str, Any]]) -> None:
        self.info = {"symbols": symbols, "serverTime": 1}

    def exchange_info(self) -> dict[str, Any]:
        return self.info


def listed(name: str, quote: str = "USDT", status: str = "TRADING") -> dict[str, Any]:
    return {"symbol": name, "status": status, "contractType": "PERPETUAL", "quoteAsset": quote, "filters": []}


def test_symbols_that_are_no_trading_usdt_perpetual_are_a_usage_error_naming_them() -> None:
    rest = InfoRest(
        [listed("BTCUSDT"), listed("ETHUSDC", quote="USDC"), listed("OLDUSDT", status="SETTLING")]
    )
    check_symbols(rest, {"BTCUSDT"}, "http://x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as err:
        check_symbols(rest, {"BTCUSDT", "ETHUSDC", "OLDUSDT", "TYPOUSDT"}, "http://x")  # type: ignore[arg-type]
    assert "ETHUSDC, OLDUSDT, TYPOUSDT" in str(err.value) and "BTCUSDT" not in str(err.value)
