"""Binance's public data archive (data.binance.vision) for the simulated market, on the REST port.

Why it is shaped like this:

* Same layout as the real archive, so ``surge history download`` is tested against the paths it
  uses in production: ``/data/futures/um/{daily,monthly}/klines/SYM/1m/SYM-1m-{DATE}.zip``, each
  with ``<same>.CHECKSUM`` (``<sha256 hex>  <file name>\\n``); the zip holds one CSV whose rows are
  REST kline rows, built from the market model with :func:`kline_to_rest_row` and the symbol's
  decimals exactly as ``GET /fapi/v1/klines`` builds them, so the two never disagree.
* Real archives carry a header row from 2022 on and none before; the sim's history is recent, so
  the header is a switch (``header="auto"`` by date, ``"always"``, ``"never"``) and both shapes are
  served. ``time_unit="us"`` serves microsecond timestamps (Binance's spot archive since 2025).
* Publishing follows the market clock: a day is listed once it is over plus ``lag_s``, a month once
  it is over plus ``lag_s``; days and months wholly before a symbol's listing, unknown symbols and
  files not published yet answer 404 with S3's XML body, as Binance does for a missing key.
* Zips are deterministic (fixed member time), built once and kept in an LRU bounded in bytes: the
  zip and its CHECKSUM come from one build, and 531 symbols x 3 days cost 1,593 builds, not more.
* Faults: :meth:`corrupt` (the CHECKSUM names a wrong hash) and :meth:`missing` (404 for a file);
  observations in :meth:`stats`. The archive never goes through the Binance limiter or latency: it
  is another host in production.

Imports only :mod:`surge.exchange.wire` and the market: the simulator stays a leaf.
"""

from __future__ import annotations

import collections
import hashlib
import io
import re
import threading
import zipfile
from datetime import UTC, date, datetime, timedelta
from typing import Any

from surge.exchange.wire import kline_to_rest_row
from surge.sim.market import DAY_MS, MINUTE_MS, Market

HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
#: Binance added the header row to its kline archives in 2022; files of earlier dates have none.
HEADER_SINCE = date(2022, 1, 1)
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
_PATH = re.compile(
    r"^/data/futures/um/(?P<kind>daily|monthly)/klines/(?P<symbol>[A-Z0-9]+)/1m/"
    r"(?P<file>(?P=symbol)-1m-(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.zip)(?P<checksum>\.CHECKSUM)?$"
)
_MEMBER_TIME = (2020, 1, 1, 0, 0, 0)  # fixed: rebuilding a zip gives the same bytes and checksum

Response = tuple[int, bytes, dict[str, str]]


def _no_such_key(path: str) -> Response:
    key = path.lstrip("/")
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
        f"<Key>{key}</Key><RequestId>SURGESIM</RequestId></Error>"
    )
    return 404, body.encode(), {"Content-Type": "application/xml"}


def _day_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def _period(kind: str, text: str) -> tuple[date, date] | None:
    """[first day, day after the last] of a file's date, or None when malformed."""
    try:
        if kind == "daily":
            if len(text) != 10:
                return None
            first = date.fromisoformat(text)
            return first, first + timedelta(days=1)
        if len(text) != 7:
            return None
        first = date.fromisoformat(text + "-01")
    except ValueError:
        return None
    after = date(first.year + 1, 1, 1) if first.month == 12 else date(first.year, first.month + 1, 1)
    return first, after


class Archive:
    """The ``/data/...`` files of one :class:`Market`; thread-safe (REST handler threads share it)."""

    def __init__(
        self,
        market: Market,
        *,
        lag_s: float = 0.0,
        header: str = "auto",
        time_unit: str = "ms",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.market = market
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[tuple, tuple[bytes, bytes]] = collections.OrderedDict()
        self._cache_used = 0
        self.cache_bytes = int(cache_bytes)
        self._corrupt: set[str] = set()
        self._missing: set[str] = set()
        self._failing: list[int] = []  # statuses the next requests answer, first one first
        self.lag_s = 0.0
        self.header = "auto"
        self.time_unit = "ms"
        self.configure(lag_s=lag_s, header=header, time_unit=time_unit)
        self.reset_stats()

    # ------------------------------------------------------------------ controls

    def configure(
        self, *, lag_s: float | None = None, header: str | None = None, time_unit: str | None = None
    ) -> dict[str, Any]:
        """Publishing lag (seconds after a day or month is over), header mode, timestamp unit."""
        if header is not None and header not in ("auto", "always", "never"):
            raise ValueError('header must be "auto", "always" or "never"')
        if time_unit is not None and time_unit not in ("ms", "us"):
            raise ValueError('time_unit must be "ms" or "us"')
        if lag_s is not None and not lag_s >= 0:
            raise ValueError("lag_s must be >= 0")
        with self._lock:
            self.lag_s = self.lag_s if lag_s is None else float(lag_s)
            self.header = header or self.header
            self.time_unit = time_unit or self.time_unit
            return {"lag_s": self.lag_s, "header": self.header, "time_unit": self.time_unit}

    def corrupt(self, name: str) -> None:
        """The CHECKSUM of zip ``name`` (``BTCUSDT-1m-2026-11-28.zip``) names a wrong hash from now on."""
        with self._lock:
            self._corrupt.add(name.rsplit("/", 1)[-1].removesuffix(".CHECKSUM"))

    def missing(self, name: str) -> None:
        """Zip ``name`` and its CHECKSUM answer 404 from now on."""
        with self._lock:
            self._missing.add(name.rsplit("/", 1)[-1].removesuffix(".CHECKSUM"))

    def error_next(self, count: int = 1, status: int = 503) -> None:
        """The next ``count`` archive requests, whatever they ask for, answer ``status`` (a 5xx spell
        of the CDN in front of the archive). Named as the REST side's ``error_next``, whose faults
        never reach the archive: in production it is another host."""
        if count < 0 or not 400 <= status <= 599:
            raise ValueError("count must be >= 0 and status an HTTP error status")
        with self._lock:
            self._failing.extend([int(status)] * int(count))

    def clear_faults(self) -> None:
        with self._lock:
            self._corrupt.clear()
            self._missing.clear()
            self._failing.clear()

    def stats(self) -> dict[str, Any]:
        """Archive requests since the last :meth:`reset_stats` (never counted with the Binance ones)."""
        with self._lock:
            return {
                "requests": self._requests,
                "zip_requests": self._zip_requests,
                "checksum_requests": self._checksum_requests,
                "by_status": {str(k): v for k, v in self._by_status.items()},
                "bytes_served": self._bytes_served,
                "builds": self._builds,
                "cache_hits": self._cache_hits,
                "cached_files": len(self._cache),
                "cached_bytes": self._cache_used,
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._requests = 0
            self._zip_requests = 0
            self._checksum_requests = 0
            self._by_status: collections.Counter[int] = collections.Counter()
            self._bytes_served = 0
            self._builds = 0
            self._cache_hits = 0

    def control(self, name: str, args: dict[str, str]) -> Any:
        """``/_sim/archive/<name>``: corrupt, missing, error_next, clear_faults, options, stats, reset."""
        if name == "error_next":
            return self.error_next(int(args.get("count", "1")), int(args.get("status", "503")))
        if name == "corrupt":
            return self.corrupt(args["file"])
        if name == "missing":
            return self.missing(args["file"])
        if name == "clear_faults":
            return self.clear_faults()
        if name == "options":
            lag = args.get("lag_s")
            return self.configure(
                lag_s=float(lag) if lag is not None else None,
                header=args.get("header"),
                time_unit=args.get("time_unit"),
            )
        if name == "stats":
            return self.stats()
        if name == "reset":
            return self.reset_stats()
        controls = "corrupt, missing, error_next, clear_faults, options, stats, reset"
        raise KeyError(f"unknown archive control {name!r} ({controls})")

    # ------------------------------------------------------------------ serving

    def get(self, path: str) -> Response:
        """The answer to ``GET path`` (a path under ``/data/``)."""
        status, body, headers = self._answer(path)
        with self._lock:
            self._requests += 1
            self._by_status[status] += 1
            self._bytes_served += len(body)
        return status, body, headers

    def _answer(self, path: str) -> Response:
        with self._lock:
            failing = self._failing.pop(0) if self._failing else None
        if failing is not None:
            return (
                failing,
                b"<Error><Code>ServiceUnavailable</Code></Error>",
                {"Content-Type": "application/xml"},
            )
        m = _PATH.match(path)
        if m is None:
            return _no_such_key(path)
        is_checksum = m.group("checksum") is not None
        with self._lock:
            if is_checksum:
                self._checksum_requests += 1
            else:
                self._zip_requests += 1
            missing = m.group("file") in self._missing
            corrupt = m.group("file") in self._corrupt
        symbol, kind, name = m.group("symbol"), m.group("kind"), m.group("file")
        period = _period(kind, m.group("date"))
        if missing or period is None or not self.market.has_symbol(symbol):
            return _no_such_key(path)
        first, after = period
        start_ms, end_ms = _day_ms(first), _day_ms(after)
        if self.market.now_ms() < end_ms + self.lag_s * 1000.0 or end_ms <= self.market.listing_ms(symbol):
            return _no_such_key(path)  # not published yet, or wholly before the listing
        data, digest = self._file(symbol, name, first, start_ms, end_ms)
        if is_checksum:
            if corrupt:
                digest = hashlib.sha256(b"corrupt:" + digest).hexdigest().encode()
            return 200, digest + b"  " + name.encode() + b"\n", {"Content-Type": "application/octet-stream"}
        return 200, data, {"Content-Type": "application/zip"}

    def _file(self, symbol: str, name: str, first: date, start_ms: int, end_ms: int) -> tuple[bytes, bytes]:
        """(zip bytes, sha256 hex) of one file, from the cache or built now."""
        with self._lock:
            header = self.header == "always" or (self.header == "auto" and first >= HEADER_SINCE)
            key = (name, header, self.time_unit)
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self._cache_hits += 1
                return hit
            unit = self.time_unit
        data = self._build(symbol, name, start_ms, end_ms, header, unit)
        entry = (data, hashlib.sha256(data).hexdigest().encode())
        with self._lock:
            self._builds += 1
            if key not in self._cache:
                self._cache[key] = entry
                self._cache_used += len(data)
                while self._cache_used > self.cache_bytes and len(self._cache) > 1:
                    _, (old, _) = self._cache.popitem(last=False)
                    self._cache_used -= len(old)
        return entry

    def _build(self, symbol: str, name: str, start_ms: int, end_ms: int, header: bool, unit: str) -> bytes:
        """The zip of the CSV of every closed 1m candle in [start_ms, end_ms), as REST rows."""
        pd, qd = self.market.decimals(symbol)
        now = self.market.now_ms()
        scale = 1000 if unit == "us" else 1
        lines = [HEADER] if header else []
        t = max(start_ms, self.market.listing_ms(symbol) // MINUTE_MS * MINUTE_MS)
        while t < end_ms:  # a day at a time: the klines call's limit bounds the work per call
            stop = min(end_ms, t + DAY_MS)
            rows = self.market.klines(symbol, "1m", start_ms=t, end_ms=stop - 1, limit=1440, now_ms=now)
            for k in rows:
                row = kline_to_rest_row(k, pd, qd)
                if scale != 1:
                    row[0] = row[0] * scale
                    row[6] = row[6] * scale + (scale - 1)
                lines.append(",".join(map(str, row)))
            t = stop
        csv_name = name.removesuffix(".zip") + ".csv"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            info = zipfile.ZipInfo(csv_name, date_time=_MEMBER_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, ("\n".join(lines) + "\n").encode(), compresslevel=1)  # fast: built per request
        return buffer.getvalue()
