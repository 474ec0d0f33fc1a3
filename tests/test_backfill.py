"""The 1m backfill scheduler: what is pending, what is refused, and the growing retry delay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from surge.backfill import RETRY_S, BackfillAbandoned, BackfillDeferred, Backfilled, BackfillScheduler
from surge.exchange.ratelimit import MAX_WEIGHT1_LIMIT
from surge.exchange.rest import ExchangeError, ExchangeUnavailable
from surge.models import Kline


class FakeRest:
    """klines() answers from a table: a list of klines, or an exception to raise."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    def klines(self, symbol: str, interval: str, *, limit: int, now_ms: int) -> list[Kline]:
        assert interval == "1m"
        self.asked.append((symbol, limit))
        answer = self.answers[symbol]
        if isinstance(answer, Exception):
            raise answer
        return list(answer)


class InlineKeeper:
    """Runs each job at once on the caller's thread, as the housekeeping worker would later."""

    def __init__(self, post: Callable[[Any], None]) -> None:
        self.post = post
        self.names: list[str] = []

    def submit(self, name: str, job: Callable[[], object], failed: Any = None) -> None:
        self.names.append(name)
        result = job()
        if result is not None:
            self.post(result)


def scheduler(
    answers: dict[str, Any], *, lookback: int = 20
) -> tuple[BackfillScheduler, list[Any], FakeRest, list[float]]:
    posted: list[Any] = []
    now = [100.0]
    sched = BackfillScheduler(
        posted.append, lambda: 1_000, lambda: now[0], volume_lookback=lookback, workers=2
    )
    rest = FakeRest(answers)
    sched.start(rest, InlineKeeper(posted.append))  # type: ignore[arg-type]
    return sched, posted, rest, now


def test_nothing_is_asked_before_the_start() -> None:
    posted: list[Any] = []
    sched = BackfillScheduler(posted.append, lambda: 0, lambda: 0.0, volume_lookback=20, workers=3)
    sched.submit(["AUSDT"])
    assert posted == [] and sched.pending == set()


def test_fetched_history_is_posted_per_symbol_and_clears_pending() -> None:
    sched, posted, rest, _ = scheduler({"AUSDT": [], "BUSDT": []})
    sched.submit(["AUSDT", "BUSDT"])
    assert sched.pending == {"AUSDT", "BUSDT"}
    assert sorted(m.symbol for m in posted) == ["AUSDT", "BUSDT"] and all(
        isinstance(m, Backfilled) for m in posted
    )
    assert {limit for _, limit in rest.asked} == {
        22
    }  # the lookback plus the candle in progress and one spare
    for m in posted:
        sched.on_backfilled(m)
    assert sched.pending == set() and sched.done == 2


def test_the_request_stays_at_weight_one() -> None:
    sched, _, _, _ = scheduler({}, lookback=200)
    assert sched.limit == MAX_WEIGHT1_LIMIT


def test_a_refused_symbol_is_abandoned_until_its_next_closed_candle() -> None:
    sched, posted, _, _ = scheduler({"GONEUSDT": ExchangeError(-1121, "Invalid symbol.")})
    sched.submit(["GONEUSDT"])
    assert posted == [BackfillAbandoned("backfill GONEUSDT", "code -1121: Invalid symbol.")]
    sched.on_abandoned(posted[0])
    assert sched.pending == set() and sched.retry == set()


def test_an_unreachable_exchange_is_retried_with_a_growing_delay() -> None:
    down = ExchangeUnavailable("connection refused")
    sched, posted, rest, now = scheduler({"AUSDT": down, "BUSDT": []})
    sched.submit(["AUSDT"])
    assert posted == [BackfillDeferred(("AUSDT",), "connection refused")]
    sched.on_deferred(posted[0])
    assert sched.pending == set() and sched.retry == {"AUSDT"}
    assert sched.next_due() == now[0] + RETRY_S[0]
    assert sched.due(now[0], {"AUSDT"}) == []  # not yet
    now[0] += RETRY_S[0]
    assert sched.due(now[0], {"AUSDT"}) == ["AUSDT"]
    assert sched.retry == set()
    sched.on_deferred(BackfillDeferred(("AUSDT",), "still down"))
    assert sched.retry_at == now[0] + 2 * RETRY_S[0]  # doubled
    now[0] = sched.retry_at
    assert sched.due(now[0], set()) == []  # no longer streamed: not asked for again
    for _ in range(10):
        sched.on_deferred(BackfillDeferred(("AUSDT",), "down"))
    assert sched.retry_at - now[0] == RETRY_S[1]  # capped
    sched.on_backfilled(Backfilled("AUSDT", []))
    sched.on_deferred(BackfillDeferred(("AUSDT",), "down"))
    assert sched.retry_at - now[0] == RETRY_S[0]  # a success resets the delay


def test_after_the_first_transport_failure_the_job_asks_nothing_more() -> None:
    down = ExchangeUnavailable("down")
    sched, posted, rest, _ = scheduler({"AUSDT": down, "BUSDT": down, "CUSDT": down})
    sched.workers = 1
    sched.submit(["AUSDT", "BUSDT", "CUSDT"])
    assert len(rest.asked) == 1
    assert posted == [BackfillDeferred(("AUSDT", "BUSDT", "CUSDT"), "down")]
