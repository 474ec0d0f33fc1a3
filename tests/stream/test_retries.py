"""Refused SUBSCRIBE batches are split in halves; a single stream waits longer after each failure."""

from __future__ import annotations

from surge.stream.retries import Retries, RetryGroup
from surge.stream.subscriptions import Request


def test_a_refused_batch_is_split_in_halves_and_due_after_the_delay() -> None:
    r = Retries(delay_s=1.0, max_delay_s=60.0)
    r.add_failed(0, [Request(1, "SUBSCRIBE", ("a", "b", "c"), 0.0, 1)], now=10.0)
    due, blocked, wait = r.take_due(0, now=10.5)
    assert due == [] and blocked == {"a", "b", "c"} and wait == 0.5
    due, blocked, _ = r.take_due(0, now=11.0)
    assert [g.streams for g in due] == [("a",), ("b", "c")] and all(g.failures == 1 for g in due)
    assert r.take_due(0, now=11.0) == ([], set(), float("inf"))


def test_a_single_stream_backs_off_exponentially_up_to_the_cap() -> None:
    r = Retries(delay_s=1.0, max_delay_s=5.0)
    r.add_failed(0, [Request(1, "SUBSCRIBE", ("a",), 0.0, 1, failures=2)], now=0.0)
    r.add_failed(1, [Request(2, "SUBSCRIBE", ("b",), 0.0, 1, failures=9)], now=0.0)
    assert r.take_due(0, now=0.0)[2] == 4.0  # third failure: 1 s * 2**2
    assert r.take_due(1, now=0.0)[2] == 5.0


def test_unsubscribes_are_not_retried_and_groups_follow_a_rotation() -> None:
    r = Retries(delay_s=1.0, max_delay_s=5.0)
    r.add_failed(0, [Request(1, "UNSUBSCRIBE", ("a",), 0.0, 1)], now=0.0)
    assert r.take_due(0, now=9.0) == ([], set(), float("inf"))
    r.keep(0, RetryGroup(("b",), 0.0, 1))
    r.move(0, 5)
    assert r.take_due(0, now=1.0)[0] == [] and [g.streams for g in r.take_due(5, now=1.0)[0]] == [("b",)]
    r.keep(5, RetryGroup(("c",), 0.0, 1))
    r.forget(5)
    assert r.take_due(5, now=1.0)[0] == []
