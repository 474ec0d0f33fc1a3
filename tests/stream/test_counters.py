"""Per-connection counters are summed field by field; the manager's stats keys come from one place."""

from __future__ import annotations

from dataclasses import fields

from surge.stream.counters import StreamCounters


def test_add_copy_and_detail() -> None:
    a = StreamCounters(*range(1, len(fields(StreamCounters)) + 1))
    total = StreamCounters()
    total.add(a)
    total.add(a)
    assert all(getattr(total, f.name) == 2 * getattr(a, f.name) for f in fields(StreamCounters))
    snapshot = total.copy()
    total.add(a)
    assert snapshot.events == 2 * a.events and snapshot is not total
    assert list(a.detail()) == [
        "events",
        "dropped_frames",
        "unwanted_events",
        "duplicates_dropped",
        "callback_errors",
        "requests_sent",
        "failed_replies",
        "pongs",
        "probes",
        "probes_unanswered",
        "connect_attempts",
    ]
    assert a.detail()["connect_attempts"] == a.attempts and a.detail()["unwanted_events"] == a.unwanted
