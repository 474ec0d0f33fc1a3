"""Filter4h logic against an in-memory fake exchange: the rule, cache plans, boundaries, scheduling.

The simulator tests (tests/test_filter4h.py) cover the wire; these pin the decisions that do not
need a server: which request a cached symbol needs, and that the warm answer equals the cold one.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from surge.exchange.ratelimit import WeightLimiter
from surge.exchange.rest import ExchangeError
from surge.filter4h import H4, Filter4h, Rule4h
from surge.models import Kline
from surge.store import Store

T0 = 1_700_006_400_000 - (1_700_006_400_000 % H4)  # a 4h boundary


class FakeRest:
    """Candles for every symbol: open/close/quote volume are functions of (symbol, window)."""

    def __init__(self, symbols: list[str], now: int) -> None:
        self.symbols = symbols
        self.now = now
        self.limiter = WeightLimiter()
        self.requests = 0
        self.calls: list[tuple] = []
        self.lock = threading.Lock()
        self.delay = 0.0
        self.ticker_advance = 0

    def _count(self, *call: object) -> None:
        with self.lock:
            self.requests += 1
            self.calls.append(call)
        self.limiter.acquire(2 if call[0] == "ticker" else 1)

    def candle(self, sym: str, t: int) -> Kline:
        i = self.symbols.index(sym)
        w = (t - T0) // H4
        o = 100.0 + i + w
        c = o * (1 + ((i * 7 + w * 3) % 31 - 12) / 100.0)  # changes between -12% and +18%
        q = 1e6 * ((i * 13 + w * 5) % 11)  # 0 .. 10M
        if t + H4 - 1 >= self.now:  # in progress
            return Kline(sym, "4h", t, t + H4 - 1, o, max(o, c), min(o, c), c, 1.0, q / 2, 1, False)
        return Kline(sym, "4h", t, t + H4 - 1, o, max(o, c), min(o, c), c, 1.0, q, 1, True)

    def exchange_info(self) -> dict:
        self._count("exchangeInfo")
        return {
            "serverTime": self.now,
            "symbols": [
                {"symbol": s, "status": "TRADING", "contractType": "PERPETUAL", "quoteAsset": "USDT"}
                for s in self.symbols
            ],
        }

    def server_time(self) -> int:
        self._count("time")
        return self.now

    def klines(
        self,
        symbol: str,
        interval: str,
        *,
        limit: int,
        start_time: int | None = None,
        end_time: int | None = None,
        now_ms: int | None = None,
    ) -> list[Kline]:
        self._count("klines", symbol, limit, start_time)
        if self.delay:
            time.sleep(self.delay)
        if symbol not in self.symbols:
            raise ExchangeError(-1121, "Invalid symbol.")
        current = self.now - self.now % H4
        if start_time is None:
            times = [current - i * H4 for i in range(limit - 1, -1, -1)]
        else:
            times = [t for t in range(start_time, current + 1, H4)][:limit]
        # REST rows carry no "closed" flag: the client decides
        return [Kline(**{**_asdict(self.candle(symbol, t)), "closed": True}) for t in times]

    def ticker_price_snapshot(self) -> tuple[dict[str, float], int]:
        self._count("ticker")
        if self.ticker_advance:
            self.now += self.ticker_advance  # the clock moves between exchangeInfo and the ticker
        current = self.now - self.now % H4
        return {s: self.candle(s, current).close for s in self.symbols}, self.now


def _asdict(kl: Kline) -> dict:
    return {f: getattr(kl, f) for f in Kline.__slots__}


SYMS = [f"S{i:03d}USDT" for i in range(40)]
RULE = Rule4h(-5.0, 10.0, 5e6)


def expected(rest: FakeRest) -> list[str]:
    current = rest.now - rest.now % H4
    out = []
    for s in rest.symbols:
        cur = rest.candle(s, current)
        prev = rest.candle(s, current - H4)
        if RULE.min_change_pct <= cur.change_pct <= RULE.max_change_pct and prev.quote_volume >= 5e6:
            out.append(s)
    return sorted(out)


def test_rule_boundaries_are_inclusive() -> None:
    assert RULE.decide("A", 100.0, 110.0, 5e6).passed
    assert RULE.decide("A", 100.0, 95.0, 5e6).passed
    assert not RULE.decide("A", 100.0, 110.01, 5e6).passed
    assert not RULE.decide("A", 100.0, 94.99, 5e6).passed
    d = RULE.decide("A", 100.0, 101.0, 4_999_999.0)
    assert not d.passed and "quote volume" in d.reason
    assert "change +1.00%" in RULE.decide("A", 100.0, 101.0, 6e6).reason


def test_cold_then_warm_then_across_the_boundary(tmp_path: Path) -> None:
    rest = FakeRest(SYMS, T0 + 3600_000)
    with Store(tmp_path / "surge.db") as store:
        f = Filter4h(rest, RULE, store=store, workers=3, lookback=6)  # type: ignore[arg-type]
        cold = f.scan()
        assert cold.passed == expected(rest) and cold.checked == len(SYMS) and not cold.errors
        assert sum(1 for c in rest.calls if c[0] == "klines") == len(SYMS)
        assert all(c[2] == 6 and c[3] is None for c in rest.calls if c[0] == "klines")

        rest.calls.clear()
        rest.now += 600_000  # same window, later: prices moved only in our model's eyes
        warm = f.scan()
        assert [c[0] for c in rest.calls] == ["exchangeInfo", "ticker"]
        assert warm.passed == cold.passed and warm.from_cache == len(SYMS)
        assert warm.weight == 3

        rest.calls.clear()
        rest.now = T0 + H4 + 60_000  # the next 4h window
        nxt = f.scan()
        kl = [c for c in rest.calls if c[0] == "klines"]
        assert len(kl) == len(SYMS)
        assert all(c[2] == 2 and c[3] == T0 for c in kl)  # the just-closed candle + the new one
        assert nxt.passed == expected(rest)

        rest.calls.clear()
        rest.now += 60_000
        again = f.scan()
        assert [c[0] for c in rest.calls] == ["exchangeInfo", "ticker"]
        assert again.passed == nxt.passed


def test_boundary_between_exchange_info_and_ticker_is_noticed(tmp_path: Path) -> None:
    rest = FakeRest(SYMS[:8], T0 + H4 - 30_000)  # 30 s before the boundary
    with Store(tmp_path / "surge.db") as store:
        f = Filter4h(rest, RULE, store=store)  # type: ignore[arg-type]
        f.scan()
        rest.calls.clear()
        rest.ticker_advance = 60_000  # the ticker answers after the boundary
        res = f.scan()
        kl = [c for c in rest.calls if c[0] == "klines"]
        assert len(kl) == 8 and all(c[2] == 2 and c[3] == T0 for c in kl)
        assert res.passed == expected(rest)


def test_cache_missing_only_the_open_asks_limit_1(tmp_path: Path) -> None:
    rest = FakeRest(SYMS[:5], T0 + 60_000)
    with Store(tmp_path / "surge.db") as store:
        store.put_candles([rest.candle(s, T0 - H4) for s in rest.symbols])
        f = Filter4h(rest, RULE, store=store)  # type: ignore[arg-type]
        res = f.scan()
        kl = [c for c in rest.calls if c[0] == "klines"]
        assert kl and all(c[2] == 1 and c[3] == T0 for c in kl)
        assert res.passed == expected(rest)


def test_stale_cache_refetches_lookback(tmp_path: Path) -> None:
    rest = FakeRest(SYMS[:3], T0 + 60_000)
    with Store(tmp_path / "surge.db") as store:
        store.put_candles([rest.candle(s, T0 - 30 * H4) for s in rest.symbols])
        res = Filter4h(rest, RULE, store=store, lookback=6).scan()  # type: ignore[arg-type]
        assert all(c[2] == 6 and c[3] is None for c in rest.calls if c[0] == "klines")
        assert res.passed == expected(rest)


def test_unknown_symbol_is_an_error_not_a_crash() -> None:
    rest = FakeRest(SYMS[:3], T0 + 60_000)
    res = Filter4h(rest, RULE).scan(["S000USDT", "nopeusdt", "S001USDT", "S000USDT"])  # type: ignore[arg-type]
    assert res.errors == {"NOPEUSDT": "code -1121: Invalid symbol."}
    assert res.checked == 3 and res.symbols == 3
    assert set(res.passed + res.failed) == {"S000USDT", "S001USDT"}


def test_symbols_exchange_info_does_not_list_are_never_requested() -> None:
    rest = FakeRest(SYMS[:3], T0 + 60_000)
    res = Filter4h(rest, RULE).scan(["NOPEUSDT", "S002USDT", "GONEUSDT"])  # type: ignore[arg-type]
    asked = [c[1] for c in rest.calls if c[0] == "klines"]
    assert asked == ["S002USDT"]
    assert res.errors == {s: "code -1121: Invalid symbol." for s in ("NOPEUSDT", "GONEUSDT")}
    assert res.checked == 3 and res.symbols == 3


def test_refused_names_what_the_exchange_refused_not_what_it_could_not_answer() -> None:
    rest = FakeRest(SYMS[:3], T0 + 60_000)
    res = Filter4h(rest, RULE).scan(["S000USDT", "NOPEUSDT"])  # type: ignore[arg-type]
    assert res.refused() == {"NOPEUSDT"}  # caught by exchangeInfo, without a request
    listed_but_refused = FakeRest(SYMS[:3], T0 + 60_000)
    listed_but_refused.symbols = SYMS[:2]  # exchangeInfo lists S002USDT, its klines answer -1121
    info = FakeRest(SYMS[:3], T0 + 60_000).exchange_info()
    res = Filter4h(listed_but_refused, RULE).scan(SYMS[:3], info)  # type: ignore[arg-type]
    assert res.refused() == {"S002USDT"} and res.errors["S002USDT"].startswith("code -1121")
    assert Filter4h(rest, RULE).scan(SYMS[:3]).refused() == set()  # type: ignore[arg-type]


def test_progress_reports_batches_and_finishes() -> None:
    rest = FakeRest(SYMS, T0 + 60_000)
    seen = []
    Filter4h(rest, RULE, batch_size=15, progress=seen.append).scan()  # type: ignore[arg-type]
    assert seen[-1].done == seen[-1].total == len(SYMS)
    assert seen[-1].batches == 3 and seen[-1].batch == 3
    assert {p.batch for p in seen} == {1, 2, 3}
    assert [p.done for p in seen] == sorted(p.done for p in seen)


@pytest.mark.parametrize("scheduling", ["symbol", "batch"])
def test_both_schedulings_agree(scheduling: str) -> None:
    rest = FakeRest(SYMS, T0 + 60_000)
    res = Filter4h(rest, RULE, batch_size=7, scheduling=scheduling).scan()  # type: ignore[arg-type]
    assert res.passed == expected(rest)


def test_per_symbol_tasks_keep_every_worker_busy() -> None:
    """12 symbols in batches of 6 over 3 workers: handed whole, batches leave a worker idle for the
    whole scan (two threads do 6 requests each); per-symbol tasks spread over all three."""

    def per_thread(scheduling: str) -> list[int]:
        rest = FakeRest(SYMS[:12], T0 + 60_000)
        rest.delay = 0.03
        by_thread: dict[str, int] = {}
        orig = rest.klines

        def klines(*a, **kw):  # type: ignore[no-untyped-def]
            name = threading.current_thread().name
            with rest.lock:
                by_thread[name] = by_thread.get(name, 0) + 1
            return orig(*a, **kw)

        rest.klines = klines  # type: ignore[method-assign]
        Filter4h(rest, RULE, batch_size=6, workers=3, scheduling=scheduling).scan()  # type: ignore[arg-type]
        return sorted(by_thread.values())

    assert per_thread("batch") == [6, 6]
    spread = per_thread("symbol")
    assert len(spread) == 3 and sum(spread) == 12 and max(spread) < 6


def test_live_filter_names_the_symbols_no_event_told_about_since_the_4h_boundary():
    from surge.filter4h import LiveFilter4h

    def _k(sym: str, t: int, *, closed: bool) -> Kline:
        return Kline(sym, "4h", t, t + H4 - 1, 1.0, 1.0, 1.0, 1.0, 1.0, 1e7, 1, closed)

    live = LiveFilter4h(Rule4h())
    window = 100 * H4
    # TOLD: an event of the current candle; CLOSED: the previous candle's close (opens the current one);
    # QUIET: only the previous candle; NEVER: nothing at all
    live.on_kline(_k("TOLD", window, closed=False))
    live.on_kline(_k("CLOSED", window - H4, closed=True))
    live.on_kline(_k("QUIET", window - H4, closed=False))
    assert live.stale(["TOLD", "CLOSED", "QUIET", "NEVER"], window + 60_000) == {"QUIET", "NEVER"}
    # the next boundary: every one of them is stale until an event says otherwise
    assert live.stale(["TOLD", "CLOSED"], window + H4) == {"TOLD", "CLOSED"}
