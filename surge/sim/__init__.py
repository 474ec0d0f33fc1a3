"""The simulated Binance USD-M futures exchange: market model, REST and WebSocket servers.

A leaf of the package: it imports only :mod:`surge.models` and :mod:`surge.exchange.wire`, never
the bot, so tests of the bot exercise it against something that behaves like Binance, not like
the bot's own idea of Binance.
"""

from surge.sim.market import Market
from surge.sim.simulator import Simulator

__all__ = ["Market", "Simulator"]
