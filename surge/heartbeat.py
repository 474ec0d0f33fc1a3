"""What ``surge run`` says about itself in ``$SURGE_HOME/heartbeat.json``, for ``status`` and ``watch``.

One definition of the file's fields for both sides: the bot writes a :class:`Heartbeat` every few
seconds (atomically, see :func:`surge.runtime.write_json_atomic`); ``surge status``, another process,
reads it back. The reader still checks every value's type: the file may come from an older version,
a killed run, or a person's editor.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypedDict

if TYPE_CHECKING:
    from surge.app import Bot


class ConnectionHealth(TypedDict):
    """One WebSocket connection, as ``surge watch`` shows it. Ages are seconds at ``written_at``."""

    name: str
    connected: bool
    streams: int  # confirmed by the exchange on this connection
    last_message_age_s: float | None
    reconnects: int
    age_s: float  # how long the connection has been up


class RestWeight(TypedDict):
    """The REST request weight of this IP as the exchange last reported it (``X-MBX-USED-WEIGHT-1M``)."""

    used: int  # the latest report: used in the exchange's current minute
    peak: int  # the highest report since the start
    limit: int  # per minute (from exchangeInfo)
    rate_limited: int  # 429 and 418 answers seen


class Heartbeat(TypedDict):
    """One heartbeat. Times are seconds since the epoch (local clock); counts are since the start."""

    pid: int
    running: bool  # False in the last one, written by a clean stop
    written_at: float
    started_at: float
    ready_at: float | None  # when every wanted stream was first confirmed
    mode: str  # [trade] mode: "paper" or "live"
    venue: str  # whose signals and positions: "sim", the exchange's host, "live:<venue>"
    connections: int
    streams: int  # confirmed by the exchange, every connection
    threads: int
    last_message_at: float | None
    signals: int
    open_positions: int
    universe: int
    passing: int
    reconnects: int
    gaps: int
    events: int
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    latency_samples: int
    start_weight: int  # request weight of the start's 4h scan
    backfills: int  # symbols whose 1m history was fetched
    backfill_pending: int
    baseline_ready: int  # passing symbols whose volume baseline is complete
    stream_connections: list[ConnectionHealth]
    last_prices: dict[str, float]  # the last 1m close of each open position's symbol (unrealised PnL)
    rest_weight: RestWeight | None  # None before the REST client exists


#: The fields a reader takes as numbers (see :func:`surge.cli.collect_status`).
NumberField = Literal[
    "pid", "written_at", "started_at", "last_message_at", "connections", "streams", "threads"
]


def number_of(data: Mapping[str, Any] | None, key: str) -> float | None:
    """A numeric field of a heartbeat (or of one of its entries) as read, or None if absent or not a
    number (an older version's file, a hand edit)."""
    value = data.get(key) if data else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def heartbeat_of(bot: Bot, *, running: bool) -> Heartbeat:
    """What the bot says about itself in ``heartbeat.json`` (read by ``surge status``)."""
    assert bot.manager is not None and bot.store is not None
    st = bot.manager.stats()
    age = st.get("last_message_age_s")
    p50, p99 = bot.latency.percentiles()
    now = bot.clock.wall()
    return Heartbeat(
        pid=os.getpid(),
        running=running,
        written_at=now,
        started_at=bot.started_at,
        ready_at=bot.ready_at,
        mode=bot.settings.trade.mode,
        venue=bot.venue,
        connections=st["connections"],
        streams=st["streams"],
        threads=threading.active_count(),
        last_message_at=now - age if age is not None else None,
        signals=bot.store.signal_count(venue=bot.venue),
        open_positions=len(bot.book),
        universe=len(bot.filters.universe),
        passing=len(bot.passing),
        reconnects=st["reconnects"],
        gaps=st["gaps"],
        events=st["events"],
        latency_ms_p50=p50,
        latency_ms_p99=p99,
        latency_samples=len(bot.latency),
        start_weight=bot.start_weight,
        backfills=bot.backfill.done,
        backfill_pending=len(bot.backfill.pending) + len(bot.backfill.retry),
        baseline_ready=bot.baseline_ready(),
        stream_connections=[_connection_health(c) for c in st.get("per_connection", ())],
        last_prices={
            p.symbol: bot.last_price[p.symbol] for p in bot.book.positions() if p.symbol in bot.last_price
        },
        rest_weight=_rest_weight(bot),
    )


def publish(bot: Bot, *, running: bool) -> Heartbeat:
    """:func:`heartbeat_of`, also handed to the readers in this process (``/health`` of
    ``--metrics-port``): they learn that the loop is alive from memory, not from the file, whose
    write may fail on a full disk while the bot trades on."""
    beat = heartbeat_of(bot, running=running)
    if bot.metrics is not None:
        bot.metrics.heartbeat(beat)
    return beat


def _connection_health(c: dict[str, Any]) -> ConnectionHealth:
    """The fields of one ``stats()["per_connection"]`` entry a person watching needs."""
    return ConnectionHealth(
        name=str(c.get("name", "?")),
        connected=bool(c.get("connected")),
        streams=int(c.get("confirmed", c.get("streams", 0))),
        last_message_age_s=c.get("last_message_age_s"),
        reconnects=int(c.get("reconnects", 0)),
        age_s=float(c.get("age_s", 0.0)),
    )


def _rest_weight(bot: Bot) -> RestWeight | None:
    """The weight limiter's view of this IP; read without its lock (plain ints, a snapshot)."""
    limiter = getattr(bot.rest, "limiter", None)
    if limiter is None:
        return None
    return RestWeight(
        used=limiter.last_used_weight,
        peak=limiter.max_used_weight,
        limit=limiter.limit,
        rate_limited=limiter.rate_limited,
    )


__all__ = [
    "ConnectionHealth",
    "Heartbeat",
    "NumberField",
    "RestWeight",
    "heartbeat_of",
    "number_of",
    "publish",
]
