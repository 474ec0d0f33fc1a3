"""Waiting on a condition with a deadline: the one way tests synchronise with threads and sockets.

Deadlines are generous (CI shares 2 cores between the simulator and the client); a passing test
returns as soon as its condition holds, so a long deadline costs nothing when things work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    pred: Callable[[], T],
    timeout: float = 30.0,
    what: str = "condition",
    poll: float = 0.01,
    detail: Callable[[], object] | None = None,
) -> T:
    """Poll ``pred`` until it returns something truthy (returned) or raise AssertionError at the deadline.

    ``detail`` is called at the deadline and its result added to the message: the state a person
    needs to tell why the condition never held (a failure on a loaded CI machine cannot be rerun).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:g}s waiting for {what}"
            if detail is not None:
                try:
                    message += f"; {detail()}"
                except Exception as exc:  # noqa: BLE001 - the timeout is the failure to report
                    message += f"; (detail failed: {exc!r})"
            raise AssertionError(message)
        time.sleep(poll)
