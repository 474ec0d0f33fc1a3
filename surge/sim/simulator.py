"""The whole simulated exchange in one object: market model + REST server + WebSocket server.

Why one object: tests, benchmarks and ``surge sim`` / ``surge run --sim`` all need the same three
parts wired to the same market and started and stopped together, with ports from the OS and no
thread left behind.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from surge.sim.market import Market


class Simulator:
    """Market + REST + WebSocket servers on loopback; ``start()`` returns once both listen.

    ``port=0`` and ``ws_port=0`` take free ports from the OS; a fixed ``port`` N without ``ws_port``
    puts the WebSocket server on N + 1 (``surge sim --port N``). ``rest_url`` is
    ``http://HOST:PORT``; ``ws_url`` is ``ws://HOST:PORT/market``, the routed base Binance serves
    kline streams on (the bot appends ``/stream``); unrouted paths get replies but no kline unless
    ``require_market_route=False``. ``**ws_options`` go to :class:`surge.sim.ws.WsServer`
    (``push_mode="on_change"|"every_tick"``, ``require_market_route``, ``push_phases``, ...); a market
    with chosen thin symbols is passed as ``market=Market(..., thin=[...], thin_gap_s=...)``.
    """

    def __init__(
        self,
        n_symbols: int = 531,
        seed: int = 1,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ws_port: int = 0,
        latency_ms: float = 0.0,
        surge_interval_s: float | None = 20.0,
        ping_interval_s: float = 180.0,
        connection_lifetime_s: float = 86400.0,
        market: Market | None = None,
        **ws_options: Any,
    ) -> None:
        from surge.sim.rest import RestServer  # imported here so the package imports without the servers
        from surge.sim.ws import WsServer

        if port and not ws_port:
            ws_port = port + 1  # `surge sim --port N`: REST on N, WebSocket on N + 1
        self.market = market or Market(n_symbols, seed, surge_interval_s=surge_interval_s)
        self.rest = RestServer(self.market, host=host, port=port, latency_ms=latency_ms)
        self.ws = WsServer(
            self.market,
            host=host,
            port=ws_port,
            ping_interval_s=ping_interval_s,
            connection_lifetime_s=connection_lifetime_s,
            **ws_options,
        )
        self.rest.ws_controls = self.ws  # /_sim/ws/... over HTTP reaches the WebSocket server's controls
        self.host = host
        self._started = False

    @property
    def rest_url(self) -> str:
        return self.rest.url

    @property
    def ws_url(self) -> str:
        return self.ws.url

    def start(self) -> Simulator:
        """Start both servers (REST first); on failure stop whatever started and re-raise."""
        if self._started:
            return self
        self.rest.start()
        try:
            self.ws.start()
        except BaseException:
            self.rest.stop()
            raise
        self._started = True
        return self

    def stop(self) -> None:
        """Stop both servers and join their threads; safe to call twice."""
        try:
            self.ws.stop()
        finally:
            self.rest.stop()
            self._started = False

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """Observations of both servers and the market, one dict."""
        return {
            "rest": self.rest.stats(),
            "ws": self.ws.stats(),
            "market": self.market.stats(),
            "archive": self.rest.archive.stats(),
        }
