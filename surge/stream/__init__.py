"""Multiplexed Binance kline streams: few connections, bounded threads, live changes, self-healing.

``MultiplexedKlineManager`` is the public entry point; ``StreamGap`` is what it reports after an
outage so the owner can backfill closed candles over REST.
"""

from surge.stream.multiplex import DEFAULT_WS_URL, MultiplexedKlineManager, StreamGap
from surge.stream.tuning import StreamTuning

__all__ = ["DEFAULT_WS_URL", "MultiplexedKlineManager", "StreamGap", "StreamTuning"]
