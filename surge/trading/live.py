"""Live trading on Binance USD-M: MARKET entries, server-side protection, idempotent by construction.

Why it is shaped like this:

* **Protection lives on the exchange.** After the entry fills, a STOP_MARKET (stop loss) and a
  TAKE_PROFIT_MARKET (take profit) are placed through the Algo Service (``/fapi/v1/algoOrder``;
  ``/fapi/v1/order`` refuses conditional types with -4120 since 2025-12-09). If the bot is killed the
  position stays protected; only max hold needs the bot.
* **Every order id derives from the signal.** ``client_id(signal.key, role)`` is deterministic, so
  a retry after a timeout and a restart after a crash talk about the *same* orders. Binance only
  rejects a reused id while that order is open, so the broker never relies on that: before sending
  anything it asks the exchange about the id (``GET /fapi/v1/order?origClientOrderId=``,
  ``GET /fapi/v1/algoOrder?clientAlgoId=``). A placement whose answer was lost is resolved by asking
  until the order shows up or the request's ``recvWindow`` has passed on the exchange's clock (after
  that the exchange can no longer accept it); only then is it sent again. Never two entries for one
  signal.
* **The exchange is the truth.** :meth:`LiveBroker.sync` notices exits done by the exchange
  (positionRisk flat -> which protective order fired, at what price) and re-creates a protective
  order that went missing; :meth:`LiveBroker.reconcile` does the same for everything at start and
  adopts positions the database does not know.
* Same shape as :class:`~surge.trading.paper.PaperBroker` where it makes sense: ``open(signal)``,
  ``exit_reason(position, price, now)``, ``close(position, price, now, reason)``.

Not thread-safe: one caller (the strategy loop) drives it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from surge.config import TradeSettings
from surge.exchange.orders import (
    ExchangeError,
    ExchangeUnavailable,
    OrderStatusUnknown,
    SignedRest,
    SymbolRules,
    fmt_decimal,
    rules_from_exchange_info,
    size_order,
    to_decimal,
)
from surge.models import Position, Signal
from surge.trading.paper import MAX_HOLD, STOP_LOSS, TAKE_PROFIT

__all__ = [
    "CLIENT_ID_PREFIX",
    "EXTERNAL",
    "AccountSummary",
    "LiveBroker",
    "ReconcileReport",
    "client_id",
    "key_from_client_id",
]

log = logging.getLogger(__name__)

#: Every client order / algo id this bot sends starts with this: other orders on the account are not ours.
CLIENT_ID_PREFIX = "sg-"
#: Exit reason of a position closed on the exchange by something other than the bot's orders
#: (manually, by liquidation): the position is gone and the fill is not ours to know.
EXTERNAL = "external"
ENTRY, STOP, TARGET, EXIT = "e", "sl", "tp", "x"
_ROLES = (ENTRY, STOP, TARGET, EXIT)
_MAX_CLIENT_ID = 36
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_DONE_ALGO = frozenset({"TRIGGERING", "TRIGGERED", "FINISHED"})


def _base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            return out


def client_id(key: str, role: str) -> str:
    """The client order / algo id of ``role`` ("e" entry, "sl", "tp", "x" exit) for a signal key.

    ``sg-<role>-<SYMBOL>-<open_time base36>`` (readable, and :func:`key_from_client_id` recovers the
    key) when that fits Binance's ``^[.A-Z:/a-z0-9_-]{1,36}$``; otherwise ``sg-<role>-`` plus a hash.
    """
    if role not in _ROLES:
        raise ValueError(f"unknown role {role!r}")
    symbol, _, open_time = key.partition(":")
    if symbol.isalnum() and symbol.isascii() and open_time.isdigit():
        cid = f"{CLIENT_ID_PREFIX}{role}-{symbol}-{_base36(int(open_time))}"
        if len(cid) <= _MAX_CLIENT_ID:
            return cid
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{CLIENT_ID_PREFIX}{role}-h{digest}"[:_MAX_CLIENT_ID]


def key_from_client_id(cid: str) -> str | None:
    """The signal key back from a readable client id (None for hashed or foreign ids)."""
    parts = cid.split("-")
    if len(parts) != 4 or f"{parts[0]}-" != CLIENT_ID_PREFIX or parts[1] not in _ROLES:
        return None
    try:
        return f"{parts[2]}:{int(parts[3], 36)}"
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """What the start banner shows in live mode: the money at stake and the limits in force."""

    asset: str
    wallet_balance: float
    available_balance: float
    leverage: int
    position_usdt: float
    max_open_positions: int
    take_profit_pct: float
    stop_loss_pct: float
    max_hold_s: float

    def lines(self) -> list[str]:
        return [
            f"LIVE TRADING on Binance USD-M: balance {self.wallet_balance:.2f} {self.asset} "
            f"(available {self.available_balance:.2f})",
            f"limits: {self.position_usdt:g} USDT per position at {self.leverage}x leverage, at most "
            f"{self.max_open_positions} open; take profit {self.take_profit_pct:g}%, stop loss "
            f"{self.stop_loss_pct:g}%, max hold {self.max_hold_s:g} s",
        ]


@dataclass(slots=True)
class ReconcileReport:
    """The outcome of :meth:`LiveBroker.reconcile`; every difference is also logged."""

    open: list[Position] = field(default_factory=list)  # what the book should hold now
    adopted: list[Position] = field(default_factory=list)  # on the exchange, unknown to the database
    updated: list[Position] = field(default_factory=list)  # in both, but the exchange said otherwise
    closed: list[Position] = field(default_factory=list)  # in the database, flat on the exchange
    recreated: list[str] = field(default_factory=list)  # client algo ids placed again
    cancelled: list[str] = field(default_factory=list)  # our protective orders with nothing to protect
    differences: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.differences


class LiveBroker:
    """Opens, protects, watches and closes long positions on the exchange under ``[trade]``.

    ``rules`` maps symbol -> :class:`SymbolRules` (fetched from exchangeInfo when not given).
    ``poll_interval_s`` bounds how often :meth:`sync` asks the exchange (positionRisk costs weight 5).
    ``resolve_timeout_s`` bounds how long a lost order answer is chased before giving up.
    """

    def __init__(
        self,
        settings: TradeSettings,
        client: SignedRest,
        rules: Mapping[str, SymbolRules] | None = None,
        *,
        logger: logging.Logger | None = None,
        poll_interval_s: float = 5.0,
        resolve_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.client = client
        self._rules: dict[str, SymbolRules] = dict(rules) if rules is not None else {}
        self.log = logger or log
        self.poll_interval_s = poll_interval_s
        self.resolve_timeout_s = resolve_timeout_s
        self._clock = clock
        self._sleep = sleep
        self._fee = Decimal(str(settings.taker_fee_pct)) / 100
        self._leverage_set: set[str] = set()
        self._last_poll = float("-inf")
        self._exit_reasons: dict[str, str] = {}
        #: signal key -> why it was not entered (size below the exchange's minimums, refusals)
        self.skipped: dict[str, str] = {}

    # ------------------------------------------------------------------ rules and sizing

    def rules(self, symbol: str) -> SymbolRules:
        if symbol not in self._rules:
            self._rules.update(rules_from_exchange_info(self.client.rest.exchange_info()))
        try:
            return self._rules[symbol]
        except KeyError:
            raise ExchangeError(-1121, "Invalid symbol.") from None

    def ensure_leverage(self, symbol: str) -> None:
        """Set ``[trade] leverage`` on ``symbol`` once per process (positionRisk pre-fills the cache)."""
        if symbol in self._leverage_set:
            return
        self.client.set_leverage(symbol, self.settings.leverage)
        self._leverage_set.add(symbol)
        self.log.info("leverage %dx set on %s", self.settings.leverage, symbol)

    # ------------------------------------------------------------------ entry

    def open(self, signal: Signal, now_ms: int | None = None) -> Position | None:
        """Enter ``signal`` at market and protect it; None (reason in ``skipped`` and the log) if not sent.

        Safe to call again for the same signal after a timeout or a crash: the entry is looked up by
        its client id first and adopted if it exists.
        """
        s = self.settings
        rules = self.rules(signal.symbol)
        decision = size_order(rules, s.position_usdt, signal.price)
        if not decision.ok:
            return self._skip(signal.key, f"size: {decision.reason}")
        try:
            self.ensure_leverage(signal.symbol)
            order = self._place_order(signal.symbol, client_id(signal.key, ENTRY), "BUY", decision.quantity)
        except ExchangeError as exc:
            if exc.code in (-2019, -4164, -1111, -4003, -1013, -2027, -2028):
                return self._skip(signal.key, f"refused by the exchange: code {exc.code}: {exc.msg}")
            raise
        qty = to_decimal(order.get("executedQty") or "0")
        if qty <= 0:
            return self._skip(signal.key, f"entry {order.get('clientOrderId')} not filled "
                                          f"(status {order.get('status')})")
        entry = to_decimal(order.get("avgPrice") or signal.price)
        entered = int(order.get("updateTime") or order.get("time") or now_ms or signal.time)
        position = Position(
            key=signal.key, symbol=signal.symbol, qty=float(qty), entry_price=float(entry),
            entry_time=entered,
            take_profit=float(rules.price(entry * (1 + Decimal(str(s.take_profit_pct)) / 100))),
            stop_loss=float(rules.price(entry * (1 - Decimal(str(s.stop_loss_pct)) / 100))),
            deadline=entered + int(s.max_hold_s * 1000), fees=float(entry * qty * self._fee),
        )
        self.log.info("entered %s: %s @ %s (signal %s); take profit %s, stop loss %s", signal.symbol,
                      fmt_decimal(qty), fmt_decimal(entry), signal.key, position.take_profit,
                      position.stop_loss)
        self.ensure_protection(position)
        return position

    def _skip(self, key: str, reason: str) -> None:
        self.skipped[key] = reason
        self.log.warning("signal %s skipped: %s", key, reason)
        return None

    def _place_order(self, symbol: str, cid: str, side: str, qty: Decimal, *,
                     reduce_only: bool = False) -> dict[str, Any]:
        """A MARKET order under ``cid``, exactly once: ask first, send, and chase a lost answer."""
        existing = self.client.get_order(symbol, client_order_id=cid)
        if existing is not None:
            self.log.info("order %s already on the exchange (status %s): adopting it", cid,
                          existing.get("status"))
            return self._filled(symbol, existing)
        for attempt in (1, 2):
            try:
                return self._filled(symbol, self.client.new_order(symbol, side, qty, client_order_id=cid,
                                                                  reduce_only=reduce_only))
            except OrderStatusUnknown as exc:
                self.log.warning("order %s: %s; asking the exchange before anything else", cid, exc)
                found = self._resolve(lambda: self.client.get_order(symbol, client_order_id=cid), exc)
                if found is not None:
                    return self._filled(symbol, found)
                if attempt == 2:
                    raise
                self.log.warning("order %s was never executed (its recvWindow has passed): sending it again",
                                 cid)
        raise AssertionError("unreachable")

    def _resolve(self, lookup: Callable[[], dict[str, Any] | None],
                 exc: OrderStatusUnknown) -> dict[str, Any] | None:
        """Ask until the order shows up, or the request's recvWindow has passed on the exchange's clock."""
        deadline = self._clock() + self.resolve_timeout_s
        expiry = exc.sent_at_ms + exc.recv_window_ms
        while True:
            try:
                found = lookup()
            except OrderStatusUnknown:
                found = None
            if found is not None:
                return found
            if self.client.now_ms() > expiry + 1000:
                return None
            if self._clock() > deadline:
                raise exc
            self._sleep(0.25)

    def _filled(self, symbol: str, order: dict[str, Any]) -> dict[str, Any]:
        """The order once it is no longer NEW (a MARKET order fills at once; an ACK answer is re-read)."""
        for _ in range(20):
            if order.get("status") not in ("NEW", "PARTIALLY_FILLED"):
                return order
            self._sleep(0.05)
            again = self.client.get_order(symbol, order_id=int(order["orderId"]))
            if again is not None:
                order = again
        return order

    # ------------------------------------------------------------------ protection

    def ensure_protection(self, position: Position, open_ids: set[str] | None = None,
                          qty: Decimal | None = None) -> list[str]:
        """Make sure the stop loss and take profit of ``position`` are open on the exchange.

        ``open_ids``: client algo ids known open (from one openAlgoOrders call) to save lookups.
        Returns the ids placed now. An order that would trigger at once (-2021: the price is already
        beyond it) closes the position at market with that order's reason instead.
        """
        rules = self.rules(position.symbol)
        amount = qty if qty is not None else rules.quantity(position.qty)
        placed: list[str] = []
        for role, otype, trigger, reason in (
            (STOP, "STOP_MARKET", position.stop_loss, STOP_LOSS),
            (TARGET, "TAKE_PROFIT_MARKET", position.take_profit, TAKE_PROFIT),
        ):
            cid = client_id(position.key, role)
            if open_ids is not None and cid in open_ids:
                continue
            if open_ids is None:
                current = self.client.get_algo_order(client_algo_id=cid)
                if current is not None and current.get("algoStatus") == "NEW":
                    continue
            price = rules.price(trigger)
            try:
                self._place_algo(position.symbol, cid, otype, price, amount)
                placed.append(cid)
            except ExchangeUnavailable as exc:  # the entry stands: report it, the next sync retries
                self.log.error("%s: could not place %s %s (%s): the position is NOT fully protected; the "
                               "next sync retries", position.symbol, otype, cid, exc)
                continue
            except ExchangeError as exc:
                if exc.code != -2021:
                    self.log.error("%s: could not place %s %s (code %s: %s): the position is NOT fully "
                                   "protected; the next sync retries", position.symbol, otype, cid, exc.code,
                                   exc.msg)
                    continue
                self.log.warning("%s: %s at %s would trigger at once: closing at market (%s)",
                                 position.symbol, otype, fmt_decimal(price), reason)
                self._exit_reasons[position.key] = reason
                self._close_on_exchange(position, amount)
                return placed
        if placed:
            self.log.info("%s: protective orders placed: %s", position.symbol, ", ".join(placed))
        return placed

    def _place_algo(self, symbol: str, cid: str, otype: str, trigger: Decimal, qty: Decimal) -> None:
        for attempt in (1, 2):
            try:
                self.client.new_algo_order(symbol, "SELL", otype, trigger, client_algo_id=cid, quantity=qty,
                                           reduce_only=True)
                return
            except OrderStatusUnknown as exc:
                found = self._resolve(lambda: self._open_algo(cid), exc)
                if found is not None:
                    return
                if attempt == 2:
                    raise

    def _open_algo(self, cid: str) -> dict[str, Any] | None:
        found = self.client.get_algo_order(client_algo_id=cid)
        return found if found is not None and found.get("algoStatus") == "NEW" else None

    def _cancel_protection(self, key: str) -> None:
        """Cancel both protective orders of ``key``; a failure is logged, not raised: the position is
        already closed, and a leftover reduce-only order can only expire (reconcile cancels it)."""
        for role in (STOP, TARGET):
            cid = client_id(key, role)
            try:
                if self.client.cancel_algo_order(client_algo_id=cid):
                    self.log.info("cancelled protective order %s", cid)
            except (ExchangeError, ExchangeUnavailable) as exc:
                self.log.warning("could not cancel protective order %s (%s); reconciliation will", cid, exc)

    # ------------------------------------------------------------------ exits

    @staticmethod
    def exit_reason(position: Position, price: float, now_ms: int) -> str | None:
        """Only max hold is the bot's to decide: take profit and stop loss fire on the exchange."""
        return MAX_HOLD if now_ms >= position.deadline else None

    def close(self, position: Position, price: float | None = None, now_ms: int | None = None,
              reason: str = MAX_HOLD) -> Position:
        """Close at market (reduce-only), then cancel both protective orders; the closed position.

        If the exchange holds nothing any more (a protective order fired meanwhile) the exit that
        really happened is recorded instead.
        """
        self._exit_reasons[position.key] = reason
        rules = self.rules(position.symbol)
        try:
            order = self._close_on_exchange(position, rules.quantity(position.qty))
        except ExchangeError as exc:
            if exc.code != -2022:  # ReduceOnly Order is rejected: nothing left to reduce
                raise
            self.log.info("%s: already flat on the exchange; recording the exchange's exit", position.symbol)
            return self._exchange_exit(position)
        self._cancel_protection(position.key)
        return self._closed(position, order, reason)

    def _close_on_exchange(self, position: Position, qty: Decimal) -> dict[str, Any]:
        cid = client_id(position.key, EXIT)
        return self._place_order(position.symbol, cid, "SELL", qty, reduce_only=True)

    def _closed(self, position: Position, order: Mapping[str, Any], reason: str) -> Position:
        exit_price = to_decimal(order.get("avgPrice") or position.entry_price)
        qty = to_decimal(repr(position.qty))
        entry = to_decimal(repr(position.entry_price))
        fees = to_decimal(repr(position.fees)) + exit_price * qty * self._fee
        pnl = (exit_price - entry) * qty - fees
        closed = replace(position, exit_price=float(exit_price),
                         exit_time=int(order.get("updateTime") or order.get("time") or self.client.now_ms()),
                         exit_reason=reason, fees=float(fees), pnl=float(pnl))
        self.log.info("closed %s (%s) @ %s: pnl %.4f USDT", position.symbol, reason, fmt_decimal(exit_price),
                      closed.pnl)
        return closed

    def _exchange_exit(self, position: Position) -> Position:
        """``position`` is flat on the exchange: find out how it ended, tidy up, return it closed."""
        found: tuple[dict[str, Any], str] | None = None
        for role, reason in ((STOP, STOP_LOSS), (TARGET, TAKE_PROFIT)):
            algo = self.client.get_algo_order(client_algo_id=client_id(position.key, role))
            if algo is not None and algo.get("algoStatus") in _DONE_ALGO and algo.get("actualOrderId"):
                order = self.client.get_order(position.symbol, order_id=int(algo["actualOrderId"]))
                if order is not None and to_decimal(order.get("executedQty") or "0") > 0:
                    found = (order, reason)
                    break
        if found is None:
            order = self.client.get_order(position.symbol, client_order_id=client_id(position.key, EXIT))
            if order is not None and order.get("status") == "FILLED":
                found = (order, self._exit_reasons.get(position.key, MAX_HOLD))
        self._cancel_protection(position.key)
        if found is None:
            self.log.warning("%s: position %s closed outside the bot (manually or liquidated)",
                             position.symbol, position.key)
            last = self.client.rest.ticker_prices().get(position.symbol, position.entry_price)
            found = ({"avgPrice": repr(last), "updateTime": self.client.now_ms()}, EXTERNAL)
        self._exit_reasons.pop(position.key, None)
        return self._closed(position, found[0], found[1])

    # ------------------------------------------------------------------ watching

    def sync(self, positions: Iterable[Position], *, force: bool = False) -> list[Position]:
        """Exits the exchange made since the last call (closed positions), at most every ``poll_interval_s``.

        One positionRisk (weight 5) plus one openAlgoOrders per open symbol (weight 1): a flat symbol
        means a protective order (or someone) closed it; an open one missing a protective order gets
        it back.
        """
        open_positions = [p for p in positions if p.is_open]
        now = self._clock()
        if not open_positions or (not force and now - self._last_poll < self.poll_interval_s):
            return []
        self._last_poll = now
        amounts = self._amounts()
        closed: list[Position] = []
        for p in open_positions:
            if amounts.get(p.symbol, Decimal(0)) <= 0:
                closed.append(self._exchange_exit(p))
                continue
            ids = {a.get("clientAlgoId") for a in self.client.open_algo_orders(p.symbol)}
            missing = self.ensure_protection(p, open_ids={i for i in ids if i}, qty=amounts[p.symbol])
            if missing:
                self.log.warning("%s: protective orders were missing and were placed again: %s", p.symbol,
                                 ", ".join(missing))
        return closed

    def _amounts(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for row in self.client.position_risk():
            amt = to_decimal(row.get("positionAmt") or "0")
            if row.get("leverage") and str(row["leverage"]) == str(self.settings.leverage):
                self._leverage_set.add(row["symbol"])
            if amt != 0:
                out[row["symbol"]] = amt
        return out

    # ------------------------------------------------------------------ start-up

    def reconcile(self, db_positions: Iterable[Position]) -> ReconcileReport:
        """The exchange's positions and open orders against the database's open positions.

        Adopts what the exchange says (quantities, entry prices, positions the database lacks),
        records exits that happened while the bot was away, re-creates missing protective orders and
        cancels our protective orders that protect nothing. Every difference is logged.
        """
        report = ReconcileReport()
        rows = {r["symbol"]: r for r in self.client.position_risk()}
        for r in rows.values():
            if str(r.get("leverage")) == str(self.settings.leverage):
                self._leverage_set.add(r["symbol"])
        held = {s: r for s, r in rows.items() if to_decimal(r.get("positionAmt") or "0") != 0}
        algos = [a for a in self.client.open_algo_orders() if str(a.get("clientAlgoId", "")).startswith(
            CLIENT_ID_PREFIX)]
        open_ids = {a["clientAlgoId"] for a in algos}
        plain = [o for o in self.client.open_orders() if str(o.get("clientOrderId", "")).startswith(
            CLIENT_ID_PREFIX)]
        for o in plain:
            self._differ(report, f"{o['symbol']}: open order {o['clientOrderId']} left from a previous run "
                                 f"(status {o.get('status')})")

        def differ(text: str) -> None:
            self._differ(report, text)

        db = {p.symbol: p for p in db_positions if p.is_open}
        for symbol, p in db.items():
            row = held.get(symbol)
            if row is None or to_decimal(row["positionAmt"]) < 0:
                closed = self._exchange_exit(p)
                report.closed.append(closed)
                differ(f"{symbol}: open in the database but flat on the exchange: recorded as closed "
                       f"({closed.exit_reason} @ {closed.exit_price})")
                continue
            amt = to_decimal(row["positionAmt"])
            entry = to_decimal(row.get("entryPrice") or repr(p.entry_price))
            current = p
            drift = abs(entry - to_decimal(repr(p.entry_price)))
            if amt != to_decimal(repr(p.qty)) or drift > entry * Decimal("0.000001"):
                current = replace(p, qty=float(amt), entry_price=float(entry))
                report.updated.append(current)
                differ(f"{symbol}: database says {p.qty} @ {p.entry_price}, the exchange {fmt_decimal(amt)} "
                       f"@ {fmt_decimal(entry)}: adopting the exchange's")
            self._keep_protected(report, current, open_ids, amt)
        for symbol, row in held.items():
            if symbol in db:
                continue
            amt = to_decimal(row["positionAmt"])
            if amt < 0:
                differ(f"{symbol}: a SHORT position of {fmt_decimal(amt)} is on the account; surge only "
                       "trades longs and leaves it alone")
                continue
            adopted = self._adopt(symbol, row, [a for a in algos if a["symbol"] == symbol])
            report.adopted.append(adopted)
            differ(f"{symbol}: position {fmt_decimal(amt)} @ {row.get('entryPrice')} on the exchange is not "
                   f"in the database: adopted as {adopted.key}")
            self._keep_protected(report, adopted, open_ids, amt)
        keep = {client_id(p.key, role) for p in report.open for role in (STOP, TARGET)}
        for a in algos:
            cid = a["clientAlgoId"]
            if (cid not in keep and a["symbol"] not in {p.symbol for p in report.open}
                    and self.client.cancel_algo_order(client_algo_id=cid)):
                report.cancelled.append(cid)
                differ(f"{a['symbol']}: protective order {cid} protected nothing: cancelled")
        self.log.info("reconciliation: %d open, %d adopted, %d updated, %d closed, %d re-created, "
                      "%d cancelled",
                      len(report.open), len(report.adopted), len(report.updated), len(report.closed),
                      len(report.recreated), len(report.cancelled))
        return report

    def _keep_protected(self, report: ReconcileReport, position: Position, open_ids: set[str],
                        qty: Decimal) -> None:
        """A position reconciliation keeps: its protective orders re-placed where missing, then open."""
        for cid in self.ensure_protection(position, open_ids=open_ids, qty=qty):
            self._differ(report, f"{position.symbol}: protective order {cid} was missing: placed again")
            report.recreated.append(cid)
        report.open.append(position)

    def _differ(self, report: ReconcileReport, text: str) -> None:
        report.differences.append(text)
        self.log.warning("reconcile: %s", text)

    def _adopt(self, symbol: str, row: Mapping[str, Any], algos: list[Mapping[str, Any]]) -> Position:
        """A Position for an exchange position the database lacks; the key and triggers come from our
        protective orders when they exist (their ids carry the signal key)."""
        s = self.settings
        rules = self.rules(symbol)
        entry = to_decimal(row.get("entryPrice") or "0")
        entered = int(row.get("updateTime") or self.client.now_ms())
        key = next((k for a in algos if (k := key_from_client_id(a["clientAlgoId"]))), f"{symbol}:{entered}")
        triggers = {a.get("orderType"): float(to_decimal(a["triggerPrice"])) for a in algos}
        return Position(
            key=key, symbol=symbol, qty=float(to_decimal(row["positionAmt"])), entry_price=float(entry),
            entry_time=entered,
            take_profit=triggers.get("TAKE_PROFIT_MARKET")
            or float(rules.price(entry * (1 + Decimal(str(s.take_profit_pct)) / 100))),
            stop_loss=triggers.get("STOP_MARKET")
            or float(rules.price(entry * (1 - Decimal(str(s.stop_loss_pct)) / 100))),
            deadline=entered + int(s.max_hold_s * 1000),
            fees=float(entry * to_decimal(row["positionAmt"]) * self._fee),
        )

    def account_summary(self) -> AccountSummary:
        """Balance and limits for the start banner (``GET /fapi/v2/balance``, weight 5)."""
        s = self.settings
        usdt = next((b for b in self.client.balance() if b.get("asset") == "USDT"), {})
        return AccountSummary(
            asset="USDT", wallet_balance=float(usdt.get("balance") or 0),
            available_balance=float(usdt.get("availableBalance") or 0), leverage=s.leverage,
            position_usdt=s.position_usdt, max_open_positions=s.max_open_positions,
            take_profit_pct=s.take_profit_pct, stop_loss_pct=s.stop_loss_pct, max_hold_s=s.max_hold_s,
        )
