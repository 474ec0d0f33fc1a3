"""The universe keeps TRADING PERPETUAL USDT symbols, matched exactly."""

from __future__ import annotations

from surge.universe import universe_from_exchange_info


def entry(symbol: str, status: str = "TRADING", ctype: str = "PERPETUAL", quote: str = "USDT") -> dict:
    return {
        "symbol": symbol,
        "status": status,
        "contractType": ctype,
        "quoteAsset": quote,
        "baseAsset": symbol[:3],
        "filters": [
            {"filterType": "PRICE_FILTER", "tickSize": "0.10"},
            {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001"},
            {"filterType": "MIN_NOTIONAL", "notional": "100"},
        ],
    }


def test_exact_match_drops_every_decoy() -> None:
    info = {
        "symbols": [
            entry("BTCUSDT"),
            entry("ETHUSDT"),
            entry("XAUUSDT", ctype="TRADIFI_PERPETUAL"),
            entry("BTCUSDT_260327", ctype="CURRENT_QUARTER"),
            entry("BTCUSDC", quote="USDC"),
            entry("OLDUSDT", status="SETTLING"),
            entry("DOWNUSDT", status="BREAK"),
            entry("LOWUSDT", ctype="perpetual"),
            entry("PREUSDT", status="PENDING_TRADING"),
            {"symbol": 5},
            "junk",
        ]
    }
    uni = universe_from_exchange_info(info)
    assert [s.symbol for s in uni] == ["BTCUSDT", "ETHUSDT"]
    btc = uni[0]
    assert (btc.tick_size, btc.step_size, btc.min_qty, btc.min_notional) == (0.1, 0.001, 0.001, 100)


def test_empty_exchange_info() -> None:
    assert universe_from_exchange_info({"symbols": []}) == []
    assert universe_from_exchange_info({}) == []


def test_command_line_symbols_are_normalised_and_malformed_names_refused() -> None:
    import pytest

    from surge.errors import ConfigError
    from surge.universe import parse_symbol_list

    given = " btcusdt, ETHUSDT,,BTCUSDT,1000pepeusdt "
    assert parse_symbol_list(given) == ["BTCUSDT", "ETHUSDT", "1000PEPEUSDT"]
    assert parse_symbol_list("币安人生usdt") == ["币安人生USDT"]  # a real USD-M perpetual's name
    assert parse_symbol_list(" , ") == []
    for bad in ("../etc", "BTC/USDT", "BTCUSDT_260327", "BTC USDT", "A" * 33, "BTC\rUSDT", "BTCUSDT?x=1"):
        with pytest.raises(ConfigError) as info:
            parse_symbol_list(f"ETHUSDT,{bad}")
        message = str(info.value)
        assert message.startswith("--symbols") and "\n" not in message and "\r" not in message
        assert info.value.exit_code == 2


def test_not_tradable_says_why_for_each_name() -> None:
    from surge.universe import UNKNOWN_SYMBOL, not_tradable

    info = {
        "symbols": [
            entry("BTCUSDT"),
            entry("XAUUSDT", ctype="TRADIFI_PERPETUAL"),
            entry("OLDUSDT", status="SETTLING"),
            entry("BTCUSDC", quote="USDC"),
        ]
    }
    out = not_tradable(info, ["BTCUSDT", "XAUUSDT", "OLDUSDT", "BTCUSDC", "NOPEUSDT"])
    assert set(out) == {"XAUUSDT", "OLDUSDT", "BTCUSDC", "NOPEUSDT"}
    assert out["NOPEUSDT"] == UNKNOWN_SYMBOL == "code -1121: Invalid symbol."
    assert "TRADIFI_PERPETUAL" in out["XAUUSDT"] and "SETTLING" in out["OLDUSDT"] and "USDC" in out["BTCUSDC"]
