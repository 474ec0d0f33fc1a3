"""``surge run --sim`` exactly as a user starts it, with ``[notify]`` pointing at a real receiver on
loopback: its simulator's periodic surges give a signal and an entry, a short max hold gives a paper
exit with its PnL, and the stop ends cleanly. The URL's password never reaches the bot's stderr or
its log file."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bot_harness import BotProcess, baseline_ready, heartbeat, make_simulator, wait_for, write_config
from tests.notify.receiver import TOKEN, Receiver

pytestmark = pytest.mark.slow

SYMBOL = "BTCUSDT"


def test_surge_run_sim_notifies_signal_entry_and_exit(tmp_path: Path, receiver: Receiver) -> None:
    home = tmp_path / "home"
    config = write_config(
        tmp_path / "surge.toml",
        {
            "trade": {"max_hold_s": 3},
            "notify": {"urls": [receiver.url("/surge")], "events": ["signal", "entry", "exit", "error"]},
        },
    )
    bot = BotProcess(home, None, [], extra=["--sim"], config=config)
    try:
        bot.wait_ready(120)

        def seen(pattern: str) -> str | None:
            return next((m for m in receiver.messages() if re.search(pattern, m)), None)

        signal = wait_for(
            lambda: seen(r"surge: signal \w+"), 180, "a signal at the receiver", detail=receiver.messages
        )
        assert re.search(r"\w+USDT \+\d+\.\d\d% in 1m, volume x\d", signal), signal
        entry = wait_for(lambda: seen(r"surge: ENTER \w+"), 60, "an entry", detail=receiver.messages)
        assert re.search(r"long \S+ at \S+\nTP \S+ / SL \S+, max hold until \d\d:\d\d UTC", entry), entry
        exit_ = wait_for(lambda: seen(r"surge: EXIT \w+"), 60, "a paper exit", detail=receiver.messages)
        assert re.search(r"max_hold: PnL [+-]\d+\.\d\d USDT \([+-]\d+\.\d\d%\)", exit_), exit_
        assert bot.stop() == 0
    finally:
        bot.ensure_stopped()
    log_file = (home / "logs" / "surge.log").read_text()
    assert "notifications (entry, error, exit, signal) to json://surge:****@127.0.0.1" in log_file
    assert TOKEN not in log_file and TOKEN not in bot.log()
    assert "Traceback" not in bot.log()


def test_a_stream_outage_is_told_when_it_begins_and_when_it_ends(tmp_path: Path, receiver: Receiver) -> None:
    """The simulator's WebSocket goes mute (open, nothing sent): one message when the silence passes
    ``outage_s``, one when data flows again (after the stall, or the manager's reconnect)."""
    sim = make_simulator(["BTCUSDT"])
    home = tmp_path / "home"
    config = write_config(
        tmp_path / "surge.toml", {"notify": {"urls": [receiver.url()], "events": ["outage"], "outage_s": 3}}
    )
    bot = BotProcess(home, sim, ["BTCUSDT"], config=config)
    try:
        bot.wait_ready()
        wait_for(lambda: heartbeat(home).get("running"), 30, "a heartbeat")
        assert sim.ws.stall(10.0) >= 1
        wait_for(lambda: receiver.requests >= 2, 60, "the outage's two messages", detail=receiver.messages)
        begun, ended = receiver.messages()[:2]
        assert "surge: stream outage" in begun and re.search(
            r"no market data on surge-ws-\S+ for \d+s", begun
        )
        assert "surge: streams back" in ended and "the outage lasted" in ended
        assert bot.stop() == 0
        assert receiver.requests == 2  # one outage: two messages, not one per look
    finally:
        bot.ensure_stopped()
        sim.stop()


def test_sigterm_ends_in_time_while_a_service_hangs(
    tmp_path: Path, receiver_factory: Callable[[str], Receiver]
) -> None:
    """A service that never answers holds the notifier in a send when SIGTERM comes: the bot still
    stops cleanly within the 10 s ``surge run`` promises (the notifier's stop is bounded)."""
    hanging = receiver_factory("hang")
    sim = make_simulator([SYMBOL])
    home = tmp_path / "home"
    config = write_config(
        tmp_path / "surge.toml", {"notify": {"urls": [hanging.url()], "events": ["signal", "entry", "exit"]}}
    )
    bot = BotProcess(home, sim, [SYMBOL], config=config)
    try:
        bot.wait_ready()
        wait_for(lambda: baseline_ready(home, 1), 90, "the volume baseline")
        sim.market.inject_surge(SYMBOL, 5.0, 10.0)
        wait_for(lambda: hanging.requests >= 1, 60, "a send to the hanging service")
        started = time.monotonic()
        assert bot.stop() == 0
        assert time.monotonic() - started < 10.0  # ~4.5 s at most: the send under way, then the join
        assert "stopped" in bot.log() and TOKEN not in bot.log()
    finally:
        bot.ensure_stopped()
        sim.stop()
