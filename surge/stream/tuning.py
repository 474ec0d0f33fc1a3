"""The stream manager's knobs, in a module of their own so the manager and its connections both
import them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class StreamTuning:
    """Knobs with production defaults; tests shrink the timeouts (passed as ``**tuning``)."""

    debounce_s: float = 0.02  # a burst of calls settles for this long before one pass applies it
    max_debounce_s: float = 0.2  # ... but never delays a change longer than this
    housekeeping_s: float = 0.5  # resubscriber wakes at least this often (timeouts, rotation, retries)
    max_msgs_per_s: int = 5  # outgoing messages per connection per sliding second (Binance: 10)
    max_streams_per_message: int = 200
    reply_timeout_s: float = 10.0  # a request without a reply by then is re-sent
    retry_delay_s: float = 1.0  # first delay after a refused request (doubles per failure)
    retry_max_s: float = 60.0
    connect_timeout_s: float = 4.0  # TCP + TLS connect; below stop()'s default 5 s so stop stays bounded
    # confirmed streams and no data for this long: never any since the confirmation -> replace (the
    # unrouted case); quiet after delivering -> probe with LIST_SUBSCRIPTIONS (Binance pushes a stream
    # only when its candle changed: thin symbols are quiet for minutes on a healthy connection)
    silence_timeout_s: float = 10.0
    probe_timeout_s: float = 5.0  # a probe without an answer by then -> replace
    tick_s: float = 0.5  # recv timeout: how often an idle connection checks stop/silence
    max_connection_age_s: float = 23 * 3600.0  # rotate before Binance's 24 h cut
    handover_settle_s: float = 1.0  # after the replacement is confirmed, overlap at most this long
    backoff_base_s: float = 0.5  # full-jitter exponential backoff: uniform(0, base * 2**n) ...
    # ... capped here: a stream is back within 15 s of the exchange coming back (with 60 s it took
    # 30 s on average after a long outage, every surge of that half minute missed); the manager-wide
    # attempt cap below, not this, keeps a long outage under Binance's per-IP connection limit
    backoff_max_s: float = 15.0
    stable_after_s: float = 30.0  # a session that delivered data or lasted this long resets backoff
    max_connect_attempts: int = 250  # manager-wide, per attempts_window_s (Binance: ~300 / 5 min / IP)
    attempts_window_s: float = 300.0
    recv_bufsize: int = 256 * 1024
    # intervals whose events are decoded after the others of each received chunk and handed over as a
    # second batch: a bot that decides on 1m klines and only files 4h ones (("4h",)) gets its
    # decisions without waiting behind the decoding of the 4h half of every burst
    decode_last: tuple[str, ...] = ()
    sslopt: dict[str, Any] | None = None  # passed to websocket-client for wss:// (CA bundle, proxies' CAs)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> StreamTuning:
        """Build from keyword options, naming every unknown one (a typo must not pass silently)."""
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown tuning option(s): {', '.join(unknown)}")
        return cls(**options)
