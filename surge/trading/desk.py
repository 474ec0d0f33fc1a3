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

Parts, each a class with one job, all working on one :class:`~surge.trading.desk_state.DeskState`
on the desk thread: :class:`~surge.trading.entry.EntryFlow`, :class:`~surge.trading.protection.Protector`,
:class:`~surge.trading.closing.Closer`, :class:`~surge.trading.watch.PositionWatch` and, at start,
:class:`~surge.trading.reconcile.Reconciler`; the ledger is written through
:class:`~surge.trading.ledger_writes.LedgerWriter`, the account read through
:class:`~surge.trading.account_reads.AccountReads`. This module runs them: the commands, the steps
of each trade as its ledger state says, the retries and the background chores.

Threads: ``surge-desk`` (every step and every exchange call of every live trade) and
``surge-desk-protect`` (the second protective order, so both go out together). Both are joined by
:meth:`OrderDesk.stop`. The strategy loop calls :meth:`enter` / :meth:`close` (cheap: a ledger row
and a queue put) and receives :mod:`~surge.trading.outcomes` messages on its queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from surge.config import TradeSettings
from surge.errors import ConfigError
from surge.exchange.orders import SignedRest, SymbolRules, rules_from_exchange_info
from surge.models import CLOSING, FILLED, INTENT, PROTECTED, SENT, UNKNOWN, Position, Signal, Trade
from surge.store import Store, StoreWriteError
from surge.trading.account_reads import AccountReads, Malformed
from surge.trading.closing import Closer
from surge.trading.desk_rules import HELD, RETRY_S, UNRESOLVED_REPORT_S, UNRESOLVED_STATES
from surge.trading.desk_state import DeskContext, DeskStart, DeskState, StepRetry
from surge.trading.entry import EntryFlow
from surge.trading.ledger_writes import LedgerWriter
from surge.trading.live import ENTRY, EXIT, AccountSummary, client_id
from surge.trading.outcomes import Outcome
from surge.trading.paper import MAX_HOLD
from surge.trading.protection import Protector
from surge.trading.reconcile import Reconciler
from surge.trading.watch import PositionWatch

__all__ = ["UNRESOLVED_STATES", "DeskStart", "Malformed", "OrderDesk"]

log = logging.getLogger(__name__)

_Command = tuple[str, Any]


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
        self.poll_interval_s = poll_interval_s
        #: at shutdown, how long unresolved trades get to resolve: one lost answer plus protection
        self.stop_budget_s = stop_budget_s if stop_budget_s is not None else self._read_timeout() + 5.0
        self.log = logger or log
        self._clock = clock
        self._wall = wall
        self.state = DeskState()
        account = AccountReads(settings, client, rules, self.log)
        ledger = LedgerWriter(store, venue, self.state.trades, self.log, clock)
        self.ctx = DeskContext(
            settings, client, store, venue, post, self.log, clock, wall, self.state, ledger, account
        )
        self.protector = Protector(self.ctx, concurrent=concurrent_protection)
        self.entry = EntryFlow(self.ctx, self.protector)
        self.closer = Closer(self.ctx, self.protector)
        self.watch = PositionWatch(self.ctx, self.closer, self.protector)
        self._commands: queue.SimpleQueue[_Command | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="surge-desk", daemon=True)
        self._next_poll = 0.0
        #: trades still unresolved when :meth:`stop` gave up (empty after a clean stop)
        self.unresolved: list[Trade] = []
        #: exceptions a step raised (logged and retried): the fault campaign reads them
        self.step_errors = 0

    @property
    def concurrent_protection(self) -> bool:
        """False places the stop loss, then the take profit: the baseline of scripts/bench_live.py."""
        return self.protector.concurrent

    def _read_timeout(self) -> float:
        timeout = self.client.rest.timeout
        return float(timeout[1]) if isinstance(timeout, tuple) else 10.0

    # ------------------------------------------------------------------ the loop's side

    def start(self) -> DeskStart:
        """Check the account, load the ledger, reconcile it with the exchange, then start the threads.

        Runs on the caller's thread; an exchange that refuses or cannot be reached raises (the bot
        has not started anything yet, so that is an exit, not a ride-out). A hedge-mode account is a
        :class:`ConfigError`: every one-way order would be refused with -4061.
        """
        if self.client.position_side_dual():
            raise ConfigError(
                "the account is in Hedge Mode (dualSidePosition = true) and surge places one-way orders: "
                "switch Position Mode to One-way in the Binance Futures preferences (with no position "
                "open), or run without --live"
            )
        self.ctx.account.rules.update(rules_from_exchange_info(self.client.rest.exchange_info()))
        found = Reconciler(self.ctx).run()
        self.protector.start()
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
            self._thread.join(budget + self._read_timeout() + 2.0)
        self.protector.shutdown()
        if self.ctx.ledger.pending:  # tried every second until the loop ended: a full disk still refuses them
            held = sorted({t.symbol for t in self.state.trades.values() if t.state in HELD})
            self.log.error(
                "stopping with %d ledger writes a full disk refused (latest states of %s): "
                "the next start reconciles these positions with the exchange",
                len(self.ctx.ledger.pending),
                ", ".join(held) or "-",
            )
        while True:  # a desk thread still stuck in a call after the join may change the dict meanwhile
            try:
                self.unresolved = [
                    t for t in list(self.state.trades.values()) if t.state in UNRESOLVED_STATES
                ]
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
        usdt = next((b for b in self.client.balance() if b.asset == "USDT"), None)
        return AccountSummary(
            asset="USDT",
            wallet_balance=float(usdt.balance) if usdt is not None else 0.0,
            available_balance=float(usdt.available_balance) if usdt is not None else 0.0,
            leverage=s.leverage,
            position_usdt=s.position_usdt,
            max_open_positions=s.max_open_positions,
            take_profit_pct=s.take_profit_pct,
            stop_loss_pct=s.stop_loss_pct,
            max_hold_s=s.max_hold_s,
        )

    # ------------------------------------------------------------------ the desk thread

    def _run(self) -> None:
        state = self.state
        while True:
            self._take_commands(self._wait_s())
            if self.ctx.ledger.pending and self._clock() >= self.ctx.ledger.retry_at:
                self._flush_pending()
            if state.stopping and (not state.unresolved_keys() or self._clock() >= (state.deadline or 0.0)):
                return
            due_keys = [k for k in list(state.trades) if self._due(k)]
            for key in due_keys:
                self._step(key)
            if self.watch.watched() and self._clock() >= self._next_poll:
                self._next_poll = self._clock() + self.poll_interval_s
                state.chores.append(("positions check", self.watch.poll))
            if state.chores and not due_keys:
                # one request's worth of background work at a time: an entry arriving meanwhile waits
                # for at most that one request, never for a whole round of checks
                what, chore = state.chores.popleft()
                self._guard(what, chore)

    def _wait_s(self) -> float:
        """How long the loop may wait for a command before something else is due."""
        state, now = self.state, self._clock()
        # a protected trade waits for the positions check, not for a retry: it must not wake us
        due = [r for k, r in state.retry.items() if k in state.trades and state.trades[k].state != PROTECTED]
        wake = min((r.at for r in due), default=now + 1.0)
        if self.watch.watched():
            wake = min(wake, self._next_poll)
        if state.chores:
            wake = now  # background work waits only for entries, closes and commands
        if state.deadline is not None:
            wake = min(wake, state.deadline)
        return max(0.0, min(wake - now, 1.0))

    def _take_commands(self, wait_s: float) -> None:
        try:
            command = self._commands.get(timeout=wait_s)
        except queue.Empty:
            return
        while command is not None:
            self._command(command)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return

    def _flush_pending(self) -> None:
        try:
            self.ctx.ledger.flush()
        except StoreWriteError:
            pass  # said once when it began; tried again in a second
        except Exception as exc:  # noqa: BLE001 - not a full disk: said, never the thread's end
            self.log.error("a held-back ledger write failed: %s: %s", type(exc).__name__, exc)

    def _command(self, command: _Command) -> None:
        kind, arg = command
        state = self.state
        if kind == "enter":
            trade, signal = arg
            state.trades[trade.key] = trade
            state.signals[trade.key] = signal
            state.retry[trade.key] = StepRetry()
        elif kind == "close":
            key, reason = arg
            trade = state.trades.get(key)
            if trade is None or trade.state not in (FILLED, PROTECTED):
                return  # closing already, or not ours to close (closed meanwhile)
            self.ctx.ledger.save(replace(trade, state=CLOSING, exit_reason=reason, note=None))
            state.retry[key] = StepRetry()
        elif kind == "prepare":
            account = self.ctx.account
            for symbol in arg:
                if symbol not in account.leverage_set | account.leverage_queued and symbol in account.rules:
                    account.leverage_queued.add(symbol)
                    state.chores.append((f"{symbol} leverage", partial(account.ensure_leverage, symbol)))
        elif kind == "stop":
            state.stopping = True
            state.deadline = arg

    def _due(self, key: str) -> bool:
        if self.state.trades[key].state == PROTECTED:
            return False
        return self._clock() >= self.state.retry.setdefault(key, StepRetry()).at

    def _guard(self, what: str, step: Callable[[], None]) -> bool:
        """Run ``step``; an exception is logged, never raised: the desk and the bot go on."""
        try:
            step()
            return True
        except Exception as exc:  # noqa: BLE001 - an outage or an odd answer: logged, retried
            self.step_errors += 1
            if not (isinstance(exc, StoreWriteError) and self.ctx.ledger.failing):  # a full disk: said once
                self.log.warning("%s failed: %s: %s (trying again)", what, type(exc).__name__, exc)
            return False

    def _step(self, key: str) -> None:
        trade = self.state.trades[key]
        handler = {
            INTENT: self.entry.send,
            SENT: self.entry.resolve,
            UNKNOWN: self.entry.resolve,
            FILLED: self.protector.protect,
            CLOSING: self.closer.step,
        }.get(trade.state)
        if handler is None:
            return
        retry = self.state.retry.setdefault(key, StepRetry())
        planned = retry.at
        if self._guard(f"{trade.symbol} {trade.state} step of {key}", lambda: handler(trade)):
            after = self.state.trades.get(key)
            if after is None or after.state != trade.state:
                self.state.retry[key] = StepRetry()  # progress: the next step at once
                return
            if self.state.retry.get(key) is retry and retry.at != planned:
                return  # waiting for an answer that is on its way (the step said when to look again)
        self._backoff(key)

    def _backoff(self, key: str) -> None:
        """The step made no progress: ask again later, and say so loudly while a trade stays unresolved."""
        now = self._clock()
        r = self.state.retry.setdefault(key, StepRetry())
        r.at = now + r.delay
        r.delay = min(r.delay * 2, RETRY_S[1])
        trade = self.state.trades.get(key)
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
                client_id(trade.key, EXIT if trade.state == CLOSING else ENTRY),
            )
