"""The values that travel along the data path.

Frozen and slotted: they cross threads (connection thread -> strategy loop), so they must not change
after they are built, and there are many of them, so they should stay small. :class:`Kline` is a
``msgspec.Struct`` rather than a dataclass because thousands of them are built every second on the
stream's hot path, and a Struct is built in C, several times faster than a frozen dataclass
(``scripts/bench_stream.py`` measures the decode path that builds them). It
behaves the same way (positional or keyword construction, ``==``, hash, repr, immutability);
``msgspec.structs.replace`` stands in for ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

#: Every kline interval Binance USD-M futures serves, in ascending length.
INTERVALS: tuple[str, ...] = (
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
)

_MINUTE_MS = 60_000
#: Length of each fixed-length interval in milliseconds ("1M" is calendar based and absent).
INTERVAL_MS: dict[str, int] = {
    "1m": _MINUTE_MS,
    "3m": 3 * _MINUTE_MS,
    "5m": 5 * _MINUTE_MS,
    "15m": 15 * _MINUTE_MS,
    "30m": 30 * _MINUTE_MS,
    "1h": 60 * _MINUTE_MS,
    "2h": 120 * _MINUTE_MS,
    "4h": 240 * _MINUTE_MS,
    "6h": 360 * _MINUTE_MS,
    "8h": 480 * _MINUTE_MS,
    "12h": 720 * _MINUTE_MS,
    "1d": 1440 * _MINUTE_MS,
    "3d": 3 * 1440 * _MINUTE_MS,
    "1w": 7 * 1440 * _MINUTE_MS,
}


class Kline(msgspec.Struct, frozen=True, gc=False):
    """One candle, from a WebSocket kline event or a REST kline row.

    ``closed`` is False for the candle still in progress. ``event_time`` is the exchange's event
    stamp (``E``) for stream events, 0 for REST rows; it is what latency is measured from.
    """

    symbol: str
    interval: str
    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int
    closed: bool
    event_time: int = 0

    @property
    def change_pct(self) -> float:
        """(close - open) / open * 100: the move of this candle so far."""
        return (self.close - self.open) / self.open * 100.0 if self.open else 0.0


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """The parts of an exchangeInfo symbol entry the bot uses (trading rules included)."""

    symbol: str
    status: str
    contract_type: str
    quote_asset: str
    base_asset: str = ""
    tick_size: float = 0.0
    step_size: float = 0.0
    min_qty: float = 0.0
    min_notional: float = 0.0

    @property
    def is_usdt_perpetual(self) -> bool:
        """Exact match: ``TRADIFI_PERPETUAL`` and friends are not perpetuals for this bot."""
        return self.status == "TRADING" and self.contract_type == "PERPETUAL" and self.quote_asset == "USDT"


@dataclass(frozen=True, slots=True)
class Signal:
    """A 1-minute surge the rule accepted: what the trader sees in ``surge signals``.

    ``key`` identifies the candle that surged (one signal per symbol and candle at most); it is the
    idempotency key that keeps a signal from entering twice, even across a crash and restart.
    """

    symbol: str
    time: int  # exchange event time of the update that surged (ms)
    open_time: int  # open time of the surging 1m candle
    change_pct: float
    volume_multiple: float
    quote_volume: float
    price: float

    @property
    def key(self) -> str:
        return f"{self.symbol}:{self.open_time}"


@dataclass(frozen=True, slots=True)
class Position:
    """One long position opened from a signal; exit fields stay None while it is open.

    ``key`` is the signal's key: the database refuses a second position with the same key, which is
    what keeps one signal from entering twice.
    """

    key: str
    symbol: str
    qty: float
    entry_price: float
    entry_time: int
    take_profit: float
    stop_loss: float
    deadline: int  # ms: max hold ends here
    fees: float = 0.0
    exit_price: float | None = None
    exit_time: int | None = None
    exit_reason: str | None = None  # "take_profit" | "stop_loss" | "max_hold"
    pnl: float | None = None

    @property
    def is_open(self) -> bool:
        return self.exit_time is None


#: States of a live trade's lifecycle (see :class:`Trade`).
INTENT, SENT, UNKNOWN, FILLED, PROTECTED, CLOSING, CLOSED, VOID = (
    "intent",
    "sent",
    "unknown",
    "filled",
    "protected",
    "closing",
    "closed",
    "void",
)
#: States in which the trade needs nothing from the exchange until something happens on it.
RESTING_STATES = frozenset({PROTECTED, CLOSED, VOID})
#: States from which a trade never moves again.
FINAL_STATES = frozenset({CLOSED, VOID})


@dataclass(frozen=True, slots=True)
class Trade:
    """The persisted lifecycle of one live trade, keyed by its signal.

    Why a row of its own: every exchange call of a live trade depends on what happened before it, and a
    process can die between any two calls. The row is written *before* each call it governs, so a
    restart reads exactly where the trade stood: intent (client id fixed, nothing sent) -> sent ->
    filled -> protected -> closing -> closed, plus unknown (an order's answer was lost: ask by client
    id, never send again) and void (never entered: refused, too small, or proven never executed).
    """

    key: str
    symbol: str
    state: str
    qty: str = ""  # the entry's ordered quantity, exact decimal text ("" before it is sized)
    entry_sent_at: int | None = None  # exchange-clock ms stamped on the entry POST (its recvWindow starts)
    exit_reason: str | None = None  # why it is being closed (set with the closing state)
    exit_sent_at: int | None = None  # exchange-clock ms stamped on the last exit POST
    sl_algo_id: int | None = None
    tp_algo_id: int | None = None
    note: str | None = None  # the last problem, or why it is void
    signal_at: float | None = None  # wall-clock seconds when the desk was told to enter
    filled_at: float | None = None  # ... when the fill was known
    protected_at: float | None = None  # ... when both protective orders were acknowledged
    recv_window: int = 5000

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES
