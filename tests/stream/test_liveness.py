"""Quiet connections: probed when they delivered before, replaced when unrouted or unanswered."""

from __future__ import annotations

import logging

from surge.stream.counters import StreamCounters
from surge.stream.liveness import PROBE, PROBE_ID_BASE, Liveness, Quiet


def _live() -> Liveness:
    return Liveness("surge-ws-0", logging.getLogger("test.liveness"), StreamCounters(), 10.0, 5.0)


def _quiet(now: float, **kw: object) -> Quiet:
    base: dict[str, object] = {
        "last_rx": 0.0,
        "last_event_rx": 1.0,
        "confirmed_at": 1.0,
        "confirmed": 3,
        "inflight": 0,
        "routed": True,
    }
    return Quiet(now, **{**base, **kw})  # type: ignore[arg-type]


def test_idle_connections_wait_and_unanswered_requests_replace() -> None:
    live = _live()
    assert live.verdict(_quiet(100.0, confirmed=0)) == ""
    assert live.verdict(_quiet(100.0, confirmed=0, inflight=2)).startswith("silent for 100.0s")


def test_quiet_after_delivering_is_probed_then_kept_when_answered() -> None:
    live = _live()
    assert live.verdict(_quiet(5.0)) == ""
    assert live.verdict(_quiet(12.0)) == PROBE
    assert live.next_probe(12.0) == f'{{"method":"LIST_SUBSCRIPTIONS","id":{PROBE_ID_BASE + 1}}}'
    assert live.counters.probes == 1 and live.verdict(_quiet(14.0)) == ""
    live.answered(14.0)
    assert live.probe_id is None and live.verdict(_quiet(20.0)) == ""  # quiet clock restarted
    assert live.verdict(_quiet(25.0)) == PROBE


def test_an_unanswered_probe_replaces_and_data_meanwhile_cancels_it() -> None:
    live = _live()
    live.next_probe(12.0)
    assert live.verdict(_quiet(18.0)).startswith("probe unanswered for 6.0s")
    assert live.counters.probes_unanswered == 1
    live.next_probe(20.0)
    assert live.verdict(_quiet(30.0, last_event_rx=21.0)) == "" and live.probe_id is None


def test_unrouted_connection_is_replaced_unless_a_sibling_delivered() -> None:
    live = _live()
    assert live.verdict(_quiet(12.0, last_event_rx=0.0, routed=False)).startswith("no stream data for 11.0s")
    assert live.verdict(_quiet(12.0, last_event_rx=0.0, routed=True)) == PROBE
