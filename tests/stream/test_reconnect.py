"""The reconnect policy: failed attempts back off and are retried, a healthy one restarts the backoff,
and a stop ends everything at once."""

from __future__ import annotations

import logging
import threading

from surge.stream.reconnect import Reconnector, Retry, Stopped
from tests.waiting import wait_for


def _policy(stop: threading.Event) -> Reconnector:
    return Reconnector("surge-ws-0", logging.getLogger("test.reconnect"), stop, 0.001, 0.01, lambda: "why")


def test_retries_until_an_attempt_stops_it() -> None:
    stop = threading.Event()
    outcomes = [Retry, Retry, None, Retry, Stopped]
    calls: list[object] = []

    def attempt() -> None:
        outcome = outcomes[len(calls)]
        calls.append(outcome)
        if outcome is not None:
            raise outcome

    _policy(stop).run(attempt)
    assert calls == outcomes


def test_stop_ends_a_backoff_wait() -> None:
    stop = threading.Event()
    policy = Reconnector("surge-ws-0", logging.getLogger("test.reconnect"), stop, 60.0, 60.0, lambda: "")
    calls: list[int] = []

    def attempt() -> None:
        calls.append(1)
        raise Retry

    thread = threading.Thread(target=policy.run, args=(attempt,))
    thread.start()
    wait_for(lambda: calls, 10, "the first attempt")
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
