"""The 4h filter while the bot runs: closes settle before a re-evaluation; streams follow the universe."""

from __future__ import annotations

import logging
from typing import Any

from surge.filter4h import H4, Decision, Rule4h, ScanResult
from surge.filter_refresh import FILTER_SETTLE_S, FilterRefresh, Rescanned
from surge.models import Kline
from surge.runtime import Spell
from surge.store import StoreWriteError

WINDOW = 1_700_006_400_000 - 1_700_006_400_000 % H4


class FakeStore:
    def __init__(self, full: bool = False) -> None:
        self.candles: list[Kline] = []
        self.full = full

    def put_candles(self, candles: list[Kline]) -> None:
        if self.full:
            raise StoreWriteError("database or disk is full")
        self.candles.extend(candles)


class FakeManager:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def subscribe_kline(self, symbol: str, interval: str) -> None:
        self.calls.append(("+", symbol))

    def unsubscribe_kline(self, symbol: str, interval: str) -> None:
        self.calls.append(("-", symbol))


def k4h(symbol: str, closed: bool, open_time: int = WINDOW - H4) -> Kline:
    return Kline(symbol, "4h", open_time, open_time + H4 - 1, 10.0, 11.0, 9.0, 10.5, 1e6, 1e7, 9, closed, 1)


def started(store: FakeStore | None = None) -> tuple[FilterRefresh, FakeStore, FakeManager, list[float]]:
    now = [50.0]
    filters = FilterRefresh(Rule4h(), None, Spell(logging.getLogger("t"), "writing"))
    store, manager = store or FakeStore(), FakeManager()
    filters.start(None, store, None, manager, lambda: now[0])  # type: ignore[arg-type]
    return filters, store, manager, now


def test_closed_4h_candles_are_cached_and_evaluated_once_the_burst_settled() -> None:
    filters, store, _, now = started()
    filters.on_4h(k4h("AUSDT", closed=False))
    assert filters.dirty_at is None  # an update of the current candle is not a close
    filters.on_4h(k4h("AUSDT", closed=True))
    filters.on_4h(k4h("BUSDT", closed=True))
    assert filters.dirty_at == 50.0 and filters.next_due() == 50.0 + FILTER_SETTLE_S
    now[0] += FILTER_SETTLE_S - 0.1
    assert not filters.settled(now[0]) and store.candles == []
    now[0] += 0.1
    assert filters.settled(now[0])
    assert [k.symbol for k in store.candles] == ["AUSDT", "BUSDT"]  # one write for the burst
    assert not filters.settled(now[0] + 100) and filters.closed_4h == []


def test_a_full_disk_only_costs_the_cache() -> None:
    filters, _, _, now = started(FakeStore(full=True))
    filters.on_4h(k4h("AUSDT", closed=True))
    assert filters.settled(now[0] + FILTER_SETTLE_S)  # the re-evaluation still happens
    assert filters.closed_4h == []


def test_the_4h_streams_follow_who_joined_or_left_the_universe() -> None:
    filters, _, manager, _ = started()
    filters.seed({"AUSDT", "BUSDT"}, ScanResult())
    passing = Decision("CUSDT", True, "ok", 2.0, 1e7, 10.0, 10.2)
    filters.on_rescanned(Rescanned(ScanResult(decisions={"CUSDT": passing}), frozenset({"BUSDT", "CUSDT"})))
    assert sorted(manager.calls) == [("+", "CUSDT"), ("-", "AUSDT")]
    assert filters.universe == {"BUSDT", "CUSDT"} and filters.live.passing() == {"CUSDT"}
    filters.on_rescanned(Rescanned(ScanResult(), None))  # a rescan without the universe: no change
    assert len(manager.calls) == 2


def test_jobs_are_submitted_to_the_housekeeper() -> None:
    submitted: list[tuple[str, Any]] = []

    class Keeper:
        def submit(self, name: str, job: Any) -> None:
            submitted.append((name, job))

    filters = FilterRefresh(Rule4h(), None, Spell(logging.getLogger("t"), "writing"))
    scans: list[Any] = []

    def scan(symbols: Any, info: Any) -> ScanResult:
        scans.append(symbols)
        return ScanResult()

    filters.start(None, FakeStore(), Keeper(), FakeManager(), lambda: 0.0)  # type: ignore[arg-type]
    filters.submit_rescan(["AUSDT"], scan)
    name, job = submitted[0]
    assert name == "4h rescan of 1" and isinstance(job(), Rescanned) and scans == [["AUSDT"]]
