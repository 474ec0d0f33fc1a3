"""The universe keeps TRADING PERPETUAL USDT symbols, matched exactly."""

from __future__ import annotations

from surge.universe import universe_from_exchange_info


def entry(symbol: str, status: str = "TRADING", ctype: str = "PERPETUAL", quote: str = "USDT") -> dict:
    return {
        "symbol": symbol, "status": status, "contractType": ctype, "quoteAsset": quote,
        "baseAsset": symbol[:3],
        "filters": [
            {"filterType": "PRICE_FILTER", "tickSize": "0.10"},
            {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001"},
            {"filterType": "MIN_NOTIONAL", "notional": "100"},
        ],
    }


def test_exact_match_drops_every_decoy() -> None:
    info = {"symbols": [
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
    ]}
    uni = universe_from_exchange_info(info)
    assert [s.symbol for s in uni] == ["BTCUSDT", "ETHUSDT"]
    btc = uni[0]
    assert (btc.tick_size, btc.step_size, btc.min_qty, btc.min_notional) == (0.1, 0.001, 0.001, 100)


def test_empty_exchange_info() -> None:
    assert universe_from_exchange_info({"symbols": []}) == []
    assert universe_from_exchange_info({}) == []
