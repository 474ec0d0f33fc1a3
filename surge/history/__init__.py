"""Stored 1m history: the columnar candle store and its download from Binance's public data archive.

``store`` holds the candles (one Arrow file per symbol and month); ``archive`` fills it from
``SURGE_DATA_URL`` (and REST for the days the archive has not published yet); ``command`` is the
``surge history`` click group. numpy and pyarrow (the ``history`` extra) are imported by ``store`` and
``archive`` only: this package's top level stays importable without them, so ``surge run`` never
needs them.
"""

from __future__ import annotations

from surge.errors import EXIT_USAGE, SurgeError

INSTALL_HINT = "needs numpy and pyarrow: pip install 'surge[history]'"


class HistoryExtraMissing(SurgeError):
    """numpy or pyarrow is not installed: a usage error naming the extra to install (exit 2)."""

    exit_code = EXIT_USAGE


def require_history_extra(what: str) -> None:
    """Raise :class:`HistoryExtraMissing` (``"<what> needs numpy and pyarrow: pip install ..."``) unless
    both import."""
    try:
        import numpy  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        raise HistoryExtraMissing(f"{what} {INSTALL_HINT}") from None


__all__ = ["INSTALL_HINT", "HistoryExtraMissing", "require_history_extra"]
