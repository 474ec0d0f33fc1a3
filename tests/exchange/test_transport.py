"""The one transport: what an answer means (definite, error, outcome open), and that only an
idempotent request is sent again. Public and signed endpoints are tested through it in
test_rest.py and test_orders.py; here the transport's own rules, on plain values and one simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from surge.exchange.codes import ErrorCode
from surge.exchange.ratelimit import WeightLimiter
from surge.exchange.transport import (
    ExchangeError,
    ExchangeUnavailable,
    Request,
    StatusUnknown,
    Transport,
    is_error_body,
    redact,
    status_unknown_reason,
)
from surge.sim import Simulator


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(n_symbols=5, seed=3, latency_ms=0, surge_interval_s=None) as s:
        s.market.freeze()
        yield s


@pytest.fixture
def transport(clean: Simulator) -> Iterator[Transport]:
    t = Transport(
        clean.rest_url,
        max_attempts=3,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
        limiter=WeightLimiter(max_ban_s=30),
    )
    try:
        yield t
    finally:
        t.close()


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (503, None, "HTTP 503"),
        (408, {"code": -1007, "msg": "timeout"}, "HTTP 408 code -1007: timeout"),
        (400, {"code": -1006, "msg": "bus"}, "HTTP 400 code -1006: bus"),
        (200, {"code": -1007, "msg": "timeout"}, "HTTP 200 code -1007: timeout"),
        (200, "garbled", "HTTP 200 with a malformed body"),
        (400, {"code": -2013, "msg": "Order does not exist."}, None),
        (200, {"orderId": 1}, None),
    ],
)
def test_status_unknown_reason(status: int, body: object, reason: str | None) -> None:
    decoded = body != "garbled"
    assert status_unknown_reason(status, body if decoded else None, decoded) == reason


def test_error_shape() -> None:
    assert is_error_body({"code": -1121, "msg": "Invalid symbol."})
    assert not is_error_body({"code": "200", "msg": "success"}) and not is_error_body(
        {"code": 200, "msg": "ok"}
    )
    assert not is_error_body({"code": -1}) and not is_error_body([{"code": -1, "msg": "x"}])


def test_redact() -> None:
    assert redact("GET /x?a=1&signature=abc123", "a=1") == "GET /x?<redacted>&signature=<redacted>"


def test_an_idempotent_request_is_retried_then_unavailable(clean: Simulator, transport: Transport) -> None:
    clean.rest.error_next(2, 503)
    assert transport.send(Request("GET", "/fapi/v1/time", weight=1))["serverTime"] > 0
    assert transport.requests == 3 and transport.retries == 2
    clean.rest.error_next(3, 503)
    with pytest.raises(ExchangeUnavailable, match=r"HTTP 503.*after 3 attempts") as info:
        transport.send(Request("GET", "/fapi/v1/time", weight=1, label="GET /fapi/v1/time"))
    assert not isinstance(info.value, StatusUnknown) and "GET /fapi/v1/time" in str(info.value)


def test_a_request_that_is_not_idempotent_is_sent_once(clean: Simulator, transport: Transport) -> None:
    clean.rest.error_next(1, 503)
    with pytest.raises(StatusUnknown) as info:
        transport.send(Request("GET", "/fapi/v1/time", weight=1, idempotent=False))
    assert info.value.reason.startswith("HTTP 503") and transport.requests == 1 and transport.retries == 0


def test_an_error_answer_keeps_its_code(clean: Simulator, transport: Transport) -> None:
    with pytest.raises(ExchangeError) as info:
        transport.send(Request("GET", "/fapi/v1/klines", {"symbol": "NOPEUSDT", "interval": "1m"}, weight=1))
    assert info.value.code == ErrorCode.BAD_SYMBOL and transport.requests == 1


def test_the_query_is_built_for_every_attempt(clean: Simulator, transport: Transport) -> None:
    """A signed request needs a fresh timestamp and signature each time it is sent."""
    built: list[int] = []

    def query() -> str:
        built.append(1)
        return ""  # a signed request would stamp and sign here

    clean.rest.error_next(1, 502)
    transport.send(Request("GET", "/fapi/v1/ticker/price", query, weight=1))
    assert len(built) == 2


def test_nothing_is_sent_after_close(clean: Simulator, transport: Transport) -> None:
    """A housekeeping job still running at a stop must end, not go on through its requests."""
    transport.send(Request("GET", "/fapi/v1/time", weight=1))
    before = clean.rest.stats()["requests"]
    transport.close()
    for idempotent in (True, False):
        with pytest.raises(ExchangeUnavailable, match="client is closed") as info:
            transport.send(Request("GET", "/fapi/v1/time", weight=1, idempotent=idempotent))
        assert not isinstance(info.value, StatusUnknown)  # never sent: no doubt about its outcome
    assert clean.rest.stats()["requests"] == before and transport.requests == 1 and transport.retries == 0
