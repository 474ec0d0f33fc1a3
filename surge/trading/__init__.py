"""Trading: turning signals into positions (paper by default) and closing them."""

from surge.trading.book import PositionBook
from surge.trading.paper import MAX_HOLD, STOP_LOSS, TAKE_PROFIT, PaperBroker

__all__ = ["MAX_HOLD", "STOP_LOSS", "TAKE_PROFIT", "PaperBroker", "PositionBook"]
