"""Request-weight accounting shared by every REST call of one process.

Binance USD-M counts *request weight* per IP per minute (REQUEST_WEIGHT, 2400 by default) and
answers 429 when it is exceeded; a client that keeps sending after a 429 is banned with 418 for
two minutes up to three days. The program this replaces protected itself only by keeping its
worker count low. Here every request first asks the :class:`WeightLimiter` for its weight:

* the limiter keeps a sliding one-minute window of the weight it has sent and never lets the
  window exceed ``budget`` (the exchange's limit minus a safety margin). A sliding window is
  stricter than the exchange's fixed minute, so staying inside it keeps us inside the exchange's;
* every response's ``X-MBX-USED-WEIGHT-1M`` corrects the window upwards (other processes on the
  same IP, e.g. ``surge run`` next to a cron ``surge filter-4h``, spend the same budget);
* a 429 or 418 closes a gate for *every* thread until ``Retry-After`` has passed, so no request is
  sent inside the window the exchange asked us to keep quiet;
* a 418 longer than ``max_ban_s`` is a :class:`RateLimitBanned` error, not a silent hang of hours.

Time and sleeping are injectable so the tests can drive the limiter with a fake clock.
"""

from __future__ import annotations

import bisect
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from surge.errors import SurgeError

#: What Binance documents for USD-M futures when exchangeInfo does not say otherwise.
DEFAULT_WEIGHT_LIMIT = 2400
DEFAULT_WINDOW_S = 60.0

_INTERVAL_S = {"SECOND": 1.0, "MINUTE": 60.0, "HOUR": 3600.0, "DAY": 86400.0}


class RateLimitBanned(SurgeError):
    """The exchange banned this IP (418) for longer than we are willing to wait (exit 1)."""

    def __init__(self, retry_after_s: float, max_ban_s: float) -> None:
        self.retry_after_s = retry_after_s
        self.max_ban_s = max_ban_s
        super().__init__(
            f"IP banned by the exchange (HTTP 418) for {retry_after_s:.0f} s, longer than the "
            f"{max_ban_s:.0f} s we wait; stop all surge processes on this IP and retry later"
        )


#: The largest klines ``limit`` that costs weight 1 (the 4h scan's lookback, the 1m backfill).
MAX_WEIGHT1_LIMIT = 99


def klines_weight(limit: int | None) -> int:
    """Weight of ``GET /fapi/v1/klines`` by ``limit`` (Binance's default limit is 500)."""
    n = 500 if limit is None else int(limit)
    if n <= MAX_WEIGHT1_LIMIT:
        return 1
    if n < 500:
        return 2
    if n <= 1000:
        return 5
    return 10


def endpoint_weight(path: str, params: Mapping[str, Any] | None = None) -> int:
    """The request weight Binance charges for ``path`` with ``params`` (1 when unknown).

    Only the public endpoints the bot uses are listed; an unknown endpoint is charged 1, which the
    ``X-MBX-USED-WEIGHT-1M`` correction then fixes if the exchange charged more.
    """
    params = params or {}
    has_symbol = "symbol" in params
    if path.endswith("/klines") or path.endswith("/continuousKlines") or path.endswith("/markPriceKlines"):
        return klines_weight(params.get("limit"))
    if path.endswith("/ticker/24hr"):
        return 1 if has_symbol else 40
    if path.endswith("/ticker/price") or path.endswith("/ticker/bookTicker"):
        return 1 if has_symbol else 2
    if path.endswith("/premiumIndex"):
        return 1 if has_symbol else 10
    if path.endswith("/depth"):
        limit = int(params.get("limit", 500))
        return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
    return 1


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    """``Retry-After`` in seconds (Binance sends an integer); missing or odd -> ``default``."""
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        return default
    if math.isnan(seconds) or seconds < 0:
        return default
    return seconds


class WeightLimiter:
    """Thread-safe request-weight budget and 429/418 gate (see the module docstring).

    ``acquire(weight)`` blocks until the request may be sent and records its weight;
    ``observe(status, headers)`` is fed every response. ``budget`` is ``floor(limit * (1 -
    safety_margin))``; ``limit`` starts at 2400/minute and follows exchangeInfo via
    :meth:`configure_from_exchange_info`.
    """

    def __init__(
        self,
        limit: int = DEFAULT_WEIGHT_LIMIT,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        safety_margin: float = 0.1,
        max_ban_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 <= safety_margin < 1.0:
            raise ValueError(f"safety_margin must be in [0, 1), got {safety_margin}")
        self._clock = clock
        self._cond = threading.Condition()
        self._events: deque[tuple[float, int]] = deque()  # (sent at, weight), oldest first
        self._in_window = 0
        self._gate_until = 0.0
        self._banned: RateLimitBanned | None = None
        self.safety_margin = safety_margin
        self.max_ban_s = max_ban_s
        self.window_s = window_s
        self.limit = limit
        #: Highest X-MBX-USED-WEIGHT-1M seen (what the exchange says we used), for reports.
        self.max_used_weight = 0
        #: Highest weight our own sliding window ever held.
        self.max_window_weight = 0
        #: Latest X-MBX-USED-WEIGHT-1M seen (for progress display).
        self.last_used_weight = 0
        #: Weight booked by acquire() since creation (what this process sent).
        self.total_weight = 0
        self.rate_limited = 0  # 429 / 418 responses seen
        self.waited_s = 0.0  # total time threads spent blocked in acquire
        self.waiting = 0  # threads blocked in acquire right now (for people and tests)

    # ------------------------------------------------------------------ configuration

    @property
    def budget(self) -> int:
        return max(1, math.floor(self.limit * (1.0 - self.safety_margin)))

    def configure_from_exchange_info(self, info: Any) -> None:
        """Take the per-minute REQUEST_WEIGHT limit from an exchangeInfo body, if it has one.

        Only the limit is taken: the window stays ``window_s`` (60 s unless a test shrinks it), and a
        REQUEST_WEIGHT entry for another interval is ignored rather than misread as per-minute.
        """
        limits = info.get("rateLimits") if isinstance(info, dict) else None
        for entry in limits or ():
            if not isinstance(entry, dict) or entry.get("rateLimitType") != "REQUEST_WEIGHT":
                continue
            limit = entry.get("limit")
            unit = _INTERVAL_S.get(str(entry.get("interval", "")).upper(), 0.0)
            num = entry.get("intervalNum", 1)
            if (
                isinstance(limit, int)
                and not isinstance(limit, bool)
                and limit > 0
                and isinstance(num, int)
                and unit * num == 60.0
            ):
                with self._cond:
                    self.limit = limit
                    self._cond.notify_all()
                return

    # ------------------------------------------------------------------ the two hot calls

    def acquire(self, weight: int) -> float:
        """Block until ``weight`` fits the budget and the gate is open; return the time waited.

        A weight larger than the whole budget is let through alone in an empty window rather than
        blocking forever (the exchange would accept it too, just nothing else that minute).
        """
        start = self._clock()
        with self._cond:
            while True:
                if self._banned is not None:
                    raise self._banned
                now = self._clock()
                self._expire(now)
                wait = self._gate_until - now
                if wait <= 0:
                    fits = self._in_window + weight <= self.budget or self._in_window == 0
                    if fits:
                        self._events.append((now, weight))
                        self._in_window += weight
                        self.total_weight += weight
                        self.max_window_weight = max(self.max_window_weight, self._in_window)
                        waited = now - start
                        self.waited_s += waited
                        return waited
                    wait = self._until_fits(now, weight)
                self.waiting += 1
                try:
                    self._cond.wait(timeout=max(wait, 0.001))
                finally:
                    self.waiting -= 1

    def observe(self, status: int, headers: Mapping[str, str], *, used_weight: bool = True) -> None:
        """Learn from one response: used-weight header, and 429/418 with ``Retry-After``.

        ``used_weight=False`` skips the used-weight header (Binance says the one of
        ``/fapi/v2/ticker/price`` is not accurate and must be ignored); 429/418 still count.
        Raises :class:`RateLimitBanned` (and keeps raising it from every ``acquire``) for a 418
        whose ``Retry-After`` exceeds ``max_ban_s``.
        """
        used = (
            (headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("x-mbx-used-weight-1m"))
            if used_weight
            else None
        )
        with self._cond:
            now = self._clock()
            if used is not None:
                try:
                    used_i = int(used)
                except ValueError:
                    used_i = -1
                if used_i >= 0:
                    self.last_used_weight = used_i
                    self.max_used_weight = max(self.max_used_weight, used_i)
                    self._expire(now)
                    if used_i > self._in_window:
                        # The exchange counted more than we sent (another process on this IP, or a
                        # weight we under-estimated): book the difference so the window agrees.
                        self._events.append((now, used_i - self._in_window))
                        self._in_window = used_i
                        self.max_window_weight = max(self.max_window_weight, self._in_window)
            if status in (429, 418):
                self.rate_limited += 1
                retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
                if status == 418 and retry_after > self.max_ban_s:
                    self._banned = RateLimitBanned(retry_after, self.max_ban_s)
                    self._gate_until = max(self._gate_until, now + retry_after)
                    self._cond.notify_all()
                    raise self._banned
                self._gate_until = max(self._gate_until, now + retry_after)
                self._cond.notify_all()

    # ------------------------------------------------------------------ introspection

    @property
    def gate_open_in(self) -> float:
        """Seconds until the 429/418 gate opens again (0 when open)."""
        with self._cond:
            return max(0.0, self._gate_until - self._clock())

    @property
    def window_weight(self) -> int:
        """Weight booked in the current sliding window."""
        with self._cond:
            self._expire(self._clock())
            return self._in_window

    @property
    def banned(self) -> RateLimitBanned | None:
        return self._banned

    def wake(self) -> None:
        """Wake blocked threads so they re-read the (fake) clock; used by tests."""
        with self._cond:
            self._cond.notify_all()

    # ------------------------------------------------------------------ internals (lock held)

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        events = self._events
        while events and events[0][0] <= horizon:
            self._in_window -= events.popleft()[1]

    def _until_fits(self, now: float, weight: int) -> float:
        """Seconds until enough old weight leaves the window for ``weight`` to fit."""
        excess = self._in_window + weight - self.budget
        freed = 0
        for sent_at, w in self._events:
            freed += w
            if freed >= excess:
                return sent_at + self.window_s - now
        return self.window_s


#: Binance USD-M's ORDERS limits when exchangeInfo does not say otherwise: (window seconds, orders).
DEFAULT_ORDER_LIMITS: tuple[tuple[float, int], ...] = ((10.0, 300), (60.0, 1200))

#: Requests that place an order and so count against the ORDERS limits.
ORDER_PLACEMENTS = frozenset({("POST", "/fapi/v1/order"), ("POST", "/fapi/v1/algoOrder")})

#: ``X-MBX-ORDER-COUNT-10S``, ``-1M``, ...: the account's order count per ORDERS window
_ORDER_COUNT = re.compile(r"^x-mbx-order-count-(\d+)([smhd])$", re.IGNORECASE)
_LETTER_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class OrderRateLimiter:
    """The ORDERS limits (orders placed per 10 s and per minute), a separate budget from weight.

    An order POST weighs 0 in REQUEST_WEIGHT on USD-M, so the weight limiter alone would let a burst
    of orders through; the exchange then answers -1015 "Too many new orders". ``acquire()`` blocks
    until every window has room (less ``safety_margin``), the same way the weight limiter does.
    """

    def __init__(
        self,
        limits: tuple[tuple[float, int], ...] = DEFAULT_ORDER_LIMITS,
        *,
        safety_margin: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._sent: deque[float] = deque()
        self.safety_margin = safety_margin
        self.limits = limits
        self.total = 0
        #: orders the exchange counted beyond ours (other processes on the account), booked by observe()
        self.observed_extra = 0
        #: the latest X-MBX-ORDER-COUNT-* values seen: window seconds -> count
        self.last_counts: dict[float, int] = {}

    def budgets(self) -> list[tuple[float, int]]:
        return [(w, max(1, math.floor(n * (1.0 - self.safety_margin)))) for w, n in self.limits]

    def configure_from_exchange_info(self, info: Any) -> None:
        """Take the ORDERS entries of exchangeInfo's ``rateLimits`` (any interval it states)."""
        found: list[tuple[float, int]] = []
        for entry in (info.get("rateLimits") if isinstance(info, dict) else None) or ():
            if not isinstance(entry, dict) or entry.get("rateLimitType") != "ORDERS":
                continue
            limit, num = entry.get("limit"), entry.get("intervalNum", 1)
            unit = _INTERVAL_S.get(str(entry.get("interval", "")).upper(), 0.0)
            if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
                continue
            if isinstance(num, int) and unit * num > 0:
                found.append((unit * num, limit))
        if found:
            with self._cond:
                self.limits = tuple(sorted(found))
                self._cond.notify_all()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Take the account's order counts from an order answer's ``X-MBX-ORDER-COUNT-*`` headers.

        The ORDERS limits count per account, not per process: orders placed by another bot, the web UI
        or a second key of the account spend the same budget. Where the exchange counts more than our
        window holds, the difference is booked (as ``X-MBX-USED-WEIGHT-1M`` corrects the weight
        window), so the next ``acquire`` waits for it: at the latest moment it can have happened, which
        is now for the shortest window and just before the next shorter one for longer windows (orders
        the 1 min count has beyond the 10 s count are older than 10 s). Never less: our window may hold
        orders whose answers the exchange counted in an earlier fixed window.
        """
        counts = []
        for name, value in headers.items():
            match = _ORDER_COUNT.match(name)
            if match is None:
                continue
            try:
                count = int(value)
            except (TypeError, ValueError):
                continue
            if count >= 0:
                counts.append((int(match.group(1)) * _LETTER_S[match.group(2).lower()], count))
        if not counts:
            return
        with self._cond:
            now = self._clock()
            self._expire(now)
            at = now
            for window, count in sorted(counts):
                held = sum(1 for t in self._sent if t > now - window)
                if count > held:
                    for _ in range(count - held):
                        bisect.insort(self._sent, at)  # the deque stays oldest first
                    self.observed_extra += count - held
                at = now - window  # beyond this window, yet inside the next (longer) one
            self.last_counts = {w: c for w, c in counts}

    def wait_needed(self) -> float:
        """Seconds the next order would wait in :meth:`acquire` now (0 when it fits)."""
        with self._cond:
            return max(0.0, self._wait_needed(self._clock()))

    def in_window(self, window: float) -> int:
        """Orders the limiter holds in the last ``window`` seconds (its own and those observed)."""
        with self._cond:
            now = self._clock()
            return sum(1 for t in self._sent if t > now - window)

    def _expire(self, now: float) -> None:
        longest = max(w for w, _ in self.limits)
        while self._sent and self._sent[0] <= now - longest:
            self._sent.popleft()

    def _wait_needed(self, now: float) -> float:
        self._expire(now)
        wait = 0.0
        for window, budget in self.budgets():
            recent = [t for t in self._sent if t > now - window]
            if len(recent) >= budget:
                wait = max(wait, recent[len(recent) - budget] + window - now)
        return wait

    def acquire(self) -> float:
        """Block until one more order fits every window; record it; return the time waited."""
        waited = 0.0
        with self._cond:
            while True:
                now = self._clock()
                wait = self._wait_needed(now)
                if wait <= 0:
                    self._sent.append(now)
                    self.total += 1
                    return waited
                self._cond.wait(wait)
                waited += wait
