"""``surge run --live`` end to end: real ``python -m surge run`` processes against an in-process simulator.

What a trader relies on, proven on the process (lock, exit codes, kill -9, log files are properties of
one): a surge enters exactly once with its stop loss and take profit on the exchange; the exchange
closing the position at the stop is noticed and recorded; an order answer lost after the exchange
accepted it never becomes a second entry; a bot killed mid-entry is reconciled on restart (the
position adopted, its protective orders re-created, nothing entered again); a wrong secret is one
clear line naming -1022 and exit 1; the secret never reaches any output or file; the double opt-in
and the keys are checked before anything starts.

Waits poll the simulator's account and ``surge positions --json`` until a deadline (a loaded 2-core
machine is slow; a passing test returns as soon as its condition holds).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from surge.sim import Simulator
from surge.sim.account import DEFAULT_API_KEY, DEFAULT_API_SECRET
from surge.sim.market import Market
from surge.store import read_store
from surge.trading.live import client_id
from tests import bot_harness
from tests.bot_harness import MINUTE_MS, BotProcess, bot_env, heartbeat, surge_cli, wait_for

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]  # BTC: 100 USDT is below one lot after a surge
#: exits far enough from the simulated price's natural walk that only the moves a test injects hit them
CONFIG = """\
[filter_4h]
refresh_s = 10
[trade]
mode = "live"
position_usdt = 100
take_profit_pct = 4.0
stop_loss_pct = 2.5
max_hold_s = 3600
"""
VENUE = "live:sim"


def market_clock() -> Callable[[], float]:
    """The simulated market at the start of a minute now (a surge injected early in a minute is seen
    before its candle closes) and never within 25 minutes of a 4h close during the test."""
    return bot_harness.market_clock(minute_second=1.0)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    market = Market(40, seed=7, surge_interval_s=None, clock=market_clock())
    s = Simulator(market=market).start()
    s.market.arrange_4h(SYMBOLS, max_change_pct=3.0)  # passing with room for a +5% surge under 10%
    try:
        yield s
    finally:
        s.stop()


def env_for(home: Path, sim: Simulator | None, **extra: str) -> dict[str, str]:
    """The bot's environment with the simulator's demo keys (``extra`` overrides any variable)."""
    env = bot_env(home, sim)
    env.update(SURGE_API_KEY=DEFAULT_API_KEY, SURGE_API_SECRET=DEFAULT_API_SECRET)
    env.update(extra)
    return env


def home_with_config(tmp_path: Path, config: str = CONFIG) -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "surge.toml").write_text(config)
    return home


def surge(
    home: Path, *args: str, env: dict[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """One ``python -m surge ...`` command run to completion in ``env``."""
    return surge_cli(home, *args, env=env, timeout=timeout)


def live_bot(home: Path, env: dict[str, str], *extra: str) -> BotProcess:
    """``python -m surge run --live`` on :data:`SYMBOLS` in the background; its stdout is kept for the
    secret checks."""
    return BotProcess(home, None, SYMBOLS, extra=["--live", *extra], env=env, capture_stdout=True)


@pytest.fixture
def bots() -> Iterator[list[BotProcess]]:
    started: list[BotProcess] = []
    try:
        yield started
    finally:
        for b in started:
            b.ensure_stopped()


def account(sim: Simulator) -> dict[str, Any]:
    return sim.rest.account.snapshot()


def positions(home: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    proc = surge(home, "positions", "--all", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def inject_in_minute(sim: Simulator, symbol: str, change_pct: float) -> None:
    """Inject a move early enough in the market's minute that the bot sees it before the candle closes."""
    wait_for(lambda: sim.market.now_ms() % MINUTE_MS < 40_000, 30, "the first 40 s of a minute", 0.2)
    sim.market.inject_surge(symbol, change_pct=change_pct, volume_multiple=10.0 if change_pct > 0 else 0.0)


def assert_no_secret(home: Path, *texts: str) -> None:
    """Neither the API key nor the secret in any captured output or in any file under $SURGE_HOME
    (logs, the database and its WAL, the heartbeat), and the bot's outputs."""
    for needle in (DEFAULT_API_SECRET, DEFAULT_API_KEY):
        for text in texts:
            assert needle not in text
        files = [p for p in home.rglob("*") if p.is_file()] + list(home.parent.glob(f"{home.name}-bot-*"))
        assert any(p.name == "surge.log" for p in files)
        for path in files:
            assert needle.encode() not in path.read_bytes(), path


def test_surge_enters_once_protected_and_the_stop_closes_it(
    tmp_path: Path, sim: Simulator, bots: list[BotProcess]
) -> None:
    home = home_with_config(tmp_path)
    env = env_for(home, sim)
    bot = live_bot(home, env)
    bots.append(bot)
    bot.wait_log("ready in")
    log = bot.log()
    assert "LIVE TRADING on Binance USD-M: balance 10000.00 USDT" in log
    assert "limits: 100 USDT per position at 1x leverage, at most 5 open" in log
    assert "reconciliation: 0 open" in log

    inject_in_minute(sim, "SOLUSDT", 5.0)
    sim.market.inject_surge("BTCUSDT", change_pct=5.0, volume_multiple=10.0)
    [pos] = wait_for(
        lambda: [p for p in positions(home, env) if p["symbol"] == "SOLUSDT"],
        40,
        "the SOLUSDT entry in surge positions",
    )
    entry = client_id(pos["key"], "e")
    sl, tp = client_id(pos["key"], "sl"), client_id(pos["key"], "tp")
    snap = account(sim)
    assert snap["client_order_counts"] == {entry: 1}  # exactly one MARKET entry...
    assert snap["algo_client_counts"] == {sl: 1, tp: 1}  # ...and its two protective orders
    assert {(a["clientAlgoId"], a["orderType"]) for a in snap["open_algo_orders"]} == {
        (sl, "STOP_MARKET"),
        (tp, "TAKE_PROFIT_MARKET"),
    }
    assert float(snap["positions"]["SOLUSDT"]["amount"]) == pytest.approx(pos["qty"])
    assert pos["venue"] == VENUE and pos["exit_reason"] is None
    assert pos["stop_loss"] == pytest.approx(pos["entry_price"] * 0.975, rel=1e-4)

    def btc_skipped() -> Any:  # 100 USDT is less than one 0.001 lot of BTC: not sent, recorded why
        store = read_store(home)
        assert store is not None
        with store:
            return [r for r in store.signals(venue=VENUE) if r.signal.symbol == "BTCUSDT"]

    [btc] = wait_for(btc_skipped, 20, "the BTCUSDT signal")
    assert not btc.entered and btc.skip_reason and btc.skip_reason.startswith("size:")

    sim.market.inject_surge("SOLUSDT", change_pct=-5.0, volume_multiple=0.0)  # through the stop
    wait_for(lambda: "SOLUSDT" not in account(sim)["positions"], 20, "the exchange's stop loss to fire")
    [done] = wait_for(
        lambda: [p for p in positions(home, env) if p["key"] == pos["key"] and p["exit_price"]],
        30,
        "the bot to record the exit",
    )
    assert done["exit_reason"] == "stop_loss" and done["exit_price"] <= pos["stop_loss"]
    assert done["pnl"] < 0
    snap = account(sim)
    assert snap["open_algo_orders"] == []  # the take profit was cancelled with nothing left to protect
    assert snap["client_order_counts"] == {entry: 1}
    assert bot.stop() == 0
    assert "Traceback" not in bot.log()
    assert_no_secret(home, bot.log(), bot.stdout_path.read_text())


def test_timeout_after_acceptance_is_not_a_second_entry(
    tmp_path: Path, sim: Simulator, bots: list[BotProcess]
) -> None:
    """The entry is executed but answered after the bot's 10 s read timeout: the bot asks the exchange
    about its client order id, finds the fill and adopts it."""
    home = home_with_config(tmp_path)
    env = env_for(home, sim)
    bot = live_bot(home, env)
    bots.append(bot)
    bot.wait_log("ready in")
    sim.rest.account.delay_next_order(20.0)  # past the 10 s read timeout
    inject_in_minute(sim, "ETHUSDT", 5.0)
    [pos] = wait_for(
        lambda: [p for p in positions(home, env) if p["symbol"] == "ETHUSDT"],
        60,
        "the ETHUSDT entry after the lost answer",
    )
    snap = account(sim)
    entry = client_id(pos["key"], "e")
    assert snap["client_order_counts"] == {entry: 1} and snap["orders"] == 1
    assert snap["algo_client_counts"] == {client_id(pos["key"], "sl"): 1, client_id(pos["key"], "tp"): 1}
    assert "the exchange may have executed it" in bot.log() and "already on the exchange" not in bot.log()
    assert bot.stop() == 0


def test_kill9_mid_entry_then_restarts_reconcile(
    tmp_path: Path, sim: Simulator, bots: list[BotProcess]
) -> None:
    """kill -9 while the entry's answer is in flight (the exchange has the position, the database and
    the protective orders do not): the restart adopts it and protects it. Killed again and a protective
    order cancelled behind its back: the next restart re-creates it. Never a second entry."""
    home = home_with_config(tmp_path)
    env = env_for(home, sim)
    first = live_bot(home, env)
    bots.append(first)
    first.wait_log("ready in")
    sim.rest.account.delay_next_order(30.0)  # accepted at once, answered far too late
    inject_in_minute(sim, "XRPUSDT", 5.0)
    wait_for(lambda: "XRPUSDT" in account(sim)["positions"], 40, "the exchange to fill the entry")
    first.kill()
    [entry] = account(sim)["client_order_counts"]
    assert account(sim)["open_algo_orders"] == [] and positions(home, env) == []

    second = live_bot(home, env)
    bots.append(second)
    second.wait_log("ready in")
    # the entry's trade row was written before the order went out: the restart resumes it by its
    # client order id (no adoption guesswork), reads the fill back and protects it
    assert "resuming trade" in second.log() and "0 adopted, 1 resumed, 1 entries unresolved" in second.log()
    second.wait_log("protective orders placed")
    assert "SIGNAL XRPUSDT" not in second.log()  # the entry's signal restored the cooldown
    [pos] = positions(home, env)
    assert pos["symbol"] == "XRPUSDT" and pos["exit_reason"] is None and client_id(pos["key"], "e") == entry
    assert pos["qty"] == pytest.approx(float(account(sim)["positions"]["XRPUSDT"]["amount"]))
    sl, tp = client_id(pos["key"], "sl"), client_id(pos["key"], "tp")
    assert {a["clientAlgoId"] for a in account(sim)["open_algo_orders"]} == {sl, tp}
    second.kill()

    assert sim.rest.account.cancel_algo(sl)  # someone removes the stop loss while the bot is down
    third = live_bot(home, env)
    bots.append(third)
    third.wait_log("ready in")
    assert "reconciliation: 1 open, 0 adopted, 1 resumed, 0 entries unresolved" in third.log()
    third.wait_log(f"protective order {sl} was missing: placed again")
    snap = account(sim)
    assert {a["clientAlgoId"] for a in snap["open_algo_orders"]} == {sl, tp}
    assert snap["algo_client_counts"] == {sl: 2, tp: 1}
    assert snap["client_order_counts"] == {entry: 1}  # the one entry, whatever happened
    [again] = positions(home, env)
    assert again["key"] == pos["key"] and again["exit_reason"] is None
    assert third.stop() == 0


def test_wrong_secret_is_one_clear_line_and_exit_1(tmp_path: Path, sim: Simulator) -> None:
    home = home_with_config(tmp_path)
    wrong = "wrong-secret-" + DEFAULT_API_SECRET[::-1]
    proc = surge(
        home,
        "run",
        "--live",
        "--symbols",
        "SOLUSDT",
        "--duration",
        "30",
        env=env_for(home, sim, SURGE_API_SECRET=wrong),
    )
    assert proc.returncode == 1, proc.stderr
    assert "-1022" in proc.stderr and "SURGE_API_SECRET" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("surge: error: ")
    assert account(sim)["signature_failures"] >= 1 and account(sim)["client_order_counts"] == {}
    for needle in (wrong, DEFAULT_API_SECRET, DEFAULT_API_KEY):
        assert needle not in proc.stdout + proc.stderr
        for path in (p for p in home.rglob("*") if p.is_file()):
            assert needle.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("mode", "flag", "keys", "missing"),
    [
        ("paper", True, {}, 'needs [trade] mode = "live"'),
        ("live", False, {}, "needs --live on the command line"),
        ("live", True, {"SURGE_API_KEY": "", "SURGE_API_SECRET": ""}, "SURGE_API_KEY and SURGE_API_SECRET"),
        ("live", True, {"SURGE_API_SECRET": ""}, "needs SURGE_API_SECRET in the environment"),
    ],
)
def test_either_opt_in_alone_or_no_keys_exits_2(
    tmp_path: Path, mode: str, flag: bool, keys: dict[str, str], missing: str
) -> None:
    home = home_with_config(tmp_path, f'[trade]\nmode = "{mode}"\n')
    args = ["run", "--symbols", "SOLUSDT", "--duration", "5", *(["--live"] if flag else [])]
    proc = surge(home, *args, env=env_for(home, None, **keys))
    assert proc.returncode == 2, proc.stderr
    assert missing in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (home / "surge.db").exists()  # refused before anything started


def test_sim_live_without_keys_uses_the_simulators_demo_keys(tmp_path: Path) -> None:
    """``--sim --live``: the built-in simulator with its demo keys when none are set; exit 0 at the end."""
    home = home_with_config(tmp_path)
    env = env_for(home, None, SURGE_API_KEY="", SURGE_API_SECRET="")
    proc = surge(
        home, "run", "--sim", "--live", "--symbols", "SOLUSDT,ETHUSDT", "--duration", "3", env=env, timeout=90
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LIVE TRADING on Binance USD-M: balance 10000.00 USDT" in proc.stderr
    assert "reconciliation: 0 open" in proc.stderr and "Traceback" not in proc.stderr
    assert_no_secret(home, proc.stdout, proc.stderr)


def test_a_slow_entry_does_not_hold_up_the_strategy_loop(
    tmp_path: Path, sim: Simulator, bots: list[BotProcess]
) -> None:
    """Every exchange answer 2 s late: the entry (market order, two protective orders) takes
    seconds, made on the desk's threads; the strategy loop goes on deciding all along, which its
    heartbeat (rewritten every 2 s by the loop, with the stream's event count) shows."""
    home = home_with_config(tmp_path)
    env = env_for(home, sim)
    bot = live_bot(home, env)
    bots.append(bot)
    bot.wait_log("ready in")
    beats: list[tuple[float, int]] = []  # (written_at, events) of each heartbeat seen

    def entered() -> bool:
        hb = heartbeat(home)
        if hb.get("written_at") and (not beats or hb["written_at"] != beats[-1][0]):
            beats.append((hb["written_at"], hb["events"]))
        return "SOLUSDT: protective orders placed" in bot.log()

    sim.rest.set_latency(2000)
    try:
        inject_in_minute(sim, "SOLUSDT", 5.0)
        t0 = time.monotonic()
        wait_for(entered, 90, "the slow SOLUSDT entry", every=0.1)
        took = time.monotonic() - t0
        # an entry of ~4 s spans only two heartbeat periods: watch a few more beats of the same loop
        wait_for(lambda: entered() and len(beats) >= 4, 30, "four heartbeats", every=0.1)
    finally:
        sim.rest.set_latency(0)
    # the order, then both protective orders together (the leverage was set ahead, when SOLUSDT began
    # to pass the filter): two rounds answered 2 s late
    assert took >= 4.0
    gaps = [b[0] - a[0] for a, b in zip(beats, beats[1:], strict=False)]
    assert len(beats) >= 4 and max(gaps) < 5.0, gaps  # a loop waiting on the entry: a gap of >= 4 s + 2 s
    assert beats[-1][1] > beats[0][1]  # stream events went on being handled
    [pos] = [p for p in positions(home, env) if p["symbol"] == "SOLUSDT"]
    assert account(sim)["client_order_counts"] == {client_id(pos["key"], "e"): 1}
    assert bot.stop() == 0
    assert "Traceback" not in bot.log()
