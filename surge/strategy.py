"""The 1-minute surge rule and the per-symbol rolling state it needs.

The rule runs on the strategy loop's thread for every 1m update, so it does no I/O and keeps its
per-update work small: the volume baseline of a candle is computed once, when its first update
arrives, and reused for the ~240 updates that follow.

The baseline is the mean volume of the ``volume_lookback`` closed candles *immediately* before the
current one. If any of them is unknown (a stream gap, a fresh start) the rule says so through
:meth:`SurgeRule.missing` instead of averaging over a hole: a mean over 15 of 20 candles would make
surges look bigger than they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from surge.config import SurgeSettings
from surge.models import INTERVAL_MS, Kline, Signal

MINUTE_MS = INTERVAL_MS["1m"]


@dataclass(slots=True)
class _SymbolState:
    volumes: dict[int, float]  # open_time -> volume of closed 1m candles
    baseline_for: int = -1  # open_time of the candle whose baseline is cached
    baseline: float | None = None  # mean volume, None while history is incomplete
    last_signal_ms: int | None = None


class SurgeRule:
    """Decides, update by update, whether a symbol's current 1m candle is a surge."""

    def __init__(self, settings: SurgeSettings) -> None:
        self.settings = settings
        self._state: dict[str, _SymbolState] = {}
        self._cooldown_ms = int(settings.cooldown_s * 1000)

    # ----------------------------------------------------------------- state

    def _get(self, symbol: str) -> _SymbolState:
        state = self._state.get(symbol)
        if state is None:
            state = self._state[symbol] = _SymbolState(volumes={})
        return state

    def seed(self, symbol: str, closed: Iterable[Kline]) -> None:
        """Add closed 1m candles (REST backfill or replayed stream); duplicates are harmless."""
        state = self._get(symbol)
        for k in closed:
            if k.closed and k.interval == "1m":
                state.volumes[k.open_time] = k.volume
        self._trim(state)
        state.baseline_for = -1  # a hole may just have been filled

    def restore_cooldowns(self, last_signal_ms: Mapping[str, int]) -> None:
        """After a restart, the cooldown continues from the last stored signal of each symbol."""
        for symbol, when in last_signal_ms.items():
            self._get(symbol).last_signal_ms = when

    def forget(self, symbol: str) -> None:
        """Drop a symbol that left the universe or the 4h filter (its history will be backfilled)."""
        self._state.pop(symbol, None)

    def _trim(self, state: _SymbolState) -> None:
        keep = self.settings.volume_lookback + 2
        if len(state.volumes) > keep:
            for open_time in sorted(state.volumes)[:-keep]:
                del state.volumes[open_time]

    def missing(self, symbol: str, open_time: int) -> list[int]:
        """Open times of the baseline candles before ``open_time`` that are not known yet."""
        volumes = self._get(symbol).volumes
        lookback = self.settings.volume_lookback
        wanted = (open_time - i * MINUTE_MS for i in range(lookback, 0, -1))
        return [t for t in wanted if t not in volumes]

    def _baseline(self, symbol: str, state: _SymbolState, open_time: int) -> float | None:
        if state.baseline_for != open_time:
            state.baseline_for = open_time
            if self.missing(symbol, open_time):
                state.baseline = None
            else:
                lookback = self.settings.volume_lookback
                total = sum(state.volumes[open_time - i * MINUTE_MS] for i in range(1, lookback + 1))
                state.baseline = total / lookback
        return state.baseline

    # ----------------------------------------------------------------- the rule

    def on_kline(self, k: Kline) -> Signal | None:
        """Feed one 1m update; returns a Signal when all three conditions hold outside the cooldown."""
        state = self._get(k.symbol)
        signal = None
        s = self.settings
        now = k.event_time or k.close_time
        if (
            k.open > 0
            and (k.close - k.open) / k.open * 100.0 >= s.min_change_pct
            and k.quote_volume >= s.min_quote_volume
        ):
            baseline = self._baseline(k.symbol, state, k.open_time)
            in_cooldown = state.last_signal_ms is not None and now - state.last_signal_ms < self._cooldown_ms
            if baseline and k.volume >= s.volume_multiple * baseline and not in_cooldown:
                state.last_signal_ms = now
                signal = Signal(
                    symbol=k.symbol,
                    time=now,
                    open_time=k.open_time,
                    change_pct=k.change_pct,
                    volume_multiple=k.volume / baseline,
                    quote_volume=k.quote_volume,
                    price=k.close,
                )
        if k.closed:
            state.volumes[k.open_time] = k.volume
            self._trim(state)
        return signal
