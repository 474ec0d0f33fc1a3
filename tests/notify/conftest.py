"""Receivers for the notification tests, stopped (and their threads joined) at teardown."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from surge.notify.notifier import THREAD_NAME, Notifier
from tests.notify.receiver import Receiver


@pytest.fixture
def receiver_factory(notifiers: list[Notifier]) -> Iterator[Callable[[str], Receiver]]:
    """Receivers stopped (a hanging one released) before the notifiers are: a notifier waiting on
    one then ends at once."""
    made: list[Receiver] = []

    def make(mode: str = "ok") -> Receiver:
        made.append(Receiver(mode))
        return made[-1]

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def receiver(receiver_factory: Callable[[str], Receiver]) -> Receiver:
    return receiver_factory("ok")


@pytest.fixture
def notifiers() -> Iterator[list[Notifier]]:
    """Every notifier a test appends is stopped at teardown, and no ``surge-notify`` thread is left."""
    made: list[Notifier] = []
    yield made
    for n in made:
        n.stop(timeout=5.0)
    assert not [t for t in threading.enumerate() if t.name == THREAD_NAME]
