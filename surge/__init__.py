"""surge: a surge bot for Binance USD-M perpetual futures."""

__version__ = "0.1.0.dev0"
