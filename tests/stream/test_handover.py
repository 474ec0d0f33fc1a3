"""A rotation's overlap: each stream's events pass once, in order, whichever connection has them first."""

from __future__ import annotations

from surge.stream.handover import CATCH_UP_S, Handover


def test_the_new_connection_waits_for_the_old_one_then_only_newer_events_pass() -> None:
    old_last_e = {"s": 5}
    h = Handover(old_id=1, old_last_e=old_last_e)
    assert not h.admit(2, "s", 6, 0)  # the old one has not acknowledged yet: it delivers alone
    h.ack_old(2)
    assert not h.old_acked
    h.ack_old(1)
    assert h.old_acked
    assert not h.admit(2, "s", 5, 0)  # the old one delivered E=5 already
    assert h.admit(2, "s", 6, 0) and not h.admit(1, "s", 6, 0) and h.admit(1, "s", 7, 0)


def test_the_replacement_keeps_deduping_after_the_old_one_ended_until_it_caught_up() -> None:
    # The old connection ran ahead: it delivered E=7 and ended while the replacement had received
    # E=5 only. Its late copies of 6 and 7 must not reach the consumer a second time (CI once saw a
    # repeated event right after a rotation, when the handover was dropped as the old one ended).
    h = Handover(old_id=1, old_last_e={"s": 5, "t": 9})
    h.ack_old(1)
    assert h.admit(1, "s", 6, 0) and h.admit(1, "s", 7, 0)
    h.old_ended()
    new_last_e = {"s": 5}
    deliver = {"s"}  # "t" is no longer delivered: it does not hold the handover
    now = h.old_ended_at or 0.0
    assert not h.caught_up(new_last_e, deliver, now)
    assert not h.admit(2, "s", 6, 0) and not h.admit(2, "s", 7, 0)
    new_last_e["s"] = 7
    assert not h.caught_up(new_last_e, deliver, now)  # another event of E=7 may follow
    new_last_e["s"] = 8
    assert h.caught_up(new_last_e, deliver, now)


def test_the_replacement_delivering_a_newer_event_itself_is_caught_up_on_that_stream() -> None:
    h = Handover(old_id=1, old_last_e={"s": 5, "t": 5})
    h.ack_old(1)
    assert h.admit(1, "s", 7, 0) and h.admit(2, "t", 6, 0)  # the replacement ran ahead on "t"
    h.old_ended()
    now = h.old_ended_at or 0.0
    assert not h.caught_up({"s": 6, "t": 6}, {"s", "t"}, now)  # "s" still behind the old one's 7
    assert h.admit(2, "s", 8, 0)
    assert h.caught_up({"s": 8, "t": 6}, {"s", "t"}, now)


def test_a_silent_stream_ends_the_handover_after_catch_up_s() -> None:
    h = Handover(old_id=1, old_last_e={"s": 5})
    assert not h.caught_up({}, {"s"}, 1e12)  # the old connection has not ended: never
    h.old_ended()
    ended = h.old_ended_at or 0.0
    assert not h.caught_up({}, {"s"}, ended + CATCH_UP_S / 2)
    assert h.caught_up({}, {"s"}, ended + CATCH_UP_S)


def test_a_closing_candle_and_the_next_one_stamped_in_the_same_millisecond_both_pass_once() -> None:
    # At the minute a candle's final state and the next candle's first update can carry one E (the
    # simulator stamps them so under load; a rotation there dropped the second as a "copy").
    h = Handover(old_id=1, old_last_e={"s": 5})
    h.ack_old(1)
    assert not h.admit(2, "s", 5, 60)  # equal E, candle unknown (the old side delivered it alone)
    assert h.admit(1, "s", 9, 0) and h.admit(1, "s", 9, 60)  # final state of candle 0, then candle 60
    assert not h.admit(2, "s", 9, 0) and not h.admit(2, "s", 9, 60)  # the replacement's copies
    assert h.admit(2, "s", 10, 60)


def test_the_replacement_is_not_caught_up_at_the_first_of_two_events_sharing_an_e() -> None:
    # The old connection delivered a candle's final state and the next candle's first update, both
    # E=9, and ended; the replacement has received the first of the two. Done at "E reached", its
    # copy of the second would reach the consumer a second time.
    h = Handover(old_id=1, old_last_e={"s": 5})
    h.ack_old(1)
    assert h.admit(1, "s", 9, 0) and h.admit(1, "s", 9, 60)
    h.old_ended()
    now = h.old_ended_at or 0.0
    assert not h.admit(2, "s", 9, 0)
    assert not h.caught_up({"s": 9}, {"s"}, now)
    assert not h.admit(2, "s", 9, 60)  # still deduped: a copy
    assert h.admit(2, "s", 10, 60)
    assert h.caught_up({"s": 10}, {"s"}, now)
