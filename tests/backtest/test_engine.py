"""The backtest's semantics on hand-built series with planted surges, each trade computed by hand.

The background is a flat market at 100 (a 0.2 % range, volume 10, quote volume 1,000 a minute)
starting on a 4h boundary, so the surges planted after minute 240 have a closed 4h candle before
them (quote volume 240,000). A surge candle goes from 100 to 104 on volume 100 (ten times the
baseline); after it the price idles at 104, inside the stop (103.06) and the target (106.19).
"""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from surge.backtest.engine import NoHistory, backtest_candles, portfolio, run_backtest
from surge.backtest.trades import END_OF_DATA, MAX_HOLD, STOP_LOSS, TAKE_PROFIT, Trade
from surge.config import Filter4hSettings, Settings, SurgeSettings, TradeSettings
from surge.history.store import HistoryStore
from tests.backtest.candles import T0, Row, build, flat

MIN = 60_000
SLIP, FEE, USDT = 0.001, 0.0005, 100.0
SURGE: Row = (100.0, 104.0, 100.0, 104.0, 100.0, 10_400.0)

SETTINGS = Settings(
    surge=SurgeSettings(
        min_change_pct=3.0, volume_multiple=3.0, volume_lookback=5, min_quote_volume=1000.0, cooldown_s=600.0
    ),
    filter_4h=Filter4hSettings(min_change_pct=-50.0, max_change_pct=50.0, min_quote_volume=100_000.0),
    trade=TradeSettings(
        position_usdt=USDT,
        take_profit_pct=2.0,
        stop_loss_pct=1.0,
        max_hold_s=600.0,
        max_open_positions=5,
        slippage_pct=SLIP * 100,
        taker_fee_pct=FEE * 100,
    ),
)


def close_ms(minute: int) -> int:
    return T0 + minute * MIN + MIN - 1


def by_hand(
    symbol: str, signal: int, close: float, exit_minute: int, reason: str, price: float = 0.0
) -> Trade:
    """The trade of a surge closing at ``close`` in minute ``signal``: entry = close + slippage, the
    trigger (the target, the stop, or ``price``, a close) - slippage at exit, the fee on both sides."""
    entry = close * (1 + SLIP)
    qty = USDT / entry
    trigger = {TAKE_PROFIT: entry * 1.02, STOP_LOSS: entry * 0.99}.get(reason, price)
    exit_price = trigger * (1 - SLIP)
    fees = USDT * FEE + exit_price * qty * FEE
    pnl = (exit_price - entry) * qty - fees
    return Trade(
        symbol,
        close_ms(signal),
        close_ms(signal),
        entry,
        qty,
        close_ms(exit_minute),
        exit_price,
        reason,
        fees,
        pnl,
    )


def assert_trades(actual: list[Trade], expected: list[Trade]) -> None:
    assert [(t.symbol, t.signal_time, t.exit_reason, t.exit_time) for t in actual] == [
        (t.symbol, t.signal_time, t.exit_reason, t.exit_time) for t in expected
    ]
    for got, want in zip(actual, expected, strict=True):
        for f in fields(Trade):
            value, wanted = getattr(got, f.name), getattr(want, f.name)
            if isinstance(wanted, float):
                assert value == pytest.approx(wanted, rel=1e-12), f.name
            else:
                assert value == wanted, f.name


def surged(after: list[Row], quiet: int = 250) -> list[Row]:
    return [*flat(100.0, quiet), SURGE, *after]


def run(*series, settings: Settings = SETTINGS) -> list[Trade]:
    return backtest_candles([build(sym, rows) for sym, rows in series], settings).trades


def test_take_profit_when_the_high_reaches_the_target() -> None:
    rows = surged([*flat(104.0, 2), (104.0, 107.0, 104.0, 106.5, 10.0, 1000.0), *flat(106.5, 20)])
    assert_trades(run(("ABCUSDT", rows)), [by_hand("ABCUSDT", 250, 104.0, 253, TAKE_PROFIT)])


def test_stop_loss_when_the_low_reaches_the_stop() -> None:
    rows = surged([*flat(104.0, 1), (104.0, 104.0, 103.0, 103.5, 10.0, 1000.0), *flat(103.5, 20)])
    assert_trades(run(("ABCUSDT", rows)), [by_hand("ABCUSDT", 250, 104.0, 252, STOP_LOSS)])


def test_a_candle_touching_both_counts_as_the_stop() -> None:
    rows = surged([(104.0, 107.0, 103.0, 104.0, 10.0, 1000.0), *flat(104.0, 20)])
    assert_trades(run(("ABCUSDT", rows)), [by_hand("ABCUSDT", 250, 104.0, 251, STOP_LOSS)])


def test_the_surge_candle_itself_never_exits() -> None:
    """Its low (100) is below the stop, but it printed before the entry at its close."""
    rows = surged(flat(104.0, 3))
    assert [t.exit_reason for t in run(("ABCUSDT", rows))] == [END_OF_DATA]


def test_max_hold_at_the_close_of_the_candle_the_deadline_falls_in() -> None:
    # deadline = the surge's close + 600 s = the close of minute 260
    rows = surged(flat(104.0, 30))
    assert_trades(run(("ABCUSDT", rows)), [by_hand("ABCUSDT", 250, 104.0, 260, MAX_HOLD, price=104.0)])


def test_max_hold_when_the_deadline_minute_has_no_candle() -> None:
    rows = surged([*flat(104.0, 9), None, (104.0, 104.5, 103.9, 104.4, 10.0, 1000.0), *flat(104.4, 5)])
    assert_trades(run(("ABCUSDT", rows)), [by_hand("ABCUSDT", 250, 104.0, 261, MAX_HOLD, price=104.4)])


def test_end_of_data_closes_at_the_last_close() -> None:
    rows = surged([*flat(104.0, 2), (104.0, 104.5, 103.9, 104.2, 10.0, 1000.0)])
    assert_trades(run(("ABCUSDT", rows)), [by_hand("ABCUSDT", 250, 104.0, 253, END_OF_DATA, price=104.2)])


def test_cooldown_runs_on_signal_times_and_ends_exactly_after_cooldown_s() -> None:
    stop: Row = (104.0, 104.0, 100.0, 100.0, 10.0, 1000.0)
    rows = surged(
        [*flat(104.0, 2), stop, *flat(100.0, 1), SURGE, stop, *flat(100.0, 3), SURGE, *flat(104.0, 3)]
    )
    # surges at 250, 255 (5 min later: cooling down) and 260 (600 s after 250: allowed)
    trades = run(("ABCUSDT", rows))
    assert_trades(
        trades,
        [
            by_hand("ABCUSDT", 250, 104.0, 253, STOP_LOSS),
            by_hand("ABCUSDT", 260, 104.0, 263, END_OF_DATA, price=104.0),
        ],
    )


def test_a_symbol_failing_the_4h_filter_does_not_trade() -> None:
    thin = [*flat(100.0, 250, quote_volume=100.0), SURGE, *flat(104.0, 5)]  # closed 4h: 24,000 < 100,000
    trades = run(("THINUSDT", thin), ("FATUSDT", surged(flat(104.0, 5))))
    assert [t.symbol for t in trades] == ["FATUSDT"]
    strict = replace(SETTINGS, filter_4h=replace(SETTINGS.filter_4h, max_change_pct=3.0))
    assert run(("FATUSDT", surged(flat(104.0, 5))), settings=strict) == []  # the 4h candle is up 4 % > 3 %


def test_no_signal_without_a_closed_4h_candle_before_it() -> None:
    """A surge in the data's first 4h window: the previous 4h candle is unknown, the filter fails."""
    assert run(("ABCUSDT", surged(flat(104.0, 5), quiet=100))) == []


def test_a_4h_fail_starts_no_cooldown() -> None:
    """The first surge is in a 4h window whose previous 4h candle is thin (it fails the filter); the
    second, 5 minutes later in the next window, passes: a cooldown from the first would block it."""
    rows = [*flat(100.0, 240, quote_volume=100.0), *flat(100.0, 236, quote_volume=1000.0), SURGE]
    rows += [
        *flat(104.0, 2),
        (104.0, 104.0, 100.0, 100.0, 10.0, 1000.0),
        *flat(100.0, 1),
        SURGE,
        *flat(104.0, 2),
    ]
    # surges at 476 (window 1, previous window thin: fails) and 481 (window 2: previous is 240,000)
    trades = run(("ABCUSDT", rows))
    assert [(t.signal_time, t.exit_reason) for t in trades] == [(close_ms(481), END_OF_DATA)]


def test_max_open_positions_in_time_order_ties_by_symbol_and_a_freed_slot_is_free_at_once() -> None:
    stop: Row = (104.0, 104.0, 103.0, 103.5, 10.0, 1000.0)
    a = surged([*flat(104.0, 2), stop, *flat(103.5, 15)])  # 250 -> stop at 253
    b = surged(flat(104.0, 18))  # 250 -> max hold at 260
    c = [*flat(100.0, 253), SURGE, *flat(104.0, 15)]  # 253 -> max hold at 263
    series = [("BBBUSDT", b), ("CCCUSDT", c), ("AAAUSDT", a)]

    def taken(max_open: int) -> list[str]:
        settings = replace(SETTINGS, trade=replace(SETTINGS.trade, max_open_positions=max_open))
        return [t.symbol for t in run(*series, settings=settings)]

    assert taken(1) == ["AAAUSDT", "CCCUSDT"]  # BBB ties AAA at 250 and loses; AAA's stop at 253 frees CCC's
    assert taken(2) == ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
    full = run(*series)
    assert_trades(
        full,
        [
            by_hand("AAAUSDT", 250, 104.0, 253, STOP_LOSS),
            by_hand("BBBUSDT", 250, 104.0, 260, MAX_HOLD, price=104.0),
            by_hand("CCCUSDT", 253, 104.0, 263, MAX_HOLD, price=104.0),
        ],
    )


def test_one_position_per_symbol() -> None:
    """A second signal while the symbol's position is open is skipped (its cooldown is over)."""
    wide = Settings(
        surge=SurgeSettings(
            min_change_pct=3.0,
            volume_multiple=3.0,
            volume_lookback=5,
            min_quote_volume=1000.0,
            cooldown_s=60.0,
        ),
        filter_4h=SETTINGS.filter_4h,
        trade=TradeSettings(position_usdt=USDT, take_profit_pct=10.0, max_hold_s=3600.0),
    )
    again: Row = (104.0, 108.0, 104.0, 108.0, 200.0, 21_600.0)  # +3.8 %: a surge, under the 10 % target
    rows = surged([*flat(104.0, 4), again, *flat(108.0, 3)])
    trades = run(("ABCUSDT", rows), settings=wide)
    assert [(t.signal_time, t.exit_reason) for t in trades] == [(close_ms(250), END_OF_DATA)]


def test_portfolio_frees_a_slot_at_the_exit_time() -> None:
    def trade(symbol: str, signal: int, exit_at: int) -> Trade:
        return Trade(symbol, signal, signal, 1.0, 1.0, exit_at, 1.0, MAX_HOLD, 0.0, 0.0)

    candidates = [trade("B", 10, 30), trade("A", 10, 20), trade("C", 20, 40), trade("D", 19, 25)]
    assert [t.symbol for t in portfolio(candidates, 1)] == ["A", "C"]


def test_run_backtest_loads_the_history_before_the_start(tmp_path) -> None:
    store = HistoryStore(tmp_path / "history")
    store.write("ABCUSDT", build("ABCUSDT", surged(flat(104.0, 30))))
    store.write("XYZUSDT", build("XYZUSDT", flat(100.0, 300)))
    start, end = T0 + 250 * MIN, T0 + 270 * MIN  # the baseline and the 4h before 250 are before the start
    result = run_backtest(store, SETTINGS, start, end)
    assert_trades(result.trades, [by_hand("ABCUSDT", 250, 104.0, 260, MAX_HOLD, price=104.0)])
    assert (result.candles, result.symbols, result.start_ms, result.end_ms) == (
        40,
        ["ABCUSDT", "XYZUSDT"],
        start,
        end,
    )
    ended = run_backtest(store, SETTINGS, start, T0 + 255 * MIN, symbols=["ABCUSDT"])
    assert [(t.exit_reason, t.exit_time) for t in ended.trades] == [(END_OF_DATA, close_ms(254))]
    whole = run_backtest(store, SETTINGS)
    assert (whole.start_ms, whole.end_ms, whole.candles) == (T0, T0 + 300 * MIN, 281 + 300)


def test_nothing_stored_is_no_history(tmp_path) -> None:
    store = HistoryStore(tmp_path / "history")
    with pytest.raises(NoHistory, match="surge history download"):
        run_backtest(store, SETTINGS, T0, T0 + 60 * MIN)


def test_a_signal_the_full_book_skipped_still_starts_its_cooldown() -> None:
    """As live: the rule's cooldown runs on signals, whether or not the book could take them."""
    drop: Row = (104.0, 104.0, 100.0, 100.0, 10.0, 1000.0)
    a = surged([*flat(104.0, 2), drop, *flat(100.0, 15)])  # 250 -> stop at 253
    b = surged([*flat(104.0, 2), drop, *flat(100.0, 1), SURGE, *flat(104.0, 12)])  # 250 (book full), 255
    one = replace(SETTINGS, trade=replace(SETTINGS.trade, max_open_positions=1))
    assert [t.symbol for t in run(("AAAUSDT", a), ("BBBUSDT", b), settings=one)] == ["AAAUSDT"]
    short = replace(one, surge=replace(SETTINGS.surge, cooldown_s=60.0))
    trades = run(("AAAUSDT", a), ("BBBUSDT", b), settings=short)
    assert [(t.symbol, t.signal_time) for t in trades] == [
        ("AAAUSDT", close_ms(250)),
        ("BBBUSDT", close_ms(255)),
    ]
