"""The 1-minute surge rule and the per-symbol rolling state it needs.

The rule runs on the strategy loop's thread for every 1m update, so it does no I/O and keeps its
per-update work small: the volume baseline of a candle is computed once, when its first update
arrives, and reused for the ~240 updates that follow.

The baseline is the mean volume of the ``volume_lookback`` closed candles *immediately* before the
current one. If any of them is unknown (a stream gap, a fresh start) the rule says so through
:meth:`SurgeRule.missing` instead of averaging over a hole: a mean over 15 of 20 candles would make
surges look bigger than they are.

A quiet minute is not a hole. Binance pushes a kline stream only when the candle changed, so a minute
without a trade is never pushed (REST has it: O=H=L=C=previous close, volume 0). While a stream stays
up, the rule follows it (:meth:`SurgeRule.observe`, or :meth:`SurgeRule.on_kline`) and takes every
minute it skipped as a zero-volume candle: no REST request, no gap. The owner breaks that continuity
with :meth:`SurgeRule.interrupt` whenever the stream may have missed something (a reported stream
gap, a new subscription): the next candle then starts a new run and the minutes before it stay
unknown until the REST backfill fills them, as after a fresh start. So a stream that has not
delivered since its subscription has no run yet: when its first candle closes, the minutes between
the subscription's backfill and that candle are fetched once; from then on its silence is free.

The skipped minutes count as quiet only if the candle before them ended with its final frame
(``x=true``). Binance pushes that frame for every candle that had a trade; updates before it are
250 ms snapshots, and a trade in a candle's last 250 ms is only in the final frame. So a candle whose
final frame never came is unknown, and so are the minutes after it: a lost frame on a connection
that stayed up means we cannot vouch for the silence either (rare: a REST backfill settles it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from surge.config import SurgeSettings
from surge.models import INTERVAL_MS, Kline, Signal

MINUTE_MS = INTERVAL_MS["1m"]


# ----------------------------------------------------------------- the decision, as pure functions
# One copy of the rule's arithmetic: :class:`SurgeRule` decides with these, and so does the backtest
# (``surge.backtest.signals``), whose vectorised pass only narrows the candles down to those worth asking.


def price_surges(s: SurgeSettings, open_price: float, close: float, quote_volume: float) -> bool:
    """The two conditions a candle decides on its own numbers: its move and its quote volume."""
    return (
        open_price > 0
        and (close - open_price) / open_price * 100.0 >= s.min_change_pct
        and quote_volume >= s.min_quote_volume
    )


def window_mean(volumes_newest_first: Iterable[float], lookback: int) -> float:
    """The volume baseline: summed newest first from zero, so every caller rounds alike (a float sum
    in another order can differ in its last bit, and a tie at the threshold would then be decided
    differently)."""
    return sum(volumes_newest_first) / lookback


def volume_surges(s: SurgeSettings, volume: float, baseline: float | None) -> bool:
    """The volume condition; no baseline (unknown history) or a zero one (a silent market) never surges."""
    if not baseline:
        return False
    return volume >= s.volume_multiple * baseline


def cooldown_ms(s: SurgeSettings) -> int:
    return int(s.cooldown_s * 1000)


def cooling_down(last_signal_ms: int | None, now_ms: int, cooldown: int) -> bool:
    """True while a symbol's previous signal is less than ``cooldown`` ms old."""
    return last_signal_ms is not None and now_ms - last_signal_ms < cooldown


class MinuteVolumes:
    """The volumes of a symbol's closed 1m candles in the newest ``size`` minutes, by open time: a ring
    of two fixed lists, written in place.

    Why not a dict trimmed to its newest keys: every symbol's history takes a candle a minute, and a
    trimmed dict must be rebuilt (deleting its oldest key fills its table with dead slots until it
    doubles). 531 new tables of ~1 KiB a minute, interleaved with the streams' buffers, fragment the
    C heap: hour-long soaks saw it grow ~0.3 MB in the first ten minutes and creep for forty more,
    free space malloc_trim could not give back. The ring allocates once per symbol.
    """

    __slots__ = ("_newest", "_times", "_values")

    def __init__(self, size: int) -> None:
        self._times: list[int | None] = [None] * size
        self._values: list[float] = [0.0] * size
        self._newest: int | None = None  # the newest open time ever put: the window ends there

    def put(self, open_time: int, volume: float, *, keep_known: bool = False) -> int | None:
        """Record a minute (``keep_known``: only if it is not known yet). Returns the newest open time
        that left the window on the way (the minute itself if it is older than the window), else None."""
        times, size = self._times, len(self._times)
        newest = self._newest
        if newest is not None and open_time <= newest - size * MINUTE_MS:
            return open_time
        evicted = None
        if newest is not None and open_time > newest:
            # the window moves on to end at open_time: a slot of a minute entering it holds an older one
            start = max(newest + MINUTE_MS, open_time - (size - 1) * MINUTE_MS)
            for minute in range(start, open_time + MINUTE_MS, MINUTE_MS):
                i = self._slot(minute)
                old = times[i]
                if old is not None and old != minute:
                    times[i] = None
                    evicted = old if evicted is None or old > evicted else evicted
        if newest is None or open_time > newest:
            self._newest = open_time
        i = self._slot(open_time)
        if times[i] is None:
            times[i] = open_time
        elif keep_known:
            return evicted
        self._values[i] = volume
        return evicted

    def _slot(self, open_time: int) -> int:
        return open_time // MINUTE_MS % len(self._times)

    def get(self, open_time: int, default: float = 0.0) -> float:
        i = self._slot(open_time)
        return self._values[i] if self._times[i] == open_time else default

    def __contains__(self, open_time: object) -> bool:
        return isinstance(open_time, int) and self._times[self._slot(open_time)] == open_time

    def __getitem__(self, open_time: int) -> float:
        i = self._slot(open_time)
        if self._times[i] != open_time:
            raise KeyError(open_time)
        return self._values[i]

    def __len__(self) -> int:
        return len(self._times) - self._times.count(None)

    def keys(self) -> list[int]:
        """The open times held, oldest first."""
        return sorted(t for t in self._times if t is not None)

    def __iter__(self) -> Iterator[int]:
        return iter(self.keys())


@dataclass(slots=True)
class _SymbolState:
    volumes: MinuteVolumes  # the closed 1m candles of the newest volume_lookback + 2 minutes
    baseline_for: int = -1  # open_time of the candle whose baseline is cached
    baseline: float | None = None  # mean volume, None while history is incomplete
    last_signal_ms: int | None = None
    # the stream's run since it was last interrupted: open time of the latest candle it delivered
    # (None: no run, the past is unknown) and whether that candle's final frame (x=true) came
    stream_open: int | None = None
    stream_closed: bool = False
    complete_for: int = -1  # open_time whose whole baseline was last found known (see ready_count)


class SurgeRule:
    """Decides, update by update, whether a symbol's current 1m candle is a surge."""

    def __init__(self, settings: SurgeSettings) -> None:
        self.settings = settings
        self._state: dict[str, _SymbolState] = {}
        self._cooldown_ms = cooldown_ms(settings)

    # ----------------------------------------------------------------- state

    def _get(self, symbol: str) -> _SymbolState:
        state = self._state.get(symbol)
        if state is None:
            state = self._state[symbol] = _SymbolState(MinuteVolumes(self.settings.volume_lookback + 2))
        return state

    def seed(self, symbol: str, closed: Iterable[Kline]) -> None:
        """Add closed 1m candles (REST backfill or replayed stream); duplicates are harmless."""
        state = self._get(symbol)
        for k in closed:
            if k.closed and k.interval == "1m":
                self._put(state, k.open_time, k.volume)
        state.baseline_for = -1  # a hole may just have been filled

    def restore_cooldowns(self, last_signal_ms: Mapping[str, int]) -> None:
        """After a restart, the cooldown continues from the last stored signal of each symbol."""
        for symbol, when in last_signal_ms.items():
            self._get(symbol).last_signal_ms = when

    def interrupt(self, symbol: str) -> None:
        """The symbol's 1m stream may have missed updates (a stream gap, a (re)subscription): minutes it
        did not deliver are unknown from here on until a candle of a new run and a backfill."""
        state = self._state.get(symbol)
        if state is not None:
            state.stream_open = None
            state.stream_closed = False
            state.complete_for = -1  # minutes it inferred as quiet may be unknown now

    def observe(self, k: Kline) -> None:
        """Follow a 1m stream update of a symbol the rule does not decide on (not passing the filter):
        its closed candles and its quiet minutes keep the history current should it pass later."""
        state = self._get(k.symbol)
        self._track(state, k)
        if k.closed:
            self._put(state, k.open_time, k.volume)

    def _track(self, state: _SymbolState, k: Kline) -> None:
        """Continuity of the stream: minutes it skipped since its last fully seen candle are quiet."""
        t = k.open_time
        last = state.stream_open
        if last is not None and t <= last:
            if t == last and k.closed:
                state.stream_closed = True
            return
        if last is not None and state.stream_closed and t > last + MINUTE_MS:
            first = max(last + MINUTE_MS, t - (self.settings.volume_lookback + 2) * MINUTE_MS)
            for quiet in range(first, t, MINUTE_MS):
                self._put(state, quiet, 0.0, keep_known=True)  # a REST answer, if one came, is the truth
            state.baseline_for = -1
        if state.complete_for > t:  # a later minute's baseline now holds this candle, unknown until it closes
            state.complete_for = -1
        state.stream_open = t
        state.stream_closed = k.closed

    def forget(self, symbol: str) -> None:
        """Drop a symbol that left the universe or the 4h filter (its history will be backfilled)."""
        self._state.pop(symbol, None)

    def _put(self, state: _SymbolState, open_time: int, volume: float, *, keep_known: bool = False) -> None:
        evicted = state.volumes.put(open_time, volume, keep_known=keep_known)
        if evicted is not None and evicted >= state.complete_for - self.settings.volume_lookback * MINUTE_MS:
            state.complete_for = -1  # it took a candle of the remembered baseline

    def missing(self, symbol: str, open_time: int) -> list[int]:
        """Open times of the baseline candles before ``open_time`` that are not known yet.

        Minutes after the last fully seen candle of an uninterrupted stream are known: quiet so far
        (they are recorded as such when the stream's next candle arrives).
        """
        state = self._get(symbol)
        volumes = state.volumes
        last = state.stream_open
        quiet_after = last if state.stream_closed and last is not None else open_time
        lookback = self.settings.volume_lookback
        wanted = (open_time - i * MINUTE_MS for i in range(lookback, 0, -1))
        unknown = [t for t in wanted if t not in volumes and t <= quiet_after]
        if not unknown:
            state.complete_for = open_time
        return unknown

    def ready_count(self, symbols: Iterable[str], open_time: int) -> int:
        """How many of ``symbols`` have the whole baseline of the candle opening at ``open_time``.

        Cheap enough for the loop's heartbeat (531 symbols): a baseline found complete stays complete
        for that minute (candles are only added; :meth:`interrupt` forgets it), and each symbol's
        final frame of the previous minute already asked :meth:`missing` on the hot path, so only
        the symbols still warming up pay for a full check. Whatever can make a known minute unknown
        again forgets the remembered one: :meth:`interrupt`, a newer candle opening before it, a trim."""
        n = 0
        states = self._state
        for symbol in symbols:
            state = states.get(symbol)
            if (state is not None and state.complete_for == open_time) or not self.missing(symbol, open_time):
                n += 1
        return n

    def _baseline(self, symbol: str, state: _SymbolState, open_time: int) -> float | None:
        if state.baseline_for != open_time:
            state.baseline_for = open_time
            if self.missing(symbol, open_time):
                state.baseline = None
            else:
                lookback = self.settings.volume_lookback
                volumes = state.volumes  # a minute not in it is a quiet one of the stream (see missing)
                window = (volumes.get(open_time - i * MINUTE_MS, 0.0) for i in range(1, lookback + 1))
                state.baseline = window_mean(window, lookback)
        return state.baseline

    # ----------------------------------------------------------------- the rule

    def on_kline(self, k: Kline) -> Signal | None:
        """Feed one 1m update; returns a Signal when all three conditions hold outside the cooldown."""
        state = self._get(k.symbol)
        self._track(state, k)
        signal = None
        s = self.settings
        now = k.event_time or k.close_time
        if price_surges(s, k.open, k.close, k.quote_volume):
            baseline = self._baseline(k.symbol, state, k.open_time)
            if volume_surges(s, k.volume, baseline) and not cooling_down(
                state.last_signal_ms, now, self._cooldown_ms
            ):
                assert baseline is not None  # volume_surges is False without one
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
            self._put(state, k.open_time, k.volume)
        return signal
