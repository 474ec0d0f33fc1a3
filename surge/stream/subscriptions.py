"""What one connection carries: streams assigned by the manager, confirmed by the server, in flight.

Why a class of its own: the manager's resubscriber decides what a connection should carry and the
connection's thread learns what the server confirmed; both change these sets, so they live behind
one small API (assign, release, settle a reply, ...) instead of each side editing the other's sets.
Every method runs under the manager's lock (one lock for the manager and all its connections, so a
pass sees every connection in one consistent state); the caller takes it. The one exception is
``deliver``, the recv loop's filter, read without the lock: it is only ever mutated in place, never
rebound, so the loop can hold a reference to it, and a set membership test is atomic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from surge.exchange import wire


@dataclass
class Request:
    """A SUBSCRIBE / UNSUBSCRIBE in flight on one socket, matched to its reply by ``id``."""

    id: int
    method: str
    streams: tuple[str, ...]
    sent_at: float
    generation: int
    failures: int = 0  # how often these streams were refused or timed out before

    def __str__(self) -> str:
        return f"{self.method} id={self.id} ({len(self.streams)} streams)"


@dataclass(frozen=True, slots=True)
class Settled:
    """A reply matched to its request; ``back`` are streams down until it confirmed them, since ``since``."""

    request: Request
    ok: bool
    back: frozenset[str] = frozenset()
    since: int = 0


def wire_request(method: str, streams: tuple[str, ...], req_id: int) -> str:
    """``{"method": "SUBSCRIBE", "params": [...], "id": n}`` as compact JSON."""
    params = ",".join(f'"{s}"' for s in streams)
    return f'{{"method":"{method}","params":[{params}],"id":{req_id}}}'


class Subscriptions:
    """One connection's stream sets (see the module docstring: call every method under the lock)."""

    def __init__(self) -> None:
        self.assigned: set[str] = set()  # what the planner put on this connection
        self.deliver: set[str] = set()  # assigned and wanted: the recv loop's filter
        self.server: set[str] = set()  # what the server confirmed on the current socket
        self.inflight: dict[int, Request] = {}
        self.failed: deque[Request] = deque()  # refused or timed out; the manager turns them into retries
        self.down: dict[str, int] = {}  # stream -> wall ms since when it has not been delivered
        self.generation = 0  # sockets opened so far: a reply from an older socket is stale
        self.confirmed_at = 0.0  # monotonic time of the last SUBSCRIBE confirmation (silence reference)

    # ----------------------------------------------------------------- the manager's side

    def assign(self, streams: Iterable[str]) -> None:
        """Carry ``streams`` (and deliver them); the resubscriber then subscribes them."""
        self.assigned.update(streams)
        self.deliver.update(streams)

    def release(self, streams: Iterable[str]) -> None:
        """Stop carrying ``streams``: no longer delivered; the resubscriber then unsubscribes them."""
        for s in streams:
            self.assigned.discard(s)
            self.deliver.discard(s)
            self.down.pop(s, None)

    def resume(self, stream: str) -> bool:
        """Deliver an assigned stream again (wanted back before it was released); False if not assigned."""
        if stream not in self.assigned:
            return False
        self.deliver.add(stream)
        return True

    def mute(self, stream: str) -> None:
        """Stop delivering ``stream`` at once (unwanted); it stays assigned until the next pass."""
        self.deliver.discard(stream)

    def inherit(self, other: Subscriptions) -> None:
        """Carry everything ``other`` carries (a rotation's replacement)."""
        self.assigned.update(other.assigned)
        self.deliver.update(other.deliver)

    def out_of_sync(self) -> tuple[set[str], set[str]]:
        """(to SUBSCRIBE, to UNSUBSCRIBE): assigned vs confirmed, leaving out streams in flight."""
        busy = {s for req in self.inflight.values() for s in req.streams}
        return self.assigned - self.server - busy, self.server - self.assigned - busy

    def fully_confirmed(self) -> bool:
        return self.assigned <= self.server

    def take_failed(self) -> list[Request]:
        """Refused or timed-out requests reported since the last call."""
        out = list(self.failed)
        self.failed.clear()
        return out

    def take_down(self, stopped_ms: int | None = None) -> dict[str, int]:
        """Streams down and since when (wall ms), forgetting them. ``stopped_ms``: the connection was
        stopped before handing its streams over (stopping marks nothing down), so every delivered
        stream not down already has been since then."""
        if stopped_ms is not None:
            self.socket_lost(stopped_ms)
        out = dict(self.down)
        self.down.clear()
        return out

    def mark_down(self, stream: str, since_ms: int) -> None:
        """``stream`` has not been delivered since ``since_ms``: its confirmation reports a gap."""
        self.down.setdefault(stream, since_ms)

    # ----------------------------------------------------------------- the connection's side

    def new_session(self) -> int:
        """A new socket: nothing is confirmed or in flight on it. Returns its generation."""
        self.generation += 1
        self.server.clear()
        self.inflight.clear()
        self.failed.clear()  # refusals on the old socket say nothing about the new one
        return self.generation

    def socket_lost(self, since_ms: int | None) -> None:
        """The socket is gone: nothing is confirmed any more; every delivered stream is down since
        ``since_ms`` (None when stopping: nobody will ask about the gap)."""
        self.server.clear()
        self.inflight.clear()
        if since_ms is not None:
            for s in self.deliver:
                self.down.setdefault(s, since_ms)

    def sent(self, req: Request) -> None:
        """Record ``req`` before it is sent, so a fast reply always finds it."""
        self.inflight[req.id] = req

    def unsent(self, req_id: int) -> None:
        self.inflight.pop(req_id, None)

    def expire(self, now: float, timeout_s: float) -> list[Request]:
        """Requests without a reply for ``timeout_s``: forgotten here, queued for a retry."""
        expired = [req for req in self.inflight.values() if now - req.sent_at > timeout_s]
        for req in expired:
            del self.inflight[req.id]
            self.failed.append(req)
        return expired

    def settle(self, reply: wire.Reply, now: float) -> Settled | None:
        """Apply a reply to its request; None when it matches none on the current socket."""
        req = self.inflight.pop(reply.id, None)
        if req is None or req.generation != self.generation:
            return None
        if not reply.ok:
            if req.method == "SUBSCRIBE":
                self.failed.append(req)
            else:
                # Binance acknowledges UNSUBSCRIBE of a stream it does not carry, so a refusal
                # means a malformed request: re-sending it cannot help. Take the streams as gone
                # (their events, if any, are dropped as unwanted).
                self.server.difference_update(req.streams)
            return Settled(req, ok=False)
        if req.method != "SUBSCRIBE":
            self.server.difference_update(req.streams)
            return Settled(req, ok=True)
        self.server.update(req.streams)
        self.confirmed_at = now
        back = frozenset(s for s in req.streams if s in self.down)
        since = min((self.down.pop(s) for s in back), default=0)
        return Settled(req, ok=True, back=back, since=since)

    def reconcile(self, listed: set[str], last_e: dict[str, int], fallback_ms: int) -> set[str]:
        """The server's own list of this socket's streams: confirmed ones it lacks (and that are not
        in flight) are no longer confirmed, and delivered ones are down since their last event."""
        busy = {s for req in self.inflight.values() for s in req.streams}
        lost = self.server - listed - busy
        self.server.difference_update(lost)
        for s in lost:
            if s in self.deliver:
                # since the last event of the stream we know of: its candles after it may be lost
                self.down.setdefault(s, last_e.get(s) or fallback_ms)
        return lost
