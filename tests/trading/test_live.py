"""LiveBroker against the simulated exchange over real sockets: one entry and exactly two protective
orders per signal, exits by the exchange detected and recorded, max hold, a timeout after the
exchange accepted the order, a restart that reconciles, a protective order re-created, sizes the
exchange would refuse skipped with a reason, and no secret in any log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from surge.config import TradeSettings
from surge.exchange.orders import Credentials, SignedRest
from surge.exchange.rest import BinanceRest
from surge.models import Position, Signal
from surge.sim.account import DEFAULT_API_KEY, DEFAULT_API_SECRET
from surge.sim.simulator import Simulator
from surge.trading.live import EXTERNAL, LiveBroker, client_id, key_from_client_id
from surge.trading.paper import MAX_HOLD, STOP_LOSS, TAKE_PROFIT
from tests.waiting import wait_for

SYMBOL = "SOLUSDT"  # ~220 USDT, tick 0.001, step 0.001, MIN_NOTIONAL 5
SETTINGS = TradeSettings(mode="live", position_usdt=100.0, take_profit_pct=2.0, stop_loss_pct=1.0,
                         max_hold_s=3600.0, leverage=2)


@pytest.fixture
def sim(small_sim: Simulator) -> Simulator:
    return small_sim


class Env:
    """Builds brokers the way `surge run --live` will: own REST client, signed client, broker."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.rests: list[BinanceRest] = []

    def broker(self, settings: TradeSettings = SETTINGS, read_timeout: float = 2.0) -> LiveBroker:
        rest = BinanceRest(self.sim.rest_url, read_timeout=read_timeout, max_attempts=2,
                           backoff_initial_s=0.01)
        self.rests.append(rest)
        signed = SignedRest(rest, Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET))
        return LiveBroker(settings, signed, poll_interval_s=0.0, resolve_timeout_s=15.0)

    def signal(self, symbol: str = SYMBOL, open_time: int | None = None) -> Signal:
        now = self.sim.market.now_ms()
        price = self.sim.market.current_kline(symbol, "1m", now).close
        return Signal(symbol=symbol, time=now, open_time=open_time or now // 60_000 * 60_000, change_pct=4.0,
                      volume_multiple=5.0, quote_volume=1e6, price=price)

    @property
    def account(self) -> Any:
        return self.sim.rest.account

    def entries(self, key: str) -> int:
        return self.account.snapshot()["client_order_counts"].get(client_id(key, "e"), 0)

    def open_algo_ids(self) -> set[str]:
        return {a.client_algo_id for a in self.account.open_algo_orders()}

    def close(self) -> None:
        for r in self.rests:
            r.close()


@pytest.fixture
def env(sim: Simulator) -> Iterator[Env]:
    e = Env(sim)
    try:
        yield e
    finally:
        e.close()



def test_client_ids_are_deterministic_short_and_legal() -> None:
    key = "1000SATSUSDT:1795650000000"
    ids = {role: client_id(key, role) for role in ("e", "sl", "tp", "x")}
    assert len(set(ids.values())) == 4 and all(len(i) <= 36 for i in ids.values())
    assert ids == {role: client_id(key, role) for role in ids}
    assert all(key_from_client_id(i) == key for i in ids.values())
    long_key = "A" * 40 + "USDT:1795650000000"
    hashed = client_id(long_key, "sl")
    assert len(hashed) == 36 and hashed.startswith("sg-sl-h") and key_from_client_id(hashed) is None


def test_signal_gives_one_entry_and_exactly_two_protective_orders(env: Env) -> None:
    broker = env.broker()
    sig = env.signal()
    pos = broker.open(sig)
    assert pos is not None and pos.key == sig.key and pos.is_open
    assert env.entries(sig.key) == 1
    algos = {a.client_algo_id: a for a in env.account.open_algo_orders(SYMBOL)}
    assert set(algos) == {client_id(sig.key, "sl"), client_id(sig.key, "tp")}
    sl, tp = algos[client_id(sig.key, "sl")], algos[client_id(sig.key, "tp")]
    assert (sl.type, tp.type) == ("STOP_MARKET", "TAKE_PROFIT_MARKET")
    assert sl.reduce_only and tp.reduce_only and sl.side == tp.side == "SELL"
    assert float(sl.trigger) == pos.stop_loss and float(tp.trigger) == pos.take_profit
    assert pos.stop_loss < pos.entry_price < pos.take_profit
    assert abs(pos.take_profit / pos.entry_price - 1.02) < 0.0001
    assert float(env.account.position(SYMBOL).amount) == pos.qty
    assert env.account.snapshot()["leverage"] == {SYMBOL: 2}
    # the same signal again (a retry, a duplicate event): adopted, nothing new sent
    again = broker.open(sig)
    assert again is not None and again.qty == pos.qty and env.entries(sig.key) == 1
    snap = env.account.snapshot()
    assert set(snap["algo_client_counts"].values()) == {1} and len(snap["algo_client_counts"]) == 2


def test_price_crossing_the_stop_closes_and_the_broker_records_it(env: Env) -> None:
    broker = env.broker()
    pos = broker.open(env.signal())
    assert pos is not None
    assert broker.sync([pos], force=True) == []  # still open
    env.sim.market.inject_surge(SYMBOL, -5.0, 1.0)  # the price falls through the stop
    wait_for(lambda: env.account.position(SYMBOL).amount == 0)
    closed = broker.sync([pos], force=True)
    assert len(closed) == 1
    c = closed[0]
    assert c.exit_reason == STOP_LOSS and c.exit_price is not None and c.exit_price <= pos.stop_loss
    assert c.pnl is not None and c.pnl < 0 and c.exit_time is not None
    assert env.open_algo_ids() == set()  # the take profit was cancelled
    assert broker.sync([], force=True) == []


def test_take_profit_exit_is_recorded(env: Env) -> None:
    broker = env.broker()
    pos = broker.open(env.signal())
    assert pos is not None
    env.sim.market.inject_surge(SYMBOL, 4.0, 1.0)
    wait_for(lambda: env.account.position(SYMBOL).amount == 0)
    (closed,) = broker.sync([pos], force=True)
    assert closed.exit_reason == TAKE_PROFIT and closed.pnl is not None and closed.pnl > 0
    assert env.open_algo_ids() == set()


def test_max_hold_closes_reduce_only_and_cancels_both(env: Env) -> None:
    broker = env.broker()
    pos = broker.open(env.signal())
    assert pos is not None
    assert broker.exit_reason(pos, pos.entry_price, pos.deadline - 1) is None
    assert broker.exit_reason(pos, pos.stop_loss * 0.5, pos.entry_time) is None  # the exchange's job
    assert broker.exit_reason(pos, pos.entry_price, pos.deadline) == MAX_HOLD
    closed = broker.close(pos, pos.entry_price, pos.deadline, MAX_HOLD)
    assert closed.exit_reason == MAX_HOLD and not closed.is_open
    assert env.account.position(SYMBOL).amount == 0 and env.open_algo_ids() == set()
    x = client_id(pos.key, "x")
    assert [r.get("newClientOrderId") for r in env.account.received].count(x) == 1
    # closing again (a retry after a crash) finds the exit order and sends nothing
    again = env.broker().close(pos, pos.entry_price, pos.deadline, MAX_HOLD)
    assert again.exit_reason == MAX_HOLD and env.account.snapshot()["client_order_counts"][x] == 1


def test_timeout_after_acceptance_produces_no_second_entry(env: Env) -> None:
    broker = env.broker(read_timeout=0.5)
    sig = env.signal()
    env.account.delay_next_order(2.0, count=2)  # the entry and the stop loss both answer too late
    pos = broker.open(sig)
    assert pos is not None
    assert env.entries(sig.key) == 1
    counts = env.account.snapshot()["algo_client_counts"]
    assert counts == {client_id(sig.key, "sl"): 1, client_id(sig.key, "tp"): 1}
    assert len(env.open_algo_ids()) == 2


def test_restart_reconciles_adopts_and_sends_nothing_new(env: Env) -> None:
    first = env.broker()
    sig = env.signal()
    pos = first.open(sig)
    assert pos is not None
    received = len(env.account.received)
    # kill -9, restart: a new broker, the same exchange, the database still has the position
    report = env.broker().reconcile([pos])
    assert report.clean, report.differences
    assert [p.key for p in report.open] == [sig.key] and not report.recreated and not report.adopted
    assert len(env.account.received) == received
    # killed before the database write: the exchange's position is adopted under the signal's key
    report = env.broker().reconcile([])
    (adopted,) = report.adopted
    assert adopted.key == sig.key and adopted.qty == pos.qty
    assert (adopted.stop_loss, adopted.take_profit) == (pos.stop_loss, pos.take_profit)
    assert not report.recreated and len(report.differences) == 1
    assert env.entries(sig.key) == 1


def test_reconcile_recreates_a_missing_protective_order_and_records_exits(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    broker = env.broker()
    pos = broker.open(env.signal())
    assert pos is not None
    tp = client_id(pos.key, "tp")
    assert env.account.cancel_algo(tp)  # someone cancelled it in the web UI
    caplog.set_level(logging.WARNING, logger="surge.trading.live")
    report = env.broker().reconcile([pos])
    assert report.recreated == [tp] and tp in env.open_algo_ids()
    assert any("was missing" in m for m in report.differences)
    assert any("was missing" in r.getMessage() for r in caplog.records)
    # the database's quantity disagrees with the exchange: the exchange wins
    report = env.broker().reconcile([replace(pos, qty=pos.qty * 2)])
    assert report.updated and report.open[0].qty == pos.qty
    # a stale position the exchange no longer holds, and sync re-creating a missing stop
    sl = client_id(pos.key, "sl")
    assert env.account.cancel_algo(sl)
    assert broker.sync([pos], force=True) == [] and sl in env.open_algo_ids()
    ghost = Position(key="ETHUSDT:1795650000000", symbol="ETHUSDT", qty=0.03, entry_price=3400.0,
                     entry_time=1, take_profit=3468.0, stop_loss=3366.0, deadline=10**13)
    report = env.broker().reconcile([pos, ghost])
    (closed,) = report.closed
    assert closed.key == ghost.key and closed.exit_reason == EXTERNAL and not closed.is_open


def test_sizes_the_exchange_would_refuse_are_skipped_with_a_reason(env: Env,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="surge.trading.live")
    broker = env.broker(replace(SETTINGS, position_usdt=150.0))
    btc = env.signal("BTCUSDT")  # ~94k: 150 USDT buys 0.001 BTC, worth less than MIN_NOTIONAL 100
    assert broker.open(btc) is None
    assert "MIN_NOTIONAL" in broker.skipped[btc.key]
    assert any("skipped" in r.getMessage() and "MIN_NOTIONAL" in r.getMessage() for r in caplog.records)
    assert env.account.received == []  # nothing was sent
    env.account.reject_next_order(-2019)
    tiny = env.broker(replace(SETTINGS, position_usdt=0.1))
    dust = env.signal("ETHUSDT")
    assert tiny.open(dust) is None and "below the minimum quantity" in tiny.skipped[dust.key]
    sol = env.signal()
    assert broker.open(sol) is None and "-2019" in broker.skipped[sol.key]
    assert env.account.position(SYMBOL).amount == 0


def test_account_summary_for_the_banner(env: Env) -> None:
    summary = env.broker().account_summary()
    assert summary.wallet_balance == 10_000 and summary.leverage == 2
    assert "10000.00 USDT" in summary.lines()[0] and "2x leverage" in summary.lines()[1]


def test_no_secret_in_any_log_output(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    broker = env.broker(read_timeout=0.5)
    env.account.delay_next_order(1.0)
    pos = broker.open(env.signal())
    assert pos is not None
    env.account.cancel_algo(client_id(pos.key, "sl"))
    env.broker().reconcile([pos])
    broker.close(pos, pos.entry_price, pos.deadline, MAX_HOLD)
    text = caplog.text
    assert "/fapi/v1/order?" in text  # urllib3's debug lines were captured
    assert DEFAULT_API_SECRET not in text and DEFAULT_API_KEY not in text
    assert "signature=<redacted>" in text
    assert DEFAULT_API_SECRET not in repr(broker.client) and DEFAULT_API_SECRET not in repr(broker.__dict__)
