"""A seeded, randomised fault campaign against the order desk: the harness both of its forms share.

``tests/trading/test_desk_campaign.py`` drives it with Hypothesis (a few schedules, in the default
suite); ``scripts/fault_campaign.py`` drives it with a seeded ``random.Random`` (hundreds of schedules,
one JSON report). Both draw steps from the same :data:`ACTIONS` (with their weights) and run them
through :meth:`Campaign.act`, so the two cannot drift apart. It lives under ``tests/`` because it is
a test harness (it judges the desk with ``tests.waiting.wait_for``); the script puts the repository
root on ``sys.path`` to import it.

Why it is shaped like this:

* **The real thing, in one process.** One simulator (reused: :meth:`Account.reset` between
  schedules), a real :class:`SignedRest` over real sockets, a :class:`Store` in a fresh directory per
  schedule, an :class:`OrderDesk` as the bot builds it. Only the process boundary is modelled.
* **kill -9 is a process dying, not an exception the desk may catch.** The desk's exchange client and
  store are wrapped in :class:`_Mortal` proxies of a :class:`_Process`. A :class:`Fuse` armed with N
  kills the process at the N-th call (before it, or after it: the exchange or the database did it and
  the answer died with the process) by raising :class:`Killed`, a ``BaseException`` the desk does not
  catch, so its thread dies as a process would; every later call of that process raises too, so the
  dead desk can never act again. The next step starts a fresh desk over the same store, as cron would.
* **SIGTERM** is :meth:`OrderDesk.stop` and a fresh desk over the same store.
* **The strategy loop is modelled, not skipped.** Signals are refused, as ``surge.app`` refuses them,
  on a symbol held or with an entry on its way, and past ``max_open_positions``; closes are asked for
  positions the loop holds. What the loop knows comes from the desk's outcome messages and, after a
  restart, from :meth:`OrderDesk.start` (the queue dies with the process).
* **Invariants (the issue's words)**, checked after every schedule with the faults cleared, within
  :data:`SETTLE_S` of the clearing and again within :data:`SETTLE_S` of a final SIGTERM restart: every
  non-zero position on the exchange is in the ledger (same quantity) and has both protective orders
  open, each covering it, or a close in progress; every trade has settled (protected, closed, void, or
  closing); every position the ledger calls closed is flat, and every position it calls open is held.
  After every step: no signal produced more than one entry order, no desk thread died of anything but
  :class:`Killed`, and no symbol is held while every trade on it is closed or void in the ledger (but
  for an unproven close, which the desk believes on two flat reads by design: counted, and required to
  be put right within the settle time). Each violation keeps the schedule's seed and steps, to replay it.
"""

from __future__ import annotations

import collections
import logging
import queue
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from surge.config import TradeSettings
from surge.exchange.orders import Credentials, SignedRest
from surge.exchange.rest import BinanceRest
from surge.models import CLOSED, CLOSING, PROTECTED, VOID, Position, Signal, Trade
from surge.sim.account import DEFAULT_API_KEY, DEFAULT_API_SECRET, POSITION_RISK_FAULTS, UNKNOWN_ANSWERS
from surge.sim.simulator import Simulator
from surge.store import Store
from surge.trading.desk import OrderDesk
from surge.trading.live import EXTERNAL, STOP, TARGET, client_id
from surge.trading.outcomes import Outcome, TradeClosed, TradeOpened, TradeVoid
from tests.waiting import wait_for

__all__ = ["ACTIONS", "Action", "Campaign", "Killed", "OneOf", "Span", "draw_schedule"]

#: Symbols of the simulator (40 symbols, seed 5) with different tick and step sizes; all can be sized.
SYMBOLS = ("SOLUSDT", "ETHUSDT", "DOGEUSDT", "LINKUSDT")
SETTINGS = TradeSettings(
    mode="live",
    position_usdt=100.0,
    take_profit_pct=2.0,
    stop_loss_pct=1.0,
    max_hold_s=3600.0,
    max_open_positions=3,
    leverage=2,
)
VENUE = "live:sim"
#: The issue: protected (or closing) within 10 s of the last fault.
SETTLE_S = 10.0
POLL_INTERVAL_S = 0.3
STOP_BUDGET_S = 2.0
READ_TIMEOUT_S = 1.0
RECV_WINDOW_MS = 1000
#: How long a fresh process may take to get through start() while the exchange is failing.
START_DEADLINE_S = 30.0
#: A price level further than this from where the campaign found it is pulled back (moves flip sign).
MAX_LEVEL_PCT = 4.0
_SETTLED = frozenset({PROTECTED, CLOSED, VOID, CLOSING})


class Killed(BaseException):
    """kill -9: raised at the fuse's call and at every later call of the dead process. A
    ``BaseException`` because the desk catches ``Exception`` only: its thread dies of it."""


# ---------------------------------------------------------------------- the actions


@dataclass(frozen=True, slots=True)
class OneOf:
    """A parameter drawn from ``values``."""

    values: tuple[Any, ...]

    def draw(self, rng: random.Random) -> Any:
        return rng.choice(self.values)


@dataclass(frozen=True, slots=True)
class Span:
    """A parameter drawn uniformly from [lo, hi], to 2 decimals (readable, replayable step lists)."""

    lo: float
    hi: float

    def draw(self, rng: random.Random) -> float:
        return round(rng.uniform(self.lo, self.hi), 2)


@dataclass(frozen=True, slots=True)
class Action:
    """One kind of step: its name (the :class:`Campaign` method ``_<name>`` runs it), how often the
    seeded schedules draw it, its parameters, and whether it is a fault (counted by kind)."""

    name: str
    weight: int
    params: Mapping[str, OneOf | Span] = field(default_factory=dict)
    fault: bool = True


ACTIONS: tuple[Action, ...] = (
    # the market and the strategy loop
    Action("signal", 6, {"symbol": OneOf(SYMBOLS)}, fault=False),
    Action("close", 2, {"pick": OneOf((0, 1, 2))}, fault=False),
    Action("move", 3, {"symbol": OneOf(SYMBOLS), "pct": Span(-3.0, 3.0)}, fault=False),
    Action("wait", 8, {"seconds": Span(0.05, 2.0)}, fault=False),
    # the exchange misbehaving
    Action("delay_order", 2, {"seconds": Span(0.5, 2.0)}),
    Action("answer_order", 3, {"kind": OneOf(UNKNOWN_ANSWERS), "executed": OneOf((True, False))}),
    Action("error_spell", 1, {"seconds": Span(0.5, 3.0)}),
    Action("error_next", 2, {"count": OneOf((1, 2, 3))}),
    Action("position_risk", 2, {"kind": OneOf(POSITION_RISK_FAULTS), "count": OneOf((1, 2, 3))}),
    Action("triggering_hold", 1, {"seconds": Span(0.0, 3.0)}),
    Action("reject", 1),
    Action("avg_price", 1, {"mode": OneOf(("missing", "zero", "normal"))}),
    Action("cancel_protection", 1, {"pick": OneOf((0, 1, 2)), "role": OneOf((STOP, TARGET))}),
    # the process
    Action("sigterm", 1),
    Action("kill", 2, {"after_calls": OneOf(tuple(range(1, 16))), "answered": OneOf((False, True))}),
)
ACTION = {a.name: a for a in ACTIONS}


def draw_schedule(rng: random.Random, steps: int) -> list[tuple[str, dict[str, Any]]]:
    """A schedule: two signals (so that the faults have trades to hit), then ``steps`` drawn steps."""
    out: list[tuple[str, dict[str, Any]]] = [("signal", {"symbol": s}) for s in rng.sample(SYMBOLS, 2)]
    names = [a.name for a in ACTIONS]
    weights = [a.weight for a in ACTIONS]
    for name in rng.choices(names, weights, k=steps):
        out.append((name, {k: p.draw(rng) for k, p in ACTION[name].params.items()}))
    return out


# ---------------------------------------------------------------------- the process model


class Fuse:
    """The kill -9 countdown, shared by successive processes: armed with N, the N-th proxied call from
    now (of whichever process is running then: a SIGTERM restart does not defuse it) kills."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._left: int | None = None
        self._answered = False

    def arm(self, calls: int, answered: bool) -> None:
        with self._lock:
            self._left, self._answered = max(1, calls), answered

    def disarm(self) -> None:
        with self._lock:
            self._left = None

    def tick(self) -> str | None:
        """One call: None, or "before" / "after" when this is the call the process dies at."""
        with self._lock:
            if self._left is None:
                return None
            self._left -= 1
            if self._left > 0:
                return None
            self._left = None
            return "after" if self._answered else "before"


class _Process:
    """What dies together at a kill -9: the desk's exchange client, its REST client and its store."""

    def __init__(self, fuse: Fuse) -> None:
        self.fuse = fuse
        self.dead = False
        self.killed_at = ""

    def call(self, what: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.dead:
            raise Killed(f"{what}: the process is dead")
        when = self.fuse.tick()
        if when == "before":
            self._die(f"before {what}")
        try:
            result = fn(*args, **kwargs)
        finally:
            if when == "after":  # done (or failed) on the far side; whatever came back dies with us
                self._die(f"after {what}")
        if self.dead:  # killed by another thread meanwhile: the answer dies with the process
            raise Killed(f"{what}: the process died while it was on its way")
        return result

    def _die(self, where: str) -> None:
        self.dead = True
        self.killed_at = where
        raise Killed(f"kill -9 {where}")


class _Mortal:
    """A proxy of one of the process's objects: each method call goes through :meth:`_Process.call`;
    plain attributes (timeouts, recvWindow) pass through; ``.rest`` is mortal too."""

    def __init__(self, target: Any, process: _Process, name: str) -> None:
        self._target = target
        self._process = process
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if attr == "rest":
            return _Mortal(value, self._process, "rest")
        if not callable(value):
            return value
        process, what = self._process, f"{self._name}.{attr}"

        def call(*args: Any, **kwargs: Any) -> Any:
            return process.call(what, value, args, kwargs)

        return call


# ---------------------------------------------------------------------- the campaign


@dataclass(slots=True)
class Violation:
    """An invariant broken in one schedule: what, and how to get there again."""

    schedule: str
    problem: str
    steps: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "problem": self.problem, "steps": self.steps}


class Campaign:
    """The system under test and its faults; one schedule at a time (:meth:`begin`, :meth:`act`, ...,
    :meth:`finish`). Counters in :attr:`stats` and :attr:`faults`, broken invariants in :attr:`violations`.
    Not thread-safe: one driver thread (the desk's threads only post outcomes to their queue)."""

    def __init__(self, sim: Simulator, root: Path, *, logger: logging.Logger | None = None) -> None:
        self.sim = sim
        self.root = Path(root)
        self.log = logger or logging.getLogger("surge.campaign")
        self.fuse = Fuse()
        self.stats: collections.Counter[str] = collections.Counter()
        self.faults: collections.Counter[str] = collections.Counter()
        self.violations: list[Violation] = []
        self.settle_s: list[float] = []
        self._level = dict.fromkeys(SYMBOLS, 0.0)  # each symbol's price level (%), kept near where it began
        self._deaths: list[tuple[str, str]] = []  # (thread name, exception) of desk threads that died
        self._deaths_seen = 0
        self._deaths_lock = threading.Lock()
        self._hook = threading.excepthook
        threading.excepthook = self._excepthook
        self._open_time = 0
        self._db = self.root / "surge.db"
        self._label = ""
        self._steps: list[str] = []
        self._reported: set[str] = set()
        self._process: _Process | None = None
        self._desk: OrderDesk | None = None
        self._store: Store | None = None
        self._rest: BinanceRest | None = None
        self._outbox: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.book: dict[str, Position] = {}  # symbol -> position the loop holds
        self.entering: dict[str, str] = {}  # key -> symbol of entries on their way
        self.closing: set[str] = set()

    def close(self) -> None:
        """Stop whatever runs and give the thread excepthook back."""
        if self._desk is not None:
            self._shutdown(graceful=True)
        threading.excepthook = self._hook

    @property
    def account(self) -> Any:
        return self.sim.rest.account

    # ------------------------------------------------------------------ one schedule

    def begin(self, label: str) -> None:
        """A fresh account, a fresh database, no faults, a desk started on it."""
        self._label = label
        self._steps = []
        self._reported = set()
        self.fuse.disarm()
        self.sim.rest.clear_faults()
        self.sim.rest.unban()
        self.sim.rest.set_latency(0)
        self.account.reset()
        self.book, self.entering, self.closing = {}, {}, set()
        self._open_time = self.sim.market.now_ms() // 60_000 * 60_000
        self._db = self.root / f"schedule-{self.stats['schedules']}" / "surge.db"
        self.stats["schedules"] += 1
        self._boot()

    def act(self, name: str, **params: Any) -> None:
        """One step: a process killed since the last step is restarted first (as cron would)."""
        action = ACTION[name]
        self._steps.append(f"{name}({', '.join(f'{k}={v!r}' for k, v in params.items())})")
        self.stats["steps"] += 1
        self.log.info("campaign %s: step %d: %s", self._label, len(self._steps), self._steps[-1])
        if action.fault:
            self.faults[name] += 1
        self._revive()
        self._drain()
        getattr(self, f"_{name}")(**params)
        self._check_step()

    def finish(self) -> list[Violation]:
        """Faults cleared; the invariants within :data:`SETTLE_S` (a killed process is restarted first,
        as cron would); then a final SIGTERM restart and the invariants again within :data:`SETTLE_S`
        (reconciliation must not undo anything); the desk stopped. Returns this schedule's violations."""
        self.fuse.disarm()
        self.sim.rest.clear_faults()
        self.account.clear_faults()
        cleared = time.monotonic()
        self._revive()
        self._settle(cleared, "after the last fault")
        restarted = time.monotonic()
        self._restart(graceful=True)
        self._settle(restarted, "after the final restart")
        snap = self.account.snapshot()
        self.stats["entries"] += sum(1 for n in snap["entry_orders"].values() if n > 0)
        self._shutdown(graceful=True)
        self._check_step()
        return [v for v in self.violations if v.schedule == self._label]

    def _settle(self, since: float, what: str) -> None:
        left = max(0.0, since + SETTLE_S - time.monotonic())
        try:
            wait_for(
                self._settled,
                timeout=left,
                what=f"the invariants {SETTLE_S:g}s {what}",
                poll=0.05,
                detail=lambda: "; ".join(self.settled_problems()),
            )
            self.settle_s.append(time.monotonic() - since)
        except AssertionError as exc:
            self._violate(str(exc))
            log_desk_threads(self.log, self._label, self._desk)
        self._check_step()

    def _settled(self) -> bool:
        # a kill whose call was on its way when the faults were cleared lands now: restarted, as cron would
        self._revive()
        return not self.settled_problems()

    def run(self, label: str, schedule: list[tuple[str, dict[str, Any]]]) -> list[Violation]:
        """A whole schedule (the script's driver; the test's is Hypothesis)."""
        self.begin(label)
        for name, params in schedule:
            self.act(name, **params)
        return self.finish()

    # ------------------------------------------------------------------ the invariants

    def current_problems(self) -> list[str]:
        """This schedule's violations so far."""
        return [v.problem for v in self.violations if v.schedule == self._label]

    def held(self) -> set[str]:
        """The symbols the modelled strategy loop holds now (after reading the desk's outcomes)."""
        self._drain()
        return set(self.book)

    def _check_step(self) -> None:
        """The cheap invariants, after every step: one entry order per signal at most, no desk death,
        and nothing held on the exchange on a symbol whose every trade the ledger calls closed or void."""
        entries = self.account.snapshot()["entry_orders"]
        for cid, count in sorted(entries.items()):
            if count > 1:
                self._violate(f"{cid}: {count} entry orders for one signal")
        with self._deaths_lock:
            deaths, self._deaths_seen = self._deaths[self._deaths_seen :], len(self._deaths)
        for thread, exc in deaths:
            self.stats["desk_thread_deaths"] += 1
            self._violate(f"desk thread {thread} died of {exc}")
        desk = self._desk
        if desk is not None and not desk.alive and not self._dead() and not deaths:
            self._violate("the desk thread is gone though its process is alive")
        if self._store is not None:
            self._check_books(self._store)

    def _check_books(self, store: Store) -> None:
        """Ledger, exchange, ledger again: a symbol held on the exchange while every trade on it was
        final (closed or void) in both ledger reads is held by nothing the ledger knows (an entry is
        written before it is sent, so one on its way shows as unfinished or new in a read).

        Except after an unproven close (exit reason "external": two consecutive flat positionRisk reads
        with no fill of ours, which the desk believes by design): two wrong answers in a row make it
        wrong. Counted; the settled invariants require it put right within :data:`SETTLE_S`."""
        before = {t.key: t for t in store.trades(venue=VENUE)}
        amounts = {s: p["amount"] for s, p in self.account.snapshot()["positions"].items()}
        after = {t.key: t for t in store.trades(venue=VENUE)}
        for symbol, amount in sorted(amounts.items()):
            known = [t for t in (*before.values(), *after.values()) if t.symbol == symbol]
            if not all(t.final and t.key in before for t in known):
                continue
            latest = {t.key: t for t in known}  # the second read's row where both have it
            exits = {k: p.exit_reason for k in latest if (p := store.position(k, venue=VENUE)) is not None}
            unproven = [k for k, reason in exits.items() if reason == EXTERNAL]
            if unproven:
                if f"unproven {unproven}" not in self._reported:
                    self._reported.add(f"unproven {unproven}")
                    self.stats["unproven_closes_contradicted"] += 1
                continue
            ended = ", ".join(f"{k} {t.state} ({exits.get(k) or t.note})" for k, t in latest.items())
            self._violate(f"{symbol}: {amount} held on the exchange; its trades: {ended or 'none'}")

    def settled_problems(self) -> list[str]:
        """What is wrong once things had time to settle (see :func:`settled_problems`)."""
        assert self._store is not None
        return settled_problems(self.account.snapshot(), self._store)

    def _violate(self, problem: str) -> None:
        if problem in self._reported:
            return
        self._reported.add(problem)
        self.violations.append(Violation(self._label, problem, list(self._steps)))
        self.log.error("campaign %s: INVARIANT: %s", self._label, problem)

    def _excepthook(self, args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        if name.startswith("surge-desk"):
            if args.exc_type is Killed:
                self.stats["desk_threads_killed"] += 1
                self.log.info("campaign %s: thread %s died: %s", self._label, name, args.exc_value)
                return
            with self._deaths_lock:
                self._deaths.append((name, f"{args.exc_type.__name__}: {args.exc_value}"))
            return
        self._hook(args)

    # ------------------------------------------------------------------ processes

    def _dead(self) -> bool:
        return self._process is not None and self._process.dead

    def _boot(self) -> None:
        """A new process: store, REST client, desk, start(); a start that fails is tried again (the bot
        exits 1 and is started again), within :data:`START_DEADLINE_S`."""
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            process = _Process(self.fuse)
            store = Store(self._db)
            rest = BinanceRest(
                self.sim.rest_url, read_timeout=READ_TIMEOUT_S, max_attempts=2, backoff_initial_s=0.01
            )
            signed = SignedRest(
                rest, Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET), recv_window_ms=RECV_WINDOW_MS
            )
            outbox: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
            desk = OrderDesk(
                SETTINGS,
                _Mortal(signed, process, "client"),
                _Mortal(store, process, "store"),
                VENUE,
                outbox.put,
                poll_interval_s=POLL_INTERVAL_S,
                stop_budget_s=STOP_BUDGET_S,
                logger=self.log,
            )
            self._process, self._desk, self._store, self._rest = process, desk, store, rest
            self._outbox = outbox
            try:
                found = desk.start()
            except Killed:
                self.stats["kills"] += 1
                self.stats["kills_in_start"] += 1
                self._shutdown(graceful=False)
                continue
            except Exception as exc:  # the bot exits 1 and is started again
                self.stats["start_failures"] += 1
                self._shutdown(graceful=False)
                if time.monotonic() > deadline:
                    self._violate(f"the desk could not start for {START_DEADLINE_S:g}s: {exc}")
                    raise
                time.sleep(0.2)  # the pause before the bot is started again (not a synchronisation)
                continue
            break
        self.stats["starts"] += 1
        self.book = {p.symbol: p for p in found.open}
        self.entering = dict(found.in_flight)
        self.closing = set()

    def _shutdown(self, *, graceful: bool) -> None:
        """End the current process: SIGTERM (stop() and its budget) or the remains of a kill -9 (the
        dead desk's threads are reaped: they cannot act, every call of theirs raises Killed)."""
        desk, store, rest = self._desk, self._store, self._rest
        assert desk is not None and store is not None and rest is not None
        if graceful:
            unresolved = desk.stop()
            self.stats["unresolved_at_stop"] += len(unresolved)
        else:
            desk.stop(timeout=0.0)
        if desk.alive:
            self._violate("the desk thread did not end when stopped")
        store.close()
        rest.close()
        self._desk = self._store = self._rest = None

    def _restart(self, *, graceful: bool) -> None:
        if self._desk is not None:
            self._shutdown(graceful=graceful)
        if self._dead():
            self.stats["kills"] += 1
        self._boot()

    def _revive(self) -> None:
        if self._dead():
            assert self._process is not None
            self.log.info("campaign %s: restarting after kill -9 %s", self._label, self._process.killed_at)
            self._restart(graceful=False)

    def _drain(self) -> None:
        """The loop's side of the outcome queue: what it holds and what is on its way (as surge.app)."""
        while True:
            try:
                outcome = self._outbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(outcome, TradeOpened):
                self.entering.pop(outcome.position.key, None)
                self.book.setdefault(outcome.position.symbol, outcome.position)
            elif isinstance(outcome, TradeVoid):
                self.entering.pop(outcome.key, None)
            elif isinstance(outcome, TradeClosed):
                self.closing.discard(outcome.position.key)
                held = self.book.get(outcome.position.symbol)
                if held is not None and held.key == outcome.position.key:
                    del self.book[held.symbol]

    # ------------------------------------------------------------------ the steps

    def _signal(self, symbol: str) -> None:
        if symbol in self.book or symbol in self.entering.values():
            self.stats["signals_refused"] += 1
            return
        if len(self.book) + len(self.entering) >= SETTINGS.max_open_positions:
            self.stats["signals_refused"] += 1
            return
        now = self.sim.market.now_ms()
        price = self.sim.market.current_kline(symbol, "1m", now).close
        self._open_time += 60_000  # a key of its own for every signal
        signal = Signal(symbol, now, self._open_time, 4.0, 5.0, 1e6, price)
        self.entering[signal.key] = symbol
        assert self._desk is not None
        try:
            entered = self._desk.enter(signal)
        except Killed:
            return  # the intent was written or not; the next start finds out
        if entered:
            self.stats["signals"] += 1
        else:
            self.entering.pop(signal.key, None)
            self._violate(f"signal {signal.key} with a new key was refused as already recorded")

    def _held(self, pick: int) -> Position | None:
        held = sorted((p for p in self.book.values()), key=lambda p: p.key)
        return held[pick % len(held)] if held else None

    def _close(self, pick: int) -> None:
        position = self._held(pick)
        if position is None or position.key in self.closing:
            return
        self.closing.add(position.key)
        assert self._desk is not None
        self._desk.close(position)
        self.stats["closes"] += 1

    def _move(self, symbol: str, pct: float) -> None:
        if abs(self._level[symbol] + pct) > MAX_LEVEL_PCT:
            pct = -pct
        self._level[symbol] += pct
        self.sim.market.inject_surge(symbol, pct, 1.0)
        self.stats["moves"] += 1

    def _wait(self, seconds: float) -> None:
        time.sleep(seconds)  # time passing is part of the schedule: the desk works meanwhile

    def _delay_order(self, seconds: float) -> None:
        self.account.delay_next_order(seconds)

    def _answer_order(self, kind: str, executed: bool) -> None:
        self.account.answer_next_order(kind, executed=executed)

    def _error_spell(self, seconds: float) -> None:
        self.sim.rest.error_for(seconds)

    def _error_next(self, count: int) -> None:
        self.sim.rest.error_next(count)

    def _position_risk(self, kind: str, count: int) -> None:
        self.account.position_risk_next(kind, count)

    def _triggering_hold(self, seconds: float) -> None:
        self.account.set_triggering_hold_s(seconds)

    def _reject(self) -> None:
        self.account.reject_next_order(-2019)

    def _avg_price(self, mode: str) -> None:
        self.account.set_avg_price_mode(mode)

    def _cancel_protection(self, pick: int, role: str) -> None:
        position = self._held(pick)
        if position is not None:
            self.account.cancel_algo(client_id(position.key, role))

    def _sigterm(self) -> None:
        self._restart(graceful=True)

    def _kill(self, after_calls: int, answered: bool) -> None:
        self.fuse.arm(after_calls, answered)


def settled_problems(snap: dict[str, Any], store: Store) -> list[str]:
    """What is wrong once things had time to settle (the exchange, ``snap``, is read first, then the
    ledger, so an entry filling in between shows in the ledger too)."""
    amounts = {s: Decimal(p["amount"]) for s, p in snap["positions"].items()}
    algos = {a["clientAlgoId"]: Decimal(a["quantity"]) for a in snap["open_algo_orders"]}
    trades = {t.key: t for t in store.trades(venue=VENUE)}
    held: dict[str, list[Position]] = collections.defaultdict(list)
    for p in store.open_positions(venue=VENUE):
        held[p.symbol].append(p)
    problems = []
    for symbol, amount in sorted(amounts.items()):
        mine = held.get(symbol, [])
        if not mine:
            problems.append(f"{symbol}: {amount} held on the exchange is not in the ledger")
            continue
        booked = sum((Decimal(repr(p.qty)) for p in mine), Decimal(0))
        if booked != amount:
            problems.append(f"{symbol}: {amount} held on the exchange, {booked} in the ledger")
        for p in mine:
            problems.extend(_protection_problems(p, trades.get(p.key), algos, amount))
    for t in trades.values():
        if t.state not in _SETTLED:
            problems.append(f"{t.key}: trade still {t.state} ({t.note})")
    for symbol, mine in sorted(held.items()):
        if amounts.get(symbol, Decimal(0)) == 0:
            problems.append(f"{symbol}: {[p.key for p in mine]} open in the ledger, flat on the exchange")
    for p in store.positions(include_closed=True, venue=VENUE):
        if not p.is_open and p.symbol in amounts and not held.get(p.symbol):
            problems.append(f"{p.key}: closed in the ledger, {amounts[p.symbol]} on the exchange")
    return problems


def _protection_problems(
    p: Position, trade: Trade | None, algos: dict[str, Decimal], amount: Decimal
) -> list[str]:
    """A held position not closing must be protected, by orders that cover all of it."""
    state = trade.state if trade is not None else None
    if state == CLOSING:
        return []
    problems = []
    missing = [client_id(p.key, r) for r in (STOP, TARGET) if client_id(p.key, r) not in algos]
    if state != PROTECTED or missing:
        problems.append(f"{p.key}: held, trade {state}, protective orders missing: {missing}")
    short = [c for r in (STOP, TARGET) if algos.get(c := client_id(p.key, r), amount) < amount]
    if short:
        problems.append(f"{p.key}: {amount} held, protective orders {short} cover less")
    return problems


def log_desk_threads(log: logging.Logger, label: str, desk: OrderDesk | None) -> None:
    """Where the desk's threads are and what the desk holds in memory (private: for the log of a
    failing schedule only, to tell a stuck thread from a desk that forgot something)."""
    if desk is not None:
        held = desk.state
        log.error(
            "campaign %s: desk alive=%s trades=%s chores=%d retry=%s next_poll_in=%.2f watch=%s",
            label,
            desk.alive,
            {k: (t.state, t.note) for k, t in dict(held.trades).items()},
            len(held.chores),
            {k: round(r.at - desk._clock(), 2) for k, r in dict(held.retry).items()},
            desk._next_poll - desk._clock(),
            dict(held.voided_unknown),
        )
    frames = sys._current_frames()
    for thread in threading.enumerate():
        if thread.name.startswith("surge-desk") and thread.ident in frames:
            stack = "".join(traceback.format_stack(frames[thread.ident], limit=8))
            log.error("campaign %s: thread %s is at:\n%s", label, thread.name, stack)
