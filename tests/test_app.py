"""``surge run`` end to end: the bot as a real ``python -m surge run`` process against an
in-process simulator on 127.0.0.1, or an in-process :class:`Bot` where the test must look inside it.

Every wait is a poll with a deadline (``wait_for``), never a bare sleep; deadlines are generous
(a loaded 2-core machine), and each test returns as soon as its condition holds. The simulator has
no periodic surges and exactly the symbols a test names pass its 4h filter (``arrange_4h``), so every
signal is one a test injected.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import surge.app as app_module
from surge.app import Bot
from surge.config import Settings, load_settings
from surge.models import Kline
from surge.runtime import InstanceLock
from surge.sim import Simulator
from tests.bot_harness import (
    MINUTE_MS,
    BotProcess,
    baseline_ready,
    bot_env,
    cli_json,
    free_port,
    heartbeat,
    make_simulator,
    positions_of,
    signals_of,
    surge_cli,
    wait_for,
    write_config,
)

A, B, FAILS = "BTCUSDT", "ETHUSDT", "XRPUSDT"  # A and B pass the 4h filter, FAILS does not
RISES = "LTCUSDT"  # the trading bot's take profit
STOPPED = "AVAXUSDT"  # SIGTERM with this one open
HELD = "SOLUSDT"  # kill -9 with this one open
DROP_1, DROP_2 = "DOGEUSDT", "BNBUSDT"  # dropped connections (in-process bot)
PASSING = [A, B, STOPPED, HELD, DROP_1, DROP_2]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """The simulator of the tests that start their own bot: each test injects into its own symbols."""
    simulator = make_simulator(PASSING)
    yield simulator
    simulator.stop()


@pytest.fixture(scope="module")
def trading_sim() -> Iterator[Simulator]:
    """The trading bot's own simulator: what the other tests do to theirs (dropped connections,
    latency, counted requests) never reaches it, nor its requests their counts."""
    simulator = make_simulator([A, B, RISES])
    yield simulator
    simulator.stop()


@pytest.fixture(scope="module")
def trading(trading_sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotProcess]:
    """One bot for the tests of entries and exits, started once (a start and a volume baseline take
    a while). Each of those tests trades its own symbol, so they pass alone and in any order."""
    root = tmp_path_factory.mktemp("run")
    home = root / "home"
    bot = BotProcess(home, trading_sim, [A, B, RISES, FAILS], config=write_config(root / "surge.toml"))
    try:
        bot.wait_ready()
        wait_for(lambda: baseline_ready(home, 3), 60, "A, B and RISES to have their volume baseline")
        yield bot
    finally:
        bot.ensure_stopped()


@pytest.fixture
def fresh(sim: Simulator, tmp_path: Path) -> Iterator[BotProcess]:
    """A bot of the test's own on A, B and FAILS, ready, with nothing signalled yet."""
    home = tmp_path / "home"
    bot = BotProcess(home, sim, [A, B, FAILS], config=write_config(tmp_path / "surge.toml"))
    try:
        bot.wait_ready()
        yield bot
    finally:
        bot.ensure_stopped()


def test_status_shows_running_while_it_runs(fresh: BotProcess) -> None:
    # the heartbeat is a snapshot every 2 s: on a loaded machine a connection may be between a
    # reconnect and its next heartbeat, so wait for a snapshot with the streams flowing
    status = wait_for(
        lambda: (st := cli_json(fresh.home, "status"))["connections"] >= 1 and st["streams"] == 5 and st,
        60,
        "surge status to show the streams flowing",
    )
    assert status["running"] is True
    assert status["pid"] == fresh.pid
    assert status["connections"] >= 1
    assert status["streams"] == 5  # kline_4h of A, B, FAILS and kline_1m of A and B only
    assert status["threads"] >= 3
    assert status["signals"] == 0 and status["open_positions"] == 0


def test_second_instance_exits_3_naming_the_holder(trading: BotProcess, trading_sim: Simulator) -> None:
    config = trading.home.parent / "surge.toml"
    proc = surge_cli(trading.home, "run", "--config", str(config), "--symbols", A, sim=trading_sim)
    assert proc.returncode == 3, proc.stderr
    assert f"already running (pid {trading.pid})" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert trading.proc.poll() is None  # the first one is untouched


def test_surge_on_failing_symbol_gives_nothing_and_on_passing_one_exactly_one_entry(
    trading: BotProcess, trading_sim: Simulator
) -> None:
    trading_sim.market.inject_surge(FAILS, 5.0, 10.0)  # first, so it has had longer than A's to show up
    trading_sim.market.inject_surge(A, 5.0, 10.0)
    wait_for(lambda: positions_of(trading.home, A), 60, f"a paper position on {A}")
    # the surge candle keeps qualifying for the rest of its minute: still one signal, one position
    wait_for(
        lambda: heartbeat(trading.home).get("written_at", 0) > time.time() - 0.5, 10, "a fresh heartbeat"
    )
    [sig] = signals_of(trading.home, A)
    [pos] = positions_of(trading.home, A)
    assert sig.entered and pos.key == sig.signal.key and pos.is_open
    assert sig.signal.change_pct >= 3.0 and sig.signal.volume_multiple >= 3.0
    assert pos.entry_price > sig.signal.price  # slippage against us
    assert signals_of(trading.home, FAILS) == [] and positions_of(trading.home, FAILS) == []
    assert f"SIGNAL {A}" in trading.log() and f"SIGNAL {FAILS}" not in trading.log()
    listed = [s["symbol"] for s in cli_json(trading.home, "signals")]
    assert [s for s in listed if s in (A, FAILS)] == [A]  # the other tests' symbols may be listed too


def test_position_closes_by_take_profit_when_the_price_rises(
    trading: BotProcess, trading_sim: Simulator
) -> None:
    trading_sim.market.inject_surge(RISES, 5.0, 10.0)
    [pos] = wait_for(lambda: positions_of(trading.home, RISES), 60, f"a paper position on {RISES}")
    assert pos.is_open
    trading_sim.market.inject_surge(RISES, 6.0, 0.0, min_quote_volume=0.0)  # above the 4 % take profit
    closed = wait_for(
        lambda: [p for p in positions_of(trading.home, RISES) if not p.is_open], 60, f"{RISES} to close"
    )
    [p] = closed
    assert p.exit_reason == "take_profit" and p.key == pos.key
    assert p.exit_price >= pos.take_profit * (1 - 0.001)  # exits on the last price, minus slippage
    assert p.pnl is not None and p.pnl > 0
    assert len(signals_of(trading.home, RISES)) == 1 and len(positions_of(trading.home, RISES)) == 1
    everything = cli_json(trading.home, "positions", "--all")
    assert {(x["symbol"], x["exit_reason"]) for x in everything if x["symbol"] == RISES} == {
        (RISES, "take_profit")
    }


def test_position_closes_by_stop_loss_when_the_price_falls(
    trading: BotProcess, trading_sim: Simulator
) -> None:
    trading_sim.market.inject_surge(B, 5.0, 10.0)
    [pos] = wait_for(lambda: positions_of(trading.home, B), 60, f"a paper position on {B}")
    trading_sim.market.inject_surge(B, -5.0, 0.0, min_quote_volume=0.0)  # below the 2.5 % stop loss
    [p] = wait_for(lambda: [p for p in positions_of(trading.home, B) if not p.is_open], 60, f"{B} to close")
    assert p.exit_reason == "stop_loss" and p.key == pos.key
    assert p.pnl is not None and p.pnl < 0
    assert len(signals_of(trading.home, B)) == 1
    everything = cli_json(trading.home, "positions", "--all")
    assert {(x["symbol"], x["exit_reason"]) for x in everything if x["symbol"] == B} == {(B, "stop_loss")}


def test_sigterm_with_an_open_position_exits_0_within_10_s_and_releases_the_lock(
    sim: Simulator, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    bot = BotProcess(home, sim, [STOPPED], config=write_config(tmp_path / "surge.toml"))
    try:
        bot.wait_ready()
        wait_for(lambda: baseline_ready(home, 1), 60, f"{STOPPED}'s volume baseline")
        sim.market.inject_surge(STOPPED, 5.0, 10.0)
        wait_for(lambda: positions_of(home, STOPPED), 60, f"a paper position on {STOPPED}")
        t0 = time.monotonic()
        bot.signal(signal.SIGTERM)
        assert bot.wait(10) == 0, bot.log()[-2000:]
        assert time.monotonic() - t0 <= 10.0
    finally:
        bot.ensure_stopped()
    status = cli_json(home, "status")
    assert status["running"] is False and status["pid"] is None
    assert heartbeat(home)["running"] is False
    with InstanceLock(home):  # the lock is free
        pass
    assert "Traceback" not in bot.log()


def test_sigterm_during_a_slow_start_exits_0_within_10_s(sim: Simulator, tmp_path: Path) -> None:
    """A cold 4h scan at Binance-like latency takes half a minute: a stop must not wait for it."""
    home = tmp_path / "home"
    sim.rest.set_latency(1000)  # 40 symbols / 3 workers: a scan of ~14 s
    try:
        bot = BotProcess(home, sim, [], config=write_config(tmp_path / "surge.toml"))
        try:
            bot.wait_log("scanning the universe")
            t0 = time.monotonic()
            bot.signal(signal.SIGTERM)
            assert bot.wait(10) == 0, bot.log()[-2000:]
            assert time.monotonic() - t0 <= 10.0
            assert "ready in" not in bot.log() and "Traceback" not in bot.log()
        finally:
            bot.ensure_stopped()
    finally:
        sim.rest.set_latency(0)
    assert cli_json(home, "status")["running"] is False
    with InstanceLock(home):
        pass


def test_sigterm_while_a_long_backfill_runs_exits_0_within_10_s(tmp_path: Path) -> None:
    """A housekeeping job still running at a stop (here the gap backfill of 40 symbols at 2 s a
    request, ~30 s of work) must not hold the exit: its remaining requests are never sent."""
    everything = {"filter_4h": {"min_change_pct": -100.0, "max_change_pct": 1000.0, "min_quote_volume": 0.0}}
    own = make_simulator([])
    try:
        home = tmp_path / "home"
        bot = BotProcess(home, own, [], config=write_config(tmp_path / "surge.toml", everything))
        try:
            bot.wait_ready()
            wait_for(lambda: baseline_ready(home, 40), 90, "every volume baseline")
            own.rest.set_latency(2000)
            assert own.ws.drop_all() >= 1
            bot.wait_log("backfilling")
            wait_for(lambda: own.rest.stats()["in_flight"] > 0, 30, "the backfill's requests")
            t0 = time.monotonic()
            bot.signal(signal.SIGTERM)
            assert bot.wait(10) == 0, bot.log()[-2000:]
            assert time.monotonic() - t0 <= 10.0
            assert "Traceback" not in bot.log()
        finally:
            bot.ensure_stopped()
    finally:
        own.stop()
    with InstanceLock(home):
        pass


# --------------------------------------------------------------------------- crash and restart


def test_kill_9_with_an_open_position_restart_resumes_it_and_exits_by_max_hold(
    sim: Simulator, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    config = write_config(tmp_path / "surge.toml", {"trade": {"max_hold_s": 15}})
    first = BotProcess(home, sim, [HELD], config=config)
    try:
        first.wait_ready()
        wait_for(lambda: baseline_ready(home, 1), 60, f"{HELD}'s volume baseline")
        sim.market.inject_surge(HELD, 5.0, 10.0)
        [pos] = wait_for(lambda: positions_of(home, HELD), 60, f"a paper position on {HELD}")
    finally:
        first.kill()  # kill -9: no shutdown path runs
    assert first.proc.returncode == -signal.SIGKILL
    status = cli_json(home, "status")
    assert status["running"] is False and status["open_positions"] == 1  # the kernel released the lock

    second = BotProcess(home, sim, [HELD], config=config)
    try:
        second.wait_log(f"resuming 1 open position(s): {HELD}")
        second.wait_ready()
        [still] = positions_of(home, HELD)
        assert still.is_open or still.exit_reason == "max_hold"
        [p] = wait_for(lambda: [p for p in positions_of(home, HELD) if not p.is_open], 90, f"{HELD} to close")
        assert p.key == pos.key and p.exit_reason == "max_hold"
        assert p.exit_time is not None and p.exit_time >= pos.deadline
        # the surge candle may still qualify after the restart: the restored cooldown and the signal's
        # key keep it from entering twice
        assert len(signals_of(home, HELD)) == 1 and len(positions_of(home, HELD)) == 1
        second.signal(signal.SIGTERM)
        assert second.wait(10) == 0
    finally:
        second.ensure_stopped()


# --------------------------------------------------------------------------- dropped connections


def _volumes(bot: Bot, symbol: str) -> dict[int, float]:
    """A copy of the rule's closed-candle volumes of ``symbol`` (taken while the loop runs)."""

    def copy() -> tuple[dict[int, float]] | None:  # a 1-tuple: an empty copy is a result too
        try:
            return (dict(bot.rule._state[symbol].volumes),)
        except (RuntimeError, KeyError):  # changed size during the copy / not there yet
            return None

    return wait_for(copy, 1, f"volume state for {symbol}", every=0.01)[0]


def _inside(bot: Bot, sim: Simulator) -> str:
    """What a failed wait on the in-process bot needs to be understood without a rerun."""
    minute = bot.now_ms() // MINUTE_MS * MINUTE_MS
    keeper = bot.housekeeper
    return (
        f"heartbeat={heartbeat(bot.settings.home)} passing={sorted(bot.passing)} "
        f"missing={ {s: bot.rule.missing(s, minute) for s in sorted(bot.passing)} } "
        f"backfills={bot.backfills} pending={sorted(bot._backfill_pending)} "
        f"retry={sorted(bot._backfill_retry)} "
        f"housekeeper_busy={keeper.busy if keeper else None} "
        f"limiter_waiting={bot.rest.limiter.waiting if bot.rest else None} "
        f"exchange_minus_bot_ms={sim.market.now_ms() - bot.now_ms()} "
        f"rest_by_path={sim.rest.stats()['by_path']} "
        f"threads={sorted(t.name for t in threading.enumerate())}"
    )


def test_dropped_connections_backfill_and_the_volume_baseline_stays_right(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for key, value in bot_env(tmp_path / "home", sim).items():
        monkeypatch.setenv(key, value)
    settings = load_settings(config_path=write_config(tmp_path / "surge.toml"))
    bot = Bot(settings, symbols=[DROP_1, DROP_2])
    caplog.set_level(logging.INFO, logger="surge")
    thread = threading.Thread(target=bot.run, name="test-bot", daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: bot.ready_at is not None and heartbeat(tmp_path / "home").get("baseline_ready") == 2,
            60,
            "the bot to be ready with both baselines",
            detail=lambda: _inside(bot, sim),
        )
        assert bot.manager is not None
        assert bot.manager.tuning.decode_last == ("4h",)  # 1m frames of a chunk decoded first
        assert bot.start_scan is None  # the start's verdicts do not outlive the loop's start
        for round_ in (1, 2, 3):
            gaps, backfills = bot.manager.stats()["gaps"], bot.backfills
            klines_before = sim.rest.stats()["by_path"].get("/fapi/v1/klines", 0)
            assert sim.ws.drop_all() >= 1
            wait_for(
                lambda: bot.manager.stats()["gaps"] > gaps,  # noqa: B023 - called before the loop goes on
                60,
                f"the gap of drop {round_}",
                detail=lambda: _inside(bot, sim),
            )
            wait_for(
                lambda: bot.backfills >= backfills + 2,  # noqa: B023 - called before the loop goes on
                60,
                f"the backfill after drop {round_}",
                detail=lambda: _inside(bot, sim),
            )
            assert sim.rest.stats()["by_path"].get("/fapi/v1/klines", 0) >= klines_before + 2
        wait_for(lambda: bot.manager.stats()["connections"] >= 1, 30, "a connection again")
        now = sim.market.now_ms()
        minute = now // MINUTE_MS * MINUTE_MS
        for sym in (DROP_1, DROP_2):
            volumes = _volumes(bot, sym)
            lookback = settings.surge.volume_lookback
            wanted = [minute - i * MINUTE_MS for i in range(lookback, 0, -1)]

            def complete(s: str = sym, w: list[int] = wanted) -> bool:
                return all(t in _volumes(bot, s) for t in w)

            wait_for(complete, 60, f"{sym}'s baseline to be complete", detail=lambda: _inside(bot, sim))
            volumes = _volumes(bot, sym)
            history = sim.market.klines(sym, "1m", limit=lookback + 2, now_ms=now)
            truth = {k.open_time: k.volume for k in history if k.open_time < minute}
            for t in wanted:
                assert volumes[t] == pytest.approx(truth[t], rel=1e-9), (sym, t)
        assert bot.signals_seen == 0  # no spurious surge from a hole or a double-counted candle
        messages = [r.getMessage() for r in caplog.records]
        assert any("stream gap on" in m and "backfilling" in m for m in messages)
        assert thread.is_alive()
    finally:
        bot.request_stop()
        thread.join(15)
    assert not thread.is_alive()


def test_the_hourly_universe_refresh_reads_exchange_info_once_and_scans_only_what_the_streams_cannot_tell(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kline_4h streams keep every verdict current: the hourly refresh is one exchangeInfo (who is
    listed), and a 4h scan only of symbols no stream event has told about since the 4h boundary."""
    for key, value in bot_env(tmp_path / "home", sim).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(app_module, "UNIVERSE_REFRESH_S", 0.5)
    settings = load_settings(config_path=write_config(tmp_path / "surge.toml"))
    bot = Bot(settings, symbols=[DROP_1, DROP_2, FAILS])
    scans: list[list[str] | None] = []
    real_scan = bot._scan

    def counted_scan(symbols: list[str] | None, info: dict | None = None) -> object:
        scans.append(None if symbols is None else list(symbols))
        return real_scan(symbols, info)

    monkeypatch.setattr(bot, "_scan", counted_scan)
    stale: set[str] = set()
    real_stale = bot.live4h.stale
    monkeypatch.setattr(bot.live4h, "stale", lambda symbols, now_ms: real_stale(symbols, now_ms) | stale)
    thread = threading.Thread(target=bot.run, name="test-bot", daemon=True)
    thread.start()
    try:
        inside = lambda: _inside(bot, sim)  # noqa: E731
        wait_for(lambda: bot.ready_at is not None, 60, "the bot to be ready", detail=inside)
        assert scans == [None]  # the start's scan

        def infos_since(mark: int) -> int:
            return sum(1 for _, path, _ in sim.rest.arrivals()[mark:] if path == "/fapi/v1/exchangeInfo")

        mark = len(sim.rest.arrivals())
        wait_for(lambda: infos_since(mark) >= 3, 60, "three universe refreshes", detail=inside)
        asked = {path for _, path, _ in sim.rest.arrivals()[mark:]}
        assert scans == [None], scans  # every symbol's 4h candle came on its stream: nothing to scan
        assert not any("ticker" in path for path in asked), asked  # no full warm scan behind its back

        stale.add(DROP_1)  # as if no trade of DROP_1 since the boundary: only REST can say
        wait_for(lambda: [DROP_1] in scans, 60, "a scan of the stale symbol", detail=inside)
        assert all(s == [DROP_1] for s in scans[1:]), scans
        assert thread.is_alive()
    finally:
        bot.request_stop()
        thread.join(15)
    assert not thread.is_alive()


# --------------------------------------------------------------------------- an outage


def test_an_outage_across_a_minute_close_is_ridden_out_and_the_hole_backfilled(tmp_path: Path) -> None:
    """REST failing and the WebSocket server gone while a 1m candle closes: the bot stays up, reconnects
    when the server is back, keeps re-asking for the missed candle until REST answers, and ends with a
    complete volume baseline."""
    symbols = ["ADAUSDT", "LINKUSDT"]
    ws_port = free_port()
    sim = make_simulator(symbols, minute_second=42.0, ws_port=ws_port)
    home = tmp_path / "home"
    bot = BotProcess(home, sim, symbols, config=write_config(tmp_path / "surge.toml"))
    try:
        bot.wait_ready()
        wait_for(lambda: baseline_ready(home, 2), 60, "both baselines")
        hb0 = heartbeat(home)
        sim.rest.error_next(1_000_000, 503)
        sim.ws.stop()  # connections refused from now on
        down_at = sim.market.now_ms()
        close_ms = (down_at // MINUTE_MS + 1) * MINUTE_MS  # a 1m candle closes during the outage
        wait_for(
            lambda: sim.market.now_ms() >= close_ms + 3000, 90, "a minute close during the outage", every=0.25
        )
        assert bot.proc.poll() is None
        sim.ws.start()  # same port
        assert sim.ws.port == ws_port
        bot.wait_log("trying again in", 90)  # the backfill after the gap met the REST outage
        assert bot.proc.poll() is None
        sim.rest.clear_faults()
        wait_for(
            lambda: baseline_ready(home, 2) and heartbeat(home).get("connections", 0) >= 1,
            90,
            "reconnected with the missed candle backfilled",
        )
        hb = heartbeat(home)
        assert hb["reconnects"] > hb0["reconnects"] and hb["gaps"] > hb0["gaps"]
        assert hb["backfill_pending"] == 0
        assert signals_of(home) == []
        log = bot.log()
        assert "stream gap on" in log and "trying again in" in log
        assert "Traceback" not in log
        bot.signal(signal.SIGTERM)
        assert bot.wait(10) == 0
    finally:
        bot.ensure_stopped()
        sim.stop()


def test_exchange_clock_offset_is_taken_when_the_scan_starts(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold scan takes long (here ~2 s; 28 s for 531 symbols at 147 ms): the exchange's clock must be
    compared with ours at the scan's first request, or "is this candle closed" and max hold lag."""
    for key, value in bot_env(tmp_path / "home", sim).items():
        monkeypatch.setenv(key, value)
    settings = load_settings(config_path=write_config(tmp_path / "surge.toml", {"filter_4h": {"workers": 1}}))
    bot = Bot(settings, symbols=[A, B, FAILS, HELD])
    sim.rest.set_latency(400)
    thread = threading.Thread(target=bot.run, name="test-bot-offset", daemon=True)
    thread.start()
    try:
        wait_for(lambda: bot.ready_at is not None, 60, "the bot to be ready")
        expected = sim.market.now_ms() - int(time.time() * 1000)
        assert abs(bot.clock_offset_ms - expected) < 1000, (bot.clock_offset_ms, expected)
    finally:
        sim.rest.set_latency(0)
        bot.request_stop()
        thread.join(30)
    assert not thread.is_alive()


def test_decisions_are_stamped_once_a_chunk_and_before_acting_on_a_signal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision latency of a chunk's 1m updates is taken with one clock read after the chunk
    (not one per update), and before an entry is acted on, so the entry's own time is not counted
    in the latency of the decisions before it; 4h updates and symbols outside the filter are no
    decisions."""
    bot = Bot(Settings(home=tmp_path))
    bot.passing = {"AUSDT", "BUSDT", "DUSDT"}
    reads: list[float] = []

    def wall() -> float:
        reads.append(2.0 + len(reads) * 0.001)  # seconds: 2,000 ms, then 2,001 ms
        return reads[-1]

    entries: list[int] = []
    monkeypatch.setattr(bot, "_wall", wall)
    monkeypatch.setattr(bot.rule, "on_kline", lambda k: "signal" if k.symbol == "BUSDT" else None)
    monkeypatch.setattr(bot.trades, "on_signal", lambda _signal: entries.append(bot.latency.total))

    def kline(symbol: str, interval: str = "1m") -> Kline:
        return Kline(symbol, interval, 0, 59_999, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1, False, 1_997)

    bot._on_klines([kline("AUSDT"), kline("AUSDT", "4h"), kline("CUSDT")])
    assert (len(reads), bot.latency.total, list(bot.latency.since(0)[0])) == (1, 1, [3.0])
    bot._on_klines([kline("AUSDT"), kline("BUSDT"), kline("DUSDT")])
    assert entries == [3]  # A and B stamped before B's entry, D after it
    assert len(reads) == 3 and bot.latency.total == 4
    assert list(bot.latency.since(1)[0]) == pytest.approx([4.0, 4.0, 5.0])
    bot._on_klines([kline("CUSDT"), kline("DUSDT", "4h")])
    assert len(reads) == 3  # nothing decided: no clock read
