"""``surge run --live`` under exchange faults, end to end: real ``python -m surge run`` processes.

Each test is a reproduction that failed on the previous design of live trading (an entry stranded
after a lost answer and a long outage, a stop that abandoned an entry half way, one odd positionRisk
answer closing the books, the same candle signalling again while its entry was on its way, a hedge
mode account found at the first order). What a trader relies on in each: exactly one entry order,
the position in the ledger and on the exchange with both protective orders, the process alive (or
exiting with the code that says what is left to do), and the next start finishing the job.

Why subprocesses against an in-process simulator: exit codes, SIGTERM and the log are properties of a
process, and the simulator's controls script the faults at the exact moment the test needs them
(after the entry reached the exchange). Waits poll the simulator's account, the log or the ledger
until a deadline; nothing sleeps in place of a condition.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from surge.sim import Simulator
from surge.sim.market import Market
from surge.store import read_store
from surge.trading.live import ENTRY, EXIT, STOP, TARGET, client_id, key_from_client_id
from tests.bot_harness import BotProcess, heartbeat, wait_for
from tests.test_live_run import (
    CONFIG,
    SYMBOLS,
    VENUE,
    account,
    env_for,
    home_with_config,
    inject_in_minute,
    live_bot,
    market_clock,
    positions,
    surge,
)

#: positionRisk as the desk reads it (v3): its request count shows how many polls happened
POSITION_RISK = "/fapi/v3/positionRisk"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """One simulator per test (as in tests/test_live_run.py): its faults and counters are the test's."""
    market = Market(40, seed=7, surge_interval_s=None, clock=market_clock())
    s = Simulator(market=market).start()
    s.market.arrange_4h(SYMBOLS, max_change_pct=3.0)  # passing with room for a +5% surge under 10%
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def bots() -> Iterator[list[BotProcess]]:
    started: list[BotProcess] = []
    try:
        yield started
    finally:
        for b in started:
            b.ensure_stopped()


def start_bot(home: Path, env: dict[str, str], bots: list[BotProcess]) -> BotProcess:
    bot = live_bot(home, env)
    bots.append(bot)
    bot.wait_log("ready in", 90)
    return bot


def entry_on_exchange(sim: Simulator) -> tuple[str, str]:
    """(signal key, entry client id) once the exchange has accepted the entry order."""
    [cid] = wait_for(
        lambda: list(account(sim)["entry_orders"]),
        40,
        "the entry order on the exchange",
        detail=lambda: account(sim),
    )
    key = key_from_client_id(cid)
    assert key is not None and client_id(key, ENTRY) == cid
    return key, cid


def protection(sim: Simulator) -> set[str]:
    """Client ids of the open algo (protective) orders on the simulated exchange."""
    return {a["clientAlgoId"] for a in account(sim)["open_algo_orders"]}


def wait_protected(sim: Simulator, key: str, timeout: float) -> None:
    wanted = {client_id(key, STOP), client_id(key, TARGET)}
    wait_for(
        lambda: protection(sim) == wanted,
        timeout,
        f"both protective orders of {key}",
        every=0.2,
        detail=lambda: account(sim),
    )


def error_lines(text: str, *needles: str) -> list[str]:
    """The ERROR lines of a log that contain every one of ``needles``."""
    return [line for line in text.splitlines() if " ERROR " in line and all(n in line for n in needles)]


def terminate(bot: BotProcess, timeout: float = 60.0) -> int:
    """SIGTERM and the exit code: longer than Bot.stop's 30 s, a stop may spend its whole budget."""
    bot.proc.send_signal(signal.SIGTERM)
    return bot.proc.wait(timeout)


def assert_one_protected_entry(sim: Simulator, home: Path, env: dict[str, str], key: str) -> None:
    """The ledger and the exchange agree: one open position for ``key``, exactly one entry order,
    both protective orders open."""
    [pos] = positions(home, env)
    assert pos["key"] == key and pos["venue"] == VENUE and pos["exit_reason"] is None
    snap = account(sim)
    assert snap["client_order_counts"] == {client_id(key, ENTRY): 1}
    assert float(snap["positions"][pos["symbol"]]["amount"]) == pytest.approx(pos["qty"])
    assert protection(sim) == {client_id(key, STOP), client_id(key, TARGET)}


def test_stranded_entry_after_a_lost_answer_and_a_61s_503_spell(
    tmp_path: Path, sim: Simulator, bots: list[BotProcess]
) -> None:
    """Reproduction: the entry is executed but answered 12 s late (past the 10 s read timeout); as soon
    as it is on the exchange, every request answers 503 for 61 s. The bot must ride it out (no exit),
    say in an ERROR every 30 s that the trade is still unknown and never sent twice, and within
    seconds of the spell's end read the fill back, record the position and place both protective
    orders: one entry order, and the heartbeat and ``surge status`` count the position."""
    home = home_with_config(tmp_path)
    env = env_for(home, sim)
    bot = start_bot(home, env, bots)
    sim.rest.account.delay_next_order(12.0)
    inject_in_minute(sim, "SOLUSDT", 5.0)
    key, cid = entry_on_exchange(sim)
    sim.rest.error_for(61.0)
    spell_end = time.monotonic() + 61.0

    needle = f"SOLUSDT: trade {key} is still unknown after"
    bot.wait_log(needle, 75)  # fails at once if the bot exits
    assert time.monotonic() < spell_end, "the unresolved trade was not reported while the spell lasted"
    [line, *_] = error_lines(bot.log(), needle)
    assert cid in line and "never sent twice" in line
    assert positions(home, env) == []  # nothing is believed before the exchange answers again

    wait_for(
        lambda: time.monotonic() >= spell_end and sim.rest.stats()["error_spell_s"] == 0,
        30,
        "the end of the 503 spell",
        every=0.2,
    )
    assert bot.proc.poll() is None, bot.log()[-3000:]
    wait_protected(sim, key, 60)
    took = time.monotonic() - spell_end
    assert took <= 20.0, f"protected {took:.1f}s after the spell ended"
    assert_one_protected_entry(sim, home, env, key)
    assert account(sim)["algo_client_counts"] == {client_id(key, STOP): 1, client_id(key, TARGET): 1}
    wait_for(
        lambda: heartbeat(home).get("open_positions") == 1,
        20,
        "the heartbeat to count the position",
        detail=lambda: heartbeat(home),
    )
    status = surge(home, "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["running"] is True and st["open_positions"] == 1
    assert bot.stop() == 0
    assert "Traceback" not in bot.log()


def test_sigterm_during_an_entry_finishes_and_protects_it(
    tmp_path: Path, sim: Simulator, bots: list[BotProcess]
) -> None:
    """Reproduction: the entry is executed and answered 15 s late; SIGTERM 2 s after it reached the
    exchange. The stop must not abandon it: the answer times out, the fill is read back by client id,
    both protective orders are placed, and only then does the bot exit 0. One entry order."""
    home = home_with_config(tmp_path)
    env = env_for(home, sim)
    bot = start_bot(home, env, bots)
    sim.rest.account.delay_next_order(15.0)
    inject_in_minute(sim, "SOLUSDT", 5.0)
    key, _ = entry_on_exchange(sim)
    arrived = time.monotonic()
    wait_for(lambda: time.monotonic() >= arrived + 2.0, 5, "2 s after the entry reached the exchange")
    assert terminate(bot) == 0, bot.log()[-3000:]
    assert_one_protected_entry(sim, home, env, key)
    log = bot.log()
    assert "SOLUSDT: protective orders placed" in log and "Traceback" not in log
    assert not error_lines(log, "unresolved")


def test_sigterm_with_an_entry_that_cannot_be_resolved_exits_4_and_the_next_start_protects_it(
    tmp_path: Path, sim: Simulator, bots: list[BotProcess]
) -> None:
    """Reproduction: the entry is executed and answered 15 s late, a 503 spell begins as it reaches the
    exchange and outlasts the stop's whole budget (read timeout + 5 s, plus a call in flight), SIGTERM
    2 s later. Nothing can be learnt: the bot exits 4 with an ERROR naming the symbol and the entry's
    client order id. After the spell the next start resumes the trade from the ledger, reads the fill
    and protects it; never a second entry."""
    home = home_with_config(tmp_path)
    env = env_for(home, sim)
    first = start_bot(home, env, bots)
    sim.rest.account.delay_next_order(15.0)
    inject_in_minute(sim, "SOLUSDT", 5.0)
    key, cid = entry_on_exchange(sim)
    sim.rest.error_for(120.0)  # ended by the test once the bot has exited
    arrived = time.monotonic()
    wait_for(lambda: time.monotonic() >= arrived + 2.0, 5, "2 s after the entry reached the exchange")
    code = terminate(first, 90)
    spell_left = sim.rest.stats()["error_spell_s"]
    assert spell_left > 0, "the spell ended before the bot did: the exit proves nothing"
    assert code == 4, first.log()[-3000:]
    log = first.log()
    assert error_lines(log, "SOLUSDT", cid, "unresolved"), log[-3000:]
    assert "Traceback" not in log
    assert positions(home, env) == [] and protection(sim) == set()

    sim.rest.clear_faults()  # the spell is over
    second = start_bot(home, env, bots)
    assert "0 adopted, 1 resumed, 1 entries unresolved" in second.log()
    wait_protected(sim, key, 60)
    second.wait_log("SOLUSDT: protective orders placed", 30)
    assert_one_protected_entry(sim, home, env, key)
    assert "SIGNAL SOLUSDT" not in second.log()  # the entry's signal restored the cooldown
    assert second.stop() == 0
    assert "Traceback" not in second.log()


@pytest.mark.parametrize("kind", ["empty", "missing_rows", "zero"])
def test_one_empty_position_risk_answer_closes_nothing(
    tmp_path: Path, sim: Simulator, bots: list[BotProcess], kind: str
) -> None:
    """Reproduction: a protected position is held and one positionRisk answer is wrong (``[]``, the
    row of the held symbol left out, or every amount zero). No information is no proof of flat: over
    the next several polls (every 5 s) the position stays open in the ledger and on the exchange, and
    both protective orders stay open, never cancelled nor placed again."""
    home = home_with_config(tmp_path)
    env = env_for(home, sim)
    bot = start_bot(home, env, bots)
    inject_in_minute(sim, "SOLUSDT", 5.0)
    key, _ = entry_on_exchange(sim)
    wait_protected(sim, key, 40)
    bot.wait_log("SOLUSDT: protective orders placed", 30)

    def polls() -> int:
        return int(sim.rest.stats()["by_path"].get(POSITION_RISK, 0))

    before, wanted = polls(), protection(sim)
    sim.rest.account.position_risk_next(kind, 1)
    # the wrong answer, then (5 s apart) at least three more polls: ~15 s of the desk believing it
    # (or, for a desk that believed it, the protection gone: the assertions below say what happened)
    wait_for(
        lambda: polls() >= before + 4 or protection(sim) != wanted,
        60,
        "four more positionRisk requests",
        every=0.5,
        detail=lambda: sim.rest.stats()["by_path"],
    )
    assert bot.proc.poll() is None
    assert_one_protected_entry(sim, home, env, key)
    assert account(sim)["algo_client_counts"] == {client_id(key, STOP): 1, client_id(key, TARGET): 1}
    log = bot.log()
    assert "closed outside the bot" not in log and "cancelled protective order" not in log
    assert ("confirming on the next" in log) == (kind == "zero")  # a zero row is one flat read, no more
    assert bot.stop() == 0
    assert "Traceback" not in bot.log()


def test_same_candle_race_with_cooldown_zero_keeps_the_position_tracked(
    tmp_path: Path, sim: Simulator, bots: list[BotProcess]
) -> None:
    """Reproduction: ``cooldown_s = 0`` and every exchange answer 400 ms late, so the surge's candle
    signals again on its next updates while its entry is still on its way. The repeats must not be
    recorded as a skipped duplicate that loses the fill: the position is tracked (in the ledger, in
    the heartbeat's open positions, i.e. toward max_open_positions), max hold (20 s) closes it with a
    reduce-only order and cancels its protection, and the candle had exactly one entry order."""
    config = CONFIG.replace("max_hold_s = 3600", "max_hold_s = 20") + "[surge]\ncooldown_s = 0\n"
    assert "max_hold_s = 20" in config
    home = home_with_config(tmp_path, config)
    env = env_for(home, sim)
    bot = start_bot(home, env, bots)
    sim.rest.set_latency(400)
    inject_in_minute(sim, "SOLUSDT", 5.0)
    key, cid = entry_on_exchange(sim)
    wait_protected(sim, key, 40)
    wait_for(
        lambda: heartbeat(home).get("open_positions") == 1,
        20,
        "the heartbeat to count the position",
        detail=lambda: heartbeat(home),
    )
    [pos] = positions(home, env)
    assert pos["key"] == key and pos["exit_reason"] is None

    [done] = wait_for(
        lambda: [p for p in positions(home, env) if p["key"] == key and p["exit_reason"]],
        60,
        "max hold to close the position",
        every=0.5,
    )
    assert done["exit_reason"] == "max_hold", done
    assert (done["exit_time"] - done["entry_time"]) / 1000 >= 20.0 - 1.0
    snap = account(sim)
    assert "SOLUSDT" not in snap["positions"] and snap["open_algo_orders"] == []
    assert snap["client_order_counts"] == {cid: 1, client_id(key, EXIT): 1}
    wait_for(lambda: heartbeat(home).get("open_positions") == 0, 20, "the heartbeat to drop the position")

    store = read_store(home)
    assert store is not None
    with store:
        sol = [r for r in store.signals(venue=VENUE) if r.signal.symbol == "SOLUSDT"]
    seen = [(r.signal.key, r.entered, r.skip_reason) for r in sol]
    assert seen == [(key, True, None)], seen
    assert bot.stop() == 0
    assert "Traceback" not in bot.log()


def test_hedge_mode_account_is_refused_with_one_line_and_exit_2(tmp_path: Path, sim: Simulator) -> None:
    """Reproduction: the account is in Hedge Mode (``dualSidePosition``), where every one-way order is
    refused with -4061. The bot must say so before anything is sent: exit 2, one ``surge: error:``
    line naming Hedge Mode, no traceback, no order on the exchange."""
    sim.rest.account.set_dual_side(True)
    home = home_with_config(tmp_path)
    env = env_for(home, sim)
    proc = surge(
        home, "run", "--live", "--symbols", ",".join(SYMBOLS), "--duration", "30", env=env, timeout=90
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("surge: error: ")]
    assert len(errors) == 1 and "Hedge Mode" in errors[0], proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in proc.stderr
    snap: dict[str, Any] = account(sim)
    assert snap["orders"] == 0 and snap["client_order_counts"] == {} and snap["algo_client_counts"] == {}
