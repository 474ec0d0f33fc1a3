"""``surge run`` and its home, end to end: a disk that fills up mid-run, a lock file deleted under a
running bot. Real bot processes against the in-process simulator on 127.0.0.1.

The full disk is the kernel's: ``RLIMIT_FSIZE`` lowered on the running bot (``prlimit``), so every
write past the first byte of any file fails with EFBIG (CPython ignores SIGXFSZ, so the write fails
instead of killing the process); raised again, the disk "has room". The bot must ride it out: keep
streaming, close the position it holds, enter nothing it cannot record, say so once (not per write),
then write again, and still exit 0 on SIGTERM. Its stderr is a pipe here, not a file: a file would
be full too, and the test reads what the bot says meanwhile. It is started with umask 0, so the same
run shows the home and every file in it private whatever the umask.
"""

from __future__ import annotations

import resource
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from surge.app import HEARTBEAT_EVERY_S
from surge.sim import Simulator
from tests.bot_harness import (
    BotProcess,
    baseline_ready,
    cli_json,
    heartbeat,
    make_simulator,
    positions_of,
    signals_of,
    surge_cli,
    wait_for,
    write_config,
)

A, B = "BTCUSDT", "ETHUSDT"

pytestmark = pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")


def disk_full(bot: BotProcess, full: bool) -> None:
    """The bot's disk is full (every write past a file's first byte fails) or has room again."""
    limit = 1 if full else resource.RLIM_INFINITY
    resource.prlimit(bot.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = make_simulator([A, B])
    yield simulator
    simulator.stop()


def test_a_lock_file_deleted_under_a_running_bot_never_lets_a_second_one_run(
    sim: Simulator, tmp_path: Path
) -> None:
    """A lock lives on an inode: with surge.lock deleted, a second bot would lock a new file and run
    beside the first. The first re-creates it at its next heartbeat, and a second bot starting before
    that sees the first one's fresh heartbeat: exit 3 either way, never two bots."""
    from surge.runtime import lock_holder

    home = tmp_path / "home"
    config = write_config(tmp_path / "surge.toml")
    first = BotProcess(home, sim, [A], config=config)
    try:
        first.wait_ready()
        (home / "surge.lock").unlink()
        second = surge_cli(
            home, "run", "--config", str(config), "--symbols", A, "--duration", "10", sim=sim, timeout=60
        )
        assert second.returncode == 3, second.stderr[-2000:]
        assert f"already running (pid {first.pid})" in second.stderr
        first.wait_log("was deleted or replaced: locked it again", 30)
        wait_for(lambda: lock_holder(home) == (True, first.pid), 30, "the first bot to hold surge.lock")
        (home / "surge.lock").unlink()
        wait_for(lambda: first.log().count("locked it again") == 2, 30, "the lock file re-created again")
        third = surge_cli(
            home, "run", "--config", str(config), "--symbols", A, "--duration", "10", sim=sim, timeout=60
        )
        assert third.returncode == 3 and f"already running (pid {first.pid})" in third.stderr
        assert first.proc.poll() is None
        first.signal(signal.SIGTERM)
        assert first.wait(15) == 0
    finally:
        first.ensure_stopped()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_full_disk_mid_run_is_ridden_out_and_written_again(sim: Simulator, tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = write_config(tmp_path / "surge.toml")
    bot = BotProcess(home, sim, [A, B], config=config, pipe_stderr=True, umask=0)
    try:
        bot.wait_ready(90)
        wait_for(lambda: baseline_ready(home, 2), 60, "A and B to have their volume baseline")
        sim.market.inject_surge(A, 5.0, 10.0)
        [held] = wait_for(lambda: positions_of(home, A), 60, f"a paper position on {A}")

        # umask 0 and still private: the home, the database and its WAL files, lock, heartbeat, log
        assert mode(home) == 0o700 and mode(home / "logs") == 0o700
        files = ["surge.db", "surge.db-wal", "surge.db-shm", "surge.lock", "heartbeat.json", "logs/surge.log"]
        assert {name: oct(mode(home / name)) for name in files} == dict.fromkeys(files, "0o600")

        events_before = heartbeat(home)["events"]
        disk_full(bot, True)
        full_since = time.monotonic()
        bot.wait_log("writing the heartbeat failed", 30)
        bot.wait_log("cannot write the log file", 30)
        # while full: the held position still closes (in memory; the database cannot say so yet) ...
        sim.market.inject_surge(A, 6.0, 0.0, min_quote_volume=0.0)  # above the 4 % take profit
        bot.wait_log(f"EXIT {A} take_profit", 60)
        # ... and a signal is not entered, since it could not be recorded
        sim.market.inject_surge(B, 5.0, 10.0)
        bot.wait_log(f"SIGNAL {B}", 60)
        assert bot.count("not entered: the database cannot record it") == 1
        assert bot.count("writing to the database failed") == 1
        status = cli_json(home, "status")
        assert status["running"] is True and status["pid"] == bot.pid  # alive, lock held
        [still] = positions_of(home, A)
        assert still.is_open and still.key == held.key  # the database could not take the close yet
        assert signals_of(home, B) == [] and positions_of(home, B) == []
        stale = heartbeat(home)["written_at"]
        # several heartbeats (one per HEARTBEAT_EVERY_S) must have failed for "once" to mean anything
        wait_for(lambda: time.monotonic() - full_since > 3 * HEARTBEAT_EVERY_S, 30, "three heartbeats")
        assert bot.proc.poll() is None
        # every failure said once, not at every write (a heartbeat every 2 s failed meanwhile)
        assert bot.count("writing the heartbeat failed") == 1 and bot.count("cannot write the log file") == 1
        assert "Traceback" not in bot.log()

        disk_full(bot, False)  # room again
        bot.wait_log("writing the heartbeat works again", 30)
        wait_for(lambda: heartbeat(home).get("written_at", 0) > stale, 30, "a new heartbeat")
        wait_for(lambda: not positions_of(home, A)[0].is_open, 30, "the close to be written")
        [closed] = positions_of(home, A)
        assert closed.exit_reason == "take_profit" and closed.pnl is not None and closed.pnl > 0
        bot.wait_log("the log file", 30)
        wait_for(lambda: bot.count("is written again") == 1, 30, "the log file written again")
        hb = heartbeat(home)
        assert hb["running"] is True and hb["events"] > events_before  # it kept streaming throughout
        assert time.time() - hb["last_message_at"] < 10
        assert "Traceback" not in bot.log()
        bot.signal(signal.SIGTERM)
        assert bot.wait(15) == 0, bot.log()[-2000:]
    finally:
        if bot.proc.poll() is None:
            disk_full(bot, False)  # room for the bot's last writes on its way out
        bot.ensure_stopped()
