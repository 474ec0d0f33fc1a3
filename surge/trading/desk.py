"""The order desk: live trades as a persisted state machine, on one thread, never left unprotected.

Why it is shaped like this:

* **The ledger comes first.** Each live trade is a :class:`~surge.models.Trade` row, written to the
  store *before* the exchange call that depends on it: intent (the client order id is fixed by the
  signal) -> sent -> filled -> protected -> closing -> closed, plus unknown (an order's answer was
  lost) and void (never entered). The desk keeps no other state that matters: a restart, a crash or
  ``kill -9`` between any two calls resumes from the rows, through the very same steps.
* **An unknown outcome is never a failure.** A placement answered with a timeout, 5xx, 408, -1006,
  -1007 or garbage may have executed. The desk asks by client id, with backoff, for as long as it
  takes, and logs an ERROR while it does; it never sends the entry again. Only an explicit "no such
  order" after the request's ``recvWindow`` has passed on the exchange's clock proves that it never
  executed, and only then is the trade void.
* **The fill is read back.** Quantity and average price come from the order (or the position's
  ``entryPrice``), never from a missing or ``"0.00"`` ``avgPrice`` in the placement's answer.
* **Protection at once, both orders together.** The stop loss and take profit are placed
  concurrently right after the fill (one worker thread beside the desk's own), through the Algo
  Service, reduce-only. A ``TRIGGERING`` algo order still protects: it is never placed twice.
* **Flat only when proven.** A position is recorded closed when one of its protective orders or our
  own close filled, or when two consecutive positionRisk reads of the symbol by name agree that it is
  flat: a zero row, or no row at all (v3 lists only symbols with a position or open orders, so that
  is how it says "flat"). A row missing from the all-symbols answer is no information (the symbol is
  then asked about by name), a garbled answer neither: protection is never cancelled because of one
  odd answer.
* **Nothing kills the bot.** An exception in a step (an exchange outage, a malformed answer, a bug on
  an odd answer) is logged and the step retried with backoff; the trade stays where the ledger says.

Threads: ``surge-desk`` (every step and every exchange call of every live trade) and
``surge-desk-protect`` (the second protective order, so both go out together). Both are joined by
:meth:`OrderDesk.stop`. The strategy loop calls :meth:`enter` / :meth:`close` (cheap: a ledger row
and a queue put) and receives :mod:`~surge.trading.outcomes` messages on its queue.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from surge.config import TradeSettings
from surge.errors import ConfigError
from surge.exchange.orders import (
    ExchangeError,
    SignedRest,
    SymbolRules,
    fmt_decimal,
    rules_from_exchange_info,
    size_order,
)
from surge.models import (
    CLOSING,
    FILLED,
    INTENT,
    PROTECTED,
    SENT,
    UNKNOWN,
    Position,
    Signal,
    Trade,
)
from surge.store import Store, StoreWriteError
from surge.trading.live import (
    CLIENT_ID_PREFIX,
    ENTRY,
    EXIT,
    EXTERNAL,
    STOP,
    TARGET,
    AccountSummary,
    client_id,
    key_from_client_id,
)
from surge.trading.outcomes import Outcome, TradeClosed, TradeOpened, TradeVoid
from surge.trading.paper import MAX_HOLD, STOP_LOSS, TAKE_PROFIT

__all__ = ["DeskStart", "OrderDesk", "UNRESOLVED_STATES"]

log = logging.getLogger(__name__)

#: An intent not sent this long after its signal is void: nothing was sent, and the moment has passed.
ENTRY_SEND_WINDOW_S = 30.0
#: "No such order" is final only once the exchange's clock is past the request's recvWindow by this.
RESOLVE_MARGIN_MS = 5_000
#: How long the symbol of an entry proven never executed is still watched for a late fill.
LATE_FILL_WATCH_S = 600.0
#: A step that failed is tried again after this, doubling up to the second figure.
RETRY_S = (0.25, 4.0)
#: How often an unresolved trade is reported as an ERROR while the desk keeps asking.
UNRESOLVED_REPORT_S = 30.0
#: States in which the exchange may hold something the ledger does not fully know yet.
UNRESOLVED_STATES = frozenset({SENT, UNKNOWN, FILLED, CLOSING})
#: Algo order states that still protect the position (``TRIGGERING``: firing, not yet filled).
_PROTECTING = frozenset({"NEW", "TRIGGERING"})
#: Algo order states that mean it fired: the position is being (or was) closed by it.
_FIRED = frozenset({"TRIGGERED", "FINISHED"})
#: Refusals of an entry that say nothing was executed and sending later may work (rate limits).
_RETRY_LATER = frozenset({-1003, -1015, -1008})
_ROLE_REASON = {STOP: STOP_LOSS, TARGET: TAKE_PROFIT}
#: States of a position already held: a row the disk refuses is kept in memory (see OrderDesk._save).
_HELD = frozenset({FILLED, PROTECTED, CLOSING})
_ROLE_TYPE = {STOP: "STOP_MARKET", TARGET: "TAKE_PROFIT_MARKET"}


class Malformed(Exception):
    """An exchange answer that does not have the shape it must have: treated like an outage."""


@dataclass(slots=True)
class DeskStart:
    """What the desk found at start: positions the book holds, entries whose outcome is pending."""

    open: list[Position] = field(default_factory=list)
    in_flight: dict[str, str] = field(default_factory=dict)  # key -> symbol
    adopted: int = 0
    resumed: int = 0


@dataclass(slots=True)
class _Retry:
    at: float = 0.0
    delay: float = RETRY_S[0]
    failing_since: float | None = None
    reported_at: float = 0.0


class OrderDesk:
    """Live entries, protection, closes and reconciliation for one venue's ledger (see module doc)."""

    def __init__(
        self,
        settings: TradeSettings,
        client: SignedRest,
        store: Store,
        venue: str,
        post: Callable[[Outcome], None],
        *,
        rules: Mapping[str, SymbolRules] | None = None,
        poll_interval_s: float = 5.0,
        stop_budget_s: float | None = None,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        concurrent_protection: bool = True,
    ) -> None:
        self.settings = settings
        self.client = client
        self.store = store
        self.venue = venue
        self._post = post
        self._rules: dict[str, SymbolRules] = dict(rules or {})
        self.poll_interval_s = poll_interval_s
        read_timeout = client.rest.timeout[1] if isinstance(client.rest.timeout, tuple) else 10.0
        #: at shutdown, how long unresolved trades get to resolve: one lost answer plus protection
        self.stop_budget_s = stop_budget_s if stop_budget_s is not None else float(read_timeout) + 5.0
        self.log = logger or log
        self._clock = clock
        self._wall = wall
        #: False places the stop loss, then the take profit (two round trips): the baseline of
        #: scripts/bench_live.py, measured against the concurrent placement
        self.concurrent_protection = concurrent_protection
        self._fee = Decimal(str(settings.taker_fee_pct)) / 100
        self._commands: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="surge-desk", daemon=True)
        self._protect_pool: ThreadPoolExecutor | None = None
        # owned by the desk thread once it runs (by the caller of start() before)
        self._trades: dict[str, Trade] = {}
        self._positions: dict[str, Position] = {}
        self._signals: dict[str, Signal] = {}
        self._retry: dict[str, _Retry] = {}
        self._checked_protection: set[str] = set()  # keys whose protective orders may exist already
        self._flat_reads: dict[str, int] = {}
        self._voided_unknown: dict[str, tuple[str, float]] = {}  # symbol -> (key, watch until)
        self._leverage_set: set[str] = set()
        self._leverage_queued: set[str] = set()
        #: background work (the positions check, each symbol's protection check, leverage set ahead):
        #: one item between two rounds of trade steps, so it never holds an entry up for long
        self._chores: collections.deque[tuple[str, Callable[[], None]]] = collections.deque()
        self._next_poll = 0.0
        self._stopping = False
        self._deadline: float | None = None
        #: trades still unresolved when :meth:`stop` gave up (empty after a clean stop)
        self.unresolved: list[Trade] = []
        #: exceptions a step raised (logged and retried): the fault campaign reads them
        self.step_errors = 0
        #: ledger writes of held positions a full disk refused, oldest first (see _save)
        self._unsaved: list[Callable[[], None]] = []
        self._unsaved_retry_at = 0.0
        self._store_failing = False

    # ------------------------------------------------------------------ the loop's side

    def start(self) -> DeskStart:
        """Check the account, load the ledger, reconcile it with the exchange, then start the threads.

        Runs on the caller's thread; an exchange that refuses or cannot be reached raises (the bot
        has not started anything yet, so that is an exit, not a ride-out). A hedge-mode account is a
        :class:`ConfigError`: every one-way order would be refused with -4061.
        """
        dual = self.client.position_side_dual()
        if dual:
            raise ConfigError(
                "the account is in Hedge Mode (dualSidePosition = true) and surge places one-way orders: "
                "switch Position Mode to One-way in the Binance Futures preferences (with no position "
                "open), or run without --live"
            )
        self._rules.update(rules_from_exchange_info(self.client.rest.exchange_info()))
        found = self._reconcile()
        if self.concurrent_protection:
            self._protect_pool = ThreadPoolExecutor(1, thread_name_prefix="surge-desk-protect")
        self._thread.start()
        return found

    def enter(self, signal: Signal) -> bool:
        """Record the intent to enter ``signal`` and hand it to the desk thread.

        False (nothing written, nothing sent) when the signal is already recorded: the same candle
        surging again, or a replay after a restart. Cheap: one small transaction and a queue put.
        """
        trade = Trade(
            signal.key, signal.symbol, INTENT, signal_at=self._wall(), recv_window=self.client.recv_window_ms
        )
        if not self.store.record_intent(signal, trade, venue=self.venue):
            return False
        self._commands.put(("enter", (trade, signal)))
        return True

    def close(
        self,
        position: Position,
        reason: str = MAX_HOLD,
        price: float | None = None,
        now_ms: int | None = None,
    ) -> None:
        """Close ``position`` at market (reduce-only); the outcome comes as :class:`TradeClosed`."""
        self._commands.put(("close", (position.key, reason)))

    def prepare(self, symbols: Iterable[str]) -> None:
        """Symbols that may signal soon (they pass the 4h filter): set their leverage ahead, in the
        background, so an entry on them is one round trip shorter."""
        self._commands.put(("prepare", tuple(symbols)))

    @staticmethod
    def exit_reason(position: Position, price: float, now_ms: int) -> str | None:
        """Only max hold is the bot's to decide: take profit and stop loss fire on the exchange."""
        return MAX_HOLD if now_ms >= position.deadline else None

    def stop(self, timeout: float | None = None) -> list[Trade]:
        """No new entries; give unresolved trades up to ``timeout`` (default :attr:`stop_budget_s`) to
        resolve (an entry whose answer is on its way gets its fill and protection), then end both
        threads. Returns the trades still unresolved: the next start resumes them from the ledger."""
        budget = self.stop_budget_s if timeout is None else timeout
        if self._thread.is_alive():
            self._commands.put(("stop", self._clock() + budget))
            # a call already on its way when the budget ends may take up to a read timeout more
            read_timeout = self.client.rest.timeout[1] if isinstance(self.client.rest.timeout, tuple) else 10
            self._thread.join(budget + float(read_timeout) + 2.0)
        if self._protect_pool is not None:
            self._protect_pool.shutdown(wait=True, cancel_futures=True)
        if self._unsaved:  # tried every second until the loop ended: a full disk still refuses them
            self.log.error("stopping with %d ledger writes a full disk refused (latest states of %s): "
                           "the next start reconciles these positions with the exchange",
                           len(self._unsaved), ", ".join(sorted({t.symbol for t in self._trades.values()
                                                                  if t.state in _HELD})) or "-")
        while True:  # a desk thread still stuck in a call after the join may change the dict meanwhile
            try:
                self.unresolved = [t for t in list(self._trades.values()) if t.state in UNRESOLVED_STATES]
                break
            except RuntimeError:
                continue
        return list(self.unresolved)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def account_summary(self) -> AccountSummary:
        """Balance and limits for the start banner (``GET /fapi/v2/balance``, weight 5)."""
        s = self.settings
        rows = self.client.balance()
        usdt = next((b for b in rows if isinstance(b, dict) and b.get("asset") == "USDT"), {})
        return AccountSummary(
            asset="USDT",
            wallet_balance=float(usdt.get("balance") or 0),
            available_balance=float(usdt.get("availableBalance") or 0),
            leverage=s.leverage,
            position_usdt=s.position_usdt,
            max_open_positions=s.max_open_positions,
            take_profit_pct=s.take_profit_pct,
            stop_loss_pct=s.stop_loss_pct,
            max_hold_s=s.max_hold_s,
        )

    # ------------------------------------------------------------------ the desk thread

    def _run(self) -> None:
        while True:
            now = self._clock()
            # a protected trade waits for the positions check, not for a retry: it must not wake us
            due = [
                r for k, r in self._retry.items() if k in self._trades and self._trades[k].state != PROTECTED
            ]
            wake = min((r.at for r in due), default=now + 1.0)
            if self._watched():
                wake = min(wake, self._next_poll)
            if self._chores:
                wake = now  # background work waits only for entries, closes and commands
            if self._deadline is not None:
                wake = min(wake, self._deadline)
            try:
                command = self._commands.get(timeout=max(0.0, min(wake - now, 1.0)))
            except queue.Empty:
                command = None
            while command is not None:
                self._command(command)
                try:
                    command = self._commands.get_nowait()
                except queue.Empty:
                    command = None
            if self._unsaved and self._clock() >= self._unsaved_retry_at:
                try:
                    self._flush_unsaved()
                except StoreWriteError:
                    pass  # said once when it began; tried again in a second
                except Exception as exc:  # noqa: BLE001 - not a full disk: said, never the thread's end
                    self.log.error("a held-back ledger write failed: %s: %s", type(exc).__name__, exc)
            if self._stopping and (not self._unresolved_keys() or self._clock() >= (self._deadline or 0.0)):
                return
            due_keys = [k for k in list(self._trades) if self._due(k)]
            for key in due_keys:
                self._step(key)
            if self._watched() and self._clock() >= self._next_poll:
                self._next_poll = self._clock() + self.poll_interval_s
                self._chores.append(("positions check", self._poll))
            if self._chores and not due_keys:
                # one request's worth of background work at a time: an entry arriving meanwhile waits
                # for at most that one request, never for a whole round of checks
                what, chore = self._chores.popleft()
                self._guard(what, chore)

    def _command(self, command: tuple[str, Any]) -> None:
        kind, arg = command
        if kind == "enter":
            trade, signal = arg
            self._trades[trade.key] = trade
            self._signals[trade.key] = signal
            self._retry[trade.key] = _Retry()
        elif kind == "close":
            key, reason = arg
            trade = self._trades.get(key)
            if trade is None or trade.state not in (FILLED, PROTECTED):
                return  # closing already, or not ours to close (closed meanwhile)
            self._save(replace(trade, state=CLOSING, exit_reason=reason, note=None))
            self._retry[key] = _Retry()
        elif kind == "prepare":
            for symbol in arg:
                if symbol not in self._leverage_set | self._leverage_queued and symbol in self._rules:
                    self._leverage_queued.add(symbol)
                    self._chores.append((f"{symbol} leverage", lambda sym=symbol: self._ensure_leverage(sym)))
        elif kind == "stop":
            self._stopping = True
            self._deadline = arg

    def _due(self, key: str) -> bool:
        trade = self._trades[key]
        if trade.state == PROTECTED:
            return False
        retry = self._retry.setdefault(key, _Retry())
        return self._clock() >= retry.at

    def _watched(self) -> bool:
        return bool(self._voided_unknown) or any(
            t.state in (FILLED, PROTECTED) for t in self._trades.values()
        )

    def _unresolved_keys(self) -> list[str]:
        return [k for k, t in self._trades.items() if t.state in UNRESOLVED_STATES or t.state == INTENT]

    def _guard(self, what: str, step: Callable[[], None]) -> bool:
        """Run ``step``; an exception is logged, never raised: the desk and the bot go on."""
        try:
            step()
            return True
        except Exception as exc:  # noqa: BLE001 - an outage or an odd answer: logged, retried
            self.step_errors += 1
            if not (isinstance(exc, StoreWriteError) and self._store_failing):  # a full disk: said once
                self.log.warning("%s failed: %s: %s (trying again)", what, type(exc).__name__, exc)
            return False

    def _step(self, key: str) -> None:
        trade = self._trades[key]
        handler = {
            INTENT: self._send_entry,
            SENT: self._resolve_entry,
            UNKNOWN: self._resolve_entry,
            FILLED: self._protect,
            CLOSING: self._close_step,
        }.get(trade.state)
        if handler is None:
            return
        retry = self._retry.setdefault(key, _Retry())
        planned = retry.at
        if self._guard(f"{trade.symbol} {trade.state} step of {key}", lambda: handler(trade)):
            after = self._trades.get(key)
            if after is None or after.state != trade.state:
                self._retry[key] = _Retry()  # progress: the next step at once
                return
            if self._retry.get(key) is retry and retry.at != planned:
                return  # waiting for an answer that is on its way (the step said when to look again)
        self._backoff(key)

    def _backoff(self, key: str) -> None:
        """The step made no progress: ask again later, and say so loudly while a trade stays unresolved."""
        now = self._clock()
        r = self._retry.setdefault(key, _Retry())
        r.at = now + r.delay
        r.delay = min(r.delay * 2, RETRY_S[1])
        trade = self._trades.get(key)
        if trade is None or trade.state not in UNRESOLVED_STATES:
            return
        if r.failing_since is None:
            r.failing_since = now
        elif now - r.reported_at >= UNRESOLVED_REPORT_S and now - r.failing_since >= UNRESOLVED_REPORT_S:
            r.reported_at = now
            self.log.error(
                "%s: trade %s is still %s after %.0fs (%s); still asking the exchange by client id "
                "%s: it is never sent twice",
                trade.symbol,
                key,
                trade.state,
                now - r.failing_since,
                trade.note or "no answer",
                self._cid(trade),
            )

    def _soon(self, key: str, seconds: float = 0.25) -> None:
        """Ask again shortly without growing the backoff (the answer is expected any moment)."""
        self._retry.setdefault(key, _Retry()).at = self._clock() + seconds

    @staticmethod
    def _cid(trade: Trade) -> str:
        return client_id(trade.key, EXIT if trade.state == CLOSING else ENTRY)

    def _save(self, trade: Trade) -> Trade:
        """Persist first, then believe: the row is what a restart will find.

        Except when the disk refuses it for a position already held (filled, protected, closing):
        its protection and its close must not wait for disk space, so the row is kept in memory and
        written, in order, when the database takes writes again. An entry is never sent unrecorded.
        """
        self._write(lambda: self.store.save_trade(trade, venue=self.venue), held=trade.state in _HELD)
        self._trades[trade.key] = trade
        return trade

    def _write(self, write: Callable[[], None], *, held: bool) -> None:
        """Run a ledger write after those still waiting; a refused one waits too if ``held``, else
        :class:`StoreWriteError` is raised (and nothing that depends on it may be sent)."""
        self._unsaved.append(write)
        try:
            self._flush_unsaved()
        except StoreWriteError:
            if not held:
                self._unsaved.remove(write)  # not written (it, or an older one, was refused)
                raise

    def _flush_unsaved(self) -> None:
        """The ledger writes a full disk held back, oldest first; raises StoreWriteError if it still
        refuses them. A write made stale meanwhile (its trade became final) is dropped."""
        while self._unsaved:
            try:
                self._unsaved[0]()
            except StoreWriteError as exc:
                self._unsaved_retry_at = self._clock() + 1.0
                if not self._store_failing:
                    self._store_failing = True
                    self.log.error("the ledger cannot be written (%s): no new entry is sent; positions held "
                                   "are still protected and closed, their rows kept in memory until it can "
                                   "(logged once until then)", exc)
                raise
            except ValueError as exc:
                self.log.warning("dropped a stale ledger write: %s", exc)
            except Exception:
                # not a full disk (a bug, a constraint): writing it again cannot help, and left queued it
                # would fail every later write; the step that made it fails and is retried from its row
                self._unsaved.pop(0)
                raise
            self._unsaved.pop(0)
        if self._store_failing:
            self._store_failing = False
            self.log.warning("the ledger is written again")

    def _finish(self, trade: Trade) -> None:
        self._trades.pop(trade.key, None)
        self._positions.pop(trade.key, None)
        self._signals.pop(trade.key, None)
        self._retry.pop(trade.key, None)
        self._flat_reads.pop(trade.key, None)
        self._checked_protection.discard(trade.key)

    # ------------------------------------------------------------------ entry

    def _send_entry(self, trade: Trade) -> None:
        signal = self._signals.get(trade.key)
        if self._stopping or signal is None:
            self._void(
                trade,
                "shutting down before the entry was sent"
                if self._stopping
                else "not sent before the bot stopped",
            )
            return
        if self._wall() - (trade.signal_at or 0.0) > ENTRY_SEND_WINDOW_S:
            self._void(trade, f"not sent within {ENTRY_SEND_WINDOW_S:.0f}s of the signal ({trade.note})")
            return
        watch = self._voided_unknown.get(trade.symbol)
        if watch is not None and self._clock() <= watch[1]:
            # the last trade here ended without proof (void on "no such order", or flat on positionRisk's
            # word alone): a position may still be there, which a second entry would double
            self._void(trade, f"the end of {watch[0]} is not proven yet: not entering on top of it")
            return
        held = next((k for k, t in self._trades.items() if t.symbol == trade.symbol and k != trade.key), None)
        if held is not None:  # adopted here (a late fill, a reappearing position) after the loop decided
            self._void(trade, f"{held} is held on {trade.symbol}: not entering on top of it")
            return
        rules = self._rules_of(trade.symbol)
        decision = size_order(rules, self.settings.position_usdt, signal.price)
        if not decision.ok:
            self._void(trade, f"size: {decision.reason}")
            return
        self._ensure_leverage(trade.symbol)
        sent = self._save(
            replace(
                trade,
                state=SENT,
                qty=fmt_decimal(decision.quantity),
                entry_sent_at=self.client.now_ms(),
                recv_window=self.client.recv_window_ms,
            )
        )
        cid = client_id(trade.key, ENTRY)
        try:
            order = self.client.new_order(
                trade.symbol, "BUY", decision.quantity, client_order_id=cid, resp_type="RESULT"
            )
        except ExchangeError as exc:
            if exc.code in _RETRY_LATER:  # refused before execution: nothing is on the exchange
                self._save(replace(sent, state=INTENT, note=f"code {exc.code}: {exc.msg}"))
                raise
            self._void(sent, f"refused by the exchange: code {exc.code}: {exc.msg}")
            return
        except Exception as exc:  # noqa: BLE001 - lost, late, 5xx, garbled: it may have executed
            self._save(replace(sent, state=UNKNOWN, note=str(exc)))
            self.log.warning(
                "%s: entry %s: %s; asking the exchange by client id (never sent twice)",
                trade.symbol,
                cid,
                exc,
            )
            self._soon(trade.key)
            return
        if not self._take_fill(sent, order):
            self._soon(trade.key, 0.05)  # the answer lacked the fill: read it back now

    def _resolve_entry(self, trade: Trade) -> None:
        """SENT or UNKNOWN: what became of the entry, by its client id."""
        cid = client_id(trade.key, ENTRY)
        order = self.client.get_order(trade.symbol, client_order_id=cid)
        if order is None:
            sent_at = trade.entry_sent_at or 0
            if self.client.now_ms() > sent_at + trade.recv_window + RESOLVE_MARGIN_MS:
                self._void(
                    trade,
                    f"the entry never executed: no order {cid} on the exchange after its "
                    f"recvWindow passed ({trade.note or 'its answer was lost'})",
                    watch=True,
                )
            else:
                self._soon(trade.key, 0.5)
            return
        if not isinstance(order, dict):
            raise Malformed(f"order {cid}: {order!r:.200}")
        status = str(order.get("status"))
        executed = _dec(order.get("executedQty"))
        if status in ("NEW", "PARTIALLY_FILLED") or (status == "FILLED" and executed <= 0):
            self._soon(trade.key, 0.25)
            return
        if executed <= 0:
            self._void(trade, f"the entry {cid} ended {status} without a fill")
            return
        if not self._take_fill(trade, order):
            raise Malformed(f"order {cid} is {status} with {executed} executed but no price anywhere")

    def _take_fill(self, trade: Trade, order: Any) -> bool:
        """Record the fill ``order`` shows (quantity and average price read back, never a zero or a
        missing field); False when the answer does not carry it yet."""
        if not isinstance(order, dict) or order.get("status") != "FILLED":
            return False
        qty = _dec(order.get("executedQty"))
        avg = _dec(order.get("avgPrice"))
        if avg <= 0 and qty > 0 and _dec(order.get("cumQuote")) > 0:
            avg = _dec(order.get("cumQuote")) / qty
        if qty <= 0:
            return False
        if avg <= 0:
            avg = self._entry_price_from_position(trade.symbol)
            if avg <= 0:
                return False
        when = _int(order.get("updateTime")) or _int(order.get("time")) or self.client.now_ms()
        position = self._position_for(trade, qty, avg, when)
        filled = replace(trade, state=FILLED, qty=fmt_decimal(qty), filled_at=self._wall(), note=None)
        self._write(lambda: self.store.record_fill(filled, position, venue=self.venue), held=True)
        self._trades[trade.key] = filled
        self._positions[trade.key] = position
        self._signals.pop(trade.key, None)
        self.log.info(
            "entered %s: %s @ %s (signal %s); take profit %s, stop loss %s",
            trade.symbol,
            fmt_decimal(qty),
            fmt_decimal(avg),
            trade.key,
            position.take_profit,
            position.stop_loss,
        )
        self._post(TradeOpened(position))
        self._protect(filled)  # at once: every millisecond from here is a position without its stop
        return True

    def _entry_price_from_position(self, symbol: str) -> Decimal:
        for row in self._risk_rows(symbol):
            if row["symbol"] == symbol and _dec(row.get("positionAmt")) > 0:
                return _dec(row.get("entryPrice"))
        return Decimal(0)

    def _position_for(self, trade: Trade, qty: Decimal, entry: Decimal, when: int) -> Position:
        s = self.settings
        rules = self._rules_of(trade.symbol)
        return Position(
            key=trade.key,
            symbol=trade.symbol,
            qty=float(qty),
            entry_price=float(entry),
            entry_time=when,
            take_profit=float(rules.price(entry * (1 + Decimal(str(s.take_profit_pct)) / 100))),
            stop_loss=float(rules.price(entry * (1 - Decimal(str(s.stop_loss_pct)) / 100))),
            deadline=when + int(s.max_hold_s * 1000),
            fees=float(entry * qty * self._fee),
        )

    def _void(self, trade: Trade, reason: str, *, watch: bool = False) -> None:
        """A trade voided after its entry was sent (refused, or "no such order" after a lost answer) is
        watched a while for a late fill all the same, and its symbol not entered again meanwhile."""
        self.store.void_trade(trade, reason, venue=self.venue)
        if watch or trade.state in (SENT, UNKNOWN):
            self._voided_unknown[trade.symbol] = (trade.key, self._clock() + LATE_FILL_WATCH_S)
        self.log.warning("signal %s not entered: %s", trade.key, reason)
        self._finish(trade)
        self._post(TradeVoid(trade.key, trade.symbol, reason))

    # ------------------------------------------------------------------ protection

    def _protect(self, trade: Trade) -> None:
        """FILLED: both protective orders, placed together; PROTECTED once both are acknowledged."""
        position = self._positions[trade.key]
        rules = self._rules_of(trade.symbol)
        amount = rules.quantity(position.qty)
        look_first = trade.key in self._checked_protection
        self._checked_protection.add(trade.key)  # a retry must ask before it places
        if self._protect_pool is not None:
            other: Future[tuple[str, int | None]] = self._protect_pool.submit(
                self._ensure_algo, position, TARGET, amount, look_first
            )
            results = [self._ensure_algo(position, STOP, amount, look_first), other.result()]
        else:
            results = [
                self._ensure_algo(position, STOP, amount, look_first),
                self._ensure_algo(position, TARGET, amount, look_first),
            ]
        ids = dict(results)
        trigger_now = [role for role, algo_id in results if algo_id == -1]
        if trigger_now:  # the price is already beyond a trigger (-2021): close at market for that reason
            self._save(replace(trade, state=CLOSING, exit_reason=_ROLE_REASON[trigger_now[0]], note=None))
            return
        if ids.get(STOP) is None or ids.get(TARGET) is None:
            missing = [client_id(trade.key, r) for r in (STOP, TARGET) if ids.get(r) is None]
            self._trades[trade.key] = replace(trade, note=f"not protected yet: {', '.join(missing)}")
            raise Malformed(f"{trade.symbol} is NOT fully protected yet ({', '.join(missing)} missing)")
        done = self._save(
            replace(
                trade,
                state=PROTECTED,
                sl_algo_id=ids[STOP],
                tp_algo_id=ids[TARGET],
                protected_at=self._wall(),
                note=None,
            )
        )
        took = ""
        if done.signal_at and done.filled_at and done.protected_at:
            took = (
                f" (signal -> protected {1000 * (done.protected_at - done.signal_at):.0f} ms, "
                f"unprotected {1000 * (done.protected_at - done.filled_at):.0f} ms)"
            )
        self.log.info(
            "%s: protective orders placed: %s, %s%s",
            trade.symbol,
            client_id(trade.key, STOP),
            client_id(trade.key, TARGET),
            took,
        )

    def _ensure_algo(
        self, position: Position, role: str, amount: Decimal, look_first: bool
    ) -> tuple[str, int | None]:
        """(role, algoId) once the protective order is open; None when it is not (yet); -1 when the
        price is already beyond its trigger. Runs on the desk thread or its protect worker."""
        cid = client_id(position.key, role)
        if look_first:
            current = self.client.get_algo_order(client_algo_id=cid)
            if isinstance(current, dict) and current.get("algoStatus") in _PROTECTING | _FIRED:
                return role, _int(current.get("algoId")) or 0
        trigger = self._rules_of(position.symbol).price(
            position.stop_loss if role == STOP else position.take_profit
        )
        try:
            answer = self.client.new_algo_order(
                position.symbol,
                "SELL",
                _ROLE_TYPE[role],
                trigger,
                client_algo_id=cid,
                quantity=amount,
                reduce_only=True,
            )
            return role, _int(answer.get("algoId")) if isinstance(answer, dict) else 0
        except ExchangeError as exc:
            if exc.code == -2021:
                self.log.warning(
                    "%s: %s at %s would trigger at once: closing at market",
                    position.symbol,
                    _ROLE_TYPE[role],
                    fmt_decimal(trigger),
                )
                return role, -1
            if exc.code == -4116:  # "ClientOrderId is duplicated": it is open already
                found = self.client.get_algo_order(client_algo_id=cid)
                return role, _int(found.get("algoId")) if isinstance(found, dict) else None
            self.log.error(
                "%s: could not place %s %s (code %s: %s): the position is NOT fully protected; trying again",
                position.symbol,
                _ROLE_TYPE[role],
                cid,
                exc.code,
                exc.msg,
            )
            return role, None
        except Exception as exc:  # noqa: BLE001 - lost or garbled: ask by its id before placing again
            self.log.warning(
                "%s: %s %s: %s; asking the exchange before placing it again",
                position.symbol,
                _ROLE_TYPE[role],
                cid,
                exc,
            )
            try:
                found = self.client.get_algo_order(client_algo_id=cid)
            except Exception:  # noqa: BLE001 - still unreachable: the next step asks again
                return role, None
            if isinstance(found, dict) and found.get("algoStatus") in _PROTECTING | _FIRED:
                return role, _int(found.get("algoId")) or 0
            return role, None

    # ------------------------------------------------------------------ closing

    def _close_step(self, trade: Trade) -> None:
        """CLOSING: a reduce-only market sell, at most once per recvWindow, until the position is flat."""
        position = self._positions.get(trade.key) or self.store.position(trade.key, venue=self.venue)
        if position is None:
            raise Malformed(f"trade {trade.key} is closing but has no position in the ledger")
        self._positions[trade.key] = position
        cid = client_id(trade.key, EXIT)
        if trade.exit_sent_at is not None:
            order = self.client.get_order(trade.symbol, client_order_id=cid)
            if (
                isinstance(order, dict)
                and order.get("status") == "FILLED"
                and _dec(order.get("executedQty")) > 0
            ):
                self._closed(trade, position, order, trade.exit_reason or MAX_HOLD)
                return
            if isinstance(order, dict) and order.get("status") in ("NEW", "PARTIALLY_FILLED"):
                self._soon(trade.key)
                return
            if (
                order is None
                and self.client.now_ms() <= trade.exit_sent_at + trade.recv_window + RESOLVE_MARGIN_MS
            ):
                self._soon(trade.key, 0.5)
                return
        amount = self._amount(trade.symbol)
        if amount <= 0:
            proof = self._exit_proof(trade)
            if proof is not None:
                self._closed(trade, position, proof[0], proof[1])
            elif self._flat_confirmed(trade):
                self._exchange_exit(trade, position)
            else:
                self._soon(trade.key, 1.0)
            return
        self._flat_reads.pop(trade.key, None)
        sent = self._save(replace(trade, exit_sent_at=self.client.now_ms()))
        try:
            order = self.client.new_order(
                trade.symbol,
                "SELL",
                self._rules_of(trade.symbol).quantity(amount),
                client_order_id=cid,
                reduce_only=True,
                resp_type="RESULT",
            )
        except ExchangeError as exc:
            if exc.code == -2022:  # "ReduceOnly Order is rejected": nothing left to reduce
                self._soon(trade.key, 1.0)  # the next step proves how it ended (or reads flat again)
                return
            raise
        except Exception as exc:  # noqa: BLE001 - may have executed: the next step asks by its id
            self._save(replace(sent, note=str(exc)))
            self._soon(trade.key)
            return
        if isinstance(order, dict) and order.get("status") == "FILLED" and _dec(order.get("avgPrice")) > 0:
            self._closed(sent, position, order, sent.exit_reason or MAX_HOLD)
        else:
            self._soon(trade.key, 0.05)  # read the fill back by its id

    def _closed(self, trade: Trade, position: Position, order: Mapping[str, Any], reason: str) -> None:
        """Flat, and we know how: cancel what protected it, then record the exit (one transaction)."""
        self._cancel_protection(trade.key)
        price = _dec(order.get("avgPrice"))
        if price <= 0 and _dec(order.get("cumQuote")) > 0 and _dec(order.get("executedQty")) > 0:
            price = _dec(order.get("cumQuote")) / _dec(order.get("executedQty"))
        if price <= 0:
            price = Decimal(repr(self.client.rest.ticker_prices().get(trade.symbol, position.entry_price)))
        when = _int(order.get("updateTime")) or _int(order.get("time")) or self.client.now_ms()
        qty, entry = Decimal(repr(position.qty)), Decimal(repr(position.entry_price))
        fees = Decimal(repr(position.fees)) + price * qty * self._fee
        closed = replace(
            position,
            exit_price=float(price),
            exit_time=when,
            exit_reason=reason,
            fees=float(fees),
            pnl=float((price - entry) * qty - fees),
        )
        self._flush_unsaved()  # its fill and closing rows first (a full disk held them back)
        self.store.record_trade_close(trade, closed, venue=self.venue)
        self.log.info(
            "closed %s (%s) @ %s: pnl %.4f USDT", trade.symbol, reason, fmt_decimal(price), closed.pnl
        )
        self._finish(trade)
        self._post(TradeClosed(closed))

    def _exit_proof(self, trade: Trade) -> tuple[Mapping[str, Any], str] | None:
        """The fill that made the position flat, if one of ours did: a protective order or our close."""
        for role in (STOP, TARGET):
            algo = self.client.get_algo_order(client_algo_id=client_id(trade.key, role))
            if (
                isinstance(algo, dict)
                and algo.get("algoStatus") in _FIRED
                and _int(algo.get("actualOrderId"))
            ):
                order = self.client.get_order(trade.symbol, order_id=_int(algo.get("actualOrderId")))
                if isinstance(order, dict) and _dec(order.get("executedQty")) > 0:
                    return order, _ROLE_REASON[role]
        order = self.client.get_order(trade.symbol, client_order_id=client_id(trade.key, EXIT))
        if isinstance(order, dict) and order.get("status") == "FILLED" and _dec(order.get("executedQty")) > 0:
            return order, trade.exit_reason or MAX_HOLD
        return None

    def _exchange_exit(self, trade: Trade, position: Position, *, confirmed: bool = True) -> None:
        """The position is flat on the exchange: record how (a fill of ours), or as external."""
        proof = self._exit_proof(trade)
        if proof is not None:
            self._closed(trade, position, proof[0], proof[1])
            return
        self.log.warning(
            "%s: position %s closed outside the bot (manually or liquidated)", trade.symbol, trade.key
        )
        last = self.client.rest.ticker_prices().get(trade.symbol, position.entry_price)
        self._closed(trade, position, {"avgPrice": repr(last)}, EXTERNAL)
        # flat on positionRisk's word alone, which can be wrong twice in a row: if the position shows
        # again it is adopted under its key and protected (as a late entry is), not left unprotected
        self._voided_unknown[trade.symbol] = (trade.key, self._clock() + LATE_FILL_WATCH_S)

    def _cancel_protection(self, key: str) -> None:
        """Cancel both protective orders; a failure is logged (reconciliation cancels leftovers later)."""
        for role in (STOP, TARGET):
            cid = client_id(key, role)
            try:
                if self.client.cancel_algo_order(client_algo_id=cid):
                    self.log.info("cancelled protective order %s", cid)
            except Exception as exc:  # noqa: BLE001 - the position is flat: a leftover reduce-only order is harmless
                self.log.warning("could not cancel protective order %s (%s); the next start will", cid, exc)

    # ------------------------------------------------------------------ watching

    def _poll(self) -> None:
        """One positionRisk read: exits the exchange made (proven), and protection put back where missing."""
        watched = [t for t in self._trades.values() if t.state in (FILLED, PROTECTED)]
        amounts = self._amounts(self._risk_rows(None))
        for trade in watched:
            amount = amounts.get(trade.symbol)
            if amount is None:  # no row for it in the all-symbols answer: ask about this symbol alone
                amount = self._amount(trade.symbol)
            position = self._positions.get(trade.key)
            if position is None:
                continue
            if amount > 0:
                self._flat_reads.pop(trade.key, None)
                if trade.state == PROTECTED:
                    self._chores.append(
                        (f"{trade.symbol} protection check", lambda k=trade.key: self._check_protection(k))
                    )
                continue
            proof = self._exit_proof(trade)
            if proof is not None:
                self._closed(trade, position, proof[0], proof[1])
            elif self._flat_confirmed(trade):
                self._exchange_exit(trade, position)
        self._adopt_late_entries(amounts)

    def _flat_confirmed(self, trade: Trade) -> bool:
        """A flat read with no fill of ours to explain it: believed on the second consecutive one."""
        reads = self._flat_reads.get(trade.key, 0) + 1
        self._flat_reads[trade.key] = reads
        if reads < 2:
            self.log.info(
                "%s: flat on one positionRisk read with no fill of ours: confirming on the next", trade.symbol
            )
        return reads >= 2

    def _adopt_late_entries(self, amounts: Mapping[str, Decimal]) -> None:
        """An entry proven "never executed" that executed after all (a matching engine far behind), or a
        position believed flat on two wrong positionRisk answers: it shows on the exchange, its entry
        with our client id. Adopt it under its key and protect it."""
        now = self._clock()
        for symbol, (key, until) in list(self._voided_unknown.items()):
            if now > until:
                del self._voided_unknown[symbol]
                continue
            if amounts.get(symbol, Decimal(0)) <= 0 or any(t.symbol == symbol for t in self._trades.values()):
                continue
            order = self.client.get_order(symbol, client_order_id=client_id(key, ENTRY))
            if not isinstance(order, dict) or _dec(order.get("executedQty")) <= 0:
                continue
            del self._voided_unknown[symbol]
            qty, avg = _dec(order.get("executedQty")), _dec(order.get("avgPrice"))
            if avg <= 0:
                avg = self._entry_price_from_position(symbol)
            when = _int(order.get("updateTime")) or self.client.now_ms()
            trade = Trade(key, symbol, FILLED, qty=fmt_decimal(qty), filled_at=self._wall(), note="late fill")
            position = self._position_for(trade, qty, avg, when)
            self.store.adopt_trade(trade, position, venue=self.venue)
            self._trades[key] = trade
            self._positions[key] = position
            self._checked_protection.add(key)
            self._retry[key] = _Retry()
            self.log.error(
                "%s: entry %s executed after it was given up: adopted and being protected", symbol, key
            )
            self._post(TradeOpened(position, adopted=True))

    def _check_protection(self, key: str) -> None:
        trade = self._trades.get(key)
        if trade is None or trade.state != PROTECTED:
            return  # closing or closed since the positions check queued this
        open_ids = {a.get("clientAlgoId") for a in self._list(self.client.open_algo_orders(trade.symbol))}
        missing = [r for r in (STOP, TARGET) if client_id(trade.key, r) not in open_ids]
        if not missing:
            return
        position = self._positions[trade.key]
        amount = self._rules_of(trade.symbol).quantity(position.qty)
        for role in missing:
            cid = client_id(trade.key, role)
            role_, algo_id = self._ensure_algo(position, role, amount, look_first=True)
            if algo_id == -1:
                self._save(replace(trade, state=CLOSING, exit_reason=_ROLE_REASON[role_], note=None))
                return
            if algo_id is None:
                raise Malformed(f"{trade.symbol}: protective order {cid} is missing and could not be placed")
            self.log.warning("%s: protective order %s was missing: placed again", trade.symbol, cid)

    def _risk_rows(self, symbol: str | None) -> list[dict[str, Any]]:
        rows = self._list(self.client.position_risk(symbol))
        out = []
        for row in rows:
            if (
                not isinstance(row, dict)
                or not isinstance(row.get("symbol"), str)
                or "positionAmt" not in row
            ):
                raise Malformed(f"positionRisk row {row!r:.200}")
            if row.get("positionSide", "BOTH") != "BOTH":
                raise Malformed(
                    f"positionRisk has a {row.get('positionSide')} row: the account is in hedge mode"
                )
            out.append(row)
        return out

    @staticmethod
    def _amounts(rows: list[dict[str, Any]]) -> dict[str, Decimal]:
        return {r["symbol"]: _dec(r.get("positionAmt"), strict=True) for r in rows}

    def _amount(self, symbol: str) -> Decimal:
        """The position on ``symbol``, asked about by name. positionRisk v3 has rows only for symbols
        with a position or open orders: no row is its answer "flat" (one flat read; it takes two)."""
        return self._amounts(self._risk_rows(symbol)).get(symbol, Decimal(0))

    @staticmethod
    def _list(answer: Any) -> list[Any]:
        if not isinstance(answer, list):
            raise Malformed(f"expected a list, got {answer!r:.200}")
        return answer

    # ------------------------------------------------------------------ rules and leverage

    def _rules_of(self, symbol: str) -> SymbolRules:
        if symbol not in self._rules:
            self._rules.update(rules_from_exchange_info(self.client.rest.exchange_info()))
        try:
            return self._rules[symbol]
        except KeyError:
            raise ExchangeError(-1121, "Invalid symbol.") from None

    def _ensure_leverage(self, symbol: str) -> None:
        if symbol in self._leverage_set:
            return
        self.client.set_leverage(symbol, self.settings.leverage)
        self._leverage_set.add(symbol)
        self.log.info("leverage %dx set on %s", self.settings.leverage, symbol)

    # ------------------------------------------------------------------ start-up reconciliation

    def _reconcile(self) -> DeskStart:
        """The ledger against the exchange, before the desk thread runs.

        Unfinished trades resume where their rows stand (the thread takes them on at once); positions
        the ledger lacks are adopted (their trade starts at "filled", so protection is checked and put
        back); our protective orders that protect nothing are cancelled. Flatness is not concluded
        here: the first positions check and the one after it do that, as always.
        """
        found = DeskStart()
        rows = self._risk_rows(None)
        for r in rows:
            if str(r.get("leverage")) == str(self.settings.leverage):
                self._leverage_set.add(r["symbol"])
        held = {s: a for s, a in self._amounts(rows).items() if a != 0}
        algos = [
            a
            for a in self._list(self.client.open_algo_orders())
            if isinstance(a, dict) and str(a.get("clientAlgoId", "")).startswith(CLIENT_ID_PREFIX)
        ]
        for o in self._list(self.client.open_orders()):
            if isinstance(o, dict) and str(o.get("clientOrderId", "")).startswith(CLIENT_ID_PREFIX):
                self.log.warning(
                    "reconcile: %s: open order %s left from a previous run (status %s)",
                    o.get("symbol"),
                    o.get("clientOrderId"),
                    o.get("status"),
                )
        trades = {t.key: t for t in self.store.trades(venue=self.venue, unfinished=True)}
        for p in self.store.open_positions(venue=self.venue):  # positions from before the ledger had trades
            if p.key not in trades:
                trade = Trade(p.key, p.symbol, FILLED, qty=repr(p.qty), note="resumed without a trade row")
                self.store.adopt_trade(trade, p, venue=self.venue)
                trades[p.key] = trade
        for trade in trades.values():
            if trade.state == INTENT:  # never sent: the moment has passed
                self.store.void_trade(trade, "not sent before the bot stopped", venue=self.venue)
                self.log.warning("reconcile: %s: entry %s was never sent: void", trade.symbol, trade.key)
                continue
            self._trades[trade.key] = trade
            self._retry[trade.key] = _Retry()  # its next step at once
            self._checked_protection.add(trade.key)
            position = self.store.position(trade.key, venue=self.venue)
            if position is not None and position.is_open:
                position = self._as_on_exchange(position, rows)
                self._positions[trade.key] = position
                found.open.append(position)
            elif trade.state in (SENT, UNKNOWN):
                found.in_flight[trade.key] = trade.symbol
            found.resumed += 1
            self.log.info("reconcile: %s: resuming trade %s (%s)", trade.symbol, trade.key, trade.state)
        mine = {t.symbol for t in self._trades.values()}
        for symbol, amount in held.items():
            if symbol in mine:
                continue
            if amount < 0:
                self.log.warning(
                    "reconcile: %s: a SHORT position of %s is on the account; surge only trades "
                    "longs and leaves it alone",
                    symbol,
                    fmt_decimal(amount),
                )
                continue
            row = next(r for r in rows if r["symbol"] == symbol)
            position = self._adopted_position(symbol, row, [a for a in algos if a.get("symbol") == symbol])
            trade = Trade(position.key, symbol, FILLED, qty=fmt_decimal(amount), note="adopted")
            self.store.adopt_trade(trade, position, venue=self.venue)
            self._trades[trade.key] = trade
            self._positions[trade.key] = position
            self._checked_protection.add(trade.key)
            found.open.append(position)
            found.adopted += 1
            self.log.warning(
                "reconcile: %s: position %s @ %s on the exchange is not in the database: adopted as %s",
                symbol,
                fmt_decimal(amount),
                row.get("entryPrice"),
                position.key,
            )
        symbols = {t.symbol for t in self._trades.values()}
        # a close believed on positionRisk's word alone stays watched across a restart: this start's
        # one read (empty or garbled, say) cannot rule out that the position is still there
        now_ms = self._wall() * 1000
        for p in self.store.positions(include_closed=True, limit=100, venue=self.venue):
            left = LATE_FILL_WATCH_S - (now_ms - (p.exit_time or 0)) / 1000
            if p.exit_reason == EXTERNAL and left > 0 and p.symbol not in symbols:
                self._voided_unknown.setdefault(p.symbol, (p.key, self._clock() + left))
        keep = {client_id(k, r) for k in self._trades for r in (STOP, TARGET)}
        for a in algos:
            cid = a["clientAlgoId"]
            if (
                cid not in keep
                and a.get("symbol") not in symbols
                and self.client.cancel_algo_order(client_algo_id=cid)
            ):
                self.log.warning(
                    "reconcile: %s: protective order %s protected nothing: cancelled", a.get("symbol"), cid
                )
        self.log.info(
            "reconciliation: %d open, %d adopted, %d resumed, %d entries unresolved",
            len(found.open),
            found.adopted,
            found.resumed,
            len(found.in_flight),
        )
        return found

    def _as_on_exchange(self, position: Position, rows: list[dict[str, Any]]) -> Position:
        """A resumed position with the exchange's quantity and entry price where they differ (a partial
        fill of a protective order, a manual change while the bot was away): logged, stored."""
        row = next((r for r in rows if r["symbol"] == position.symbol), None)
        amount = _dec(row.get("positionAmt")) if row is not None else Decimal(0)
        if amount <= 0:
            return position  # flat or unknown: the positions check decides, with proof
        entry = _dec(row.get("entryPrice")) if row is not None else Decimal(0)
        qty, ledger_entry = Decimal(repr(position.qty)), Decimal(repr(position.entry_price))
        if entry <= 0:
            entry = ledger_entry
        if amount == qty and abs(entry - ledger_entry) <= entry * Decimal("0.000001"):
            return position
        updated = replace(position, qty=float(amount), entry_price=float(entry))
        self.store.update_position(updated, venue=self.venue)
        self.log.warning(
            "reconcile: %s: the ledger says %s @ %s, the exchange %s @ %s: adopting the exchange's",
            position.symbol,
            position.qty,
            position.entry_price,
            fmt_decimal(amount),
            fmt_decimal(entry),
        )
        return updated

    def _adopted_position(
        self, symbol: str, row: Mapping[str, Any], algos: list[Mapping[str, Any]]
    ) -> Position:
        """A Position for an exchange position the ledger lacks; key and triggers from our protective
        orders when they exist (their ids carry the signal key)."""
        s = self.settings
        rules = self._rules_of(symbol)
        entry = _dec(row.get("entryPrice"))
        amount = _dec(row.get("positionAmt"))
        entered = _int(row.get("updateTime")) or self.client.now_ms()
        key = next(
            (k for a in algos if (k := key_from_client_id(str(a.get("clientAlgoId"))))), f"{symbol}:{entered}"
        )
        triggers = {a.get("orderType"): float(_dec(a.get("triggerPrice"))) for a in algos}
        return Position(
            key=key,
            symbol=symbol,
            qty=float(amount),
            entry_price=float(entry),
            entry_time=entered,
            take_profit=triggers.get("TAKE_PROFIT_MARKET")
            or float(rules.price(entry * (1 + Decimal(str(s.take_profit_pct)) / 100))),
            stop_loss=triggers.get("STOP_MARKET")
            or float(rules.price(entry * (1 - Decimal(str(s.stop_loss_pct)) / 100))),
            deadline=entered + int(s.max_hold_s * 1000),
            fees=float(entry * amount * self._fee),
        )


def _dec(value: Any, *, strict: bool = False) -> Decimal:
    """A Binance decimal string (or number) as a Decimal; 0 for missing or malformed unless ``strict``."""
    try:
        out = Decimal(str(value)) if value is not None and value != "" else None
    except InvalidOperation:
        out = None
    if out is None or not out.is_finite():
        if strict:
            raise Malformed(f"not a number: {value!r:.50}")
        return Decimal(0)
    return out


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
