"""The simulated market model: determinism, symbols, candle consistency, Binance kline semantics,
overrides (injected surges, arrange_4h) and the periodic surges a demo relies on."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest

from surge.exchange.wire import kline_to_rest_row
from surge.models import INTERVAL_MS, Kline
from surge.sim.market import WINDOW_MS, Market

T0 = 1_795_650_000.0  # 2026-11-25 21:40 UTC, 100 minutes into a 4h window (a fixed clock: exact candles)
MIN = 60_000
H4 = INTERVAL_MS["4h"]


def fixed(t: float = T0) -> Market:
    return Market(seed=11, surge_interval_s=None, clock=lambda: t)


@pytest.fixture(scope="module")
def market() -> Market:
    return fixed()


def rows(m: Market, klines: list[Kline]) -> list[list]:
    """The REST row strings: what a client sees, so 'equal' means equal to the last digit."""
    return [kline_to_rest_row(k, *m.decimals(k.symbol)) for k in klines]


def aggregate(parts: list[Kline]) -> tuple:
    return (
        parts[0].open,
        max(k.high for k in parts),
        min(k.low for k in parts),
        parts[-1].close,
        sum(k.volume for k in parts),
        sum(k.quote_volume for k in parts),
        sum(k.trades for k in parts),
    )


def assert_aggregate(m: Market, whole: Kline, parts: list[Kline]) -> None:
    pd, qd = m.decimals(whole.symbol)
    o, h, low, c, v, q, n = aggregate(parts)
    expected = [f"{o:.{pd}f}", f"{h:.{pd}f}", f"{low:.{pd}f}", f"{c:.{pd}f}", f"{v:.{qd}f}", f"{q:.4f}", n]
    row = kline_to_rest_row(whole, pd, qd)
    assert [row[1], row[2], row[3], row[4], row[5], row[7], row[8]] == expected


def surge_rule(m: Market, symbol: str, now: int) -> tuple[float, float, float]:
    """(change %, volume multiple over the previous 20 closed minutes, quote volume) of the current 1m."""
    cur = m.current_kline(symbol, "1m", now)
    prev = m.klines(symbol, "1m", end_ms=cur.open_time - 1, limit=20, now_ms=now)
    assert len(prev) == 20 and all(k.closed for k in prev)
    mean = sum(k.volume for k in prev) / 20
    return cur.change_pct, cur.volume / mean, cur.quote_volume


def four_hour_rule(
    m: Market, symbol: str, now: int, lo: float = -5.0, hi: float = 10.0, min_qv: float = 5e6
) -> bool:
    prev, cur = m.klines(symbol, "4h", limit=2, now_ms=now)
    assert prev.closed and not cur.closed
    return lo <= cur.change_pct <= hi and prev.quote_volume >= min_qv


# --------------------------------------------------------------------------- symbols


def test_same_seed_same_market_other_seed_other_market() -> None:
    a, b, c = fixed(), fixed(), Market(seed=12, surge_interval_s=None, clock=lambda: T0)
    now = a.now_ms()
    assert a.tradable_symbols() == b.tradable_symbols()
    assert a.exchange_symbols() == b.exchange_symbols()
    for sym in ("BTCUSDT", "1000PEPEUSDT", a.tradable_symbols()[400]):
        assert a.klines(sym, "1h", limit=30, now_ms=now) == b.klines(sym, "1h", limit=30, now_ms=now)
    assert a.klines("BTCUSDT", "1h", limit=30, now_ms=now) != c.klines("BTCUSDT", "1h", limit=30, now_ms=now)
    assert a.tradable_symbols() != c.tradable_symbols()  # generated names depend on the seed


def test_universe_names_and_decoys(market: Market) -> None:
    tradable = market.tradable_symbols()
    assert len(tradable) == 531 and tradable == sorted(tradable) and len(set(tradable)) == 531
    assert all(s.isalnum() and s.endswith("USDT") and s.isupper() for s in tradable)
    assert {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"} <= set(tradable)
    entries = market.exchange_symbols()
    kept = sorted(
        e["symbol"]
        for e in entries
        if (e["status"], e["contractType"], e["quoteAsset"]) == ("TRADING", "PERPETUAL", "USDT")
    )
    assert kept == tradable
    decoys = [e for e in entries if e["symbol"] not in set(tradable)]
    assert {e["status"] for e in decoys} >= {"SETTLING", "PENDING_TRADING"}
    assert {e["contractType"] for e in decoys} >= {"TRADIFI_PERPETUAL", "CURRENT_QUARTER"}
    assert {e["quoteAsset"] for e in decoys} >= {"USDC", "BUSD"}
    assert all(market.has_symbol(e["symbol"]) for e in entries)
    assert not market.has_symbol("NOPEUSDT")
    assert Market(40, seed=3, surge_interval_s=None).tradable_symbols().__len__() == 40


def test_prices_liquidity_and_filters_are_realistic(market: Market) -> None:
    now = market.now_ms()
    closes = {s: market.current_kline(s, "1m", now).close for s in market.tradable_symbols()}
    assert min(closes.values()) < 0.001 and max(closes.values()) > 20_000
    assert 60_000 < closes["BTCUSDT"] < 150_000
    volumes = sorted(market.kline_at(s, "4h", (now // H4 - 1) * H4, now).quote_volume for s in closes)
    median = volumes[len(volumes) // 2]
    assert volumes[-1] > 100 * median  # a few very liquid symbols, a long tail
    assert sum(v >= 5e6 for v in volumes) < len(volumes) / 2
    by_name = {e["symbol"]: e for e in market.exchange_symbols()}
    for sym in ("BTCUSDT", "ETHUSDT", "1000PEPEUSDT", market.tradable_symbols()[123]):
        pd, qd = market.decimals(sym)
        filters = {f["filterType"]: f for f in by_name[sym]["filters"]}
        assert set(filters) >= {"PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "MIN_NOTIONAL"}
        tick, step = float(filters["PRICE_FILTER"]["tickSize"]), float(filters["LOT_SIZE"]["stepSize"])
        assert tick == pytest.approx(10.0**-pd) and step == pytest.approx(10.0**-qd)
        assert 1e-6 <= tick / closes[sym] <= 2e-4  # tick about 1e-4..1e-5 of the price, as on Binance
        for k in market.klines(sym, "1m", limit=50, now_ms=now):
            for price in (k.open, k.high, k.low, k.close):
                assert float(f"{price:.{pd}f}") == price  # on the tick grid
            assert float(f"{k.volume:.{qd}f}") == k.volume  # on the step grid
    assert market.decimals("BTCUSDT") == (1, 3)


# --------------------------------------------------------------------------- candle consistency


@pytest.mark.parametrize("symbol", ["BTCUSDT", "1000PEPEUSDT", "XRPUSDT"])
def test_4h_candle_is_the_aggregate_of_its_240_minutes(market: Market, symbol: str) -> None:
    now = market.now_ms()
    closed_4h = market.klines(symbol, "4h", limit=3, now_ms=now)[:2]
    for whole in closed_4h:
        minutes = market.klines(
            symbol, "1m", start_ms=whole.open_time, end_ms=whole.close_time, limit=1500, now_ms=now
        )
        assert len(minutes) == 240 and all(k.closed for k in minutes)
        assert_aggregate(market, whole, minutes)
    # the 4h candle in progress: the closed minutes so far plus the partial minute, to the last digit
    cur = market.current_kline(symbol, "4h", now)
    minutes = market.klines(symbol, "1m", start_ms=cur.open_time, limit=1500, now_ms=now)
    assert len(minutes) == (now - cur.open_time) // MIN + 1
    assert not minutes[-1].closed and all(k.closed for k in minutes[:-1])
    assert minutes[-1] == market.current_kline(symbol, "1m", now)
    assert_aggregate(market, cur, minutes)


def test_every_interval_aggregates_its_parts(market: Market) -> None:
    now = market.now_ms()
    sym = "ETHUSDT"
    day = market.klines(sym, "1d", limit=2, now_ms=now)[0]
    assert_aggregate(
        market,
        day,
        market.klines(sym, "4h", start_ms=day.open_time, end_ms=day.close_time, limit=10, now_ms=now),
    )
    for interval, part, n in (
        ("1h", "15m", 4),
        ("15m", "5m", 3),
        ("2h", "1h", 2),
        ("8h", "4h", 2),
        ("12h", "4h", 3),
        ("3m", "1m", 3),
    ):
        whole = market.klines(sym, interval, limit=3, now_ms=now)[0]
        parts = market.klines(
            sym, part, start_ms=whole.open_time, end_ms=whole.close_time, limit=50, now_ms=now
        )
        assert len(parts) == n
        assert_aggregate(market, whole, parts)
    six = market.klines(sym, "6h", limit=3, now_ms=now)[0]  # 6h straddles 4h windows
    assert_aggregate(
        market,
        six,
        market.klines(sym, "1h", start_ms=six.open_time, end_ms=six.close_time, limit=10, now_ms=now),
    )


def test_partial_minute_only_grows_and_ends_as_the_closed_minute() -> None:
    t = [T0]
    m = Market(seed=11, surge_interval_s=None, clock=lambda: t[0])
    start = (int(T0 * 1000) // MIN + 1) * MIN
    seen = [m.current_kline("SOLUSDT", "1m", start + off) for off in range(0, 60_000, 997)]
    for a, b in zip(seen, seen[1:], strict=False):
        assert b.high >= a.high and b.low <= a.low and b.volume >= a.volume and b.trades >= a.trades
        assert b.open == a.open and b.open_time == a.open_time == start
    final = m.kline_at("SOLUSDT", "1m", start, start + MIN)
    assert final.closed and final.open == seen[0].open
    assert final.high >= seen[-1].high and final.low <= seen[-1].low and final.volume >= seen[-1].volume
    assert m.current_kline("SOLUSDT", "1m", start + MIN).open == final.close


def test_kline_times_follow_binance(market: Market) -> None:
    now = market.now_ms()
    for interval, length in INTERVAL_MS.items():
        ks = market.klines("BTCUSDT", interval, limit=3, now_ms=now)
        assert ks, interval
        for k in ks:
            assert k.close_time == k.open_time + length - 1 and k.interval == interval
        assert [k.closed for k in ks] == [True] * (len(ks) - 1) + [False]
        assert ks[-1].open_time <= now <= ks[-1].close_time
    week = market.current_kline("BTCUSDT", "1w", now)
    assert datetime.fromtimestamp(week.open_time / 1000, UTC).strftime("%a %H:%M") == "Mon 00:00"
    month = market.current_kline("BTCUSDT", "1M", now)
    opened = datetime.fromtimestamp(month.open_time / 1000, UTC)
    assert (opened.day, opened.hour) == (1, 0)
    assert datetime.fromtimestamp((month.close_time + 1) / 1000, UTC).day == 1


def test_klines_start_end_limit_semantics(market: Market) -> None:
    now = market.now_ms()
    latest = market.klines("ETHUSDT", "1m", limit=500, now_ms=now)
    assert len(latest) == 500 and latest[-1].open_time == now // MIN * MIN
    assert [k.open_time for k in latest] == list(range(latest[0].open_time, latest[-1].open_time + 1, MIN))
    start = latest[10].open_time + 1  # unaligned: the first candle is the next one
    ks = market.klines("ETHUSDT", "1m", start_ms=start, limit=5, now_ms=now)
    assert [k.open_time for k in ks] == [latest[i].open_time for i in range(11, 16)]
    ks = market.klines("ETHUSDT", "1m", end_ms=latest[20].open_time + 59_000, limit=3, now_ms=now)
    assert [k.open_time for k in ks] == [latest[i].open_time for i in (18, 19, 20)]
    ks = market.klines(
        "ETHUSDT", "1m", start_ms=latest[0].open_time, end_ms=latest[3].open_time, limit=99, now_ms=now
    )
    assert len(ks) == 4
    assert market.klines("ETHUSDT", "1m", start_ms=now + 5 * MIN, limit=5, now_ms=now) == []
    assert ks[0] == latest[0]


def test_nothing_before_the_listing(market: Market) -> None:
    now = market.now_ms()
    listing = market.listing_ms("BTCUSDT")
    assert listing <= now - 25 * 86_400_000
    assert market.klines("BTCUSDT", "1h", end_ms=listing - 1, limit=10, now_ms=now) == []
    first = market.klines("BTCUSDT", "1h", start_ms=listing - 30 * 86_400_000, limit=2, now_ms=now)
    assert first[0].open_time == listing
    everything = market.klines("BTCUSDT", "4h", limit=1500, now_ms=now)
    assert everything[0].open_time == listing and len(everything) == (now - listing) // H4 + 1
    with pytest.raises(ValueError):
        market.current_kline("BTCUSDT", "1m", listing - 1)


def test_bad_arguments_are_errors(market: Market) -> None:
    now = market.now_ms()
    with pytest.raises(ValueError):
        market.current_kline("BTCUSDT", "7m", now)
    with pytest.raises(KeyError):
        market.current_kline("NOPEUSDT", "1m", now)
    with pytest.raises(ValueError):
        market.kline_at("BTCUSDT", "1h", now // MIN * MIN + 1, now)  # not an open time
    with pytest.raises(ValueError):
        market.kline_at("BTCUSDT", "1m", (now // MIN + 2) * MIN, now)  # the future


def test_clock_freeze_and_unfreeze() -> None:
    t = [T0]
    m = Market(seed=1, surge_interval_s=None, clock=lambda: t[0])
    assert m.now_ms() == int(T0 * 1000)
    m.freeze()
    t[0] += 30
    assert m.now_ms() == int(T0 * 1000) and m.frozen
    m.freeze(at_ms=1_700_000_000_000)
    assert m.now_ms() == 1_700_000_000_000
    m.unfreeze()
    assert m.now_ms() == int(t[0] * 1000) and not m.frozen


def test_window_cache_stays_bounded() -> None:
    m = Market(seed=2, surge_interval_s=None, clock=lambda: T0, window_cache=50)
    now = m.now_ms()
    for sym in m.tradable_symbols()[:40]:
        m.klines(sym, "4h", limit=6, now_ms=now)
    assert m.stats()["windows_cached"] <= 50
    # evicted windows regenerate identically
    again = Market(seed=2, surge_interval_s=None, clock=lambda: T0)
    sym = m.tradable_symbols()[0]
    assert m.klines(sym, "1m", limit=300, now_ms=now) == again.klines(sym, "1m", limit=300, now_ms=now)


# --------------------------------------------------------------------------- overrides


def test_injected_surge_satisfies_the_surge_rule_and_the_price_stays_up() -> None:
    t = [T0 + 17.3]
    m = Market(seed=11, surge_interval_s=None, clock=lambda: t[0])
    now = m.now_ms()
    before = m.current_kline("DOTUSDT", "1m", now)
    m.inject_surge("DOTUSDT", change_pct=5.0, volume_multiple=10.0)
    for later in (now, now + 500, now + 20_000):
        change, multiple, quote = surge_rule(m, "DOTUSDT", later)
        assert change >= 3.0 and multiple >= 5.0 and quote >= 50_000
    assert m.current_kline("DOTUSDT", "1m", now).close == pytest.approx(before.close * 1.05, rel=2e-3)
    assert m.surges == [(now, "DOTUSDT")]
    # the past is untouched, the next minute opens at the new level
    assert m.kline_at("DOTUSDT", "1m", before.open_time - MIN, now) == fixed().kline_at(
        "DOTUSDT", "1m", before.open_time - MIN, now
    )
    nxt = m.kline_at("DOTUSDT", "1m", before.open_time + MIN, before.open_time + 2 * MIN)
    assert nxt.open == pytest.approx(before.close * 1.05, rel=3e-3)
    # and the 4h candle still aggregates its minutes, surge included
    cur4 = m.current_kline("DOTUSDT", "4h", now + 20_000)
    minutes = m.klines("DOTUSDT", "1m", start_ms=cur4.open_time, limit=300, now_ms=now + 20_000)
    assert_aggregate(m, cur4, minutes)


def test_surge_on_an_illiquid_symbol_still_reaches_the_quote_volume() -> None:
    m = fixed()
    now = m.now_ms()
    prev_open = (now // H4 - 1) * H4
    busy = [s for s in m.tradable_symbols() if m.trade_gap_s(s) is None]
    thin = min(busy, key=lambda s: m.kline_at(s, "4h", prev_open, now).quote_volume)
    m.inject_surge(thin)
    change, multiple, quote = surge_rule(m, thin, now)
    assert change >= 3.0 and multiple >= 5.0 and quote >= 50_000


def test_surge_on_a_thin_symbol_between_its_trades() -> None:
    """A thin minute without a trade yet still shows the surge as a change: an opening trade at the old
    level comes just before the surge's lump."""
    m = fixed(T0 + 20.0)
    now = m.now_ms()
    symbol = next(s for s in m.thin_symbols() if m.current_kline(s, "1m", now).trades == 0)
    m.inject_surge(symbol)
    change, multiple, quote = surge_rule(m, symbol, now)
    assert change >= 3.0 and multiple >= 5.0 and quote >= 50_000


@pytest.mark.parametrize("offset_s", [100 * 60.0, 7.5])  # mid-window, and seconds after the window opened
def test_arrange_4h_makes_exactly_the_chosen_set_pass(offset_s: float) -> None:
    t0 = (int(T0 * 1000) // H4 * H4) / 1000 + offset_s
    m = Market(150, seed=11, surge_interval_s=None, clock=lambda: t0)
    now = m.now_ms()
    symbols = m.tradable_symbols()
    natural = {s for s in symbols if four_hour_rule(m, s, now)}
    assert 0 < len(natural) < len(symbols)
    wanted = set(random.Random(4).sample(symbols, 23)) | {"BTCUSDT"}
    m.arrange_4h(wanted)
    assert {s for s in symbols if four_hour_rule(m, s, now)} == wanted
    m.arrange_4h(["ETHUSDT"], min_change_pct=-1.0, max_change_pct=1.0, min_quote_volume=2e7)
    assert {s for s in symbols if four_hour_rule(m, s, now, -1.0, 1.0, 2e7)} == {"ETHUSDT"}
    with pytest.raises(ValueError):
        m.arrange_4h(["BTCUSDC"])  # a decoy is not tradable


def test_arrange_keeps_candles_consistent() -> None:
    m = fixed()
    now = m.now_ms()
    m.arrange_4h(["SOLUSDT"])
    for sym in ("SOLUSDT", "BTCUSDT"):
        prev, cur = m.klines(sym, "4h", limit=2, now_ms=now)
        assert_aggregate(
            m,
            prev,
            m.klines(sym, "1m", start_ms=prev.open_time, end_ms=prev.close_time, limit=300, now_ms=now),
        )
        assert_aggregate(m, cur, m.klines(sym, "1m", start_ms=cur.open_time, limit=300, now_ms=now))


def test_periodic_surges_hit_liquid_symbols_that_pass_the_4h_rule() -> None:
    t = [T0]
    m = Market(seed=11, surge_interval_s=20.0, clock=lambda: t[0])
    assert m.surges == []
    for _ in range(8):  # 80 s of simulated time, looked at every 10 s (the WebSocket server's view)
        t[0] += 10.0
        m.current_kline("BTCUSDT", "1m", m.now_ms())
    assert [when for when, _ in m.surges] == [int(T0 * 1000) + i * 20_000 for i in (1, 2, 3, 4)]
    for when, sym in m.surges:
        change, multiple, quote = surge_rule(m, sym, when)
        assert change >= 3.0 and multiple >= 5.0 and quote >= 50_000
        assert four_hour_rule(m, sym, when)  # the bot watches it: it passes the default 4h filter
    t2 = [T0]
    again = Market(seed=11, surge_interval_s=20.0, clock=lambda: t2[0])
    t2[0] = t[0]
    again.current_kline("BTCUSDT", "1m", again.now_ms())  # looked at once, late: the same surges, caught up
    assert again.surges == m.surges
    assert Market(seed=11, surge_interval_s=None, clock=lambda: t[0]).surges == []


def test_long_history_and_windows_are_cheap_enough() -> None:
    """A 4h scan of every symbol (6 candles each) generates ~3,200 windows; it must stay well under
    a few seconds even on a loaded machine, or the bot's filter tests time out on the simulator."""
    m = fixed()
    now = m.now_ms()
    import time

    t = time.perf_counter()
    for sym in m.tradable_symbols()[:100]:
        assert len(m.klines(sym, "4h", limit=6, now_ms=now)) == 6
    assert time.perf_counter() - t < 15.0  # ~0.2 s on an idle machine; generous for a loaded one
    assert math.isfinite(m.current_kline("BTCUSDT", "1w", now).quote_volume)
    assert WINDOW_MS == H4


def test_determinism_holds_across_processes() -> None:
    """Same seed + same clock in another interpreter (other hash seed): the same market, digit for digit."""
    import hashlib
    import os
    import subprocess
    import sys

    code = (
        "import hashlib\n"
        "from surge.sim.market import Market\n"
        f"m = Market(seed=4, clock=lambda: {T0!r})\n"
        "now = m.now_ms() + 45_000\n"
        "rows = [m.klines(s, '4h', limit=3, now_ms=now) for s in m.tradable_symbols()[::50]]\n"
        "text = repr(m.tradable_symbols()) + repr(rows) + repr(m.surges)\n"
        "print(hashlib.sha1(text.encode()).hexdigest())\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True
    ).stdout.strip()
    m = Market(seed=4, clock=lambda: T0)
    now = m.now_ms() + 45_000
    rows = [m.klines(s, "4h", limit=3, now_ms=now) for s in m.tradable_symbols()[::50]]
    assert m.surges  # the periodic surges at +20 s and +40 s are part of what must match
    text = repr(m.tradable_symbols()) + repr(rows) + repr(m.surges)
    assert out == hashlib.sha1(text.encode()).hexdigest()


# --------------------------------------------------------------------------- thin symbols


def test_thin_symbols_are_a_seeded_share_that_spares_the_majors() -> None:
    a, b = Market(seed=3, surge_interval_s=None), Market(seed=3, surge_interval_s=None)
    thin = a.thin_symbols()
    assert thin == b.thin_symbols()  # deterministic by seed
    assert thin != Market(seed=4, surge_interval_s=None).thin_symbols()
    share = len(thin) / len(a.tradable_symbols())
    assert 0.15 <= share <= 0.25, share
    assert not {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "LINKUSDT"} & set(thin)
    gaps = [a.trade_gap_s(s) for s in thin]
    assert all(g is not None and 4.0 <= g <= 150.0 for g in gaps)
    assert a.trade_gap_s("BTCUSDT") is None


def test_chosen_symbols_can_be_made_thin() -> None:
    m = Market(seed=3, surge_interval_s=None, thin_share=0.0, thin=["BTCUSDT", "ETHUSDT"], thin_gap_s=120.0)
    assert m.thin_symbols() == ["BTCUSDT", "ETHUSDT"]
    assert m.trade_gap_s("ETHUSDT") == 120.0
    with pytest.raises(ValueError, match="thin"):
        Market(seed=3, thin=["NOSUCHUSDT"])


def test_a_thin_minute_without_a_trade_is_flat_at_the_previous_close() -> None:
    """What Binance's REST klines return for a minute without a trade (continuous klines)."""
    m = Market(seed=3, surge_interval_s=None)
    now = m.now_ms()
    empty = 0
    for symbol in m.thin_symbols()[:30]:
        ks = m.klines(symbol, "1m", limit=600, now_ms=now)
        for prev, k in zip(ks, ks[1:], strict=False):
            assert k.open_time == prev.open_time + 60_000  # no candle missing
            if k.trades == 0 and k.closed:
                empty += 1
                assert k.open == k.high == k.low == k.close == prev.close, (prev, k)
                assert k.volume == 0 and k.quote_volume == 0
        # the 4h candles are still exactly the aggregate of their minutes
        k4 = m.kline_at(symbol, "4h", m.klines(symbol, "4h", limit=2, now_ms=now)[0].open_time, now)
        mins = m.klines(symbol, "1m", start_ms=k4.open_time, end_ms=k4.close_time, limit=240, now_ms=now)
        assert k4.trades == sum(x.trades for x in mins) and k4.high == max(x.high for x in mins)
        assert k4.close == mins[-1].close and k4.open == mins[0].open
    assert empty > 500
    busy = m.klines("BTCUSDT", "1m", limit=600, now_ms=now)
    assert all(k.trades > 0 for k in busy)


def test_a_thin_candle_changes_only_at_its_trades() -> None:
    """Between two trades the candle in progress stays the same (nothing for a stream to push), and
    at the end of the minute it is the closed candle REST returns."""
    m = Market(seed=3, surge_interval_s=None, thin=["ADAUSDT"], thin_gap_s=15.0)
    minute = (m.now_ms() // 60_000 - 5) * 60_000
    end = m.now_ms()
    seen = [m.current_kline("ADAUSDT", "1m", minute + off) for off in range(0, 60_000, 50)]
    states = {(k.open, k.high, k.low, k.close, k.volume, k.trades) for k in seen}
    closed = m.kline_at("ADAUSDT", "1m", minute, end)
    assert len(states) <= closed.trades + 1
    first = seen[0]
    if first.trades == 0:  # before the first trade: flat at the previous close, empty
        prev = m.kline_at("ADAUSDT", "1m", minute - 60_000, end)
        assert first.open == first.close == prev.close and first.volume == 0
    last = seen[-1]
    got = (last.open, last.high, last.low, last.close, last.volume, last.quote_volume, last.trades)
    assert got == (
        closed.open,
        closed.high,
        closed.low,
        closed.close,
        closed.volume,
        closed.quote_volume,
        closed.trades,
    )
    trades = [k.trades for k in seen]
    assert trades == sorted(trades)
