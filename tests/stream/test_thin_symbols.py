"""Thin symbols end to end: Binance pushes a kline stream only when its candle changed, so
a symbol without a trade is silent, and a 1m candle without a trade is never pushed at all (REST
klines still return it, volume 0).

The in-process :class:`Bot` runs against the simulator in that mode (its default) with a universe of
thin symbols only, all on one connection. What a user must see: the connection is kept (no reconnect,
no gap report), quiet minutes are recorded as zero-volume candles with no REST request for them, and
the volume baselines are complete and equal to the exchange's REST truth, zeros included.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from surge.app import Bot
from surge.config import load_settings
from surge.sim import Simulator
from surge.sim.market import Market
from tests.bot_harness import MINUTE_MS, bot_env, market_clock, wait_for, write_config

N_THIN = 80  # 160 streams: still one connection (200 per connection)
GAP_S = 45.0  # mean gap between two trades: ~26 % of a symbol's minutes have none
KLINES = "/fapi/v1/klines"


@pytest.fixture
def thin_sim() -> Iterator[Simulator]:
    probe = Market(120, seed=7, surge_interval_s=None)
    chosen = probe.tradable_symbols()[:N_THIN]
    # the market minute is at its 40th second now: the bot streams from ~45 s, so the first quiet
    # minute the stream must fill (a trade before this minute ends, a minute without one, a minute
    # with trades that closes) is ~2 min 15 s away
    market = Market(
        120,
        seed=7,
        surge_interval_s=None,
        clock=market_clock(40.0),
        thin_share=0.0,
        thin=chosen,
        thin_gap_s=GAP_S,
    )
    sim = Simulator(market=market).start()  # push on change, /market route required: Binance's way
    try:
        yield sim
    finally:
        sim.stop()


def _copy(bot: Bot, symbol: str, market_minute: int) -> tuple[dict[int, float], int | None, bool]:
    """The rule's closed-candle volumes of ``symbol`` and where its stream run stands (loop running)."""

    def copy() -> tuple[tuple[dict[int, float], int | None, bool]] | None:
        try:
            st = bot.rule._state[symbol]
            # (a rule that does not follow its streams has no run: taken as one at the current minute)
            run = getattr(st, "stream_open", market_minute)
            return ((dict(st.volumes), run, getattr(st, "stream_closed", False)),)
        except (RuntimeError, KeyError):  # changed size during the copy / not there yet
            return None

    return wait_for(copy, 5, f"rule state of {symbol}", every=0.01)[0]


def _quiet_minutes_filled(
    bot: Bot, market: Market, symbols: list[str], backfills: dict[str, list[float]]
) -> list[tuple[str, int]]:
    """(symbol, open time) of quiet minutes the bot recorded as volume 0 from its stream alone
    (after its last REST backfill) and followed by a candle that has closed since: the moment the
    program surge replaced, finding the minute missing from the baseline, asked REST for it again."""
    now = market.now_ms()
    found = []
    for sym in symbols:
        volumes, run, closed = _copy(bot, sym, now // MINUTE_MS * MINUTE_MS)
        if run is None:
            continue
        last_rest = max(backfills[sym], default=now)
        for t, v in volumes.items():
            if v == 0.0 and t > last_rest and t < run and closed:
                found.append((sym, t))
    return found


def _check_baselines(
    bot: Bot, market: Market, symbols: list[str], filled: list[tuple[str, int]], minute: int
) -> tuple[int, int]:
    """Every recorded 1m volume equals REST's truth. Returns (symbols whose baseline is complete,
    quiet minutes filled with a true 0)."""
    complete = 0
    zeros = 0
    for sym in symbols:
        volumes, run, closed = _copy(bot, sym, minute)
        truth = {
            k.open_time: k.volume
            for k in market.klines(sym, "1m", limit=30, now_ms=market.now_ms())
            if k.closed
        }
        for t, v in volumes.items():
            assert v == pytest.approx(truth[t], rel=1e-9), (sym, t, v, truth[t])
        zeros += sum(1 for s, t in filled if s == sym and truth[t] == 0.0 and volumes.get(t) == 0.0)
        if run is not None and sym not in bot._backfill_pending and not bot.rule.missing(sym, minute):
            complete += 1
    return complete, zeros


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_thin_symbols_keep_their_connection_and_quiet_minutes_need_no_rest(
    thin_sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sim, market = thin_sim, thin_sim.market
    symbols = market.thin_symbols()
    assert len(symbols) == N_THIN
    for key, value in bot_env(tmp_path / "home", sim).items():
        monkeypatch.setenv(key, value)
    config = write_config(
        tmp_path / "surge.toml",
        {
            # every symbol passes (1m streams for all), and no 4h rescan pollutes the REST count
            "filter_4h": {
                "min_change_pct": -100.0,
                "max_change_pct": 1000.0,
                "min_quote_volume": 0.0,
                "refresh_s": 86_400,
            },
        },
    )
    bot = Bot(load_settings(config_path=config), symbols=symbols)
    # which symbols each 1m backfill asked for, and the simulator's kline count before the first
    backfills: dict[str, list[float]] = defaultdict(list)
    rest_before: list[int] = []
    submit = bot._submit_backfill

    def recording(syms: list[str]) -> None:
        if syms and not rest_before:
            rest_before.append(sim.rest.stats()["by_path"].get(KLINES, 0))
        for s in syms:
            backfills[s].append(market.now_ms())
        submit(syms)

    bot._submit_backfill = recording  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG, logger="surge")
    thread = threading.Thread(target=bot.run, name="test-bot-thin", daemon=True)
    thread.start()

    def quiet_minute_filled() -> list[tuple[str, int]]:
        return _quiet_minutes_filled(bot, market, symbols, backfills)

    try:
        wait_for(lambda: bot.ready_at is not None, 60, "the bot to be ready")
        assert bot.manager is not None
        assert bot.manager.stats()["connections"] == 1  # one connection of thin symbols only
        filled = wait_for(
            quiet_minute_filled,
            240,
            "a quiet minute filled from the stream",
            every=0.5,
            detail=lambda: (bot.manager.stats() if bot.manager else None, dict(backfills)),
        )
        now = market.now_ms()
        minute = now // MINUTE_MS * MINUTE_MS
        stats = bot.manager.stats()
        assert stats["reconnects"] == 0 and stats["gaps"] == 0, stats
        assert stats["connect_attempts"] == 1
        ws = sim.ws.stats()
        assert not ws["closed_connections"], ws["closed_connections"]
        messages = [r.getMessage() for r in caplog.records]
        assert not [m for m in messages if "stream gap" in m or "connection lost" in m]
        # REST: one 1m backfill per symbol at the start, at most one more for a symbol whose stream
        # started after a silent first minute (the minutes before a stream's first candle are
        # unknown); nothing for quiet minutes, and nothing else asked for klines meanwhile
        assert all(len(times) <= 2 for times in backfills.values()), dict(backfills)
        for sym, t in filled:
            assert all(b < t for b in backfills[sym]), (sym, t, backfills[sym])
        wait_for(
            lambda: (
                sim.rest.stats()["by_path"].get(KLINES, 0) - rest_before[0]
                == sum(len(times) for times in backfills.values())
            ),
            30,
            "the simulator to have answered exactly the backfills the bot asked for",
        )
        # the baselines: complete for every symbol whose stream runs, equal to REST's truth
        complete, zeros = _check_baselines(bot, market, symbols, filled, minute)
        assert zeros == len(filled) >= 1
        assert complete >= N_THIN // 2, complete
        assert thread.is_alive()
    finally:
        bot.request_stop()
        thread.join(15)
    assert not thread.is_alive()
