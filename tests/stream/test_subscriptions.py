"""One connection's stream sets: what the manager assigns, what replies confirm, what is down."""

from __future__ import annotations

from surge.exchange.wire import Reply
from surge.stream.subscriptions import Request, Subscriptions, wire_request

A, B, C = "a@kline_1m", "b@kline_1m", "c@kline_1m"


def _sent(subs: Subscriptions, req_id: int, method: str, *streams: str) -> Request:
    req = Request(req_id, method, streams, 0.0, subs.generation)
    subs.sent(req)
    return req


def test_assign_release_resume_mute() -> None:
    subs = Subscriptions()
    subs.assign([A, B])
    assert subs.assigned == subs.deliver == {A, B}
    subs.mute(A)
    assert subs.deliver == {B} and subs.assigned == {A, B}
    assert subs.resume(A) and subs.deliver == {A, B}
    subs.release([A])
    assert not subs.resume(A) and subs.assigned == subs.deliver == {B}


def test_out_of_sync_leaves_out_streams_in_flight() -> None:
    subs = Subscriptions()
    subs.new_session()
    subs.assign([A, B])
    subs.server.add(C)
    _sent(subs, 1, "SUBSCRIBE", A)
    assert subs.out_of_sync() == ({B}, {C})


def test_a_subscribe_confirmation_reports_streams_that_were_down() -> None:
    subs = Subscriptions()
    subs.new_session()
    subs.assign([A, B])
    subs.socket_lost(1_000)
    assert subs.down == {A: 1_000, B: 1_000}
    subs.new_session()
    _sent(subs, 7, "SUBSCRIBE", A, B)
    settled = subs.settle(Reply(7), now=5.0)
    assert settled is not None and settled.ok and settled.back == {A, B} and settled.since == 1_000
    assert subs.server == {A, B} and not subs.down and subs.confirmed_at == 5.0 and subs.fully_confirmed()


def test_stale_and_refused_replies() -> None:
    subs = Subscriptions()
    subs.new_session()
    _sent(subs, 1, "SUBSCRIBE", A)
    subs.new_session()  # a reply from the previous socket matches nothing
    assert subs.settle(Reply(1), now=1.0) is None
    req = _sent(subs, 2, "SUBSCRIBE", B)
    settled = subs.settle(Reply(2, error_code=-1, error_msg="bad"), now=1.0)
    assert settled is not None and not settled.ok and subs.take_failed() == [req] and not subs.take_failed()
    subs.server.add(C)
    _sent(subs, 3, "UNSUBSCRIBE", C)
    subs.settle(Reply(3, error_code=-1, error_msg="bad"), now=1.0)
    assert subs.server == set()  # a refused UNSUBSCRIBE: taken as gone, re-sending cannot help


def test_expired_requests_are_queued_for_a_retry() -> None:
    subs = Subscriptions()
    old = Request(1, "SUBSCRIBE", (A,), 0.0, 0)
    fresh = Request(2, "SUBSCRIBE", (B,), 9.0, 0)
    subs.sent(old)
    subs.sent(fresh)
    assert subs.expire(now=10.0, timeout_s=5.0) == [old]
    assert list(subs.inflight) == [2] and subs.take_failed() == [old]


def test_reconcile_marks_unlisted_streams_down_since_their_last_event() -> None:
    subs = Subscriptions()
    subs.assign([A, B, C])
    subs.server.update({A, B})
    _sent(subs, 1, "SUBSCRIBE", C)
    lost = subs.reconcile({B}, last_e={A: 42}, fallback_ms=99)
    assert lost == {A} and subs.server == {B} and subs.take_down() == {A: 42} and not subs.down


def test_request_text_and_description() -> None:
    assert (
        wire_request("SUBSCRIBE", (A, B), 3)
        == '{"method":"SUBSCRIBE","params":["a@kline_1m","b@kline_1m"],"id":3}'
    )
    assert str(Request(3, "SUBSCRIBE", (A, B), 0.0, 0)) == "SUBSCRIBE id=3 (2 streams)"
