"""When a quiet connection is probed, kept or replaced: silence is not death on Binance.

Binance pushes a kline stream only when its candle changed, so a connection of thin symbols can be
quiet for minutes while perfectly healthy; replacing it would cost a gap report and a REST backfill
per stream each time, for nothing. The rules (the connection acts on the verdicts):

* confirmed streams that delivered nothing at all since the confirmation, for ``silence_s``, and no
  sibling connection ever delivered (``routed``): Binance without the ``/market`` route, which
  acknowledges SUBSCRIBE and never sends. Replace;
* otherwise quiet for ``silence_s``: probe with ``LIST_SUBSCRIPTIONS``; an answer proves the socket
  alive (and restarts the quiet clock), no answer within ``probe_timeout_s`` replaces it;
* nothing confirmed but requests unanswered and not a frame for ``silence_s``: the server does not
  read or cannot answer. Replace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from surge.stream.counters import StreamCounters

# LIST_SUBSCRIPTIONS probes carry ids from here up, far above the manager's request ids (1, 2, ...),
# so a reply is matched to its kind by id alone
PROBE_ID_BASE = 1 << 48
PROBE = "probe"  # the verdict that asks for a probe to be sent now


@dataclass(frozen=True, slots=True)
class Quiet:
    """What the connection knows at a recv timeout (monotonic times, 0.0 = never)."""

    now: float
    last_rx: float  # the last frame of any kind
    last_event_rx: float  # the last data frame
    confirmed_at: float  # the last SUBSCRIBE confirmation
    confirmed: int  # streams the server confirmed on this socket
    inflight: int  # requests without a reply
    routed: bool  # some connection of the manager received data: the URL's route works


class Liveness:
    """One connection's probe in flight and its verdicts (see the module docstring)."""

    def __init__(
        self,
        name: str,
        log: logging.Logger,
        counters: StreamCounters,
        silence_s: float,
        probe_timeout_s: float,
    ) -> None:
        self.name = name
        self.log = log
        self.counters = counters
        self.silence_s = silence_s
        self.probe_timeout_s = probe_timeout_s
        self.probe_id: int | None = None  # the LIST_SUBSCRIPTIONS in flight on this socket, if any
        self.probe_sent_at = 0.0
        self._seq = 0
        self.answered_at = 0.0  # the last probe answer (a sign of life, like data)
        self._quiet_for = 0.0  # how long the socket was quiet when the last PROBE verdict was given

    def reset(self) -> None:
        """A new socket: no probe in flight, nothing answered on it."""
        self.probe_id = None
        self.probe_sent_at = 0.0
        self.answered_at = 0.0

    def verdict(self, q: Quiet) -> str:
        """ "" to keep waiting, :data:`PROBE` to send a probe now, or why the socket must be replaced."""
        if not q.confirmed:
            if q.inflight and q.now - q.last_rx > self.silence_s:
                return f"silent for {q.now - q.last_rx:.1f}s with {q.inflight} requests unanswered"
            return ""  # idle: nothing is expected from the server
        if self.probe_id is not None:
            return self._probe_verdict(q)
        quiet = q.now - self._quiet_since(q)
        if quiet <= self.silence_s:
            return ""
        if not q.last_event_rx and not q.routed:
            self.log.warning(
                "%s: %d streams confirmed %.1fs ago and not one event since (is the /market "
                "route missing from the URL?); reconnecting",
                self.name,
                q.confirmed,
                quiet,
            )
            return f"no stream data for {quiet:.1f}s after SUBSCRIBE was confirmed"
        self._quiet_for = quiet
        return PROBE

    def _probe_verdict(self, q: Quiet) -> str:
        assert self.probe_id is not None
        if q.last_event_rx > self.probe_sent_at:
            self.probe_id = None  # data came meanwhile: alive; a late answer is ignored
            return ""
        waited = q.now - self.probe_sent_at
        if waited <= self.probe_timeout_s:
            return ""
        self.counters.probes_unanswered += 1
        self.log.warning(
            "%s: quiet for %.1fs and LIST_SUBSCRIPTIONS id=%d unanswered after %.1fs; reconnecting",
            self.name,
            self.probe_sent_at - self._quiet_since(q),
            self.probe_id,
            waited,
        )
        return f"probe unanswered for {waited:.1f}s"

    def _quiet_since(self, q: Quiet) -> float:
        return max(q.last_event_rx, q.confirmed_at, self.answered_at)

    def next_probe(self, now: float) -> str:
        """A new probe sent now: its request text (its id is a fresh one, kept to match the answer)."""
        self._seq += 1
        self.probe_id = PROBE_ID_BASE + self._seq
        self.probe_sent_at = now
        self.counters.probes += 1
        self.log.debug(
            "%s: no stream data for %.1fs; probing with LIST_SUBSCRIPTIONS id=%d",
            self.name,
            self._quiet_for,
            self.probe_id,
        )
        return f'{{"method":"LIST_SUBSCRIPTIONS","id":{self.probe_id}}}'

    def answered(self, now: float) -> None:
        self.probe_id = None
        self.answered_at = now
