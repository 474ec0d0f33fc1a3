"""A rotation's overlap: each stream's events pass once, in order, whichever connection has them first."""

from __future__ import annotations

from surge.stream.handover import Handover


def test_the_new_connection_waits_for_the_old_one_then_only_newer_events_pass() -> None:
    old_last_e = {"s": 5}
    h = Handover(old_id=1, old_last_e=old_last_e)
    assert not h.admit(2, "s", 6)  # the old one has not acknowledged yet: it delivers alone
    h.ack_old(2)
    assert not h.old_acked
    h.ack_old(1)
    assert h.old_acked
    assert not h.admit(2, "s", 5)  # the old one delivered E=5 already
    assert h.admit(2, "s", 6) and not h.admit(1, "s", 6) and h.admit(1, "s", 7)
