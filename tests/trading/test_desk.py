"""OrderDesk in-process against the simulated exchange over real sockets.

Each test builds desks the way ``surge run --live`` does (own REST client, signed client, a store, the
outcome queue) and watches only what a user could: the exchange's account (orders, algo orders,
positions), the ledger rows and the outcome messages. What is covered: one entry and exactly two
protective orders per signal; exits the exchange made (stop loss, take profit, TRIGGERING holds)
recorded with their reason; max hold; lost, late and "status unknown" answers never turned into a
second entry; restarts that resume and adopt; protection put back; sizes refused before sending;
odd answers and outages ridden out on the desk's thread; hedge mode refused; a stop that lets an
entry on its way finish or hands it to the next start; and no secret in any log line.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from surge.config import TradeSettings
from surge.errors import ConfigError
from surge.exchange.orders import Credentials, SignedRest, rules_from_exchange_info, size_order
from surge.exchange.rest import BinanceRest
from surge.models import PROTECTED, SENT, UNKNOWN, VOID, Position, Signal, Trade
from surge.sim.account import DEFAULT_API_KEY, DEFAULT_API_SECRET, UNKNOWN_ANSWERS
from surge.sim.simulator import Simulator
from surge.store import Store, open_store
from surge.trading.desk import OrderDesk
from surge.trading.live import EXTERNAL, client_id, key_from_client_id
from surge.trading.outcomes import Outcome, TradeClosed, TradeOpened, TradeVoid
from surge.trading.paper import MAX_HOLD, STOP_LOSS, TAKE_PROFIT
from tests.waiting import wait_for

SYMBOL = "SOLUSDT"  # ~220 USDT, tick 0.001, step 0.001, MIN_NOTIONAL 5
SETTINGS = TradeSettings(
    mode="live", position_usdt=100.0, take_profit_pct=2.0, stop_loss_pct=1.0, max_hold_s=3600.0, leverage=2
)
VENUE = "live:sim"
POLL_S = 0.2
STOP_BUDGET_S = 3.0
RISK_PATH = "/fapi/v3/positionRisk"
OutcomeT = TypeVar("OutcomeT", TradeOpened, TradeClosed, TradeVoid)


def _key(outcome: Outcome) -> str:
    return outcome.key if isinstance(outcome, TradeVoid) else outcome.position.key


def desk_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("surge-desk")]


class Env:
    """One simulator, one store, the outcome queue, and every desk a test made (all stopped at the end)."""

    def __init__(self, sim: Simulator, home: Path) -> None:
        self.sim = sim
        self.store: Store = open_store(home)
        self.outbox: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.outcomes: list[Outcome] = []
        self.desks: list[OrderDesk] = []
        self.rests: list[BinanceRest] = []

    def desk(
        self,
        settings: TradeSettings = SETTINGS,
        *,
        read_timeout: float = 2.0,
        recv_window_ms: int = 5000,
        stop_budget_s: float = STOP_BUDGET_S,
        venue: str = VENUE,
        start: bool = True,
    ) -> OrderDesk:
        """A desk as ``surge run --live`` builds it (its own REST client), started unless told not to."""
        rest = BinanceRest(
            self.sim.rest_url, read_timeout=read_timeout, max_attempts=2, backoff_initial_s=0.01
        )
        self.rests.append(rest)
        signed = SignedRest(
            rest, Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET), recv_window_ms=recv_window_ms
        )
        desk = OrderDesk(
            settings,
            signed,
            self.store,
            venue,
            self.outbox.put,
            poll_interval_s=POLL_S,
            stop_budget_s=stop_budget_s,
        )
        self.desks.append(desk)
        if start:
            desk.start()
        return desk

    def signal(self, symbol: str = SYMBOL) -> Signal:
        now = self.sim.market.now_ms()
        price = self.sim.market.current_kline(symbol, "1m", now).close
        return Signal(
            symbol=symbol,
            time=now,
            open_time=now // 60_000 * 60_000,
            change_pct=4.0,
            volume_multiple=5.0,
            quote_volume=1e6,
            price=price,
        )

    def enter(self, desk: OrderDesk, symbol: str = SYMBOL) -> Signal:
        sig = self.signal(symbol)
        assert desk.enter(sig)
        return sig

    def protected(self, desk: OrderDesk, symbol: str = SYMBOL) -> Position:
        """Enter ``symbol`` and wait until both protective orders are on; the position opened."""
        sig = self.enter(desk, symbol)
        opened = self.wait_outcome(TradeOpened, sig.key)
        self.wait_state(sig.key, PROTECTED)
        return opened.position

    # ------------------------------------------------------------------ what happened

    @property
    def account(self) -> Any:
        return self.sim.rest.account

    def trade(self, key: str, venue: str = VENUE) -> Trade | None:
        return self.store.trade(key, venue=venue)

    def state(self, key: str, venue: str = VENUE) -> str | None:
        t = self.trade(key, venue)
        return t.state if t else None

    def wait_state(self, key: str, state: str, timeout: float = 30.0, venue: str = VENUE) -> Trade:
        wait_for(
            lambda: self.state(key, venue) == state, timeout, f"trade {key} {state}", detail=self.describe
        )
        trade = self.trade(key, venue)
        assert trade is not None
        return trade

    def drain(self) -> list[Outcome]:
        while True:
            try:
                self.outcomes.append(self.outbox.get_nowait())
            except queue.Empty:
                return self.outcomes

    def of(self, kind: type[OutcomeT], key: str | None = None) -> list[OutcomeT]:
        return [o for o in self.drain() if isinstance(o, kind) and (key is None or _key(o) == key)]

    def wait_outcome(
        self, kind: type[OutcomeT], key: str, timeout: float = 30.0, check: Callable[[], None] | None = None
    ) -> OutcomeT:
        """The first ``kind`` outcome for ``key``; ``check`` (asserting) runs on every look meanwhile."""

        def found() -> OutcomeT | None:
            if check is not None:
                check()
            return next(iter(self.of(kind, key)), None)

        return wait_for(found, timeout, f"{kind.__name__} for {key}", detail=self.describe)

    def entries(self, key: str) -> int:
        return self.account.snapshot()["client_order_counts"].get(client_id(key, "e"), 0)

    def algo_counts(self) -> dict[str, int]:
        return self.account.snapshot()["algo_client_counts"]

    def open_algo_ids(self, symbol: str | None = None) -> set[str]:
        return {a.client_algo_id for a in self.account.open_algo_orders(symbol)}

    def requests(self, path: str = RISK_PATH) -> int:
        return self.sim.rest.stats()["by_path"].get(path, 0)

    def wait_polls(self, n: int, extra: int = 0) -> None:
        """Wait until at least ``n`` more positionRisk requests (after ``extra`` faulted ones) arrived."""
        start = self.requests()
        wait_for(
            lambda: self.requests() >= start + extra + n,
            30.0,
            f"{n} more positions checks",
            detail=self.describe,
        )

    def describe(self) -> str:
        snap = self.account.snapshot()
        trades = {t.key: (t.state, t.note) for t in self.store.trades()}
        return (
            f"trades {trades}; positions {snap['positions']}; open algos "
            f"{[(a['clientAlgoId'], a['algoStatus']) for a in snap['open_algo_orders']]}; "
            f"outcomes {self.outcomes}; desk threads {desk_threads()}"
        )

    def close(self) -> None:
        try:
            for desk in self.desks:
                desk.stop()
        finally:
            for rest in self.rests:
                rest.close()
            self.store.close()
        wait_for(lambda: not desk_threads(), 15.0, "every desk thread to end", detail=desk_threads)


def sized_symbols(env: Env, n: int) -> list[str]:
    """``n`` symbols that 100 USDT buys within every rule (SOLUSDT first): one trade each."""
    rules = rules_from_exchange_info(env.desks[0].client.rest.exchange_info())
    now = env.sim.market.now_ms()
    ok = [
        s
        for s in dict.fromkeys([SYMBOL, *env.sim.market.tradable_symbols()])
        if s in rules
        and size_order(rules[s], SETTINGS.position_usdt, env.sim.market.current_kline(s, "1m", now).close).ok
    ]
    return ok[:n]


# ---------------------------------------------------------------------- ids, sizing, the banner


def test_client_ids_are_deterministic_short_and_legal() -> None:
    key = "1000SATSUSDT:1795650000000"
    ids = {role: client_id(key, role) for role in ("e", "sl", "tp", "x")}
    assert len(set(ids.values())) == 4 and all(len(i) <= 36 for i in ids.values())
    assert ids == {role: client_id(key, role) for role in ids}
    assert all(key_from_client_id(i) == key for i in ids.values())
    long_key = "A" * 40 + "USDT:1795650000000"
    hashed = client_id(long_key, "sl")
    assert len(hashed) == 36 and hashed.startswith("sg-sl-h") and key_from_client_id(hashed) is None


def test_account_summary_for_the_banner(env: Env) -> None:
    summary = env.desk(start=False).account_summary()
    assert summary.wallet_balance == 10_000 and summary.leverage == 2
    assert "10000.00 USDT" in summary.lines()[0] and "2x leverage" in summary.lines()[1]


def test_sizes_the_exchange_would_refuse_are_void_with_a_reason(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="surge.trading.desk")
    desk = env.desk(replace(SETTINGS, position_usdt=150.0))
    btc = env.enter(desk, "BTCUSDT")  # ~92k: 150 USDT buys 0.001 BTC, worth less than MIN_NOTIONAL 100
    too_small = env.wait_outcome(TradeVoid, btc.key)
    assert too_small.reason.startswith("size:") and "MIN_NOTIONAL" in too_small.reason
    assert any("not entered" in r.getMessage() and "MIN_NOTIONAL" in r.getMessage() for r in caplog.records)
    tiny = env.desk(replace(SETTINGS, position_usdt=0.1), venue="live:tiny")
    dust = env.signal("ETHUSDT")
    assert tiny.enter(dust)
    void = env.wait_outcome(TradeVoid, dust.key)
    assert void.reason.startswith("size:") and "below the minimum quantity" in void.reason
    assert env.account.received == [] and env.account.snapshot()["leverage"] == {}  # nothing was sent
    (rec,) = [r for r in env.store.signals(venue=VENUE) if r.signal.key == btc.key]
    trade = env.trade(btc.key)
    assert trade is not None and trade.state == VOID
    assert not rec.entered and rec.skip_reason == trade.note == too_small.reason
    # the exchange refuses the margin: void with its code, nothing held
    env.account.reject_next_order(-2019)
    sol = env.enter(desk)
    void = env.wait_outcome(TradeVoid, sol.key)
    assert "-2019" in void.reason and env.state(sol.key) == VOID
    assert env.account.position(SYMBOL).amount == 0 and env.entries(sol.key) == 0
    assert not desk.enter(sol)  # recorded: the same signal is never tried again


# ---------------------------------------------------------------------- entry and protection


def test_signal_gives_one_entry_and_exactly_two_protective_orders(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="surge.trading.desk")
    desk = env.desk()
    pos = env.protected(desk)
    assert env.entries(pos.key) == 1
    algos = {a.client_algo_id: a for a in env.account.open_algo_orders(SYMBOL)}
    assert set(algos) == {client_id(pos.key, "sl"), client_id(pos.key, "tp")}
    sl, tp = algos[client_id(pos.key, "sl")], algos[client_id(pos.key, "tp")]
    assert (sl.type, tp.type) == ("STOP_MARKET", "TAKE_PROFIT_MARKET")
    assert sl.reduce_only and tp.reduce_only and sl.side == tp.side == "SELL"
    assert float(sl.trigger) == pos.stop_loss and float(tp.trigger) == pos.take_profit
    assert pos.stop_loss < pos.entry_price < pos.take_profit
    assert abs(pos.take_profit / pos.entry_price - 1.02) < 0.0001
    assert float(env.account.position(SYMBOL).amount) == pos.qty
    assert env.account.snapshot()["leverage"] == {SYMBOL: 2}
    assert env.store.position(pos.key, venue=VENUE) == pos
    wait_for(
        lambda: any("protective orders placed" in r.getMessage() for r in caplog.records),
        10.0,
        "the log line that follows the PROTECTED row",
    )
    # the same signal again (a duplicate event): refused by the ledger, nothing new sent
    sig = replace(env.signal(), open_time=int(pos.key.split(":")[1]))
    assert not desk.enter(sig)
    env.wait_polls(5)
    assert env.entries(pos.key) == 1 and len(env.of(TradeOpened)) == 1
    counts = env.algo_counts()
    assert set(counts.values()) == {1} and len(counts) == 2


@pytest.mark.parametrize(("change", "reason"), [(-5.0, STOP_LOSS), (4.0, TAKE_PROFIT)])
def test_price_crossing_a_trigger_closes_and_is_recorded(env: Env, change: float, reason: str) -> None:
    desk = env.desk()
    pos = env.protected(desk)
    env.sim.market.inject_surge(SYMBOL, change, 1.0)  # the price jumps through one trigger
    closed = env.wait_outcome(TradeClosed, pos.key).position
    assert closed.exit_reason == reason and closed.exit_price is not None and closed.exit_time is not None
    if reason == STOP_LOSS:
        assert closed.exit_price <= pos.stop_loss and closed.pnl is not None and closed.pnl < 0
    else:
        assert closed.exit_price >= pos.take_profit and closed.pnl is not None and closed.pnl > 0
    assert env.account.position(SYMBOL).amount == 0 and env.open_algo_ids() == set()  # the other cancelled
    assert env.state(pos.key) == "closed" and env.store.position(pos.key, venue=VENUE) == closed
    assert env.entries(pos.key) == 1


def test_max_hold_closes_reduce_only_and_cancels_both(env: Env) -> None:
    desk = env.desk()
    pos = env.protected(desk)
    assert desk.exit_reason(pos, pos.entry_price, pos.deadline - 1) is None
    assert desk.exit_reason(pos, pos.stop_loss * 0.5, pos.entry_time) is None  # the exchange's job
    assert desk.exit_reason(pos, pos.entry_price, pos.deadline) == MAX_HOLD
    desk.close(pos, MAX_HOLD, pos.entry_price, pos.deadline)
    closed = env.wait_outcome(TradeClosed, pos.key).position
    assert closed.exit_reason == MAX_HOLD and not closed.is_open and env.state(pos.key) == "closed"
    assert env.account.position(SYMBOL).amount == 0 and env.open_algo_ids() == set()
    x = client_id(pos.key, "x")
    (exit_order,) = [o for o in env.account.orders.values() if o.client_order_id == x]
    assert exit_order.reduce_only and exit_order.side == "SELL" and float(exit_order.qty) == pos.qty
    statuses = {a.client_algo_id: a.status for a in env.account.algo_orders.values()}
    assert statuses == {client_id(pos.key, "sl"): "CANCELED", client_id(pos.key, "tp"): "CANCELED"}
    # closing again (a late duplicate from the loop) sends nothing: the next entry is the barrier
    desk.close(pos)
    env.protected(desk, "ETHUSDT")
    assert env.account.snapshot()["client_order_counts"][x] == 1 and len(env.of(TradeClosed)) == 1


def test_a_close_cut_short_by_a_crash_is_finished_without_a_second_exit(env: Env) -> None:
    first = env.desk()
    pos = env.protected(first)
    assert first.stop() == []
    # what a desk killed mid-close leaves: the row says "closing" (written first), the exit order filled
    trade = env.trade(pos.key)
    assert trade is not None
    env.store.save_trade(
        replace(trade, state="closing", exit_reason=MAX_HOLD, exit_sent_at=first.client.now_ms()), venue=VENUE
    )
    x = client_id(pos.key, "x")
    first.client.new_order(SYMBOL, "SELL", trade.qty, client_order_id=x, reduce_only=True)
    found = env.desk(start=False).start()
    assert found.resumed == 1 and found.open == [pos]
    closed = env.wait_outcome(TradeClosed, pos.key).position
    assert closed.exit_reason == MAX_HOLD and env.state(pos.key) == "closed"
    assert env.account.snapshot()["client_order_counts"][x] == 1  # found by its id, not sent again
    assert env.account.position(SYMBOL).amount == 0 and env.open_algo_ids() == set()


def test_timeout_after_acceptance_produces_no_second_entry(env: Env) -> None:
    desk = env.desk(read_timeout=2.0)
    env.account.delay_next_order(3.0, count=2)  # the entry and one protective order answer too late
    pos = env.protected(desk)
    assert env.entries(pos.key) == 1
    assert env.algo_counts() == {client_id(pos.key, "sl"): 1, client_id(pos.key, "tp"): 1}
    assert env.open_algo_ids() == {client_id(pos.key, "sl"), client_id(pos.key, "tp")}


@pytest.mark.parametrize("mode", ["missing", "zero"])
def test_avg_price_missing_or_zero_takes_the_exchanges_entry(env: Env, mode: str) -> None:
    """Old LiveBroker trusted avgPrice: "0.00" made entry 0 (closed at once), missing the signal's price."""
    env.account.set_avg_price_mode(mode)
    desk = env.desk()
    live = env.signal()
    sig = replace(live, price=round(live.price * 0.99, 3))  # the price moved between the signal and the fill
    assert desk.enter(sig)
    pos = env.wait_outcome(TradeOpened, sig.key).position
    env.wait_state(pos.key, PROTECTED)
    entry = float(env.account.snapshot()["positions"][SYMBOL]["entry"])
    assert pos.entry_price == entry and abs(entry / sig.price - 1) > 0.005
    assert abs(pos.stop_loss / entry - 0.99) < 1e-4 and abs(pos.take_profit / entry - 1.02) < 1e-4
    sl = {a.client_algo_id: a for a in env.account.open_algo_orders(SYMBOL)}[client_id(pos.key, "sl")]
    assert float(sl.trigger) == pos.stop_loss
    env.wait_polls(5)
    assert env.state(pos.key) == PROTECTED and env.of(TradeClosed) == []
    assert float(env.account.position(SYMBOL).amount) == pos.qty


@pytest.mark.parametrize(("kind", "count"), [("empty", 3), ("missing_rows", 3), ("garbled", 3), ("zero", 1)])
def test_odd_position_risk_answers_never_close_a_protected_position(env: Env, kind: str, count: int) -> None:
    """Old LiveBroker took a missing row as flat (closed, protection cancelled); garbled raised in sync()."""
    desk = env.desk()
    pos = env.protected(desk)
    env.account.position_risk_next(kind, count)
    env.wait_polls(6, extra=count)  # every faulted answer consumed, then several good checks
    assert desk.alive and env.of(TradeClosed) == []
    assert env.state(pos.key) == PROTECTED
    assert env.open_algo_ids(SYMBOL) == {client_id(pos.key, "sl"), client_id(pos.key, "tp")}
    assert set(env.algo_counts().values()) == {1}  # nothing cancelled, nothing placed twice
    assert float(env.account.position(SYMBOL).amount) == pos.qty


def test_a_triggering_stop_still_protects_and_is_not_placed_twice(env: Env) -> None:
    """Old LiveBroker's by-id check counted only NEW as open: a TRIGGERING stop was placed again."""
    desk = env.desk()
    pos = env.protected(desk)
    sl = client_id(pos.key, "sl")
    env.account.set_triggering_hold_s(5.0)
    env.sim.market.inject_surge(SYMBOL, -5.0, 1.0)
    wait_for(
        lambda: any(
            a.client_algo_id == sl and a.status == "TRIGGERING" for a in env.account.open_algo_orders(SYMBOL)
        ),
        10.0,
        "the stop TRIGGERING",
    )
    checks = env.requests()

    def one_stop() -> None:
        assert env.algo_counts()[sl] == 1, "a second stop loss was placed during the TRIGGERING hold"
        sent = [r for r in list(env.account.received) if r.get("clientAlgoId") == sl]
        assert len(sent) == 1, "a second stop loss was sent during the TRIGGERING hold"
        assert desk.alive

    closed = env.wait_outcome(TradeClosed, pos.key, check=one_stop).position
    assert env.requests() - checks >= 5  # the desk kept checking the position during the hold
    assert closed.exit_reason == STOP_LOSS and closed.pnl is not None and closed.pnl < 0
    assert env.algo_counts() == {sl: 1, client_id(pos.key, "tp"): 1} and env.open_algo_ids() == set()


# ---------------------------------------------------------------------- answers lost, odd or late


@pytest.mark.parametrize("executed", [True, False], ids=["executed", "not-executed"])
def test_status_unknown_answers_to_the_entry(env: Env, executed: bool) -> None:
    """Old LiveBroker: 408/-1006/-1007/garbled/error200 raised out of open(); never-executed: sent again."""
    desk = env.desk(recv_window_ms=1000)  # "never executed" is proven 1 s + 5 s after the entry was sent
    symbols = sized_symbols(env, len(UNKNOWN_ANSWERS))
    keys: dict[str, str] = {}
    for kind, symbol in zip(UNKNOWN_ANSWERS, symbols, strict=True):
        env.account.answer_next_order(kind, executed=executed)  # for this entry alone: one at a time
        key = env.enter(desk, symbol).key
        keys[kind] = key
        env.wait_state(key, PROTECTED if executed else UNKNOWN, 20.0)
    for kind, key in keys.items():
        if executed:
            assert env.entries(key) == 1, kind
            assert env.open_algo_ids(key.split(":")[0]) == {client_id(key, "sl"), client_id(key, "tp")}, kind
            assert len(env.of(TradeOpened, key)) == 1, kind
        else:
            void = env.wait_outcome(TradeVoid, key, 30.0)
            seen_at = env.sim.market.now_ms()
            assert "never executed" in void.reason, (kind, void.reason)
            trade = env.trade(key)
            assert trade is not None and trade.entry_sent_at is not None
            # "never executed" is only believed once the exchange's clock is past recvWindow + 5 s
            # (250 ms for the desk's estimate of that clock: an early void is seconds early)
            assert seen_at > trade.entry_sent_at + 1000 + 5000 - 250, kind
            assert env.entries(key) == 0 and env.state(key) == VOID, kind
            (rec,) = [r for r in env.store.signals(venue=VENUE) if r.signal.key == key]
            assert not rec.entered and rec.skip_reason and "never executed" in rec.skip_reason, kind
    if not executed:
        assert env.account.snapshot()["entry_orders"] == {} and env.account.snapshot()["positions"] == {}
    assert desk.alive and len(env.account.snapshot()["entry_orders"]) == (len(keys) if executed else 0)


def test_an_outage_right_after_a_lost_entry_answer_is_ridden_out(env: Env) -> None:
    """Old LiveBroker: an outage during the lookup raised out of open(), leaving the fill unprotected."""
    desk = env.desk(read_timeout=2.0)
    env.account.delay_next_order(2.5)  # executed at once, answered after the client gave up
    key = env.enter(desk).key
    wait_for(lambda: env.entries(key) == 1, 10.0, "the entry executed")
    env.sim.rest.error_for(8.0)

    def alive() -> None:
        assert desk.alive, "the desk thread died"

    def spell_over() -> bool:
        alive()
        left = env.sim.rest.stats()["error_spell_s"]
        if left > 0.5:  # nothing is concluded while the exchange cannot answer
            assert env.state(key) in (SENT, UNKNOWN) and env.of(TradeOpened) == []
        return left == 0

    wait_for(spell_over, 20.0, "the spell's end")
    asked = [a for a in env.sim.rest.arrivals() if a[1] == "/fapi/v1/order" and a[2] == 503]
    assert len(asked) >= 3 and desk.step_errors >= 3, "the desk stopped asking during the outage"
    env.wait_outcome(TradeOpened, key, 7.0, check=alive)  # backoff is capped at 4 s
    env.wait_state(key, PROTECTED, 5.0)
    assert env.entries(key) == 1 and desk.alive
    assert env.open_algo_ids(SYMBOL) == {client_id(key, "sl"), client_id(key, "tp")}


@pytest.mark.parametrize("odd", ["get_order returns a list", "position_risk raises KeyError"])
def test_an_odd_answer_inside_a_step_is_logged_and_retried(
    env: Env, odd: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Old LiveBroker let an odd answer's exception out of open(); the desk logs, counts and retries it."""
    caplog.set_level(logging.WARNING, logger="surge.trading.desk")
    desk = env.desk()
    client = desk.client
    name = "get_order" if odd.startswith("get_order") else "position_risk"
    real = getattr(client, name)
    calls: list[int] = []

    def once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            if name == "get_order":
                return [{"status": "FILLED"}]
            raise KeyError("positionAmt")
        return real(*args, **kwargs)

    monkeypatch.setattr(client, name, once)
    if name == "get_order":
        env.account.answer_next_order("garbled")  # executed; the desk must ask by client id
    else:
        env.account.set_avg_price_mode("missing")  # the fill price comes from positionRisk
    pos = env.protected(desk)
    assert calls and desk.step_errors > 0 and desk.alive
    assert any("failed:" in r.getMessage() and "trying again" in r.getMessage() for r in caplog.records)
    assert env.entries(pos.key) == 1
    assert pos.entry_price == float(env.account.snapshot()["positions"][SYMBOL]["entry"])


def test_hedge_mode_is_refused_at_start(env: Env) -> None:
    """Old LiveBroker never checked: every one-way order would have been refused with -4061."""
    env.account.set_dual_side(True)
    desk = env.desk(start=False)
    with pytest.raises(ConfigError, match="Hedge Mode"):
        desk.start()
    assert not desk.alive and desk_threads() == []
    assert env.account.received == []


# ---------------------------------------------------------------------- restart, reconciliation, stop


def test_restart_resumes_adopts_and_sends_nothing_new(env: Env) -> None:
    first = env.desk()
    pos = env.protected(first)
    assert first.stop() == [] and not first.alive
    received, counts = len(env.account.received), env.algo_counts()
    # a restart over the same ledger: resumed, nothing sent
    second = env.desk(start=False)
    found = second.start()
    assert (found.resumed, found.adopted, found.in_flight) == (1, 0, {}) and found.open == [pos]
    env.wait_polls(5)
    assert len(env.account.received) == received and env.algo_counts() == counts
    assert env.state(pos.key) == PROTECTED and second.stop() == []
    # killed before the ledger knew: the exchange's position is adopted under the signal's key
    third = env.desk(start=False, venue="live:fresh")
    found = third.start()
    (adopted,) = found.open
    assert found.adopted == 1 and adopted.key == pos.key and adopted.qty == pos.qty
    assert (adopted.stop_loss, adopted.take_profit) == (pos.stop_loss, pos.take_profit)
    env.wait_state(pos.key, PROTECTED, venue="live:fresh")
    env.wait_polls(3)
    assert env.entries(pos.key) == 1 and env.algo_counts() == counts  # its protection found, not re-placed


def test_an_unprotected_position_the_ledger_lacks_is_adopted_and_protected(env: Env) -> None:
    first = env.desk()
    pos = env.protected(first)
    assert first.stop() == []
    for role in ("sl", "tp"):
        assert env.account.cancel_algo(client_id(pos.key, role))  # someone removed both in the web UI
    desk = env.desk(start=False, venue="live:fresh")
    found = desk.start()
    (adopted,) = found.open
    assert found.adopted == 1 and adopted.symbol == SYMBOL and adopted.qty == pos.qty
    assert adopted.entry_price == float(env.account.snapshot()["positions"][SYMBOL]["entry"])
    env.wait_state(adopted.key, PROTECTED, venue="live:fresh")
    ids = {client_id(adopted.key, "sl"), client_id(adopted.key, "tp")}
    assert env.open_algo_ids(SYMBOL) == ids
    triggers = {a.type: float(a.trigger) for a in env.account.open_algo_orders(SYMBOL)}
    assert triggers == {"STOP_MARKET": adopted.stop_loss, "TAKE_PROFIT_MARKET": adopted.take_profit}
    assert env.entries(pos.key) == 1 and len(env.account.snapshot()["entry_orders"]) == 1


def test_a_restart_takes_the_exchanges_quantity_and_entry_where_they_differ(env: Env) -> None:
    """Someone sold part of the position by hand while the bot was down: the restart adopts the exchange's
    quantity and entry price (logged and stored) instead of the ledger's."""
    first = env.desk()
    pos = env.protected(first)
    assert first.stop() == []
    rest = BinanceRest(env.sim.rest_url)
    env.rests.append(rest)
    by_hand = SignedRest(rest, Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET))
    by_hand.new_order(SYMBOL, "SELL", "0.1", client_order_id="web-partial", reduce_only=True)
    amount = float(env.account.snapshot()["positions"][SYMBOL]["amount"])
    assert amount == pytest.approx(pos.qty - 0.1)
    found = env.desk(start=False).start()
    (resumed,) = found.open
    assert resumed.key == pos.key and resumed.qty == pytest.approx(amount)
    stored = env.store.position(pos.key, venue=VENUE)
    assert stored is not None and stored.qty == pytest.approx(amount) and stored.is_open
    assert env.entries(pos.key) == 1


def test_missing_protective_orders_are_placed_again_and_ghosts_closed(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="surge.trading.desk")
    desk = env.desk()
    pos = env.protected(desk)
    sl, tp = client_id(pos.key, "sl"), client_id(pos.key, "tp")
    assert env.account.cancel_algo(tp)  # someone cancelled it in the web UI while the bot runs
    wait_for(lambda: tp in env.open_algo_ids(SYMBOL), 10.0, "the take profit placed again")
    # the warning follows the placement: wait for it rather than race the desk thread
    wait_for(
        lambda: any(f"{tp} was missing: placed again" in r.getMessage() for r in caplog.records),
        10.0,
        "the warning about the missing take profit",
    )
    assert env.algo_counts() == {sl: 1, tp: 2}
    assert desk.stop() == []
    # while the bot is down: the stop is cancelled, and the ledger holds a position the exchange does not
    assert env.account.cancel_algo(sl)
    ghost = Position(
        key="ETHUSDT:1795650000000",
        symbol="ETHUSDT",
        qty=0.03,
        entry_price=3400.0,
        entry_time=1,
        take_profit=3468.0,
        stop_loss=3366.0,
        deadline=10**13,
    )
    env.store.adopt_trade(Trade(ghost.key, "ETHUSDT", PROTECTED, qty="0.03"), ghost, venue=VENUE)
    found = env.desk(start=False).start()
    assert found.resumed == 2 and sorted(p.key for p in found.open) == sorted([pos.key, ghost.key])
    wait_for(lambda: sl in env.open_algo_ids(SYMBOL), 10.0, "the stop loss placed again")
    assert env.algo_counts() == {sl: 2, tp: 2} and env.state(pos.key) == PROTECTED
    closed = env.wait_outcome(TradeClosed, ghost.key).position
    assert closed.exit_reason == EXTERNAL and not closed.is_open and env.state(ghost.key) == "closed"
    assert env.of(TradeClosed, pos.key) == [] and env.entries(pos.key) == 1


def test_a_position_closed_outside_the_bot_has_no_v3_row_and_is_closed_on_two_reads(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """positionRisk v3 lists only symbols with a position or open orders: once the position is closed in
    the web UI, the symbol has no row at all, which is v3's "flat" (a v2-minded desk took it for no
    information and watched the position forever). Two such reads, no fill of ours: closed as external,
    protection cancelled, and the desk never asked v2."""
    caplog.set_level(logging.INFO, logger="surge.trading.desk")
    desk = env.desk()
    pos = env.protected(desk)
    qty = format(env.account.position(SYMBOL).amount, "f")
    env.account.handle(
        "POST",
        "/fapi/v1/order",
        {"symbol": SYMBOL, "side": "SELL", "type": "MARKET", "quantity": qty, "reduceOnly": "true"},
    )
    assert env.account.handle("GET", "/fapi/v3/positionRisk", {"symbol": SYMBOL}) == []
    closed = env.wait_outcome(TradeClosed, pos.key).position
    assert closed.exit_reason == EXTERNAL and env.state(pos.key) == "closed"
    assert any("confirming on the next" in r.getMessage() for r in caplog.records)  # one read is not enough
    wait_for(lambda: env.open_algo_ids(SYMBOL) == set(), 10.0, "the protection cancelled")
    paths = env.sim.rest.stats()["by_path"]
    assert paths.get(RISK_PATH, 0) >= 2 and "/fapi/v2/positionRisk" not in paths
    assert desk.alive and env.entries(pos.key) == 1


def test_stop_lets_a_late_entry_finish_and_protects_it(env: Env) -> None:
    """Old design gave the broker thread a fixed 5 s at shutdown: less than a late answer (10 s timeout)."""
    desk = env.desk(read_timeout=2.0)
    env.account.delay_next_order(3.0)
    key = env.enter(desk).key
    wait_for(lambda: env.entries(key) == 1, 10.0, "the entry executed")
    assert desk.stop(timeout=10) == [] and not desk.alive
    assert env.state(key) == PROTECTED and env.entries(key) == 1
    assert env.open_algo_ids(SYMBOL) == {client_id(key, "sl"), client_id(key, "tp")}
    assert len(env.of(TradeOpened, key)) == 1


def test_stop_in_an_outage_hands_the_entry_to_the_next_start(env: Env) -> None:
    """Old design forgot an entry unresolved at shutdown: a restart adopted it under a key not its own."""
    desk = env.desk(read_timeout=2.0, stop_budget_s=4.0)
    env.account.delay_next_order(2.5)
    key = env.enter(desk).key
    wait_for(lambda: env.entries(key) == 1, 10.0, "the entry executed")
    env.sim.rest.error_for(30.0)  # covers the whole stop budget (and every call still on its way)
    (left,) = desk.stop()
    assert left.key == key and left.state == UNKNOWN and env.state(key) == UNKNOWN and not desk.alive
    assert desk.unresolved == [left] and env.sim.rest.stats()["error_spell_s"] > 0
    env.sim.rest.clear_faults()  # the outage is over
    again = env.desk(start=False)
    found = again.start()
    assert found.in_flight == {key: SYMBOL} and found.resumed == 1 and found.adopted == 0
    env.wait_outcome(TradeOpened, key)
    env.wait_state(key, PROTECTED)
    assert env.entries(key) == 1 and len(env.account.snapshot()["entry_orders"]) == 1
    assert env.open_algo_ids(SYMBOL) == {client_id(key, "sl"), client_id(key, "tp")}


# ---------------------------------------------------------------------- secrets


def test_no_secret_in_any_log_output(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    desk = env.desk(read_timeout=2.0)
    env.account.delay_next_order(3.0)  # a timeout: its message is logged
    pos = env.protected(desk)
    env.account.cancel_algo(client_id(pos.key, "sl"))
    wait_for(lambda: client_id(pos.key, "sl") in env.open_algo_ids(SYMBOL), 10.0, "the stop placed again")
    desk.close(pos)
    env.wait_outcome(TradeClosed, pos.key)
    text = caplog.text
    assert "/fapi/v1/order?" in text  # urllib3's debug lines were captured
    assert "read timeout" in text  # the lost answer was logged (without the signed URL)
    assert DEFAULT_API_SECRET not in text and DEFAULT_API_KEY not in text
    assert "signature=<redacted>" in text
    assert DEFAULT_API_SECRET not in repr(desk.client) and DEFAULT_API_SECRET not in repr(desk.__dict__)
