"""Settings: built-in defaults < TOML file < environment < command-line flags, validated up front.

Every key of the contract's TOML lives in one frozen dataclass per section. Each field carries its
own range check in its metadata, so adding a key means adding one line, and the error message
always names the key (``filter_4h.workers``) the user has to fix. Nothing starts before the whole
configuration is known to be valid.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from surge.errors import ConfigError
from surge.exchange.ratelimit import MAX_WEIGHT1_LIMIT

DEFAULT_REST_URL = "https://fapi.binance.com"
DEFAULT_WS_URL = "wss://fstream.binance.com/market"
#: Binance's public data archive: 1m klines by day and month (``surge history download``)
DEFAULT_DATA_URL = "https://data.binance.vision"
#: ``[exchange] venue`` -> (REST base, WebSocket base). Keys of one venue do not work on another. The
#: test venues keep the ``/market`` route too: it is the one that serves klines since 2026-04-23.
VENUES: dict[str, tuple[str, str]] = {
    "binance": (DEFAULT_REST_URL, DEFAULT_WS_URL),
    "testnet": ("https://testnet.binancefuture.com", "wss://fstream.binancefuture.com/market"),
    "demo": ("https://demo-fapi.binance.com", "wss://demo-fstream.binance.com/market"),
}
MAX_FILTER_WORKERS = 3
MAX_STREAMS_PER_CONNECTION = 1024  # Binance's per-connection limit
#: The 1m backfill asks for ``volume_lookback + 2`` candles (the baseline, the current one and one
#: spare) and stays below 100, where a klines request costs weight 1: a longer lookback could never
#: be filled, so the rule would never signal and the backfill would be re-asked every minute.
MAX_VOLUME_LOOKBACK = MAX_WEIGHT1_LIMIT - 2
#: Durations become int milliseconds (deadlines, cooldowns): 30 days is far beyond any sensible hold
#: or cooldown and far inside int64, so no value can overflow a timestamp or a database column.
MAX_DURATION_S = 30 * 86_400
#: One position's notional: far beyond any exchange's per-symbol cap, and small enough that a
#: quantity, a fee or a PnL computed from it stays a finite float.
MAX_POSITION_USDT = 1e9


def _key(check: Callable[[Any], bool], rule: str) -> Any:
    """A dataclass field default's metadata: the check its value must pass and the rule in words."""
    return {"check": check, "rule": rule}


#: metadata of a key whose value is a secret: an error names its type, never the value
_SECRET = {"secret": True}


def _between(lo: float, hi: float) -> Callable[[Any], bool]:
    return lambda v: lo <= v <= hi


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


def _finite(v: float) -> bool:
    return math.isfinite(v)


@dataclass(frozen=True, slots=True)
class Filter4hSettings:
    workers: int = field(default=3, metadata=_key(_between(1, MAX_FILTER_WORKERS), "between 1 and 3"))
    batch_size: int = field(default=100, metadata=_key(_between(1, 10_000), "between 1 and 10000"))
    # <100 keeps every klines request at weight 1; 2 is the least that holds a closed and a current candle
    lookback: int = field(
        default=6,
        metadata=_key(
            _between(2, MAX_WEIGHT1_LIMIT), f"between 2 and {MAX_WEIGHT1_LIMIT} (request weight 1)"
        ),
    )
    min_change_pct: float = field(default=-5.0, metadata=_key(_finite, "a finite number"))
    max_change_pct: float = field(default=10.0, metadata=_key(_finite, "a finite number"))
    min_quote_volume: float = field(default=5_000_000.0, metadata=_key(_non_negative, ">= 0"))
    refresh_s: float = field(default=900.0, metadata=_key(_between(10, 86_400), "between 10 and 86400"))


@dataclass(frozen=True, slots=True)
class SurgeSettings:
    min_change_pct: float = field(default=3.0, metadata=_key(_positive, "> 0"))
    volume_multiple: float = field(default=3.0, metadata=_key(_positive, "> 0"))
    volume_lookback: int = field(
        default=20,
        metadata=_key(
            _between(1, MAX_VOLUME_LOOKBACK),
            f"between 1 and {MAX_VOLUME_LOOKBACK} "
            f"(the 1m backfill fetches at most {MAX_WEIGHT1_LIMIT} candles)",
        ),
    )
    min_quote_volume: float = field(default=50_000.0, metadata=_key(_non_negative, ">= 0"))
    cooldown_s: float = field(
        default=900.0, metadata=_key(_between(0, MAX_DURATION_S), f"between 0 and {MAX_DURATION_S} (30 days)")
    )


@dataclass(frozen=True, slots=True)
class TradeSettings:
    mode: str = field(default="paper", metadata=_key(lambda v: v in ("paper", "live"), '"paper" or "live"'))
    position_usdt: float = field(
        default=100.0,
        metadata=_key(lambda v: 0 < v <= MAX_POSITION_USDT, f"> 0 and at most {MAX_POSITION_USDT:.0f}"),
    )
    take_profit_pct: float = field(default=2.0, metadata=_key(_between(0.01, 1000), "between 0.01 and 1000"))
    stop_loss_pct: float = field(default=1.0, metadata=_key(_between(0.01, 99.99), "between 0.01 and 99.99"))
    max_hold_s: float = field(
        default=3600.0,
        metadata=_key(lambda v: 0 < v <= MAX_DURATION_S, f"> 0 and at most {MAX_DURATION_S} (30 days)"),
    )
    max_open_positions: int = field(default=5, metadata=_key(_between(1, 1000), "between 1 and 1000"))
    # paper fills: the price moves against you by the slippage, and Binance's taker fee is paid both ways
    slippage_pct: float = field(default=0.05, metadata=_key(_between(0, 10), "between 0 and 10"))
    taker_fee_pct: float = field(default=0.05, metadata=_key(_between(0, 10), "between 0 and 10"))
    # live trading: set once per symbol before the first entry (Binance allows 1..125, less on big notionals)
    leverage: int = field(default=1, metadata=_key(_between(1, 125), "between 1 and 125"))


@dataclass(frozen=True, slots=True)
class StreamSettings:
    streams_per_connection: int = field(
        default=200,
        metadata=_key(_between(1, MAX_STREAMS_PER_CONNECTION), f"between 1 and {MAX_STREAMS_PER_CONNECTION}"),
    )


@dataclass(frozen=True, slots=True)
class ExchangeSettings:
    venue: str = field(
        default="binance", metadata=_key(lambda v: v in VENUES, " or ".join(f'"{v}"' for v in VENUES))
    )


#: ``[notify] events``: what can be sent (the default set leaves out the chatty or the optional ones).
NOTIFY_EVENTS = ("signal", "entry", "exit", "error", "outage", "ban", "reconcile", "daily")
DEFAULT_NOTIFY_EVENTS = ("entry", "exit", "error", "outage", "ban")


@dataclass(frozen=True, slots=True)
class NotifySettings:
    # apprise URLs hold tokens: never in repr, never shown in an error (only their position)
    urls: tuple[str, ...] = field(
        default=(), repr=False, metadata=_key(lambda v: all(u.strip() for u in v), "non-empty URLs") | _SECRET
    )
    events: tuple[str, ...] = field(
        default=DEFAULT_NOTIFY_EVENTS,
        metadata=_key(lambda v: set(v) <= set(NOTIFY_EVENTS), f"names among {', '.join(NOTIFY_EVENTS)}")
        | {"bad": lambda v: ", ".join(repr(x) for x in v if x not in NOTIFY_EVENTS)},
    )
    outage_s: float = field(
        default=60.0, metadata=_key(lambda v: 0 < v <= MAX_DURATION_S, f"> 0 and at most {MAX_DURATION_S}")
    )


SECTIONS: dict[str, type] = {
    "filter_4h": Filter4hSettings,
    "surge": SurgeSettings,
    "trade": TradeSettings,
    "stream": StreamSettings,
    "exchange": ExchangeSettings,
    "notify": NotifySettings,
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a command needs to know, already validated. Secrets never appear in ``repr``."""

    filter_4h: Filter4hSettings = field(default_factory=Filter4hSettings)
    surge: SurgeSettings = field(default_factory=SurgeSettings)
    trade: TradeSettings = field(default_factory=TradeSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)
    exchange: ExchangeSettings = field(default_factory=ExchangeSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    rest_url: str = DEFAULT_REST_URL
    ws_url: str = DEFAULT_WS_URL
    data_url: str = DEFAULT_DATA_URL
    home: Path = field(default_factory=lambda: Path("~/.surge").expanduser())
    config_path: Path | None = None
    api_key: str | None = field(default=None, repr=False)
    api_secret: str | None = field(default=None, repr=False)


# --------------------------------------------------------------------------- validation


def _coerce(section: str, name: str, value: Any, default: Any, secret: bool = False) -> Any:
    """Check the TOML value's type against the default's; ints are accepted where floats are."""
    if isinstance(default, tuple):  # a list of strings (TOML arrays)
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        if not ok:
            got = type(value).__name__ if secret else _shown(value)
            raise ConfigError(f"{section}.{name} must be a list of strings, got {got}")
        return tuple(value)
    if isinstance(default, str):
        ok, expected = isinstance(value, str), "a string"
    elif isinstance(default, float):
        # TOML integers are unbounded here (tomllib): one beyond a float's range is not finite either
        ok = isinstance(value, int | float) and not isinstance(value, bool) and _fits_float(value)
        expected = "a finite number"
    else:
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    if not ok:
        raise ConfigError(f"{section}.{name} must be {expected}, got {_shown(value)}")
    return float(value) if isinstance(default, float) else value


def _shown(value: Any) -> str:
    """A value for an error message: a 400-digit integer or a long string is cut, not printed whole."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _fits_float(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond 1.8e308
        return False


def _build_section(section: str, values: Mapping[str, Any], base: Any) -> Any:
    cls = SECTIONS[section]
    known = {f.name: f for f in fields(cls)}
    changes: dict[str, Any] = {}
    for name, value in values.items():
        f = known.get(name)
        if f is None:
            raise ConfigError(f"unknown config key {section}.{name} (known: {', '.join(sorted(known))})")
        secret = f.metadata.get("secret", False)
        value = _coerce(section, name, value, f.default, secret)
        if not f.metadata["check"](value):
            bad = f.metadata.get("bad")
            got = f", got {(bad or _shown)(value)}" if not secret else " (the value is not shown: tokens)"
            raise ConfigError(f"{section}.{name} must be {f.metadata['rule']}{got}")
        changes[name] = value
    return replace(base, **changes)


def _check_cross_field(settings: Settings) -> None:
    flt = settings.filter_4h
    if flt.min_change_pct > flt.max_change_pct:
        raise ConfigError(
            f"filter_4h.min_change_pct ({flt.min_change_pct}) must not exceed "
            f"filter_4h.max_change_pct ({flt.max_change_pct})"
        )


def with_overrides(base: Settings, params: Mapping[str, Any]) -> Settings:
    """``base`` with the dotted ``[section] key``s of ``params`` set (``{"surge.min_change_pct": 2}``),
    checked by the same rules as the TOML file: a value out of range is a ConfigError naming the key
    (the backtest's sweeps make their combinations this way)."""
    sections: dict[str, Any] = {}
    for key, value in params.items():
        section, _, name = key.partition(".")
        current = sections.get(section, getattr(base, section))
        sections[section] = _build_section(section, {name: value}, current)
    settings = replace(base, **sections)
    _check_cross_field(settings)
    return settings


def _check_url(name: str, url: str, schemes: tuple[str, ...]) -> str:
    """The URL without a trailing slash; one the HTTP or WebSocket client would refuse is a usage error
    here (exit 2), not an "exchange unavailable" (exit 1) after four attempts."""
    url = url.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    problem = None
    if not sep or scheme not in schemes or not rest:
        problem = f"a {' or '.join(s + '://' for s in schemes)} URL"
    if problem is None:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError when out of range or not a number
            if not parts.hostname:
                problem = "a URL with a host"
        except ValueError as exc:
            problem = f"a valid URL ({exc})"
    if problem is None and any(ch.isspace() or not ch.isprintable() for ch in url):
        problem = "a URL without spaces or control characters"
    if problem is not None:
        raise ConfigError(f"{name} must be {problem}, got {_shown(url)}")
    return url


def _check_secret(name: str, value: str | None) -> str | None:
    """An API key or secret as given, or None when unset; anything but printable ASCII is refused.

    Binance keys are 64 letters and digits. A stray character (a trailing carriage return from a
    Windows .env file, a space from a copy and paste) makes the HTTP library refuse the header and
    print its whole value in the error, and a key that is merely wrong is only found out when the
    first signed call fails. The message says where the bad character is, never the value.
    """
    if not value:
        return None
    for i, ch in enumerate(value):
        if not "!" <= ch <= "~":
            if ch.isspace():
                kind = "whitespace"
            elif ord(ch) < 32 or ord(ch) == 127:
                kind = "a control character"
            else:
                kind = "a non-ASCII character"
            raise ConfigError(
                f"{name} contains {kind} (U+{ord(ch):04X}) at position {i + 1} of "
                f"{len(value)}: keys are printable ASCII only (a Windows line ending in .env?)"
            )
    return value


def _notify_urls(notify: NotifySettings, env: Mapping[str, str]) -> NotifySettings:
    """``[notify]`` with its URLs: SURGE_NOTIFY_URLS (commas or whitespace between them) wins over
    ``urls``. Each must be one apprise can use: a typo is exit 2 now, not a silence found out days
    later. apprise (slow to import) is only loaded when there is a URL to check."""
    text = env.get("SURGE_NOTIFY_URLS", "")
    where = "SURGE_NOTIFY_URLS" if text.strip() else "notify.urls"
    listed = re.split(r"[\s,]+", text) if text.strip() else [u.strip() for u in notify.urls]
    urls = tuple(u for u in listed if u)
    if urls:
        from surge.notify.urls import check_urls

        check_urls(urls, where)
    return replace(notify, urls=urls)


def read_toml(path: Path) -> dict[str, Any]:
    """The config file as a dict; a missing, unreadable or invalid file is a ConfigError."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
        raise ConfigError(f"invalid TOML in {path}: not UTF-8 (byte {exc.start})") from None
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section [{section}] in {path} (known: {', '.join(SECTIONS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{section} must be a [{section}] table in {path}")
    return data


def load_settings(
    config_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve the settings: flag (``overrides`` and ``config_path``) > environment > file > default.

    ``overrides`` maps dotted keys (``"filter_4h.workers"``) or top-level names (``"rest_url"``) to
    values from command-line flags; ``None`` values mean "flag not given".
    """
    env = os.environ if env is None else env
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}

    home = Path(env.get("SURGE_HOME") or "~/.surge").expanduser()
    if config_path is None and env.get("SURGE_CONFIG"):
        config_path = env["SURGE_CONFIG"]
    if config_path is not None:
        named = Path(config_path).expanduser()
        data = read_toml(named)  # named explicitly: it must exist
        path: Path | None = named
    else:
        default_path = home / "surge.toml"
        path = default_path if default_path.is_file() else None
        data = read_toml(path) if path else {}

    sections = {name: _build_section(name, data.get(name, {}), cls()) for name, cls in SECTIONS.items()}
    for dotted, value in overrides.items():
        section, _, name = dotted.partition(".")
        if section in sections and name:
            sections[section] = _build_section(section, {name: value}, sections[section])
        elif dotted not in ("rest_url", "ws_url"):
            raise ValueError(f"unknown override {dotted!r}")  # a programming error, not a user's

    sections["notify"] = _notify_urls(sections["notify"], env)
    venue_rest, venue_ws = VENUES[sections["exchange"].venue]
    rest_url = overrides.get("rest_url") or env.get("SURGE_REST_URL") or venue_rest
    ws_url = overrides.get("ws_url") or env.get("SURGE_WS_URL") or venue_ws
    settings = Settings(
        **sections,
        rest_url=_check_url("SURGE_REST_URL", rest_url, ("http", "https")),
        ws_url=_check_url("SURGE_WS_URL", ws_url, ("ws", "wss")),
        data_url=_check_url(
            "SURGE_DATA_URL", env.get("SURGE_DATA_URL") or DEFAULT_DATA_URL, ("http", "https")
        ),
        home=home,
        config_path=path,
        api_key=_check_secret("SURGE_API_KEY", env.get("SURGE_API_KEY")),
        api_secret=_check_secret("SURGE_API_SECRET", env.get("SURGE_API_SECRET")),
    )
    _check_cross_field(settings)
    return settings
