"""Binance USD-M public endpoints over the one :class:`~surge.exchange.transport.Transport`.

Every public call is idempotent: the transport retries what leaves its answer open and raises
:class:`ExchangeError` (a definite "no", with the exchange's code) or :class:`ExchangeUnavailable`.
Decoding is lean where a body is large (exchangeInfo: only the fields surge reads).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from surge.exchange.codes import ErrorCode
from surge.exchange.ratelimit import RateLimitBanned, endpoint_weight
from surge.exchange.transport import (
    ExchangeError,
    ExchangeUnavailable,
    Request,
    RestError,
    StatusUnknown,
    Transport,
    describe_transport_error,
    error_fields,
)
from surge.exchange.wire import WireError, kline_from_rest_row, loads, loads_exchange_info
from surge.models import Kline, SymbolInfo

log = logging.getLogger(__name__)

__all__ = [
    "BinanceRest",
    "ExchangeError",
    "ExchangeUnavailable",
    "RateLimitBanned",
    "RestError",
    "StatusUnknown",
    "describe_transport_error",
    "error_fields",
    "symbol_infos",
]

#: Error code for a request the exchange rejected as too many (used when 429 retries run out).
TOO_MANY_REQUESTS = ErrorCode.TOO_MANY_REQUESTS

#: Binance USD-M's largest klines ``limit``; more is refused with -1130, not clamped.
MAX_KLINES_LIMIT = 1500

#: The last price of every symbol. ``/fapi/v1/ticker/price`` is deprecated; v2 has the same shape and
#: weight (1 with a symbol, 2 without).
TICKER_PRICE_PATH = "/fapi/v2/ticker/price"

#: Endpoints whose ``X-MBX-USED-WEIGHT-1M`` Binance documents as inaccurate ("please ignore").
UNRELIABLE_WEIGHT_PATHS = frozenset({TICKER_PRICE_PATH})


class BinanceRest(Transport):
    """Public (unsigned) endpoints of ``/fapi`` over one pooled session (see :class:`Transport`).

    Thread-safe: the filter's workers share one instance.
    """

    def __enter__(self) -> BinanceRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        weight: int | None = None,
        decode: Callable[[bytes], Any] = loads,
    ) -> Any:
        """GET ``path`` and return the decoded JSON body.

        Raises ExchangeError (an error answer), ExchangeUnavailable (transport/5xx/bad body after all
        attempts) or RateLimitBanned (418 beyond the limiter's maximum).
        """
        query = dict(params or {})
        w = endpoint_weight(path, query) if weight is None else weight
        return self.send(
            Request(
                "GET",
                path,
                query,
                weight=w,
                decode=decode,
                # Binance: the used weight these report is not accurate, ignore it
                used_weight=path not in UNRELIABLE_WEIGHT_PATHS,
            )
        )

    # ------------------------------------------------------------------ endpoints

    def ping(self) -> None:
        self.get("/fapi/v1/ping")

    def server_time(self) -> int:
        """The exchange's clock in ms (the 4h window and "is this candle closed" are its time)."""
        data = self.get("/fapi/v1/time")
        try:
            return int(data["serverTime"])
        except (KeyError, TypeError, ValueError):
            raise ExchangeUnavailable(f"{self.base_url}/fapi/v1/time: unexpected body {data!r:.80}") from None

    def exchange_info(self, *, filters: bool = True) -> dict[str, Any]:
        """exchangeInfo; also teaches the limiter the exchange's REQUEST_WEIGHT limit.

        ``filters=False``: without each symbol's trading rules (enough for the universe).
        """
        decode = loads_exchange_info if filters else partial(loads_exchange_info, filters=False)
        data = self.get("/fapi/v1/exchangeInfo", decode=decode)
        if not isinstance(data, dict) or not isinstance(data.get("symbols"), list):
            raise ExchangeUnavailable(f"{self.base_url}/fapi/v1/exchangeInfo: body has no 'symbols' list")
        self.limiter.configure_from_exchange_info(data)
        self.order_limiter.configure_from_exchange_info(data)
        return data

    def klines(
        self,
        symbol: str,
        interval: str,
        *,
        limit: int,
        start_time: int | None = None,
        end_time: int | None = None,
        now_ms: int | None = None,
    ) -> list[Kline]:
        """Klines oldest first; ``closed`` is decided against ``now_ms`` (exchange time) when given.

        ``limit`` must be 1..1500: the exchange refuses more (-1130) rather than clamping, so asking
        for more is a bug of the caller, raised here before any weight is spent.
        """
        if not 1 <= limit <= MAX_KLINES_LIMIT:
            raise ValueError(f"klines limit must be between 1 and {MAX_KLINES_LIMIT}, got {limit}")
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start_time is not None:
            params["startTime"] = start_time
        if end_time is not None:
            params["endTime"] = end_time
        rows = self.get("/fapi/v1/klines", params)
        if not isinstance(rows, list):
            raise ExchangeUnavailable(f"klines {symbol}: body is not a list")
        try:
            return [kline_from_rest_row(symbol, interval, row, now_ms) for row in rows]
        except WireError as exc:
            raise ExchangeUnavailable(f"klines {symbol}: {exc}") from None

    def ticker_prices(self) -> dict[str, float]:
        """Every symbol's last price in one request (weight 2): the bulk half of a warm scan."""
        return self.ticker_price_snapshot()[0]

    def ticker_price_snapshot(self) -> tuple[dict[str, float], int]:
        """(last price per symbol, newest ``time`` stamp in the answer or 0) in one request.

        The stamp tells a warm scan whether a 4h boundary passed since it read the server's clock.
        """
        data = self.get(TICKER_PRICE_PATH)
        if not isinstance(data, list):
            raise ExchangeUnavailable(f"{self.base_url}{TICKER_PRICE_PATH}: body is not a list")
        prices: dict[str, float] = {}
        newest = 0
        for item in data:
            try:
                prices[str(item["symbol"])] = float(item["price"])
            except (KeyError, TypeError, ValueError):
                continue  # one odd entry must not cost every other symbol its price
            stamp = item.get("time")
            if isinstance(stamp, int) and stamp > newest:
                newest = stamp
        return prices, newest


def symbol_infos(info: Mapping[str, Any]) -> list[SymbolInfo]:
    """exchangeInfo body -> every symbol as SymbolInfo (unfiltered; see surge.universe)."""
    out: list[SymbolInfo] = []
    for s in info.get("symbols") or ():
        if not isinstance(s, dict) or not isinstance(s.get("symbol"), str):
            continue
        filters = {f.get("filterType"): f for f in s.get("filters") or () if isinstance(f, dict)}
        out.append(
            SymbolInfo(
                symbol=s["symbol"],
                status=str(s.get("status", "")),
                contract_type=str(s.get("contractType", "")),
                quote_asset=str(s.get("quoteAsset", "")),
                base_asset=str(s.get("baseAsset", "")),
                tick_size=_float(filters.get("PRICE_FILTER", {}).get("tickSize")),
                step_size=_float(filters.get("LOT_SIZE", {}).get("stepSize")),
                min_qty=_float(filters.get("LOT_SIZE", {}).get("minQty")),
                min_notional=_float(filters.get("MIN_NOTIONAL", {}).get("notional")),
            )
        )
    return out


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
