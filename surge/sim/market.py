"""The simulated market: symbols, price paths and candles, deterministic from a seed.

Why it is built this way:

* Everything is derived from one-minute candles, so every interval is *exactly* the aggregate of
  its minutes (the 4h candle is open of the first minute, close of the last, max high, min low,
  sums of volumes and trades), and the candle in progress is the aggregate of the minutes so far
  plus the current partial minute.
* Minutes are generated lazily per 4h window: a mean-reverting 4h "anchor" walk per symbol, and
  inside each window a seeded Brownian bridge between two anchors. A window costs well under a
  millisecond; it is cached (LRU, bounded) and its closed summary kept, so a 4h scan is cheap.
* Inside a minute the price follows straight lines between a few "knots" (open, high, low, close at
  seeded offsets). The partial minute at any millisecond is an interpolation, so its high and low
  never exceed what the closed minute finally reports: streams and REST never contradict.
* Overrides (injected surges, ``arrange_4h``) are stored as modifiers on top of the seeded base
  path (log-price ramps and steps, volume lumps, per-window volume scales) and invalidate only the
  cache entries of the symbol they touch.
* Values are quantised to the symbol's tick and step sizes in the model itself, so sums of
  quantised minute volumes format to the same strings as the aggregate candle.
* Thin symbols (``thin_symbols()``): Binance lists many perpetuals that trade only every few seconds
  to every couple of minutes, so some of their 1m candles have no trade at all and their kline streams
  stay silent (Binance pushes a kline "every 250 ms *if existing*": only when the candle changed). A
  deterministic-by-seed ``thin_share`` of the symbols outside the ``THIN_SPARED`` most liquid ones is
  thin (BTC, ETH, SOL... never are), each with a seeded mean gap between trades in ``THIN_GAP_S``;
  ``thin=`` makes chosen symbols thin too and ``thin_gap_s`` fixes every thin symbol's gap. A thin
  symbol's minute is a Poisson process of discrete trades (seeded per minute; the first minute of each
  4h window always has one, so windows stay independent of each other): its candle changes only at a
  trade, and a minute without one is what Binance's REST klines return for it, open = high = low =
  close = the previous close, volume 0, trades 0 (continuous klines). Before the first trade of a
  minute the candle in progress is that same flat, empty candle (REST shows it; the WebSocket server
  does not push a candle with no trade). The WS view and the REST view come from the same minute
  record, so they agree at every millisecond.

The module imports only :mod:`surge.models`: the simulator is a leaf and never imports the bot.
"""

from __future__ import annotations

import math
import random
import threading
import time
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import accumulate

from surge.models import INTERVAL_MS, INTERVALS, Kline

MINUTE_MS = 60_000
WINDOW_MINUTES = 240
WINDOW_MS = WINDOW_MINUTES * MINUTE_MS
DAY_MS = 86_400_000
WEEK_OFFSET_MS = 4 * DAY_MS  # Binance weekly candles open on Monday 00:00 UTC; 1970-01-01 was a Thursday
HISTORY_DAYS = 30
PERPETUAL_DELIVERY_MS = 4133404800000  # what Binance reports as deliveryDate of a perpetual (2100-12-25)
_INTERVAL_SET = frozenset(INTERVALS)
_TABLE_BITS = 16
_TABLE_MASK = (1 << _TABLE_BITS) - 1
_KNOT_LO = (6_000, 27_000)  # offset range (ms) of the first inner knot of a minute
_KNOT_HI = (33_000, 54_000)  # offset range of the second inner knot
QUOTE_SCALE = 10_000  # quote volumes are kept as integer 1e-4 USDT
THIN_SHARE = 0.2  # chance that a symbol outside the most liquid THIN_SPARED is thin (~19% of 531)
THIN_SPARED = 40  # the most liquid symbols (BTC, ETH, SOL, ...) are never thin unless asked
THIN_GAP_S = (4.0, 150.0)  # range (log-uniform) of a thin symbol's mean gap between trades, seconds
_MAX_THIN_TRADES = 64  # per minute; a thin symbol with a short gap still makes few, discrete trades

# Real-looking names, roughly in descending liquidity order, with a plausible price level.
_REAL_BASES: tuple[tuple[str, float], ...] = (
    ("BTC", 95_000.0),
    ("ETH", 3_400.0),
    ("SOL", 190.0),
    ("XRP", 2.3),
    ("DOGE", 0.21),
    ("BNB", 880.0),
    ("1000PEPE", 0.011),
    ("SUI", 3.4),
    ("ADA", 0.72),
    ("LINK", 18.5),
    ("AVAX", 24.0),
    ("WIF", 1.1),
    ("TRX", 0.29),
    ("LTC", 98.0),
    ("ENA", 0.55),
    ("BCH", 480.0),
    ("HYPE", 28.0),
    ("TRUMP", 9.5),
    ("WLD", 1.4),
    ("DOT", 4.2),
    ("NEAR", 2.9),
    ("APT", 5.8),
    ("ARB", 0.41),
    ("OP", 0.72),
    ("TON", 3.1),
    ("1000SHIB", 0.0125),
    ("FIL", 2.7),
    ("ETC", 19.0),
    ("UNI", 8.9),
    ("AAVE", 260.0),
    ("INJ", 14.0),
    ("TIA", 2.6),
    ("SEI", 0.28),
    ("ONDO", 0.88),
    ("FET", 0.62),
    ("RENDER", 3.9),
    ("TAO", 380.0),
    ("1000BONK", 0.019),
    ("ORDI", 8.1),
    ("JUP", 0.52),
    ("PENDLE", 4.1),
    ("LDO", 1.05),
    ("CRV", 0.68),
    ("ATOM", 4.6),
    ("XLM", 0.31),
    ("HBAR", 0.19),
    ("ICP", 5.2),
    ("STX", 0.71),
    ("IMX", 0.55),
    ("RUNE", 1.35),
    ("KAS", 0.082),
    ("AR", 6.9),
    ("VET", 0.024),
    ("ALGO", 0.21),
    ("1000FLOKI", 0.091),
    ("GALA", 0.016),
    ("SAND", 0.27),
    ("MANA", 0.29),
    ("AXS", 2.4),
    ("APE", 0.58),
    ("DYDX", 0.61),
    ("GMX", 14.2),
    ("SNX", 0.72),
    ("COMP", 46.0),
    ("EGLD", 14.6),
    ("PYTH", 0.13),
    ("JTO", 1.9),
    ("STRK", 0.15),
    ("ZK", 0.061),
    ("EIGEN", 1.2),
    ("ETHFI", 1.05),
    ("W", 0.081),
    ("TNSR", 0.19),
    ("BOME", 0.0019),
    ("POPCAT", 0.31),
    ("NEIRO", 0.00041),
    ("GOAT", 0.11),
    ("PNUT", 0.21),
    ("VIRTUAL", 1.6),
    ("MOVE", 0.13),
    ("PENGU", 0.021),
    ("KAITO", 1.3),
    ("BERA", 2.6),
    ("IP", 5.4),
    ("LAYER", 0.61),
    ("S", 0.47),
    ("ZEC", 420.0),
    ("XMR", 330.0),
    ("NEO", 5.9),
    ("QTUM", 2.3),
    ("ZIL", 0.0121),
    ("IOTA", 0.17),
    ("ONT", 0.13),
    ("KAVA", 0.36),
    ("CHZ", 0.038),
    ("ENJ", 0.067),
    ("1INCH", 0.23),
    ("BAT", 0.16),
    ("ZRX", 0.22),
    ("YFI", 5_200.0),
    ("SUSHI", 0.66),
    ("KSM", 14.9),
    ("BLUR", 0.071),
    ("CFX", 0.13),
    ("MANTA", 0.19),
    ("ALT", 0.026),
    ("MEW", 0.0031),
    ("1000SATS", 0.000041),
    ("NOT", 0.0017),
    ("ACT", 0.046),
    ("USUAL", 0.061),
    ("BIO", 0.081),
    ("ME", 0.71),
    ("1000RATS", 0.041),
    ("MASK", 1.1),
    ("ROSE", 0.021),
    ("CELO", 0.31),
    ("ANKR", 0.014),
    ("GRT", 0.081),
)
_SYLLABLES: tuple[str, ...] = (
    "ZA",
    "KO",
    "RI",
    "NE",
    "VA",
    "LU",
    "MI",
    "TO",
    "XE",
    "QU",
    "DRA",
    "FLO",
    "GRI",
    "PLA",
    "STO",
    "BRO",
    "CY",
    "NO",
    "VEX",
    "ZOR",
    "KAI",
    "LYN",
    "MOR",
    "SOL",
    "TRI",
    "OX",
    "AR",
    "EL",
    "UM",
    "IN",
    "ON",
    "AX",
)
_SUFFIXES: tuple[str, ...] = ("", "", "", "", "", "X", "AI", "FI", "IO", "NET", "DAO", "BIT", "COIN", "PAD")


@dataclass(frozen=True, slots=True)
class _Spec:
    """Static facts about one symbol, fixed at construction from the seed."""

    symbol: str
    base: str
    quote: str
    status: str
    contract_type: str
    price: float  # nominal price level the anchor walk reverts to
    pd: int  # price decimals (tickSize = 10**-pd)
    qd: int  # quantity decimals (stepSize = 10**-qd)
    p_scale: int  # 10**pd: prices are kept as integer ticks
    q_scale: int  # 10**qd: volumes are kept as integer steps
    minute_quote: float  # mean quote volume per minute, USDT
    sigma: float  # log-volatility per 4h window
    trade_size: float  # mean quote volume per trade
    min_notional: float
    listing_ms: int  # first millisecond with klines (aligned to a 4h window)
    onboard_ms: int
    delivery_ms: int
    key: int  # 32-bit per-symbol seed
    tradable: bool
    trade_gap_ms: int = 0  # 0: liquid (trades all the time); else a thin symbol's mean gap between trades


@dataclass(slots=True)
class _Window:
    """One 4h window of minute candles for one symbol (final values, modifiers applied)."""

    o: array  # integer ticks
    h: array
    l: array  # noqa: E741 - candle field names
    c: array
    v: array
    q: array
    n: array
    base: tuple[array, array, array, array] | None  # unmodified o, h, l, c when modifiers changed prices


@dataclass(slots=True)
class _MinuteRecord:
    """What the partial minute is interpolated from: knots (offset_ms, price) and base volumes."""

    minute: int
    knots: list[tuple[int, int]]  # (offset ms, price ticks)
    v: int  # volume steps of the whole minute without lumps
    q: int  # quote units (1e-4 USDT)
    n: int
    lumps: list[tuple[int, int, int, int]]  # (offset ms, volume steps, quote units, trades)
    # thin symbols: the minute's trades (offset ms, price ticks, volume steps, quote units, trades),
    # lumps included, and the close before the first of them; None for liquid symbols
    trades: list[tuple[int, int, int, int, int]] | None = None
    prev_close: int = 0


@dataclass(slots=True)
class _State:
    """Mutable per-symbol state: anchors, modifiers and caches."""

    spec: _Spec
    anchors: list[float]
    anchor_rng: random.Random
    # price modifiers (t_from, t_to, log delta), a step when t_from == t_to
    ramps: list[tuple[int, int, float]] = field(default_factory=list)
    # volume lumps (t, volume steps, quote units, trades)
    lumps: list[tuple[int, int, int, int]] = field(default_factory=list)
    vol_scale: dict[int, float] = field(default_factory=dict)  # window index -> volume factor
    windows: dict[int, _Window] = field(default_factory=dict)
    summaries: dict[int, tuple] = field(default_factory=dict)
    minute_rec: _MinuteRecord | None = None
    # interval -> (candle open, current minute, aggregate of the closed minutes of that candle)
    agg_cache: dict[str, tuple[int, int, tuple | None]] = field(default_factory=dict)
    last_surge_ms: int = -(10**15)

    @property
    def k0(self) -> int:
        return self.spec.listing_ms // WINDOW_MS


# --------------------------------------------------------------------------- interval arithmetic


def check_interval(interval: str) -> None:
    """Raise ValueError for anything Binance would answer with -1120."""
    if interval not in _INTERVAL_SET:
        raise ValueError(f"invalid interval {interval!r}")


def interval_open(interval: str, t_ms: int) -> int:
    """Open time of the ``interval`` candle that contains ``t_ms`` (Binance alignment, UTC)."""
    if interval == "1M":
        d = datetime.fromtimestamp(t_ms / 1000, UTC)
        return int(datetime(d.year, d.month, 1, tzinfo=UTC).timestamp() * 1000)
    length = INTERVAL_MS[interval]
    if interval == "1w":
        return (t_ms - WEEK_OFFSET_MS) // length * length + WEEK_OFFSET_MS
    return t_ms // length * length


def interval_next(interval: str, open_ms: int) -> int:
    """Open time of the candle after the one opening at ``open_ms`` (= its close time + 1)."""
    if interval == "1M":
        d = datetime.fromtimestamp(open_ms / 1000, UTC)
        y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return int(datetime(y, m, 1, tzinfo=UTC).timestamp() * 1000)
    return open_ms + INTERVAL_MS[interval]


def interval_prev(interval: str, open_ms: int) -> int:
    """Open time of the candle before the one opening at ``open_ms``."""
    if interval == "1M":
        return interval_open("1M", open_ms - 1)
    return open_ms - INTERVAL_MS[interval]


# --------------------------------------------------------------------------- helpers


def _mix(a: int, b: int) -> int:
    """A cheap 32-bit integer hash (xorshift-multiply), deterministic across processes."""
    x = (a * 0x9E3779B1 + b * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
    x ^= x >> 12
    x = (x * 0x297A2D39) & 0xFFFFFFFF
    x ^= x >> 15
    return x


def _price_decimals(price: float) -> int:
    """Tick size about 1e-4..1e-5 of the price, like Binance (BTC 0.1, ETH 0.01, PEPE 1e-7)."""
    return max(0, min(8, 5 - math.floor(math.log10(price))))


def _qty_decimals(price: float) -> int:
    """Step size so that one step is worth a few cents to a few dollars (BTC 0.001, cheap coins 1)."""
    return max(0, min(3, math.floor(math.log10(price)) + 1))


def _dec_str(decimals: int) -> str:
    """``3 -> "0.001"``, ``0 -> "1"``: Binance's string form of a tick or step size."""
    return "1" if decimals == 0 else f"{10.0**-decimals:.{decimals}f}"


def _interp(knots: list[tuple[int, int]], off: int) -> float:
    """Price at ``off`` ms into the minute: on the line between the surrounding knots (last wins ties)."""
    prev_off, prev_p = knots[0]
    for k_off, k_p in knots[1:]:
        if k_off > off:
            if k_off == prev_off:
                return k_p
            return prev_p + (k_p - prev_p) * (off - prev_off) / (k_off - prev_off)
        prev_off, prev_p = k_off, k_p
    return prev_p


def _combine(a: tuple | None, b: tuple) -> tuple:
    """Aggregate two consecutive candle parts (o, h, l, c, v, q, n)."""
    if a is None:
        return b
    return (a[0], max(a[1], b[1]), min(a[2], b[2]), b[3], a[4] + b[4], a[5] + b[5], a[6] + b[6])


def _thin_offsets(key: int, minute: int, gap_ms: int, forced: bool) -> list[int]:
    """Offsets (ms) of a thin symbol's trades in ``minute``: a seeded Poisson process of mean gap
    ``gap_ms``; ``forced`` guarantees at least one (the first minute of every 4h window)."""
    salt = key ^ 0x5BD1E995
    offs: list[int] = []
    t = 0.0
    for i in range(_MAX_THIN_TRADES):
        u = (_mix(salt, minute * 97 + i) + 1) / 4294967297.0
        t += -math.log(u) * gap_ms
        if t >= MINUTE_MS:
            break
        offs.append(int(t))
    if not offs and forced:
        offs.append(_mix(salt, minute * 97 + 96) % MINUTE_MS)
    return offs


def _last_friday(year: int, month: int) -> datetime:
    d = datetime(year + month // 12, month % 12 + 1, 1, 8, tzinfo=UTC) - timedelta(days=1)
    return d - timedelta(days=(d.weekday() - 4) % 7)


# --------------------------------------------------------------------------- the market


class Market:
    """A deterministic simulated Binance USD-M market (see the module docstring for the model).

    Thread-safe: the REST handler threads and the WebSocket server read it concurrently; cache
    fills and overrides happen under one re-entrant lock, cache hits are lock-free dict reads.

    ``clock`` returns seconds (``time.time`` by default; tests pass a fixed or fast clock).
    ``surge_interval_s``: a periodic surge every that many seconds of market time, applied lazily
    when time is looked at (no thread). ``window_cache`` bounds the 4h windows of minutes kept
    (about 14 KB each: ~25 MB at the default); closed-window summaries are kept regardless.
    ``thin_share`` (default ``THIN_SHARE``; 0: no seeded thin symbol), ``thin`` (symbols made thin as
    well) and ``thin_gap_s`` (every thin symbol's mean seconds between trades, else seeded in
    ``THIN_GAP_S``) shape the thin symbols; :meth:`thin_symbols` and :meth:`trade_gap_s` report them.
    """

    def __init__(
        self,
        n_symbols: int = 531,
        seed: int = 1,
        *,
        surge_interval_s: float | None = 20.0,
        clock: Callable[[], float] = time.time,
        window_cache: int = 1600,
        thin_share: float = THIN_SHARE,
        thin: Iterable[str] = (),
        thin_gap_s: float | None = None,
    ) -> None:
        if n_symbols < 1:
            raise ValueError("n_symbols must be at least 1")
        self.seed = seed
        self._clock = clock
        self._frozen: int | None = None
        self._lock = threading.RLock()
        self._window_cache = max(8, window_cache)
        self._lru: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.start_ms = int(clock() * 1000)
        self.history_start_ms = self.start_ms // DAY_MS * DAY_MS - HISTORY_DAYS * DAY_MS
        table_rng = random.Random(f"surge-sim-normals:{seed}")
        self._normals = array("d", (table_rng.gauss(0.0, 1.0) for _ in range(1 << _TABLE_BITS)))
        # lognormal volume noise with mean 1, indexed like the normals
        self._volume_noise = array("d", (math.exp(0.45 * z - 0.10125) for z in self._normals))
        self._states: dict[str, _State] = {}
        specs = self._thin_out(self._make_specs(n_symbols), thin_share, set(thin), thin_gap_s)
        for spec in specs:
            rng = random.Random(_mix(spec.key, seed))
            first = spec.price * math.exp(spec.sigma * 2.0 * rng.gauss(0.0, 1.0))
            self._states[spec.symbol] = _State(spec=spec, anchors=[first], anchor_rng=rng)
        self._tradable = sorted(s.symbol for s in specs if s.tradable)
        order = list(specs)
        random.Random(f"surge-sim-order:{seed}").shuffle(order)
        self._exchange_symbols = [self._symbol_entry(s) for s in order]
        # Liquid symbols are the candidates for periodic surges: a demo must see them pass the 4h filter.
        # (thin symbols never: a surge needs a busy minute)
        by_liquidity = sorted(
            (s for s in specs if s.tradable and not s.trade_gap_ms), key=lambda s: -s.minute_quote
        )
        self._surge_candidates = [s.symbol for s in by_liquidity if s.minute_quote * WINDOW_MINUTES >= 12e6]
        if not self._surge_candidates:
            self._surge_candidates = [s.symbol for s in by_liquidity[:10]]
        self._surge_interval_ms = None if not surge_interval_s else max(1, int(surge_interval_s * 1000))
        self._surge_index = 1
        self._next_surge_ms = self.start_ms + self._surge_interval_ms if self._surge_interval_ms else 1 << 62
        #: (time ms, symbol) of every surge applied, injected or periodic: for tests and demos
        self.surges: list[tuple[int, str]] = []

    # ------------------------------------------------------------------ clock

    def now_ms(self) -> int:
        """Simulated time in ms: the wall clock (or the injected clock), unless frozen."""
        frozen = self._frozen
        return frozen if frozen is not None else int(self._clock() * 1000)

    def freeze(self, at_ms: int | None = None) -> None:
        """Stop the clock at ``at_ms`` (default: now) so tests can assert exact candles."""
        self._frozen = int(self._clock() * 1000) if at_ms is None else int(at_ms)

    def unfreeze(self) -> None:
        """Resume the wall clock (time does not 'continue' from the frozen point: it jumps to now)."""
        self._frozen = None

    @property
    def frozen(self) -> bool:
        return self._frozen is not None

    # ------------------------------------------------------------------ symbols

    def tradable_symbols(self) -> list[str]:
        """The TRADING USDT PERPETUAL symbols (what the bot's universe filter should keep), sorted."""
        return list(self._tradable)

    def exchange_symbols(self) -> list[dict]:
        """exchangeInfo ``symbols`` entries, decoys included, in Binance's shape (do not mutate)."""
        return list(self._exchange_symbols)

    def thin_symbols(self) -> list[str]:
        """The tradable symbols that trade only now and then (see the module docstring), sorted."""
        return sorted(s for s in self._tradable if self._states[s].spec.trade_gap_ms)

    def trade_gap_s(self, symbol: str) -> float | None:
        """Mean seconds between two trades of a thin ``symbol``; None for a liquid one."""
        gap = self._state(symbol).spec.trade_gap_ms
        return gap / 1000.0 if gap else None

    def has_symbol(self, symbol: str) -> bool:
        """True for every symbol with klines: tradable ones and decoys."""
        return symbol in self._states

    def decimals(self, symbol: str) -> tuple[int, int]:
        """(price decimals, quantity decimals), matching tickSize and stepSize."""
        spec = self._state(symbol).spec
        return spec.pd, spec.qd

    def listing_ms(self, symbol: str) -> int:
        """First millisecond for which ``symbol`` has klines."""
        return self._state(symbol).spec.listing_ms

    # ------------------------------------------------------------------ candles

    def current_kline(self, symbol: str, interval: str, now_ms: int) -> Kline:
        """The candle in progress at ``now_ms`` (closed=False). Cheap: called thousands of times a second."""
        check_interval(interval)
        st = self._state(symbol)
        self._catch_up(now_ms)
        if now_ms < st.spec.listing_ms:
            raise ValueError(f"{symbol} has no candle before its listing")
        return self._current(st, interval, now_ms)

    def kline_at(self, symbol: str, interval: str, open_time: int, now_ms: int) -> Kline:
        """The candle opening at ``open_time`` as it is at ``now_ms`` (closed=True once it has ended)."""
        check_interval(interval)
        st = self._state(symbol)
        self._catch_up(now_ms)
        if interval_open(interval, open_time) != open_time:
            raise ValueError(f"{open_time} is not a {interval} open time")
        if open_time > now_ms:
            raise ValueError("that candle has not opened yet")
        if interval_next(interval, open_time) <= st.spec.listing_ms:
            raise ValueError(f"{symbol} was not listed yet")
        return self._kline_at(st, interval, open_time, now_ms)

    def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
        now_ms: int,
    ) -> list[Kline]:
        """Binance ``GET /fapi/v1/klines`` semantics, oldest first.

        With ``start_ms``: candles opening at or after it (and at or before ``end_ms``), the first
        ``limit``. Without: the last ``limit`` candles opening at or before ``end_ms`` (default now),
        the one in progress included. Nothing before the listing, nothing in the future.
        """
        check_interval(interval)
        if limit < 1:
            raise ValueError("limit must be positive")
        st = self._state(symbol)
        self._catch_up(now_ms)
        first = interval_open(interval, st.spec.listing_ms)
        current = interval_open(interval, now_ms)
        opens: list[int] = []
        if start_ms is not None:
            t = interval_open(interval, start_ms)
            if t < start_ms:
                t = interval_next(interval, t)
            t = max(t, first)
            while len(opens) < limit and t <= current and (end_ms is None or t <= end_ms):
                opens.append(t)
                t = interval_next(interval, t)
        else:
            t = current if end_ms is None else min(current, interval_open(interval, end_ms))
            while len(opens) < limit and t >= first:
                opens.append(t)
                t = interval_prev(interval, t)
            opens.reverse()
        return [self._kline_at(st, interval, t, now_ms) for t in opens]

    def rolling(self, symbol: str, start_ms: int, now_ms: int) -> Kline:
        """Everything from ``start_ms`` (minute-aligned, not before the listing) to ``now_ms`` as one
        candle (interval "1d", closed=False): what ``GET /fapi/v1/ticker/24hr`` reports."""
        st = self._state(symbol)
        self._catch_up(now_ms)
        first = max(start_ms, st.spec.listing_ms) // MINUTE_MS
        minute = now_ms // MINUTE_MS
        agg = self._agg_range(st, first, minute) if first < minute else None
        return self._make_kline(
            st, "1d", first * MINUTE_MS, now_ms, _combine(agg, self._partial(st, now_ms)), False
        )

    # ------------------------------------------------------------------ overrides

    def inject_surge(
        self,
        symbol: str,
        change_pct: float = 5.0,
        volume_multiple: float = 10.0,
        *,
        min_quote_volume: float = 75_000.0,
        at_ms: int | None = None,
    ) -> None:
        """From now (or ``at_ms``) the price level is ``change_pct`` higher, and this minute gains at
        once ``volume_multiple`` times the mean volume of the previous 20 minutes (at least
        ``min_quote_volume`` USDT of quote volume in the minute): the contract's default [surge]
        rule holds from that instant. The price stays at the new level afterwards. On a thin symbol
        whose minute has no trade yet, a one-step trade at the old level 1 ms before opens the minute
        (unless ``at_ms`` is the minute's first millisecond: then the surge's lump opens it).
        """
        st = self._state(symbol)
        with self._lock:
            t = self.now_ms() if at_ms is None else int(at_ms)
            self._catch_up(t)
            self._inject(st, t, change_pct, volume_multiple, min_quote_volume)

    def arrange_4h(
        self,
        passing: Iterable[str],
        *,
        min_change_pct: float = -5.0,
        max_change_pct: float = 10.0,
        min_quote_volume: float = 5e6,
    ) -> None:
        """Make exactly ``passing`` (among the tradable symbols) satisfy the contract's 4h rule now.

        The rule: min <= change of the current 4h candle <= max AND quote volume of the latest closed
        4h candle >= min_quote_volume. Passing symbols get a change well inside the range and enough
        volume; every other tradable symbol fails by change, by volume or both (seeded mix), with a
        margin so a few seconds of the normal walk cannot flip the outcome. It holds until the current
        4h window ends (freeze the clock to make it hold for good).
        """
        wanted = set(passing)
        unknown = wanted.difference(self._tradable)
        if unknown:
            raise ValueError(f"not tradable symbols: {sorted(unknown)}")
        if max_change_pct < min_change_pct:
            raise ValueError("max_change_pct < min_change_pct")
        with self._lock:
            now = self.now_ms()
            self._catch_up(now)
            rng = random.Random(f"surge-sim-arrange:{self.seed}:{now}")
            for symbol in self._tradable:
                self._arrange_one(
                    self._states[symbol],
                    now,
                    symbol in wanted,
                    rng,
                    min_change_pct,
                    max_change_pct,
                    min_quote_volume,
                )

    def stats(self) -> dict:
        """Cache sizes and applied surges, for benchmarks and debugging."""
        return {
            "symbols": len(self._states),
            "tradable": len(self._tradable),
            "windows_cached": len(self._lru),
            "surges": len(self.surges),
        }

    # ------------------------------------------------------------------ construction

    def _make_specs(self, n: int) -> list[_Spec]:
        rng = random.Random(f"surge-sim-symbols:{self.seed}")
        bases: list[tuple[str, float]] = list(_REAL_BASES[:n])
        taken = {b for b, _ in bases} | {"XAU", "XAG", "TSLA", "FTT", "SRM", "PROVE", "LUNA"}
        while len(bases) < n:
            parts = rng.choice((1, 2, 2, 3))
            name = "".join(rng.choice(_SYLLABLES) for _ in range(parts)) + rng.choice(_SUFFIXES)
            if 2 <= len(name) <= 10 and name not in taken:
                taken.add(name)
                bases.append((name, 10 ** rng.uniform(-4.2, 2.6)))
        generated = bases[len(_REAL_BASES) :]
        rng.shuffle(generated)  # liquidity rank of generated names is random
        bases[len(_REAL_BASES) :] = generated
        specs = [
            self._spec(rng, base, price, rank + 1, "USDT", "PERPETUAL", "TRADING")
            for rank, (base, price) in enumerate(bases)
        ]
        return specs + self._decoys(rng, n)

    def _thin_out(
        self, specs: list[_Spec], share: float, forced: set[str], gap_s: float | None
    ) -> list[_Spec]:
        """Mark the thin symbols: a seeded ``share`` of the tradable ones outside the most liquid
        ``THIN_SPARED``, plus ``forced``; each gets a seeded mean gap between trades (or ``gap_s``)."""
        names = {s.symbol for s in specs}
        unknown = forced - names
        if unknown:
            raise ValueError(f"unknown thin symbols: {sorted(unknown)}")
        if not 0.0 <= share <= 1.0:
            raise ValueError("thin_share must be within 0..1")
        if gap_s is not None and gap_s <= 0:
            raise ValueError("thin_gap_s must be positive")
        lo, hi = math.log(THIN_GAP_S[0]), math.log(THIN_GAP_S[1])
        out = []
        for rank, spec in enumerate(specs):
            h = _mix(spec.key, 0x7E1A)
            seeded = spec.tradable and rank >= THIN_SPARED and (h & 0xFFFF) / 0x10000 < share
            if seeded or spec.symbol in forced:
                gap = gap_s if gap_s is not None else math.exp(lo + (h >> 16) / 0x10000 * (hi - lo))
                spec = replace(spec, trade_gap_ms=max(1, int(gap * 1000)))
            out.append(spec)
        return out

    def _spec(
        self,
        rng: random.Random,
        base: str,
        price: float,
        rank: int,
        quote: str,
        contract: str,
        status: str,
        symbol: str | None = None,
        delivery_ms: int = PERPETUAL_DELIVERY_MS,
    ) -> _Spec:
        daily_quote = 18e9 * rank**-1.25 * math.exp(rng.gauss(0.0, 0.25))
        listing = self.history_start_ms
        onboard = listing - rng.randrange(30, 2000) * DAY_MS
        if rank > 40 and rng.random() < 0.04:  # a few recent listings with a shorter history
            listing = self.history_start_ms + rng.randrange(0, (HISTORY_DAYS - 3) * 6) * WINDOW_MS
            onboard = listing
        name = symbol or f"{base}{quote}"
        pd, qd = _price_decimals(price), _qty_decimals(price)
        return _Spec(
            symbol=name,
            base=base,
            quote=quote,
            status=status,
            contract_type=contract,
            price=price,
            pd=pd,
            qd=qd,
            p_scale=10**pd,
            q_scale=10**qd,
            minute_quote=daily_quote / 1440.0,
            sigma=(0.009 if rank <= 2 else 0.012 + 0.016 * rng.random()),
            trade_size=max(150.0, 4000.0 * rank**-0.35 * (0.7 + 0.6 * rng.random())),
            min_notional=100.0 if base == "BTC" else 20.0 if base == "ETH" else 5.0,
            listing_ms=listing,
            onboard_ms=onboard,
            delivery_ms=delivery_ms,
            key=zlib.crc32(name.encode()) ^ (self.seed * 0x9E3779B1 & 0xFFFFFFFF),
            tradable=status == "TRADING" and contract == "PERPETUAL" and quote == "USDT",
        )

    def _decoys(self, rng: random.Random, n: int) -> list[_Spec]:
        """Symbols the bot's universe filter must drop: wrong status, contract type or quote asset."""
        start = datetime.fromtimestamp(self.start_ms / 1000, UTC)
        q_month = ((start.month - 1) // 3 + 1) * 3
        quarter = _last_friday(start.year, q_month)
        if quarter <= start:
            quarter = _last_friday(start.year + (q_month == 12), q_month % 12 + 3)
        quarter_ms = int(quarter.timestamp() * 1000)
        tag = quarter.strftime("%y%m%d")
        rows = [
            ("BTC", 95_000.0, "USDT", "CURRENT_QUARTER", "TRADING", f"BTCUSDT_{tag}", quarter_ms),
            ("ETH", 3_400.0, "USDT", "CURRENT_QUARTER", "TRADING", f"ETHUSDT_{tag}", quarter_ms),
            ("XAU", 2_650.0, "USDT", "TRADIFI_PERPETUAL", "TRADING", None, PERPETUAL_DELIVERY_MS),
            ("XAG", 31.0, "USDT", "TRADIFI_PERPETUAL", "TRADING", None, PERPETUAL_DELIVERY_MS),
            ("TSLA", 340.0, "USDT", "TRADIFI_PERPETUAL", "TRADING", None, PERPETUAL_DELIVERY_MS),
            ("BTC", 95_000.0, "USDC", "PERPETUAL", "TRADING", None, PERPETUAL_DELIVERY_MS),
            ("ETH", 3_400.0, "USDC", "PERPETUAL", "TRADING", None, PERPETUAL_DELIVERY_MS),
            ("SOL", 190.0, "USDC", "PERPETUAL", "TRADING", None, PERPETUAL_DELIVERY_MS),
            ("ETH", 3_400.0, "BUSD", "PERPETUAL", "TRADING", None, PERPETUAL_DELIVERY_MS),
            ("BTC", 95_000.0, "BUSD", "PERPETUAL", "SETTLING", None, PERPETUAL_DELIVERY_MS),
            ("FTT", 1.9, "USDT", "PERPETUAL", "SETTLING", None, PERPETUAL_DELIVERY_MS),
            ("SRM", 0.04, "USDT", "PERPETUAL", "SETTLING", None, PERPETUAL_DELIVERY_MS),
            ("LUNA", 0.3, "USDT", "PERPETUAL", "CLOSE", None, PERPETUAL_DELIVERY_MS),
            ("PROVE", 1.2, "USDT", "PERPETUAL", "PENDING_TRADING", None, PERPETUAL_DELIVERY_MS),
        ]
        return [
            self._spec(rng, base, price, n + 10 + i, quote, contract, status, symbol, delivery)
            for i, (base, price, quote, contract, status, symbol, delivery) in enumerate(rows)
        ]

    def _symbol_entry(self, s: _Spec) -> dict:
        """One exchangeInfo ``symbols`` entry, field for field as Binance USD-M sends it."""
        tick, step = _dec_str(s.pd), _dec_str(s.qd)
        max_qty = max(1.0, round(5e7 / s.price, -max(0, int(math.log10(5e7 / s.price)) - 1)))
        return {
            "symbol": s.symbol,
            "pair": f"{s.base}{s.quote}",
            "contractType": s.contract_type,
            "deliveryDate": s.delivery_ms,
            "onboardDate": s.onboard_ms,
            "status": s.status,
            "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000",
            "baseAsset": s.base,
            "quoteAsset": s.quote,
            "marginAsset": s.quote,
            "pricePrecision": s.pd,
            "quantityPrecision": s.qd,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "underlyingSubType": [],
            "settlePlan": 0,
            "triggerProtect": "0.0500",
            "liquidationFee": "0.012500",
            "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": tick,
                    "maxPrice": _fmt_plain(s.price * 1000),
                    "tickSize": tick,
                },
                {"filterType": "LOT_SIZE", "minQty": step, "maxQty": _fmt_plain(max_qty), "stepSize": step},
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": step,
                    "maxQty": _fmt_plain(max(1.0, max_qty / 10)),
                    "stepSize": step,
                },
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},  # MAX_NUM_ALGO_ORDERS: gone 2025-12-29
                {"filterType": "MIN_NOTIONAL", "notional": _fmt_plain(s.min_notional)},
                {
                    "filterType": "PERCENT_PRICE",
                    "multiplierUp": "1.0500",
                    "multiplierDown": "0.9500",
                    "multiplierDecimal": "4",
                },
            ],
            "orderTypes": [
                "LIMIT",
                "MARKET",
                "STOP",
                "STOP_MARKET",
                "TAKE_PROFIT",
                "TAKE_PROFIT_MARKET",
                "TRAILING_STOP_MARKET",
            ],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
            "permissionSets": ["GRID", "COPY"],
        }

    # ------------------------------------------------------------------ internals: state and caches
    #
    # Internally prices are integer ticks, volumes integer steps, quote volumes integer 1e-4 USDT:
    # sums are exact and quantisation is a cheap int(), so aggregates equal the sum of their parts.

    def _state(self, symbol: str) -> _State:
        try:
            return self._states[symbol]
        except KeyError:
            raise KeyError(f"unknown symbol {symbol!r}") from None

    def _anchor(self, st: _State, k: int) -> float:
        """Price at the open of window ``k``: a mean-reverting log walk from the listing on."""
        idx = k - st.k0
        if idx < 0:
            raise ValueError(f"{st.spec.symbol} has no window {k}: it was listed later")
        anchors = st.anchors
        if idx < len(anchors):
            return anchors[idx]
        with self._lock:
            spec, rng = st.spec, st.anchor_rng
            target = math.log(spec.price)
            while len(anchors) <= idx:
                x = math.log(anchors[-1])
                anchors.append(math.exp(x + 0.02 * (target - x) + spec.sigma * rng.gauss(0.0, 1.0)))
            return anchors[idx]

    def _window(self, st: _State, k: int) -> _Window:
        key = (st.spec.symbol, k)
        w = st.windows.get(k)
        if w is not None:
            return w
        with self._lock:
            w = st.windows.get(k)
            if w is None:
                w = self._build_window(st, k)
                st.windows[k] = w
                self._lru[key] = None
                while len(self._lru) > self._window_cache:
                    (old_sym, old_k), _ = self._lru.popitem(last=False)
                    self._states[old_sym].windows.pop(old_k, None)
            else:
                self._lru.move_to_end(key)
            return w

    def _summary(self, st: _State, k: int) -> tuple:
        """(o, h, l, c, v, q, n) of the whole window ``k``, kept after its minutes are evicted."""
        s = st.summaries.get(k)
        if s is None:
            with self._lock:
                w = self._window(st, k)
                s = (w.o[0], max(w.h), min(w.l), w.c[-1], sum(w.v), sum(w.q), sum(w.n))
                st.summaries[k] = s
        return s

    def _invalidate(self, st: _State, from_ms: int) -> None:
        """Drop the caches of ``st`` that could contain ``from_ms`` or later (caller holds the lock)."""
        k_from = from_ms // WINDOW_MS
        for k in [k for k in st.windows if k >= k_from]:
            del st.windows[k]
            self._lru.pop((st.spec.symbol, k), None)
        for k in [k for k in st.summaries if k >= k_from]:
            del st.summaries[k]
        st.minute_rec = None
        st.agg_cache = {}

    # ------------------------------------------------------------------ internals: generation

    def _inner_knots(self, key: int, minute: int) -> tuple[int, int, bool]:
        h = _mix(key, minute)
        a = _KNOT_LO[0] + (h & 0xFFFF) * (_KNOT_LO[1] - _KNOT_LO[0]) // 0x10000
        b = _KNOT_HI[0] + (h >> 16) * (_KNOT_HI[1] - _KNOT_HI[0]) // 0x10000
        return a, b, bool(h & 0x80)

    def _base_knots(
        self,
        key: int,
        minute: int,
        o: int,
        h: int,
        l: int,  # noqa: E741
        c: int,
    ) -> list[tuple[int, int]]:
        a, b, high_first = self._inner_knots(key, minute)
        first, second = (h, l) if high_first else (l, h)
        return [(0, o), (a, first), (b, second), (MINUTE_MS, c)]

    def _build_window(self, st: _State, k: int) -> _Window:
        """Seeded minutes of window ``k``: bridge between two anchors, wicks, volumes; then modifiers."""
        spec = st.spec
        a0, a1 = self._anchor(st, k), self._anchor(st, k + 1)
        sig = spec.sigma / math.sqrt(WINDOW_MINUTES)
        tbl, vtbl, mask = self._normals, self._volume_noise, _TABLE_MASK
        idx = _mix(spec.key, k) & mask
        stride = (_mix(k, spec.key) | 1) & mask
        n_min = WINDOW_MINUTES
        walk = list(accumulate(tbl[(idx + i * stride) & mask] for i in range(n_min)))
        wick_hi = [abs(tbl[(idx + i * stride) & mask]) for i in range(n_min, 2 * n_min)]
        wick_lo = [abs(tbl[(idx + i * stride) & mask]) for i in range(2 * n_min, 3 * n_min)]
        noise = [vtbl[(idx + i * stride) & mask] for i in range(3 * n_min, 4 * n_min)]
        tilt = (walk[-1] - math.log(a1 / a0) / sig) / n_min  # bridge: the walk ends exactly at a1
        base, exp = a0 * spec.p_scale, math.exp
        c = array("q", [int(base * exp(sig * (x - (j + 1) * tilt)) + 0.5) for j, x in enumerate(walk)])
        o = array("q", [int(base + 0.5)])
        o.extend(c[:-1])
        wick = sig * 0.5
        h = array("q", [t + int(t * wick * z + 0.5) for t, z in zip(map(max, o, c), wick_hi, strict=True)])
        low = array(
            "q", [max(1, t - int(t * wick * z + 0.5)) for t, z in zip(map(min, o, c), wick_lo, strict=True)]
        )
        mq = spec.minute_quote / 1.48
        raw = [
            mq * z * (1.0 + 0.6 * abs(cc - oo) / (oo * sig)) for oo, cc, z in zip(o, c, noise, strict=True)
        ]
        prices = None
        if st.ramps:
            prices = (o, h, low, c)
            o, h, low, c = self._apply_ramps(st, k, o, h, low, c)
        v, q, n = self._volumes(st, k, o, h, low, c, raw)
        if spec.trade_gap_ms:
            # the busy path stays the price a trade happens at: keep it (unmodified) for the knots
            if prices is None:
                prices = (array("q", o), array("q", h), array("q", low), array("q", c))
            self._thin_window(st, k, prices, o, h, low, c, v, q, n)
        return _Window(o=o, h=h, l=low, c=c, v=v, q=q, n=n, base=prices)

    def _thin_window(
        self,
        st: _State,
        k: int,
        base: tuple[array, array, array, array],
        o: array,
        h: array,
        low: array,
        c: array,
        v: array,
        q: array,
        n: array,
    ) -> None:
        """Turn a window of busy minutes into a thin symbol's (in place): each minute keeps only its
        seeded trades (and lumps), each at the busy path's price at its instant (modifiers included,
        so a surge's step shows at its lump); a minute without any is flat at the previous close."""
        bo, bh, bl, bc = base
        spec = st.spec
        key, gap = spec.key, spec.trade_gap_ms
        t0 = k * WINDOW_MS
        m0 = k * WINDOW_MINUTES
        lumps: dict[int, list[tuple[int, int, int, int]]] = {}
        for lump in st.lumps:
            if t0 <= lump[0] < t0 + WINDOW_MS:
                lumps.setdefault((lump[0] - t0) // MINUTE_MS, []).append(lump)
        prev = o[0]
        scale = st.vol_scale.get(k, 1.0)
        for j in range(WINDOW_MINUTES):
            minute = m0 + j
            offs = _thin_offsets(key, minute, gap, j == 0)
            mine = lumps.get(j, ())
            count = len(offs) + len(mine)
            if count == 0:
                o[j] = h[j] = low[j] = c[j] = prev
                v[j] = q[j] = n[j] = 0
                continue
            knots = self._base_knots(key, minute, bo[j], bh[j], bl[j], bc[j])
            if st.ramps:
                knots = self._modified_knots(st, minute, knots)
            prices = [
                int(_interp(knots, off) + 0.5)
                for off in sorted([*offs, *(x[0] - t0 - j * MINUTE_MS for x in mine)])
            ]
            o[j], h[j], low[j], c[j] = prices[0], max(prices), min(prices), prices[-1]
            lv = sum(x[1] for x in mine)
            lq = sum(x[2] for x in mine)
            ln = sum(x[3] for x in mine)
            base_v, base_q, base_n = v[j] - lv, q[j] - lq, n[j] - ln
            trades = len(offs)
            # each trade keeps the busy minute's mean trade size, so volume scales (arrange_4h) still apply
            bv = max(trades, int(base_v * trades / max(base_n / scale, trades) + 0.5)) if trades else 0
            bq = int(base_q * bv / base_v + 0.5) if base_v > 0 else 0
            v[j], q[j], n[j] = bv + lv, bq + lq, trades + ln
            prev = c[j]

    def _volumes(
        self, st: _State, k: int, o: array, h: array, low: array, c: array, raw: list[float]
    ) -> tuple[array, array, array]:
        """Minute volumes (steps), quote volumes (1e-4 USDT) and trades from raw USDT amounts."""
        spec = st.spec
        scale = st.vol_scale.get(k, 1.0) * spec.q_scale
        inv = 1.0 / (4.0 * spec.p_scale)
        vwap = [(a + b + x + d) * inv for a, b, x, d in zip(o, h, low, c, strict=True)]
        v = array("q", [max(1, int(r * scale / p + 0.5)) for r, p in zip(raw, vwap, strict=True)])
        to_quote = QUOTE_SCALE / spec.q_scale
        q = array("q", [int(s * p * to_quote + 0.5) for s, p in zip(v, vwap, strict=True)])
        per_trade = spec.trade_size * QUOTE_SCALE
        n = array("q", [max(1, int(x / per_trade + 0.5)) for x in q])
        t0, t1 = k * WINDOW_MS, (k + 1) * WINDOW_MS
        for t, dv, dq, dn in st.lumps:
            if t0 <= t < t1:
                j = (t - t0) // MINUTE_MS
                v[j] += dv
                q[j] += dq
                n[j] += dn
        return v, q, n

    def _log_factor(self, st: _State, t: int, left: bool = False) -> float:
        """Sum of the modifiers' log deltas at ``t`` (``left``: the limit just before ``t``)."""
        total = 0.0
        for ta, tb, delta in st.ramps:
            if t > tb or (t == tb and not left):
                total += delta
            elif ta < t < tb:
                total += delta * (t - ta) / (tb - ta)
        return total

    def _modified_knots(self, st: _State, minute: int, base: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The minute's knots with the price modifiers applied (a step becomes two knots)."""
        t0 = minute * MINUTE_MS
        offsets = {off for off, _ in base}
        steps = set()
        for ta, tb, _ in st.ramps:
            for t in (ta, tb):
                if t0 < t < t0 + MINUTE_MS:
                    offsets.add(t - t0)
            if ta == tb and t0 <= tb < t0 + MINUTE_MS:  # a step on the first ms still belongs to this minute
                steps.add(tb - t0)
        out: list[tuple[int, int]] = []
        for off in sorted(offsets):
            p = _interp(base, off)
            t = t0 + off
            if off in steps:
                out.append((off, int(p * math.exp(self._log_factor(st, t, left=True)) + 0.5)))
            out.append((off, int(p * math.exp(self._log_factor(st, t, left=off == MINUTE_MS)) + 0.5)))
        return out

    def _apply_ramps(self, st: _State, k: int, o: array, h: array, low: array, c: array) -> tuple:
        """Final o, h, l, c of window ``k`` with the price modifiers (untouched minutes stay cheap)."""
        key = st.spec.key
        t_start = k * WINDOW_MS
        breakpoints = sorted({t for ta, tb, _ in st.ramps for t in (ta, tb)})
        no, nh, nl, nc = array("q"), array("q"), array("q"), array("q")
        for j in range(WINDOW_MINUTES):
            t0 = t_start + j * MINUTE_MS
            t1 = t0 + MINUTE_MS
            f0 = self._log_factor(st, t0, left=True)  # left: the open is the previous close, even at a step
            f1 = self._log_factor(st, t1, left=True)
            if f0 == f1 and not any(t0 < t < t1 for t in breakpoints):
                m = math.exp(f0)
                vals = (int(o[j] * m + 0.5), int(h[j] * m + 0.5), int(low[j] * m + 0.5), int(c[j] * m + 0.5))
            else:
                minute = t0 // MINUTE_MS
                base = self._base_knots(key, minute, o[j], h[j], low[j], c[j])
                knots = self._modified_knots(st, minute, base)
                prices = [p for _, p in knots]
                vals = (prices[0], max(prices), min(prices), prices[-1])
            no.append(vals[0])
            nh.append(vals[1])
            nl.append(vals[2])
            nc.append(vals[3])
        return no, nh, nl, nc

    def _minute_record(self, st: _State, minute: int) -> _MinuteRecord:
        rec = st.minute_rec
        if rec is not None and rec.minute == minute:
            return rec
        k, j = divmod(minute, WINDOW_MINUTES)
        w = self._window(st, k)
        key = st.spec.key
        if w.base is None:
            knots = self._base_knots(key, minute, w.o[j], w.h[j], w.l[j], w.c[j])
        else:
            bo, bh, bl, bc = w.base
            base = self._base_knots(key, minute, bo[j], bh[j], bl[j], bc[j])
            knots = self._modified_knots(st, minute, base)
        t0 = minute * MINUTE_MS
        lumps = [(t - t0, dv, dq, dn) for t, dv, dq, dn in st.lumps if t0 <= t < t0 + MINUTE_MS]
        rec = _MinuteRecord(
            minute=minute,
            knots=knots,
            v=w.v[j] - sum(x[1] for x in lumps),
            q=w.q[j] - sum(x[2] for x in lumps),
            n=w.n[j] - sum(x[3] for x in lumps),
            lumps=lumps,
        )
        if st.spec.trade_gap_ms:
            self._thin_record(st, rec, w, k, j)
        st.minute_rec = rec
        return rec

    def _thin_record(self, st: _State, rec: _MinuteRecord, w: _Window, k: int, j: int) -> None:
        """A thin minute's trades, each with its price and share of the minute's final volumes."""
        spec = st.spec
        minute = rec.minute
        offs = _thin_offsets(spec.key, minute, spec.trade_gap_ms, j == 0)
        if j:
            rec.prev_close = w.c[j - 1]
        elif k - 1 >= st.k0:
            rec.prev_close = self._window(st, k - 1).c[-1]
        else:
            rec.prev_close = w.o[0]
        events = sorted(
            [(off, 0, i) for i, off in enumerate(offs)]
            + [(lump[0], 1, i) for i, lump in enumerate(rec.lumps)]
        )
        if not events:
            rec.trades = []
            return
        knots = rec.knots  # the same knots the window's trades were priced on (its ``base`` is always set)
        prices = [int(_interp(knots, ev[0]) + 0.5) for ev in events]
        count = len(offs)
        trades: list[tuple[int, int, int, int, int]] = []
        done = 0
        for price, (off, kind, i) in zip(prices, events, strict=True):
            if kind:
                _, dv, dq, dn = rec.lumps[i]
                trades.append((off, price, dv, dq, dn))
                continue
            done += 1  # base trades share the base volume evenly, the remainder on the last one
            last = done == count
            dv = rec.v - (count - 1) * (rec.v // count) if last else rec.v // count
            dq = rec.q - (count - 1) * (rec.q // count) if last else rec.q // count
            trades.append((off, price, dv, dq, 1))
        rec.trades = trades

    def _partial(self, st: _State, now_ms: int) -> tuple:
        """(o, h, l, c, v, q, n) of the minute in progress at ``now_ms``, in internal units."""
        minute, off = divmod(now_ms, MINUTE_MS)
        rec = self._minute_record(st, minute)
        if rec.trades is not None:
            return self._thin_partial(rec, off)
        knots = rec.knots
        price = int(_interp(knots, off) + 0.5)
        hi = lo = price
        for k_off, k_p in knots:
            if k_off > off:
                break
            if k_p > hi:
                hi = k_p
            if k_p < lo:
                lo = k_p
        frac = off / MINUTE_MS
        v, q, n = int(rec.v * frac), int(rec.q * frac), int(rec.n * frac)
        for l_off, dv, dq, dn in rec.lumps:
            if l_off <= off:
                v += dv
                q += dq
                n += dn
        return (knots[0][1], hi, lo, price, v, q, n)

    @staticmethod
    def _thin_partial(rec: _MinuteRecord, off: int) -> tuple:
        """A thin minute up to ``off``: its trades so far, or flat at the previous close before the first."""
        o = hi = lo = c = rec.prev_close
        v = q = n = 0
        for t_off, price, dv, dq, dn in rec.trades or ():
            if t_off > off:
                break
            if n == 0:
                o = hi = lo = price
            elif price > hi:
                hi = price
            elif price < lo:
                lo = price
            c = price
            v += dv
            q += dq
            n += dn
        return (o, hi, lo, c, v, q, n)

    def _agg_range(self, st: _State, a: int, b: int) -> tuple | None:
        """Aggregate of the closed minutes [a, b) (absolute minute numbers), internal units."""
        res = None
        k = a // WINDOW_MINUTES
        while k * WINDOW_MINUTES < b:
            lo = max(a, k * WINDOW_MINUTES) - k * WINDOW_MINUTES
            hi = min(b, (k + 1) * WINDOW_MINUTES) - k * WINDOW_MINUTES
            if lo == 0 and hi == WINDOW_MINUTES:
                part = self._summary(st, k)
            else:
                w = self._window(st, k)
                if hi - lo == 1:
                    part = (w.o[lo], w.h[lo], w.l[lo], w.c[lo], w.v[lo], w.q[lo], w.n[lo])
                else:
                    part = (
                        w.o[lo],
                        max(w.h[lo:hi]),
                        min(w.l[lo:hi]),
                        w.c[hi - 1],
                        sum(w.v[lo:hi]),
                        sum(w.q[lo:hi]),
                        sum(w.n[lo:hi]),
                    )
            res = _combine(res, part)
            k += 1
        return res

    def _make_kline(
        self, st: _State, interval: str, open_ms: int, close_ms: int, agg: tuple, closed: bool
    ) -> Kline:
        spec = st.spec
        ps, qs = spec.p_scale, spec.q_scale
        return Kline(
            symbol=spec.symbol,
            interval=interval,
            open_time=open_ms,
            close_time=close_ms,
            open=agg[0] / ps,
            high=agg[1] / ps,
            low=agg[2] / ps,
            close=agg[3] / ps,
            volume=agg[4] / qs,
            quote_volume=agg[5] / QUOTE_SCALE,
            trades=agg[6],
            closed=closed,
        )

    def _current(self, st: _State, interval: str, now_ms: int) -> Kline:
        part = self._partial(st, now_ms)
        minute = now_ms // MINUTE_MS
        if interval == "1m":
            t = minute * MINUTE_MS
            return self._make_kline(st, "1m", t, t + MINUTE_MS - 1, part, False)
        open_ms = interval_open(interval, now_ms)
        close_ms = interval_next(interval, open_ms) - 1
        first = max(open_ms, st.spec.listing_ms) // MINUTE_MS
        agg = None
        if first < minute:
            cached = st.agg_cache.get(interval)
            if cached is not None and cached[0] == open_ms and cached[1] == minute:
                agg = cached[2]
            else:
                agg = self._agg_range(st, first, minute)
                st.agg_cache[interval] = (open_ms, minute, agg)
        return self._make_kline(st, interval, open_ms, close_ms, _combine(agg, part), False)

    def _kline_at(self, st: _State, interval: str, open_ms: int, now_ms: int) -> Kline:
        end = interval_next(interval, open_ms)
        if now_ms < end:
            return self._current(st, interval, now_ms)
        first = max(open_ms, st.spec.listing_ms) // MINUTE_MS
        agg = self._agg_range(st, first, end // MINUTE_MS)
        if agg is None:  # a closed candle wholly before the listing: the callers never ask for one
            raise ValueError(f"{st.spec.symbol} has no {interval} candle opening at {open_ms}")
        return self._make_kline(st, interval, open_ms, end - 1, agg, True)

    def _quote_usdt(self, st: _State, k: int) -> float:
        """Quote volume (USDT) of the whole window ``k``."""
        return self._summary(st, k)[5] / QUOTE_SCALE

    # ------------------------------------------------------------------ internals: overrides

    def _add_ramp(self, st: _State, t_from: int, t_to: int, delta: float) -> None:
        if delta:
            st.ramps.append((t_from, t_to, delta))
            self._invalidate(st, t_from)

    def _inject(
        self, st: _State, t: int, change_pct: float, volume_multiple: float, min_quote_volume: float
    ) -> None:
        """Step the price level at ``t`` and add the surge's volume as one lump at ``t``.

        The lump is ``volume_multiple`` times the mean volume of the previous 20 minutes (what the
        [surge] rule compares with), raised if needed so the minute's quote volume reaches
        ``min_quote_volume``: the rule holds from the instant of the injection, not only at the close.
        """
        if change_pct <= -100:
            raise ValueError("change_pct must be above -100")
        spec = st.spec
        minute = t // MINUTE_MS
        first = max(minute - 20, spec.listing_ms // MINUTE_MS)
        prev = self._agg_range(st, first, minute) if first < minute else None
        before = self._partial(st, t)
        mean_steps = prev[4] / (minute - first) if prev else float(before[4])
        mean_trades = prev[6] / (minute - first) if prev else float(before[6])
        if spec.trade_gap_ms and before[6] == 0 and t % MINUTE_MS:
            # a thin minute without a trade yet would open at the surge's own price (no change in the
            # candle): one small trade just before it, at the old level, opens the minute
            st.lumps.append((t - 1, 1, int(before[3] * QUOTE_SCALE / (spec.p_scale * spec.q_scale) + 0.5), 1))
            self._invalidate(st, t - 1)
        self._add_ramp(st, t, t, math.log1p(change_pct / 100.0))
        price = (self._partial(st, t)[3] or before[3]) / spec.p_scale  # USDT per unit after the jump
        to_quote = price * QUOTE_SCALE / spec.q_scale  # quote units per volume step
        dv = max(0.0, volume_multiple) * mean_steps
        missing = min_quote_volume * QUOTE_SCALE - before[5]
        if to_quote > 0 and dv * to_quote < missing:
            dv = missing / to_quote
        steps = math.ceil(dv)
        if steps > 0:
            trades = max(1, int(mean_trades * max(volume_multiple, 1.0)))
            st.lumps.append((t, steps, int(steps * to_quote + 0.5), trades))
            self._invalidate(st, t)
        st.last_surge_ms = t
        self.surges.append((t, spec.symbol))

    def _arrange_one(
        self, st: _State, now: int, passes: bool, rng: random.Random, lo: float, hi: float, min_qv: float
    ) -> None:
        k = now // WINDOW_MS
        w_open = k * WINDOW_MS
        margin = min(1.0, (hi - lo) / 4.0)
        mode = "pass" if passes else rng.choice(("change", "volume", "both") if min_qv > 0 else ("change",))
        cur = self._current(st, "4h", now)
        change = cur.change_pct
        start = w_open
        if st.spec.trade_gap_ms:
            # a thin symbol's candle moves only with its trades: shift every trade after the window's
            # first one (its open); with fewer than two trades so far the change cannot move, fail by volume
            m0 = k * WINDOW_MINUTES
            firsts = _thin_offsets(st.spec.key, m0, st.spec.trade_gap_ms, True)
            firsts += [t - w_open for t, *_ in st.lumps if w_open <= t < w_open + MINUTE_MS]
            start = w_open + min(firsts) + 1
            if cur.trades < 2 and mode in ("change", "both") and min_qv > 0:
                mode = "volume"
        if mode == "pass":
            target = None if lo + margin <= change <= hi - margin else rng.uniform(lo + margin, hi - margin)
        elif mode in ("change", "both"):
            if change > hi + margin or change < lo - margin:
                target = None
            elif rng.random() < 0.5 or lo - 4.0 <= -95.0:
                target = hi + rng.uniform(1.5, 4.0)
            else:
                target = lo - rng.uniform(1.5, 4.0)
        else:
            target = None if lo + margin <= change <= hi - margin else rng.uniform(lo + margin, hi - margin)
        if target is not None and cur.close > 0:
            delta = math.log(cur.open * (1 + target / 100.0) / cur.close)
            # a thin symbol's close is its last trade, maybe long before now: shift every trade after the open
            self._add_ramp(st, start, start if st.spec.trade_gap_ms else now, delta)
        if k - 1 >= st.k0 and min_qv > 0:
            qv = self._quote_usdt(st, k - 1)
            want_low = mode in ("volume", "both")
            if want_low and qv > 0.4 * min_qv:
                factor = 0.4 * min_qv * rng.uniform(0.2, 1.0) / qv
            elif not want_low and qv < 1.5 * min_qv:
                factor = 1.5 * min_qv * rng.uniform(1.0, 2.0) / max(qv, 1e-9)
            else:
                factor = 1.0
            if factor != 1.0:
                for kk in (k - 1, k):
                    st.vol_scale[kk] = st.vol_scale.get(kk, 1.0) * factor
                self._invalidate(st, (k - 1) * WINDOW_MS)

    def _catch_up(self, now_ms: int) -> None:
        """Apply the periodic surges scheduled up to ``now_ms`` (lazily: no thread of its own)."""
        if now_ms < self._next_surge_ms:
            return
        with self._lock:
            interval = self._surge_interval_ms
            if interval is None:
                return
            oldest = now_ms - 3_600_000  # after a long jump of the clock, skip instead of replaying hours
            while self._next_surge_ms <= now_ms:
                t = self._next_surge_ms
                i = self._surge_index
                self._surge_index += 1
                self._next_surge_ms += interval
                if t >= oldest:
                    self._periodic_surge(i, t)

    def _periodic_surge(self, i: int, t: int) -> None:
        """Surge a liquid symbol that passes the default 4h rule now and stays inside it after the jump."""
        rng = random.Random(f"surge-sim-periodic:{self.seed}:{i}")
        order = list(self._surge_candidates)
        rng.shuffle(order)
        chosen = None
        for symbol in order[:12]:
            st = self._states[symbol]
            if t - st.last_surge_ms < 30 * MINUTE_MS or t < st.spec.listing_ms + WINDOW_MS:
                continue
            if chosen is None:
                chosen = st
            k = t // WINDOW_MS
            cur = self._current(st, "4h", t)
            if -4.0 <= cur.change_pct <= 4.0 and self._quote_usdt(st, k - 1) >= 6e6:
                chosen = st
                break
        if chosen is not None:
            self._inject(chosen, t, 5.0, 10.0, 75_000.0)


def _fmt_plain(x: float) -> str:
    """A number as Binance writes filter limits: no exponent, no trailing zeros beyond need."""
    s = f"{x:.8f}".rstrip("0").rstrip(".")
    return s or "0"
