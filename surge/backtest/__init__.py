"""The backtest: the live rule's decisions, the paper exits and the book's limits over stored history.

``signals`` finds the signals (vectorised, decided by the live rule's functions), ``engine`` adds the
exits and the portfolio (``run_backtest``), ``sweep`` runs grids of settings, ``report`` and ``plot``
present the trades, ``command`` is ``surge backtest``. Nothing here is imported by ``surge --help``:
numpy and pyarrow are the ``history`` extra.
"""
