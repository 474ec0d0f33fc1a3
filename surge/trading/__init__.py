"""Trading: signals into positions (paper by default, live through the order desk) and out again."""

from surge.trading.book import PositionBook
from surge.trading.outcomes import Outcome, TradeClosed, TradeOpened, TradeVoid
from surge.trading.paper import MAX_HOLD, STOP_LOSS, TAKE_PROFIT, PaperBroker, PaperDesk

__all__ = [
    "MAX_HOLD",
    "STOP_LOSS",
    "TAKE_PROFIT",
    "Outcome",
    "PaperBroker",
    "PaperDesk",
    "PositionBook",
    "TradeClosed",
    "TradeOpened",
    "TradeVoid",
]
