"""Per-connection counters, in one record so the manager sums them without naming each one.

Each connection's thread writes its own record without a lock (plain integer increments, read by
``stats()`` as a snapshot that may be one chunk behind); the manager folds a closed connection's
record into its running total so the totals never go backwards.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class StreamCounters:
    """What one connection (or, summed, the whole manager) has done since it started."""

    messages: int = 0  # frames of any kind received
    events: int = 0  # kline events handed to the consumer
    dropped_frames: int = 0  # malformed frames and protocol errors
    unwanted: int = 0  # events of streams no longer wanted (between unsubscribe and its reply)
    duplicates: int = 0  # events a rotation's overlap delivered twice, dropped
    callback_errors: int = 0
    reconnects: int = 0
    attempts: int = 0  # connection attempts (drawn from the manager-wide budget)
    pongs: int = 0
    failed_replies: int = 0  # requests refused or not answered in time
    requests_sent: int = 0
    probes: int = 0  # LIST_SUBSCRIPTIONS sent because the connection was quiet
    probes_unanswered: int = 0  # ... and not answered in time (each one a reconnect)

    def add(self, other: StreamCounters) -> None:
        """Add ``other``'s counts to these, field by field."""
        for name in _NAMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def copy(self) -> StreamCounters:
        total = StreamCounters()
        total.add(self)
        return total

    def detail(self) -> dict[str, int]:
        """The manager's ``stats()`` keys for these counts, after its contract keys (``reconnects``,
        ``messages``), in their documented order."""
        return {
            "events": self.events,
            "dropped_frames": self.dropped_frames,
            "unwanted_events": self.unwanted,
            "duplicates_dropped": self.duplicates,
            "callback_errors": self.callback_errors,
            "requests_sent": self.requests_sent,
            "failed_replies": self.failed_replies,
            "pongs": self.pongs,
            "probes": self.probes,  # quiet connections asked LIST_SUBSCRIPTIONS
            "probes_unanswered": self.probes_unanswered,  # ... and replaced for not answering
            "connect_attempts": self.attempts,
        }


#: The field names, once. ``dataclasses.fields()`` builds a new 13-tuple at every call, and
#: CPython's tuple free list keeps each one it frees (up to 2,000 per size, ~290 kB here): called
#: for every connection at every ``stats()`` (each heartbeat), it grew the bot's memory for its
#: first quarter of an hour of every run, which an hour-long soak cannot tell from a leak.
_NAMES: tuple[str, ...] = tuple(f.name for f in fields(StreamCounters))
