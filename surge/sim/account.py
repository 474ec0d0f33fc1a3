"""The simulated account behind Binance USD-M's signed endpoints: keys, signatures, orders, positions.

Why it is shaped like this:

* Signed requests are verified exactly as Binance does: HMAC-SHA256 with the key's secret over the
  query string (without ``signature``) concatenated with the request body, ``timestamp`` within
  ``recvWindow`` of the server's clock (the market clock, the same one ``/fapi/v1/time`` serves),
  ``X-MBX-APIKEY`` present and known. A client that gets any of it wrong fails here as it would live.
* One-way mode, cross margin, USDT: a position is one signed quantity per symbol. MARKET orders fill
  at once at the simulated last price (the current 1m candle's close); precision, minimum notional
  and margin are checked with Binance's codes and messages.
* Conditional orders (STOP_MARKET, TAKE_PROFIT_MARKET, ...) are refused on ``/fapi/v1/order`` with
  -4120, as since 2025-12-09, and live in the Algo Service (``/fapi/v1/algoOrder``). They are
  evaluated against the simulated price on every signed request and by :meth:`Account.tick`, which
  the REST server calls from its one housekeeping thread: no thread per order.
* Faults for tests: the next order answered only after a delay (it is accepted first, so a client
  with a shorter read timeout sees a timeout for an order that exists), -2019 / -4164 on demand, the
  answers Binance documents as "execution status unknown" (503, 408, -1006, -1007, a garbled 200,
  an error body under HTTP 200) with the order executed or not, new-order answers without fill
  fields, wrong or garbled positionRisk answers, hedge mode (``dualSidePosition``) and algo orders
  held in ``TRIGGERING``. Each is something a live bot has to survive, so each can be produced here.

The module imports nothing from the bot (the simulator is a leaf); errors are :class:`AccountError`
which the REST server turns into Binance error bodies.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

DEFAULT_API_KEY = "sim-api-key-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQR"
DEFAULT_API_SECRET = "sim-api-secret-9876543210zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQPONML"
DEFAULT_BALANCE = Decimal("10000")
TAKER_FEE = Decimal("0.0005")
DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000
CONDITIONAL_TYPES = frozenset(
    {"STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"}
)
ALGO_TYPES_SUPPORTED = frozenset({"STOP_MARKET", "TAKE_PROFIT_MARKET"})
#: algo order states in which the order is still listed by openAlgoOrders
ALGO_OPEN = frozenset({"NEW", "TRIGGERING"})
#: kinds of :meth:`Account.answer_next_order`: answers after which an order may or may not exist
UNKNOWN_ANSWERS = ("503", "408", "-1006", "-1007", "garbled", "error200")
#: modes of :meth:`Account.set_avg_price_mode`
AVG_PRICE_MODES = ("normal", "missing", "zero")
#: kinds of :meth:`Account.position_risk_next`
POSITION_RISK_FAULTS = ("empty", "garbled", "missing_rows", "zero")
MSG_1001 = "Internal error; unable to process your request. Please try again."
MSG_1006 = "An unexpected response was received from the message bus. Execution status unknown."
MSG_1007 = "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
#: the ORDERS windows an order answer reports as ``X-MBX-ORDER-COUNT-<suffix>``: (suffix, seconds)
ORDER_COUNT_WINDOWS = (("10S", 10), ("1M", 60))
_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_API_KEY_FORMAT = re.compile(r"^[A-Za-z0-9_-]{16,128}$")

#: Binance IP request weight of each signed route (order placement costs 0 IP weight; it counts
#: against the ORDERS limits instead).
SIGNED_WEIGHTS: dict[tuple[str, str], int] = {
    ("POST", "/fapi/v1/leverage"): 1,
    ("POST", "/fapi/v1/order"): 0,
    ("GET", "/fapi/v1/order"): 1,
    ("DELETE", "/fapi/v1/order"): 1,
    ("GET", "/fapi/v1/openOrders"): 1,  # 40 without symbol
    ("POST", "/fapi/v1/algoOrder"): 0,
    ("GET", "/fapi/v1/algoOrder"): 1,
    ("DELETE", "/fapi/v1/algoOrder"): 1,
    ("GET", "/fapi/v1/openAlgoOrders"): 1,  # 40 without symbol
    ("DELETE", "/fapi/v1/algoOpenOrders"): 1,
    ("GET", "/fapi/v2/positionRisk"): 5,
    ("GET", "/fapi/v3/positionRisk"): 5,
    ("GET", "/fapi/v2/balance"): 5,
    ("GET", "/fapi/v3/balance"): 5,
    ("GET", "/fapi/v2/account"): 5,
    ("GET", "/fapi/v3/account"): 5,
    ("GET", "/fapi/v1/positionSide/dual"): 30,
    ("POST", "/fapi/v1/positionSide/dual"): 1,
}


def signed_weight(method: str, path: str, params: Mapping[str, str]) -> int:
    """IP weight of a signed request (the open-order lists cost 40 across all symbols)."""
    if path in ("/fapi/v1/openOrders", "/fapi/v1/openAlgoOrders") and not params.get("symbol"):
        return 40
    return SIGNED_WEIGHTS.get((method, path), 1)


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """An answer the REST server sends as it is (status and body bytes): the faults whose body is not
    JSON, or whose status is not the one the endpoint's logic would give."""

    status: int
    body: bytes


def _error_body(code: int, msg: str) -> bytes:
    return json.dumps({"code": code, "msg": msg}, separators=(",", ":")).encode()


def _truncated(value: Any) -> bytes:
    """``value`` as JSON cut in the middle: what a connection closed mid-body leaves a client."""
    text = json.dumps(value, separators=(",", ":")).encode()
    return text[: max(1, len(text) // 2)]


def unknown_answer(kind: str, result: Any = None) -> RawAnswer:
    """The answer of kind ``kind`` (see :data:`UNKNOWN_ANSWERS`) to an order placement whose real
    answer was ``result`` (None when it was refused or never executed)."""
    if kind == "503":
        return RawAnswer(503, _error_body(-1001, MSG_1001))
    if kind == "408":
        return RawAnswer(408, _error_body(-1007, MSG_1007))
    if kind == "-1006":
        return RawAnswer(400, _error_body(-1006, MSG_1006))
    if kind == "-1007":
        return RawAnswer(400, _error_body(-1007, MSG_1007))
    if kind == "garbled":
        return RawAnswer(200, _truncated(result if result is not None else {"orderId": 0, "status": "NEW"}))
    if kind == "error200":
        return RawAnswer(200, _error_body(-1007, MSG_1007))
    raise ValueError(f"kind must be one of {', '.join(UNKNOWN_ANSWERS)}")


class AccountError(Exception):
    """A Binance error answer from the account side: HTTP status, code and message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg


def _bad(code: int, msg: str, status: int = 400) -> AccountError:
    return AccountError(status, code, msg)


def _mandatory(name: str) -> AccountError:
    return _bad(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _s(d: Decimal) -> str:
    text = format(d.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _fixed(d: Decimal, places: int) -> str:
    return f"{d.quantize(Decimal(1).scaleb(-places)):f}"


def _places(d: Decimal) -> int:
    """Digits after the point of ``d`` as written (``1.50`` has 2, ``15E+1`` none).

    Only finite numbers reach here (:meth:`Account._decimal` refuses NaN and infinities), whose
    exponent is an int; a non-finite one is a bug in the simulator, not a request to refuse.
    """
    exponent = d.as_tuple().exponent
    if not isinstance(exponent, int):
        raise ValueError(f"not a finite number: {d}")
    return max(0, -exponent)


@dataclass(frozen=True, slots=True)
class _Rules:
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    max_market_qty: Decimal
    min_notional: Decimal
    pd: int
    qd: int


@dataclass(slots=True)
class SimOrder:
    """One order of the matching engine (MARKET orders fill at once)."""

    order_id: int
    client_order_id: str
    symbol: str
    side: str
    type: str
    qty: Decimal
    reduce_only: bool
    close_position: bool
    time: int
    status: str = "NEW"
    executed: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    update_time: int = 0


@dataclass(slots=True)
class SimAlgoOrder:
    """One conditional order of the Algo Service."""

    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    type: str
    trigger: Decimal
    qty: Decimal
    reduce_only: bool
    close_position: bool
    working_type: str
    create_time: int
    status: str = "NEW"
    update_time: int = 0
    trigger_time: int = 0
    actual_order_id: str = ""
    actual_price: Decimal = Decimal(0)


@dataclass(slots=True)
class SimPosition:
    amount: Decimal = Decimal(0)  # signed: long > 0
    entry: Decimal = Decimal(0)
    update_time: int = 0


@dataclass(slots=True)
class _OrderFaults:
    delays: collections.deque[float] = field(default_factory=collections.deque)
    errors: collections.deque[int] = field(default_factory=collections.deque)
    #: (kind, executed) for the next order placements' answers
    answers: collections.deque[tuple[str, bool]] = field(default_factory=collections.deque)
    position_risk: collections.deque[str] = field(default_factory=collections.deque)
    avg_price_mode: str = "normal"
    triggering_hold_s: float = 0.0


class Account:
    """The account state and the signed endpoints' logic (transport-free; the REST server calls it).

    ``price(symbol, now_ms)`` gives the last price; ``now_ms()`` the server clock. Keys: ``api_keys``
    maps API key -> secret (one pair by default, :data:`DEFAULT_API_KEY` / :data:`DEFAULT_API_SECRET`).
    ``wall`` (seconds) times the TRIGGERING hold: it keeps running when a test freezes the market.
    Thread-safe: one lock around all state.
    """

    def __init__(
        self,
        price: Callable[[str, int], float],
        now_ms: Callable[[], int],
        symbols: list[dict[str, Any]],
        *,
        api_keys: Mapping[str, str] | None = None,
        balance: Decimal | float | str = DEFAULT_BALANCE,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        self._price = price
        self._now = now_ms
        self._wall = wall
        self._lock = threading.RLock()
        self.api_keys: dict[str, str] = dict(api_keys or {DEFAULT_API_KEY: DEFAULT_API_SECRET})
        self._rules: dict[str, _Rules] = {}
        self._status: dict[str, str] = {}
        for entry in symbols:
            self._rules[entry["symbol"]] = self._parse_rules(entry)
            self._status[entry["symbol"]] = entry.get("status", "TRADING")
        self._initial_balance = Decimal(str(balance))
        # ids keep counting across resets: an id is never reused, even by a later session
        self._ids = itertools.count(8_389_765_000_000_001)
        self._algo_ids = itertools.count(3_000_000_000_001)
        self.reset()

    def reset(self) -> None:
        """A fresh account on the same simulator: the starting balance, no positions, orders, algo orders,
        leverage settings, scripted faults or observations; one-way mode. Keys and symbol rules stay.

        Why: a fault campaign runs hundreds of sessions against one simulator (starting one per session
        would dominate its run time), and each session must begin from an account nothing happened to.
        """
        with self._lock:
            self.wallet = self._initial_balance
            self.leverage: dict[str, int] = {}
            self.positions: dict[str, SimPosition] = {}
            self.orders: dict[int, SimOrder] = {}
            self.algo_orders: dict[int, SimAlgoOrder] = {}
            self._by_client: dict[tuple[str, str], int] = {}  # (symbol, clientOrderId) -> newest orderId
            self._algo_by_client: dict[str, int] = {}  # clientAlgoId -> newest algoId
            self._faults = _OrderFaults()
            #: hedge mode (``dualSidePosition``): orders need LONG/SHORT, positionRisk has two rows a symbol
            self.dual_side = False
            self._triggering: dict[int, float] = {}  # algoId -> wall time at which the TRIGGERING order fills
            #: every order request that reached the matching engine's checks (accepted or not), oldest first
            self.received: list[dict[str, Any]] = []
            #: accepted orders per newClientOrderId (entries and exits alike)
            self.client_order_counts: collections.Counter[str] = collections.Counter()
            self.algo_client_counts: collections.Counter[str] = collections.Counter()
            self.signature_failures = 0
            self.timestamp_failures = 0
            #: wall time of every order placement (order or algoOrder POST) in the last minute
            self._placed: collections.deque[float] = collections.deque()

    # ------------------------------------------------------------------ rules

    @staticmethod
    def _parse_rules(entry: Mapping[str, Any]) -> _Rules:
        f = {x["filterType"]: x for x in entry.get("filters", ())}
        tick = Decimal(f["PRICE_FILTER"]["tickSize"])
        step = Decimal(f["LOT_SIZE"]["stepSize"])
        market = f.get("MARKET_LOT_SIZE", f["LOT_SIZE"])
        return _Rules(
            tick=tick,
            step=step,
            min_qty=Decimal(f["LOT_SIZE"]["minQty"]),
            max_market_qty=Decimal(market["maxQty"]),
            min_notional=Decimal(f.get("MIN_NOTIONAL", {}).get("notional", "0")),
            pd=int(entry.get("pricePrecision", _places(tick.normalize()))),
            qd=int(entry.get("quantityPrecision", _places(step.normalize()))),
        )

    # ------------------------------------------------------------------ controls

    def delay_next_order(self, seconds: float, count: int = 1) -> None:
        """The next ``count`` order placements (order or algoOrder POST) are accepted, then answered
        only after ``seconds``: a client with a shorter read timeout sees a timeout for a live order."""
        with self._lock:
            self._faults.delays.extend(float(seconds) for _ in range(count))

    def reject_next_order(self, code: int, count: int = 1) -> None:
        """The next ``count`` order placements are refused with ``code`` (-2019 margin or -4164 notional)."""
        if code not in (-2019, -4164):
            raise ValueError("code must be -2019 or -4164")
        with self._lock:
            self._faults.errors.extend(code for _ in range(count))

    def take_delay(self) -> float:
        """Pop the response delay the REST server must apply to the order just accepted (0 if none)."""
        with self._lock:
            return self._faults.delays.popleft() if self._faults.delays else 0.0

    def set_balance(self, amount: Decimal | float | str) -> None:
        with self._lock:
            self.wallet = Decimal(str(amount))

    def cancel_algo(self, client_algo_id: str) -> bool:
        """Cancel an open algo order behind the bot's back (as a user in the web UI would)."""
        with self._lock:
            aid = self._algo_by_client.get(client_algo_id)
            algo = self.algo_orders.get(aid) if aid is not None else None
            if algo is None or algo.status != "NEW":
                return False
            algo.status, algo.update_time = "CANCELED", self._now()
            return True

    def answer_next_order(self, kind: str, count: int = 1, executed: bool = True) -> None:
        """The next ``count`` order placements (order or algoOrder POST) are executed (or, with
        ``executed=False``, not) and answered with one of the answers Binance documents as "execution
        status unknown" (:data:`UNKNOWN_ANSWERS`): ``"503"`` (-1001), ``"408"`` (-1007), ``"-1006"``
        and ``"-1007"`` (HTTP 400), ``"garbled"`` (HTTP 200, JSON cut short), ``"error200"`` (HTTP
        200 with a -1007 body). A client must look the order up by its id before it sends it again.
        """
        if kind not in UNKNOWN_ANSWERS:
            raise ValueError(f"kind must be one of {', '.join(UNKNOWN_ANSWERS)}")
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._faults.answers.extend((kind, bool(executed)) for _ in range(count))

    def set_avg_price_mode(self, mode: str) -> None:
        """How the POST /fapi/v1/order answer reports the fill: ``"normal"``; ``"missing"`` (no
        ``avgPrice`` / ``cumQuote`` keys, as the 2026 SDK's response model); ``"zero"`` (``"0.00"`` /
        ``"0"``). GET /fapi/v1/order keeps the true values: a client must not take the fill price from
        the placement answer on trust."""
        if mode not in AVG_PRICE_MODES:
            raise ValueError(f"mode must be one of {', '.join(AVG_PRICE_MODES)}")
        with self._lock:
            self._faults.avg_price_mode = mode

    def position_risk_next(self, kind: str, count: int = 1) -> None:
        """The next ``count`` positionRisk answers (v2 and v3) are wrong: ``"empty"`` (``[]``),
        ``"garbled"`` (HTTP 200, JSON cut short), ``"missing_rows"`` (the symbols with a position left
        out) or ``"zero"`` (every row, each with a zero positionAmt). A bot must not close its books
        on one such answer."""
        if kind not in POSITION_RISK_FAULTS:
            raise ValueError(f"kind must be one of {', '.join(POSITION_RISK_FAULTS)}")
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._faults.position_risk.extend(kind for _ in range(count))

    def set_dual_side(self, enabled: bool) -> None:
        """Switch hedge mode on or off behind the bot's back (as in the web UI; no -4059 / -4068
        checks, which the POST endpoint applies)."""
        with self._lock:
            self.dual_side = bool(enabled)

    def set_triggering_hold_s(self, seconds: float) -> None:
        """An algo order whose trigger is crossed stays ``TRIGGERING`` (listed, not cancellable) for
        ``seconds`` of wall time before it fills, as Binance's Algo Service may hold it; 0 fills at once."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._lock:
            self._faults.triggering_hold_s = float(seconds)

    def clear_faults(self) -> None:
        """Forget every scripted fault: delays, rejections, unknown answers, positionRisk faults, the
        avg-price mode and the TRIGGERING hold (orders already TRIGGERING still fill on time). Hedge
        mode is account state, not a fault: it stays."""
        with self._lock:
            self._faults = _OrderFaults()

    # ------------------------------------------------------------------ observations

    def snapshot(self) -> dict[str, Any]:
        """Positions, open orders, open algo orders and counters as JSON-able values."""
        with self._lock:
            return {
                "wallet": _s(self.wallet),
                "positions": {
                    s: {"amount": _s(p.amount), "entry": _s(p.entry)}
                    for s, p in self.positions.items()
                    if p.amount != 0
                },
                "open_orders": [self._order_json(o) for o in self.orders.values() if o.status == "NEW"],
                "open_algo_orders": [
                    self._algo_json(a) for a in self.algo_orders.values() if a.status in ALGO_OPEN
                ],
                "orders": len(self.orders),
                "received": len(self.received),
                "client_order_counts": dict(self.client_order_counts),
                "entry_orders": {k: v for k, v in self.client_order_counts.items() if k.startswith("sg-e-")},
                "dual_side": self.dual_side,
                "algo_client_counts": dict(self.algo_client_counts),
                "leverage": dict(self.leverage),
                "signature_failures": self.signature_failures,
                "timestamp_failures": self.timestamp_failures,
            }

    def order_counts(self) -> dict[str, int]:
        """Order placements in the current 10 s and 1 min windows (wall clock, fixed windows, as Binance
        counts them per account, whichever key or process placed them): the X-MBX-ORDER-COUNT-* values."""
        with self._lock:
            now = self._wall()
            while self._placed and self._placed[0] <= now - 120:
                self._placed.popleft()
            return {
                suffix: sum(1 for t in self._placed if t // seconds == now // seconds)
                for suffix, seconds in ORDER_COUNT_WINDOWS
            }

    def open_algo_orders(self, symbol: str | None = None) -> list[SimAlgoOrder]:
        with self._lock:
            return [
                a for a in self.algo_orders.values() if a.status in ALGO_OPEN and symbol in (None, a.symbol)
            ]

    def position(self, symbol: str) -> SimPosition:
        with self._lock:
            p = self.positions.get(symbol)
            return SimPosition(p.amount, p.entry, p.update_time) if p else SimPosition()

    # ------------------------------------------------------------------ authentication

    def authenticate(self, api_key: str | None, query: str, body: bytes) -> dict[str, str]:
        """Check key, timestamp and signature; return the request's parameters (query + body).

        Order of checks as Binance: API key, then parameters, then ``timestamp``/``recvWindow``,
        then the signature.
        """
        if not api_key or not _API_KEY_FORMAT.match(api_key):
            raise _bad(-2014, "API-key format invalid.", 401)
        secret = self.api_keys.get(api_key)
        if secret is None:
            raise _bad(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        body_text = body.decode("utf-8", "replace")
        params: dict[str, str] = {}
        for part in (query, body_text):
            for k, v in parse_qsl(part, keep_blank_values=True):
                if k in params:
                    raise _bad(-1101, f"Duplicate values for a parameter detected: '{k}'.")
                params[k] = v
        sig = params.pop("signature", None)
        raw_ts = params.get("timestamp")
        if not raw_ts:
            raise _mandatory("timestamp")
        if not raw_ts.isdigit():
            raise _bad(
                -1100, "Illegal characters found in parameter 'timestamp'; legal range is '^[0-9]{1,20}$'."
            )
        window = params.get("recvWindow") or str(DEFAULT_RECV_WINDOW)
        if not window.isdigit():
            raise _bad(
                -1100, "Illegal characters found in parameter 'recvWindow'; legal range is '^[0-9]{1,20}$'."
            )
        if int(window) > MAX_RECV_WINDOW:
            raise _bad(-1131, "recvWindow must be less than 60000")
        ts, now = int(raw_ts), self._now()
        if ts >= now + 1000:
            with self._lock:
                self.timestamp_failures += 1
            raise _bad(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - ts > int(window):
            with self._lock:
                self.timestamp_failures += 1
            raise _bad(-1021, "Timestamp for this request is outside of the recvWindow.")
        if not sig:
            raise _mandatory("signature")
        payload = _strip_signature(query) + _strip_signature(body_text)
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sig.lower()):
            with self._lock:
                self.signature_failures += 1
            raise _bad(-1022, "Signature for this request is not valid.")
        params.pop("timestamp", None)
        params.pop("recvWindow", None)
        return params

    # ------------------------------------------------------------------ dispatch

    def handle(self, method: str, path: str, params: dict[str, str]) -> Any:
        """Run one authenticated request; returns the JSON-able answer, a :class:`RawAnswer` (a
        scripted fault) or raises AccountError."""
        route = _ROUTES.get((method, path))
        if route is None:
            raise _bad(-5000, f"Path {path}, Method {method} is invalid", 404)
        with self._lock:
            self.tick()
            if (method, path) in _ORDER_PLACEMENTS:
                self._placed.append(self._wall())  # counted whether it is accepted or refused
            if (method, path) in _ORDER_PLACEMENTS and self._faults.answers:
                kind, executed = self._faults.answers.popleft()
                if not executed:
                    return unknown_answer(kind)
                try:
                    result = getattr(self, route)(params)
                except AccountError:
                    result = None  # refused; the client learns it only by asking
                return unknown_answer(kind, result)
            return getattr(self, route)(params)

    def tick(self) -> int:
        """Trigger every open algo order the current price has crossed (or hold it TRIGGERING) and
        fill those whose TRIGGERING hold is over; returns how many filled."""
        fired = 0
        with self._lock:
            live = [a for a in self.algo_orders.values() if a.status in ALGO_OPEN]
            if not live:
                return 0
            now = self._now()
            wall = self._wall()
            prices: dict[str, Decimal] = {}
            for algo in live:
                if algo.symbol not in prices:
                    prices[algo.symbol] = self._last(algo.symbol, now)
                px = prices[algo.symbol]
                if algo.status == "TRIGGERING":
                    if wall >= self._triggering.get(algo.algo_id, 0.0):
                        self._triggering.pop(algo.algo_id, None)
                        self._execute(algo, px, now)
                        fired += 1
                elif self._crossed(algo, px):
                    algo.trigger_time = algo.update_time = now
                    if self._faults.triggering_hold_s > 0:
                        algo.status = "TRIGGERING"
                        self._triggering[algo.algo_id] = wall + self._faults.triggering_hold_s
                    else:
                        self._execute(algo, px, now)
                        fired += 1
        return fired

    # ------------------------------------------------------------------ helpers

    def _last(self, symbol: str, now: int) -> Decimal:
        r = self._rules[symbol]
        return Decimal(repr(self._price(symbol, now))).quantize(r.tick)

    @staticmethod
    def _crossed(algo: SimAlgoOrder, px: Decimal) -> bool:
        sell = algo.side == "SELL"
        if algo.type in ("STOP_MARKET", "STOP"):
            return px <= algo.trigger if sell else px >= algo.trigger
        return px >= algo.trigger if sell else px <= algo.trigger

    def _execute(self, algo: SimAlgoOrder, px: Decimal, now: int) -> None:
        """The triggered algo order's MARKET order, at the price of the moment it is sent."""
        algo.update_time = now
        pos = self.positions.get(algo.symbol, SimPosition())
        qty = abs(pos.amount) if algo.close_position else algo.qty
        reducing = (pos.amount > 0 and algo.side == "SELL") or (pos.amount < 0 and algo.side == "BUY")
        if (algo.reduce_only or algo.close_position) and not reducing:
            algo.status = "EXPIRED"  # nothing to reduce: the matching engine refuses it
            return
        if algo.reduce_only or algo.close_position:
            qty = min(qty, abs(pos.amount))
        order = self._new_order(
            algo.symbol,
            algo.side,
            "MARKET",
            qty,
            f"algo-{algo.algo_id}",
            algo.reduce_only,
            algo.close_position,
            now,
        )
        self._fill(order, px, now)
        algo.status = "FINISHED"
        algo.actual_order_id = str(order.order_id)
        algo.actual_price = px

    def _symbol(self, params: Mapping[str, str]) -> str:
        symbol = params.get("symbol")
        if not symbol:
            raise _mandatory("symbol")
        if symbol not in self._rules:
            raise _bad(-1121, "Invalid symbol.")
        return symbol

    @staticmethod
    def _decimal(params: Mapping[str, str], name: str, required: bool = True) -> Decimal | None:
        raw = params.get(name)
        if raw is None or raw == "":
            if required:
                raise _mandatory(name)
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise _bad(
                -1100,
                f"Illegal characters found in parameter '{name}'; legal range is "
                "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
            ) from None
        if not value.is_finite():
            raise _bad(-1100, f"Illegal characters found in parameter '{name}'.")
        return value

    @staticmethod
    def _bool(params: Mapping[str, str], name: str) -> bool:
        raw = params.get(name)
        if raw is None or raw == "":
            return False
        low = raw.lower()
        if low not in ("true", "false"):
            raise _bad(-1116 if name == "side" else -1130, f"Data sent for parameter '{name}' is not valid.")
        return low == "true"

    def _check_qty(self, r: _Rules, qty: Decimal) -> None:
        if qty <= 0:
            raise _bad(-4003, "Quantity less than or equal to zero.")
        if _places(qty) > r.qd or (qty % r.step) != 0:
            raise _bad(-1111, "Precision is over the maximum defined for this asset.")
        if qty < r.min_qty:
            raise _bad(-1013, "Filter failure: LOT_SIZE")
        if qty > r.max_market_qty:
            raise _bad(-4005, "Quantity greater than max quantity.")

    def _check_price(self, r: _Rules, price: Decimal, name: str = "price") -> None:
        if price <= 0:
            raise _bad(-4006 if name == "stopPrice" else -4001, "Price less than 0.")
        if _places(price) > r.pd:
            raise _bad(-1111, "Precision is over the maximum defined for this asset.")
        if price % r.tick != 0:
            raise _bad(-4014, "Price not increased by tick size.")

    def _client_id(self, params: Mapping[str, str], name: str) -> str | None:
        cid = params.get(name)
        if cid is None or cid == "":
            return None
        if not _CLIENT_ID.match(cid):
            raise _bad(
                -1100,
                f"Illegal characters found in parameter '{name}'; legal range is "
                "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
            )
        return cid

    def _new_order(
        self,
        symbol: str,
        side: str,
        otype: str,
        qty: Decimal,
        cid: str,
        reduce_only: bool,
        close_position: bool,
        now: int,
    ) -> SimOrder:
        order = SimOrder(
            next(self._ids), cid, symbol, side, otype, qty, reduce_only, close_position, now, update_time=now
        )
        self.orders[order.order_id] = order
        self._by_client[(symbol, cid)] = order.order_id
        return order

    def _fill(self, order: SimOrder, px: Decimal, now: int) -> None:
        pos = self.positions.setdefault(order.symbol, SimPosition())
        signed = order.qty if order.side == "BUY" else -order.qty
        old = pos.amount
        new = old + signed
        realized = Decimal(0)
        if old == 0 or (old > 0) == (signed > 0):  # opening or adding: average the entry
            pos.entry = (pos.entry * abs(old) + px * order.qty) / abs(new) if new != 0 else Decimal(0)
        else:  # reducing (possibly through zero)
            closed = min(abs(signed), abs(old))
            realized = (px - pos.entry) * closed * (1 if old > 0 else -1)
            if abs(signed) > abs(old):
                pos.entry = px
            elif new == 0:
                pos.entry = Decimal(0)
        pos.amount = new
        pos.update_time = now
        notional = px * order.qty
        self.wallet += realized - notional * TAKER_FEE
        order.status, order.executed, order.avg_price = "FILLED", order.qty, px
        order.cum_quote, order.update_time = notional, now

    def _margin_used(self, now: int) -> Decimal:
        used = Decimal(0)
        for sym, pos in self.positions.items():
            if pos.amount != 0:
                lev = Decimal(self.leverage.get(sym, 20))
                used += abs(pos.amount) * self._last(sym, now) / lev
        return used

    def _unrealized(self, now: int) -> Decimal:
        return sum(
            ((self._last(s, now) - p.entry) * p.amount for s, p in self.positions.items() if p.amount != 0),
            Decimal(0),
        )

    # ------------------------------------------------------------------ endpoints

    def _leverage(self, p: dict[str, str]) -> Any:
        symbol = self._symbol(p)
        raw = p.get("leverage")
        if not raw:
            raise _mandatory("leverage")
        if not raw.isdigit() or not 1 <= int(raw) <= 125:
            raise _bad(-4028, f"Leverage {raw} is not valid")
        self.leverage[symbol] = int(raw)
        return {"leverage": int(raw), "maxNotionalValue": "1000000", "symbol": symbol}

    def _post_order(self, p: dict[str, str]) -> Any:
        symbol = self._symbol(p)
        side = p.get("side")
        if not side:
            raise _mandatory("side")
        if side not in ("BUY", "SELL"):
            raise _bad(-1116, "Invalid side.")
        otype = p.get("type")
        if not otype:
            raise _mandatory("type")
        now = self._now()
        self.received.append(
            {
                "symbol": symbol,
                "side": side,
                "type": otype,
                "quantity": p.get("quantity"),
                "newClientOrderId": p.get("newClientOrderId"),
                "time": now,
            }
        )
        if otype in CONDITIONAL_TYPES:
            raise _bad(
                -4120,
                "Order type not supported for this endpoint. Please use the Algo Order API "
                "endpoints instead.",
            )
        if otype != "MARKET":
            raise _bad(
                -1116 if otype not in ("LIMIT",) else -4000,
                "Invalid orderType." if otype != "LIMIT" else "Only MARKET orders are simulated.",
            )
        self._check_position_side(p)
        cid = self._client_id(p, "newClientOrderId") or f"sim{next(self._ids)}"
        prior = self._by_client.get((symbol, cid))
        if prior is not None and self.orders[prior].status == "NEW":
            raise _bad(-4116, "ClientOrderId is duplicated.")
        r = self._rules[symbol]
        reduce_only = self._bool(p, "reduceOnly")
        qty = self._decimal(p, "quantity")
        assert qty is not None
        self._check_qty(r, qty)
        px = self._last(symbol, now)
        code = self._faults.errors.popleft() if self._faults.errors else None
        pos = self.positions.get(symbol, SimPosition())
        if reduce_only:
            reducing = (pos.amount > 0 and side == "SELL") or (pos.amount < 0 and side == "BUY")
            if not reducing:
                raise _bad(-2022, "ReduceOnly Order is rejected.")
            qty = min(qty, abs(pos.amount))
        else:
            if code == -4164 or qty * px < r.min_notional:
                raise _bad(
                    -4164,
                    f"Order's notional must be no smaller than {_s(r.min_notional)} "
                    "(unless you choose reduce only).",
                )
            lev = Decimal(self.leverage.get(symbol, 20))
            available = self.wallet + self._unrealized(now) - self._margin_used(now)
            if code == -2019 or qty * px / lev > available:
                raise _bad(-2019, "Margin is insufficient.")
        order = self._new_order(symbol, side, "MARKET", qty, cid, reduce_only, False, now)
        self._fill(order, px, now)
        self.client_order_counts[cid] += 1
        body = self._order_json(order)
        if p.get("newOrderRespType", "ACK") != "RESULT":
            body.update(status="NEW", executedQty="0", cumQty="0", cumQuote="0", avgPrice="0.00")
        if self._faults.avg_price_mode == "missing":
            del body["avgPrice"], body["cumQuote"]
        elif self._faults.avg_price_mode == "zero":
            body.update(avgPrice="0.00", cumQuote="0")
        return body

    def _check_position_side(self, p: Mapping[str, str]) -> None:
        """-4061 when ``positionSide`` does not fit the account's mode (BOTH or none in one-way mode,
        LONG / SHORT in hedge mode); hedge-mode orders themselves are not simulated (-4000)."""
        side = p.get("positionSide") or "BOTH"
        if side not in ("BOTH", "LONG", "SHORT"):
            raise _bad(-1130, "Data sent for parameter 'positionSide' is not valid.")
        if (side == "BOTH") == self.dual_side:
            raise _bad(-4061, "Order's position side does not match user's setting.")
        if self.dual_side:
            raise _bad(-4000, "hedge mode orders are not simulated")

    def _find_order(self, p: dict[str, str]) -> SimOrder:
        symbol = self._symbol(p)
        oid, cid = p.get("orderId"), p.get("origClientOrderId")
        if not oid and not cid:
            raise _bad(
                -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        order = None
        if oid:
            order = self.orders.get(int(oid)) if oid.isdigit() else None
        else:
            found = self._by_client.get((symbol, cid or ""))
            order = self.orders.get(found) if found is not None else None
        if order is None or order.symbol != symbol:
            raise _bad(-2013, "Order does not exist.")
        return order

    def _get_order(self, p: dict[str, str]) -> Any:
        return self._order_json(self._find_order(p))

    def _delete_order(self, p: dict[str, str]) -> Any:
        try:
            order = self._find_order(p)
        except AccountError as exc:
            if exc.code == -2013:
                raise _bad(-2011, "Unknown order sent.") from None
            raise
        if order.status != "NEW":
            raise _bad(-2011, "Unknown order sent.")
        order.status = "CANCELED"
        return self._order_json(order)

    def _open_orders(self, p: dict[str, str]) -> Any:
        symbol = self._symbol(p) if p.get("symbol") else None
        return [
            self._order_json(o)
            for o in self.orders.values()
            if o.status == "NEW" and symbol in (None, o.symbol)
        ]

    def _post_algo(self, p: dict[str, str]) -> Any:
        algo_type = p.get("algoType")
        if not algo_type:
            raise _mandatory("algoType")
        if algo_type != "CONDITIONAL":
            raise _bad(-1130, "Data sent for parameter 'algoType' is not valid.")
        symbol = self._symbol(p)
        side = p.get("side")
        if side not in ("BUY", "SELL"):
            raise _mandatory("side") if not side else _bad(-1116, "Invalid side.")
        otype = p.get("type")
        if not otype:
            raise _mandatory("type")
        now = self._now()
        self.received.append(
            {
                "symbol": symbol,
                "side": side,
                "type": otype,
                "quantity": p.get("quantity"),
                "clientAlgoId": p.get("clientAlgoId"),
                "time": now,
            }
        )
        if otype not in CONDITIONAL_TYPES:
            raise _bad(-1116, "Invalid orderType.")
        if otype not in ALGO_TYPES_SUPPORTED:
            raise _bad(-4000, f"Only STOP_MARKET and TAKE_PROFIT_MARKET are simulated, not {otype}.")
        self._check_position_side(p)
        r = self._rules[symbol]
        trigger = self._decimal(p, "triggerPrice")
        assert trigger is not None
        self._check_price(r, trigger, "stopPrice")
        close_position = self._bool(p, "closePosition")
        reduce_only = self._bool(p, "reduceOnly")
        if close_position and reduce_only:
            raise _bad(-1106, "Parameter 'reduceOnly' sent when not required.")
        qty = self._decimal(p, "quantity", required=not close_position)
        if close_position and qty is not None:
            raise _bad(-1106, "Parameter 'quantity' sent when not required.")
        if qty is not None:
            self._check_qty(r, qty)
        working = p.get("workingType") or "CONTRACT_PRICE"
        if working not in ("CONTRACT_PRICE", "MARK_PRICE"):
            raise _bad(-1130, "Data sent for parameter 'workingType' is not valid.")
        cid = self._client_id(p, "clientAlgoId") or f"simalgo{next(self._algo_ids)}"
        prior = self._algo_by_client.get(cid)
        if prior is not None and self.algo_orders[prior].status in ALGO_OPEN:
            raise _bad(-4116, "ClientOrderId is duplicated.")
        code = self._faults.errors.popleft() if self._faults.errors else None
        if code is not None:
            raise _bad(
                code,
                "Margin is insufficient."
                if code == -2019
                else f"Order's notional must be no smaller than {_s(r.min_notional)} (unless you choose "
                "reduce only).",
            )
        px = self._last(symbol, now)
        probe = SimAlgoOrder(
            0, cid, symbol, side, otype, trigger, qty or Decimal(0), reduce_only, close_position, working, now
        )
        if self._crossed(probe, px):
            raise _bad(-2021, "Order would immediately trigger.")
        algo = probe
        algo.algo_id = next(self._algo_ids)
        algo.update_time = now
        self.algo_orders[algo.algo_id] = algo
        self._algo_by_client[cid] = algo.algo_id
        self.algo_client_counts[cid] += 1
        return self._algo_json(algo)

    def _find_algo(self, p: dict[str, str]) -> SimAlgoOrder:
        aid, cid = p.get("algoId"), p.get("clientAlgoId")
        if not aid and not cid:
            raise _bad(-1102, "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!")
        algo = None
        if aid:
            algo = self.algo_orders.get(int(aid)) if aid.isdigit() else None
        else:
            found = self._algo_by_client.get(cid or "")
            algo = self.algo_orders.get(found) if found is not None else None
        if algo is None:
            raise _bad(-2013, "Order does not exist.")
        return algo

    def _get_algo(self, p: dict[str, str]) -> Any:
        return self._algo_json(self._find_algo(p), query=True)

    def _delete_algo(self, p: dict[str, str]) -> Any:
        try:
            algo = self._find_algo(p)
        except AccountError as exc:
            if exc.code == -2013:
                raise _bad(-2011, "Unknown order sent.") from None
            raise
        if algo.status != "NEW":
            raise _bad(-2011, "Unknown order sent.")
        algo.status, algo.update_time = "CANCELED", self._now()
        return {"algoId": algo.algo_id, "clientAlgoId": algo.client_algo_id, "code": "200", "msg": "success"}

    def _open_algos(self, p: dict[str, str]) -> Any:
        symbol = self._symbol(p) if p.get("symbol") else None
        return [
            self._algo_json(a, query=True)
            for a in self.algo_orders.values()
            if a.status in ALGO_OPEN and symbol in (None, a.symbol)
        ]

    def _cancel_all_algos(self, p: dict[str, str]) -> Any:
        symbol = self._symbol(p)
        now = self._now()
        for a in self.algo_orders.values():
            if a.status == "NEW" and a.symbol == symbol:
                a.status, a.update_time = "CANCELED", now
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _position_risk(self, p: dict[str, str]) -> Any:
        """v2: a row for the symbol asked about, or for every symbol the account touched, flat or not."""
        symbol = self._symbol(p) if p.get("symbol") else None
        return self._risk_answer(
            [symbol] if symbol else sorted(set(self.positions) | set(self.leverage)), self._risk_row
        )

    def _position_risk_v3(self, p: dict[str, str]) -> Any:
        """v3: only symbols with a position or open orders have rows (Binance's documented rule), so a
        flat symbol asked about by name answers ``[]``; hedge mode shows only the sides that hold one."""
        symbol = self._symbol(p) if p.get("symbol") else None
        busy = {s for s, x in self.positions.items() if x.amount != 0}
        busy |= {o.symbol for o in self.orders.values() if o.status == "NEW"}
        return self._risk_answer(sorted(busy & {symbol} if symbol else busy), self._risk_row_v3, v3=True)

    def _risk_answer(self, names: list[str], row: Callable[..., dict[str, Any]], v3: bool = False) -> Any:
        fault = self._faults.position_risk.popleft() if self._faults.position_risk else None
        if fault == "empty":
            return []
        now = self._now()
        if fault == "missing_rows":
            names = [s for s in names if self.positions.get(s, SimPosition()).amount == 0]
        sides = ("LONG", "SHORT") if self.dual_side else ("BOTH",)
        out = []
        for sym in names:
            pos = self.positions.get(sym, SimPosition())
            for side in sides:
                # hedge mode: the one simulated position shows on the row of its direction
                shown = (
                    side == "BOTH"
                    or (side == "LONG" and pos.amount > 0)
                    or (side == "SHORT" and pos.amount < 0)
                )
                if v3 and not shown and pos.amount != 0:
                    continue  # v3 in hedge mode: the side without a position has no row
                amount = pos.amount if shown and fault != "zero" else Decimal(0)
                out.append(row(sym, amount, pos, side, now))
        if fault == "garbled":
            return RawAnswer(200, _truncated(out))
        return out

    def _risk_row(self, sym: str, amount: Decimal, pos: SimPosition, side: str, now: int) -> dict[str, Any]:
        r = self._rules[sym]
        mark = self._last(sym, now)
        entry = pos.entry if amount else Decimal(0)
        return {
            "symbol": sym,
            "positionAmt": _fixed(amount, r.qd),
            "entryPrice": _s(entry) if amount else "0.0",
            "breakEvenPrice": _s(entry) if amount else "0.0",
            "markPrice": _s(mark),
            "unRealizedProfit": _fixed((mark - entry) * amount, 8),
            "liquidationPrice": "0",
            "leverage": str(self.leverage.get(sym, 20)),
            "maxNotionalValue": "1000000",
            "marginType": "cross",
            "isolatedMargin": "0.00000000",
            "isAutoAddMargin": "false",
            "positionSide": side,
            "notional": _s(mark * amount),
            "isolatedWallet": "0",
            "updateTime": pos.update_time,
        }

    def _risk_row_v3(
        self, sym: str, amount: Decimal, pos: SimPosition, side: str, now: int
    ) -> dict[str, Any]:
        """A v3 row: margins instead of leverage, marginType and maxNotionalValue (which v3 dropped)."""
        r = self._rules[sym]
        mark = self._last(sym, now)
        entry = pos.entry if amount else Decimal(0)
        notional = mark * amount
        initial = abs(notional) / Decimal(self.leverage.get(sym, 20))
        return {
            "symbol": sym,
            "positionSide": side,
            "positionAmt": _fixed(amount, r.qd),
            "entryPrice": _s(entry) if amount else "0.0",
            "breakEvenPrice": _s(entry) if amount else "0.0",
            "markPrice": _s(mark),
            "unRealizedProfit": _fixed((mark - entry) * amount, 8),
            "liquidationPrice": "0",
            "isolatedMargin": "0",
            "notional": _s(notional),
            "marginAsset": "USDT",
            "isolatedWallet": "0",
            "initialMargin": _fixed(initial, 8),
            "maintMargin": _fixed(abs(notional) * Decimal("0.004"), 8),
            "positionInitialMargin": _fixed(initial, 8),
            "openOrderInitialMargin": "0",
            "adl": 1 if amount else 0,
            "bidNotional": "0",
            "askNotional": "0",
            "updateTime": pos.update_time,
        }

    def _get_dual(self, p: dict[str, str]) -> Any:
        return {"dualSidePosition": self.dual_side}

    def _post_dual(self, p: dict[str, str]) -> Any:
        if not p.get("dualSidePosition"):
            raise _mandatory("dualSidePosition")
        wanted = self._bool(p, "dualSidePosition")
        if wanted == self.dual_side:
            raise _bad(-4059, "No need to change position side.")
        if any(x.amount != 0 for x in self.positions.values()):
            raise _bad(-4068, "Position side cannot be changed if there exists position.")
        if any(o.status == "NEW" for o in self.orders.values()) or any(
            a.status in ALGO_OPEN for a in self.algo_orders.values()
        ):
            raise _bad(-4067, "Position side cannot be changed if there exists open orders.")
        self.dual_side = wanted
        return {"code": 200, "msg": "success"}

    def _balance(self, p: dict[str, str]) -> Any:
        now = self._now()
        upnl = self._unrealized(now)
        available = self.wallet + upnl - self._margin_used(now)
        return [
            {
                "accountAlias": "SgsR",
                "asset": "USDT",
                "balance": _fixed(self.wallet, 8),
                "crossWalletBalance": _fixed(self.wallet, 8),
                "crossUnPnl": _fixed(upnl, 8),
                "availableBalance": _fixed(available, 8),
                "maxWithdrawAmount": _fixed(available, 8),
                "marginAvailable": True,
                "updateTime": now,
            }
        ]

    def _account(self, p: dict[str, str]) -> Any:
        now = self._now()
        upnl = self._unrealized(now)
        used = self._margin_used(now)
        available = self.wallet + upnl - used
        return {
            "feeTier": 0,
            "canTrade": True,
            "canDeposit": True,
            "canWithdraw": True,
            "updateTime": 0,
            "multiAssetsMargin": False,
            "totalInitialMargin": _fixed(used, 8),
            "totalMaintMargin": _fixed(used / 10, 8),
            "totalWalletBalance": _fixed(self.wallet, 8),
            "totalUnrealizedProfit": _fixed(upnl, 8),
            "totalMarginBalance": _fixed(self.wallet + upnl, 8),
            "availableBalance": _fixed(available, 8),
            "maxWithdrawAmount": _fixed(available, 8),
            "assets": [
                {
                    "asset": "USDT",
                    "walletBalance": _fixed(self.wallet, 8),
                    "unrealizedProfit": _fixed(upnl, 8),
                    "marginBalance": _fixed(self.wallet + upnl, 8),
                    "availableBalance": _fixed(available, 8),
                    "updateTime": now,
                }
            ],
            "positions": [
                {
                    "symbol": s,
                    "positionAmt": _s(x.amount),
                    "entryPrice": _s(x.entry),
                    "leverage": str(self.leverage.get(s, 20)),
                    "positionSide": self._side_of(x),
                    "updateTime": x.update_time,
                }
                for s, x in self.positions.items()
                if x.amount != 0
            ],
        }

    # ------------------------------------------------------------------ JSON shapes

    def _side_of(self, pos: SimPosition) -> str:
        if not self.dual_side:
            return "BOTH"
        return "LONG" if pos.amount > 0 else "SHORT"

    def _order_json(self, o: SimOrder) -> dict[str, Any]:
        r = self._rules[o.symbol]
        return {
            "orderId": o.order_id,
            "symbol": o.symbol,
            "status": o.status,
            "clientOrderId": o.client_order_id,
            "price": "0",
            "avgPrice": _s(o.avg_price) if o.executed else "0.00",
            "origQty": _fixed(o.qty, r.qd),
            "executedQty": _fixed(o.executed, r.qd),
            "cumQty": _fixed(o.executed, r.qd),
            "cumQuote": _fixed(o.cum_quote, 8),
            "timeInForce": "GTC",
            "type": o.type,
            "origType": o.type,
            "reduceOnly": o.reduce_only,
            "closePosition": o.close_position,
            "side": o.side,
            "positionSide": "BOTH",
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": o.time,
            "updateTime": o.update_time,
        }

    def _algo_json(self, a: SimAlgoOrder, query: bool = False) -> dict[str, Any]:
        r = self._rules[a.symbol]
        body: dict[str, Any] = {
            "algoId": a.algo_id,
            "clientAlgoId": a.client_algo_id,
            "algoType": "CONDITIONAL",
            "orderType": a.type,
            "symbol": a.symbol,
            "side": a.side,
            "positionSide": "BOTH",
            "timeInForce": "GTC",
            "quantity": _fixed(a.qty, r.qd) if a.qty else "0",
            "algoStatus": a.status,
            "triggerPrice": _s(a.trigger),
            "price": "0",
            "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": a.working_type,
            "priceMatch": "NONE",
            "closePosition": a.close_position,
            "priceProtect": False,
            "reduceOnly": a.reduce_only,
            "activatePrice": "",
            "callbackRate": "",
            "createTime": a.create_time,
            "updateTime": a.update_time,
            "triggerTime": a.trigger_time,
            "goodTillDate": 0,
        }
        if query:
            body["actualOrderId"] = a.actual_order_id
            body["actualPrice"] = _s(a.actual_price) if a.actual_order_id else ""
        return body


_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/fapi/v1/leverage"): "_leverage",
    ("POST", "/fapi/v1/order"): "_post_order",
    ("GET", "/fapi/v1/order"): "_get_order",
    ("DELETE", "/fapi/v1/order"): "_delete_order",
    ("GET", "/fapi/v1/openOrders"): "_open_orders",
    ("POST", "/fapi/v1/algoOrder"): "_post_algo",
    ("GET", "/fapi/v1/algoOrder"): "_get_algo",
    ("DELETE", "/fapi/v1/algoOrder"): "_delete_algo",
    ("GET", "/fapi/v1/openAlgoOrders"): "_open_algos",
    ("DELETE", "/fapi/v1/algoOpenOrders"): "_cancel_all_algos",
    ("GET", "/fapi/v2/positionRisk"): "_position_risk",
    ("GET", "/fapi/v3/positionRisk"): "_position_risk_v3",
    ("GET", "/fapi/v2/balance"): "_balance",
    ("GET", "/fapi/v3/balance"): "_balance",
    ("GET", "/fapi/v2/account"): "_account",
    ("GET", "/fapi/v3/account"): "_account",
    ("GET", "/fapi/v1/positionSide/dual"): "_get_dual",
    ("POST", "/fapi/v1/positionSide/dual"): "_post_dual",
}

#: Paths of the signed routes, for the REST server's dispatch.
SIGNED_PATHS = frozenset(path for _, path in _ROUTES)
#: The requests that place an order: counted for the per-minute order rate whether accepted or not, and
#: the ones a scripted "execution status unknown" answer replaces.
_ORDER_PLACEMENTS = frozenset({("POST", "/fapi/v1/order"), ("POST", "/fapi/v1/algoOrder")})


def _strip_signature(text: str) -> str:
    """The raw query or body without its ``signature=...`` pair, byte for byte otherwise."""
    if "signature=" not in text:
        return text
    return "&".join(part for part in text.split("&") if not part.startswith("signature="))


def sign(secret: str, payload: str) -> str:
    """HMAC-SHA256 hex digest, as a Binance client computes it (for tests and tools)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


__all__ = [
    "ALGO_OPEN",
    "ALGO_TYPES_SUPPORTED",
    "AVG_PRICE_MODES",
    "Account",
    "AccountError",
    "CONDITIONAL_TYPES",
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "POSITION_RISK_FAULTS",
    "RawAnswer",
    "SIGNED_PATHS",
    "UNKNOWN_ANSWERS",
    "sign",
    "signed_weight",
    "unknown_answer",
]
