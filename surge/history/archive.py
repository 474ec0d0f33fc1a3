"""Filling the history store: Binance's public data archive first, REST for what it has not published.

Why it works this way:

* **The archive is free; REST is not.** ``data.binance.vision`` serves whole days and months of 1m
  klines as zipped CSV with no request weight, so every day it has comes from there: one monthly file
  for a whole month that is over, daily files otherwise. REST klines (through the bot's own
  :class:`~surge.exchange.rest.BinanceRest`, so its weight limiter and retry policy apply) only fill
  today and a recent day the archive has not published yet, in pages of at most 499 candles (weight 2
  each: the cheapest weight per candle Binance offers).
* **A 404 is an answer.** For a day old enough to be published, a missing file means the symbol was
  not listed (or not trading) that day: remembered as *absent* so the next run does not ask again.
  A 404 for a day that ended less than :data:`PUBLISH_GRACE_DAYS` ago means "not published yet"
  and falls back to REST; a missing recent monthly file falls back to the daily files.
* **Nothing unverified is stored.** Each zip is checked against its ``.CHECKSUM`` (SHA-256); a
  mismatch, a broken zip or a malformed CSV refuses that file only: the others are stored, the run
  ends with exit 1 and says which file failed.
* **Resumable.** Each symbol keeps a small manifest (``manifest.json`` beside its month files): the
  days stored whole, the days known absent, and how far today's partial day got. It is written after
  the candles, so a crash can only make a run fetch a day again, never skip one.
* **Bounded.** A fixed pool of :data:`WORKERS` named threads, one symbol per task (a symbol's files
  are merged and written once), over one pooled ``requests.Session``; transport failures and 5xx
  are retried by tenacity (exponential backoff, bounded attempts). An archive that cannot be reached
  at all ends the run at once (exit 1), rather than once per file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import requests
from requests.adapters import HTTPAdapter
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from surge import __version__
from surge.errors import SurgeError
from surge.exchange.rest import BinanceRest, ExchangeError
from surge.history.store import COLUMNS, MINUTE_MS, HistoryStore, SymbolCandles
from surge.models import Kline
from surge.runtime import write_json_atomic

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
WORKERS = 4
#: A daily file missing for a day that ended less than this long ago is "not published yet" (Binance
#: publishes a day's files within hours): REST fills it. An older missing day is "not listed".
PUBLISH_GRACE_DAYS = 2
#: The same for monthly files, which Binance publishes some days into the next month: missing
#: within this grace, the month is fetched as daily files instead.
MONTHLY_GRACE_DAYS = 7
#: REST page size: a klines request below 500 candles costs weight 2 (1 below 100).
REST_PAGE = 499
ATTEMPTS = 4
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
MANIFEST = "manifest.json"
KLINE_PREFIX = "data/futures/um"
#: The 12 columns of an archive CSV (= a REST kline row); the header row, when present, names them.
CSV_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
_CSV_TYPES = {name: pa.float64() for name in CSV_COLUMNS} | {"open_time": pa.int64(), "count": pa.int64()}
_CSV_KEEP = ("open_time", "open", "high", "low", "close", "volume", "quote_volume", "count")
#: Timestamps above this are microseconds (Binance's spot archive switched in 2025): ms until year 5138.
MICROSECONDS_ABOVE = 10**14


class DataUnavailable(SurgeError):
    """The data archive could not be reached at all (exit 1): nothing more is tried."""


class FileFailed(Exception):
    """One archive file refused (checksum, zip, CSV, HTTP error): reported, the run goes on."""


# --------------------------------------------------------------------------- days and plans


def day_of(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).date()


def day_start_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def month_days(year: int, month: int) -> list[date]:
    first = date(year, month, 1)
    after = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return days_between(first, after - timedelta(days=1))


@dataclass(frozen=True, slots=True)
class Unit:
    """One thing to fetch for a symbol: a monthly file, a daily file, or a day over REST."""

    kind: str  # "monthly", "daily" or "rest"
    days: tuple[date, ...]  # the days it covers, ascending

    @property
    def label(self) -> str:
        return self.days[0].strftime("%Y-%m") if self.kind == "monthly" else self.days[0].isoformat()


@dataclass(slots=True)
class Manifest:
    """What a symbol's earlier runs stored: days whole, days known absent, today's progress."""

    complete: set[date] = field(default_factory=set)
    absent: set[date] = field(default_factory=set)
    partial: dict[date, int] = field(default_factory=dict)  # day -> next open_time to fetch

    def done(self, d: date) -> bool:
        return d in self.complete or d in self.absent

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """The manifest at ``path``; a missing or unreadable one is empty (the days are fetched again)."""
        try:
            raw = json.loads(path.read_text())
            return cls(
                complete={date.fromisoformat(d) for d in raw.get("complete", [])},
                absent={date.fromisoformat(d) for d in raw.get("absent", [])},
                partial={date.fromisoformat(d): int(ms) for d, ms in raw.get("partial", {}).items()},
            )
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("%s unreadable (%s): its days are fetched again", path, exc)
            return cls()

    def save(self, path: Path) -> None:
        write_json_atomic(
            path,
            {
                "version": 1,
                "complete": sorted(d.isoformat() for d in self.complete),
                "absent": sorted(d.isoformat() for d in self.absent),
                "partial": {d.isoformat(): ms for d, ms in sorted(self.partial.items())},
            },
        )


def plan_symbol(first: date, last: date, today: date, manifest: Manifest) -> tuple[list[Unit], int]:
    """(units to fetch, archive files skipped because the manifest has them) for [first, last].

    A month wholly inside the range and over before today, with none of its days stored, is one
    monthly file; every other day not stored is a daily file, except today, which only REST has.
    Days after today are not planned.
    """
    last = min(last, today)
    units: list[Unit] = []
    skipped = 0
    planned: set[date] = set()
    month = date(first.year, first.month, 1)
    while month <= last:
        days = month_days(month.year, month.month)
        whole = days[0] >= first and days[-1] <= last and days[-1] < today
        if whole and not any(manifest.done(d) for d in days):
            units.append(Unit("monthly", tuple(days)))
            planned.update(days)
        elif whole and all(manifest.done(d) for d in days):
            skipped += 1
            planned.update(days)
        month = days[-1] + timedelta(days=1)
    for d in days_between(first, last) if first <= last else []:
        if d in planned:
            continue
        if d == today:
            units.append(Unit("rest", (d,)))
        elif manifest.done(d):
            skipped += 1
        else:
            units.append(Unit("daily", (d,)))
    units.sort(key=lambda u: u.days[0])
    return units, skipped


def file_path(symbol: str, unit: Unit) -> str:
    """The archive path of a monthly or daily file (no leading slash)."""
    return f"{KLINE_PREFIX}/{unit.kind}/klines/{symbol}/1m/{symbol}-1m-{unit.label}.zip"


# --------------------------------------------------------------------------- parsing


def parse_archive_zip(data: bytes) -> dict[str, np.ndarray]:
    """The candle columns of an archive zip (one CSV, with or without its header row)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [m for m in zf.infolist() if m.filename.endswith(".csv")]
            if len(members) != 1:
                raise FileFailed(f"expected one CSV in the zip, found {len(members)}")
            raw = zf.read(members[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise FileFailed(f"not a valid zip ({exc})") from None
    return parse_kline_csv(raw)


def parse_kline_csv(raw: bytes) -> dict[str, np.ndarray]:
    """Columns of a kline CSV, vectorised (pyarrow); a header row is recognised by not starting with
    a digit; microsecond timestamps are turned into milliseconds."""
    text = raw.lstrip()
    header = bool(text) and not text[:1].isdigit()
    body_start = text.find(b"\n") + 1 if header else 0
    if header and body_start == 0 or not text[body_start:].strip():
        return {name: np.empty(0) for name in _CSV_KEEP}
    try:
        table = pacsv.read_csv(
            pa.py_buffer(text[body_start:]),
            read_options=pacsv.ReadOptions(column_names=list(CSV_COLUMNS)),
            convert_options=pacsv.ConvertOptions(column_types=_CSV_TYPES, include_columns=list(_CSV_KEEP)),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise FileFailed(f"malformed CSV ({str(exc).splitlines()[0]:.120})") from None
    columns = {name: table.column(name).to_numpy() for name in _CSV_KEEP}
    times = columns["open_time"]
    if times.size and times.max() > MICROSECONDS_ABOVE:
        columns["open_time"] = times // 1000
    return columns


def candles_from_csv(
    symbol: str, columns: dict[str, np.ndarray], start_ms: int, end_ms: int
) -> SymbolCandles:
    """The store's candles from CSV columns; rows must be whole minutes inside the file's period."""
    times = columns["open_time"]
    if times.size and (np.any(times % MINUTE_MS != 0) or times.min() < start_ms or times.max() >= end_ms):
        raise FileFailed("open times are not whole minutes of the file's period")
    named = {name: columns[name] for name in COLUMNS if name != "trades"} | {"trades": columns["count"]}
    return SymbolCandles.from_columns(symbol, named)


def candles_from_klines(symbol: str, klines: Iterable[Kline]) -> SymbolCandles:
    rows = list(klines)
    return SymbolCandles.from_columns(
        symbol,
        {
            "open_time": np.array([k.open_time for k in rows], dtype=np.int64),
            "open": np.array([k.open for k in rows], dtype=np.float64),
            "high": np.array([k.high for k in rows], dtype=np.float64),
            "low": np.array([k.low for k in rows], dtype=np.float64),
            "close": np.array([k.close for k in rows], dtype=np.float64),
            "volume": np.array([k.volume for k in rows], dtype=np.float64),
            "quote_volume": np.array([k.quote_volume for k in rows], dtype=np.float64),
            "trades": np.array([k.trades for k in rows], dtype=np.int64),
        },
    )


# --------------------------------------------------------------------------- the archive client


class _ServerError(Exception):
    """A 5xx from the archive: worth another attempt."""


class ArchiveClient:
    """GETs files of the data archive over one pooled session; 404 -> None; retries by tenacity."""

    def __init__(self, base_url: str, pool_size: int = WORKERS, *, backoff_s: float = 0.25) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, pool_block=True, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": f"surge/{__version__}"})
        self._backoff = wait_exponential(multiplier=backoff_s, max=4.0) + wait_random(0, backoff_s)
        self._lock = threading.Lock()
        self.requests = 0

    def close(self) -> None:
        self.session.close()

    def get(self, path: str) -> bytes | None:
        """The body of ``path``, or None for a 404. Raises FileFailed (an HTTP error answer, or 5xx
        after the retries) or DataUnavailable (the archive cannot be reached)."""
        url = f"{self.base_url}/{path}"
        retrying = Retrying(
            stop=stop_after_attempt(ATTEMPTS),
            wait=self._backoff,
            retry=retry_if_exception_type(
                (
                    requests.ConnectionError,
                    requests.Timeout,
                    requests.exceptions.ChunkedEncodingError,
                    _ServerError,
                )
            ),
            reraise=True,
        )
        try:
            return retrying(self._get_once, url)
        except _ServerError as exc:
            raise FileFailed(f"HTTP {exc} after {ATTEMPTS} attempts") from None
        except requests.RequestException as exc:
            raise DataUnavailable(f"data archive unreachable: {self.base_url}: {_short(exc)}") from None

    def _get_once(self, url: str) -> bytes | None:
        with self._lock:
            self.requests += 1
        resp = self.session.get(url, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        try:
            body = resp.content
        finally:
            resp.close()
        if resp.status_code == 404:
            return None
        if resp.status_code >= 500:
            raise _ServerError(str(resp.status_code))
        if resp.status_code != 200:
            raise FileFailed(f"HTTP {resp.status_code}")
        return body

    def verified(self, path: str) -> bytes | None:
        """The zip at ``path`` checked against its ``.CHECKSUM``; None when either is missing."""
        checksum = self.get(path + ".CHECKSUM")
        if checksum is None:
            return None
        expected = (
            checksum.split(maxsplit=1)[0].decode("ascii", "replace").lower() if checksum.strip() else ""
        )
        if len(expected) != 64:
            raise FileFailed("CHECKSUM file does not hold a SHA-256")
        data = self.get(path)
        if data is None:
            return None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise FileFailed(f"checksum mismatch (expected {expected[:12]}..., got {actual[:12]}...)")
        return data


def _short(exc: BaseException) -> str:
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return text.splitlines()[0][:160] if text else type(exc).__name__


# --------------------------------------------------------------------------- the download


@dataclass(slots=True)
class DownloadReport:
    """What ``surge history download --json`` prints (``errors`` go to stderr, one line each)."""

    symbols: int = 0
    files_downloaded: int = 0
    files_skipped: int = 0
    rest_requests: int = 0
    candles: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "symbols": self.symbols,
            "files_downloaded": self.files_downloaded,
            "files_skipped": self.files_skipped,
            "rest_requests": self.rest_requests,
            "candles": self.candles,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass(slots=True)
class _SymbolResult:
    files: int = 0
    candles: int = 0
    errors: list[str] = field(default_factory=list)


class Downloader:
    """One download run: ``symbols`` x [first, last] into ``store`` (see the module docstring)."""

    def __init__(
        self,
        store: HistoryStore,
        archive: ArchiveClient,
        rest: BinanceRest,
        *,
        now_ms: int,
        workers: int = WORKERS,
    ) -> None:
        self.store = store
        self.archive = archive
        self.rest = rest
        self.now_ms = now_ms
        self.today = day_of(now_ms)
        self.workers = workers
        self._stop = threading.Event()

    def run(
        self,
        symbols: list[str],
        first: date,
        last: date,
        progress: Callable[[int], None] | None = None,
    ) -> DownloadReport:
        """Fetch and store everything missing; ``progress(1)`` after each symbol."""
        started = time.monotonic()
        report = DownloadReport(symbols=len(symbols))
        plans = []
        for symbol in symbols:
            units, skipped = plan_symbol(first, last, self.today, self._manifest(symbol))
            report.files_skipped += skipped
            plans.append((symbol, units))
        rest_before = self.rest.requests
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="surge-history") as pool:
            futures = {pool.submit(self._symbol, symbol, units): symbol for symbol, units in plans}
            pending: set[Future[_SymbolResult]] = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        result = future.result()  # DataUnavailable / ExchangeUnavailable end the run
                        report.files_downloaded += result.files
                        report.candles += result.candles
                        report.errors.extend(result.errors)
                        if progress is not None:
                            progress(1)
            except BaseException:
                self._stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        report.rest_requests = self.rest.requests - rest_before
        report.elapsed_s = time.monotonic() - started
        return report

    def _manifest_path(self, symbol: str) -> Path:
        return self.store.symbol_dir(symbol) / MANIFEST

    def _manifest(self, symbol: str) -> Manifest:
        return Manifest.load(self._manifest_path(symbol))

    def _symbol(self, symbol: str, units: list[Unit]) -> _SymbolResult:
        """Every unit of one symbol, then one store write and the manifest (in that order)."""
        result = _SymbolResult()
        if not units:
            return result
        manifest = self._manifest(symbol)
        parts: list[SymbolCandles] = []
        queue = list(units)
        while queue and not self._stop.is_set():
            unit = queue.pop(0)
            try:
                queue[:0] = self._unit(symbol, unit, manifest, parts, result)
            except FileFailed as exc:
                result.errors.append(f"{file_path(symbol, unit).rsplit('/', 1)[-1]}: {exc}")
            except ExchangeError as exc:  # a definite "no" for this symbol (e.g. -1121): not the others'
                result.errors.append(f"{symbol} {unit.label} over REST: {exc}")
        if parts:
            merged = SymbolCandles.from_columns(
                symbol, {name: np.concatenate([p.columns()[name] for p in parts]) for name in COLUMNS}
            )
            self.store.write(symbol, merged)
            result.candles = len(merged)
        self.store.ensure_dir(symbol)
        manifest.save(self._manifest_path(symbol))
        return result

    def _unit(
        self, symbol: str, unit: Unit, manifest: Manifest, parts: list[SymbolCandles], result: _SymbolResult
    ) -> list[Unit]:
        """Fetch one unit into ``parts`` and ``manifest``; returns units to fetch instead (fallbacks)."""
        if unit.kind == "rest":
            parts.append(self._rest_day(symbol, unit.days[0], manifest))
            return []
        data = self.archive.verified(file_path(symbol, unit))
        ended_ago_ms = self.now_ms - day_start_ms(unit.days[-1] + timedelta(days=1))
        if data is None:
            if unit.kind == "monthly":
                if ended_ago_ms < MONTHLY_GRACE_DAYS * DAY_MS:
                    return [Unit("daily", (d,)) for d in unit.days]  # not published yet
                manifest.absent.update(unit.days)
            elif ended_ago_ms < PUBLISH_GRACE_DAYS * DAY_MS:
                return [Unit("rest", unit.days)]
            else:
                manifest.absent.update(unit.days)
            return []
        start_ms = day_start_ms(unit.days[0])
        end_ms = day_start_ms(unit.days[-1] + timedelta(days=1))
        candles = candles_from_csv(symbol, parse_archive_zip(data), start_ms, end_ms)
        parts.append(candles)
        result.files += 1
        with_rows = {day_of(int(t)) for t in np.unique(candles.open_time // DAY_MS * DAY_MS)}
        for d in unit.days:
            (manifest.complete if d in with_rows or unit.kind == "daily" else manifest.absent).add(d)
            manifest.partial.pop(d, None)
        return []

    def _rest_day(self, symbol: str, d: date, manifest: Manifest) -> SymbolCandles:
        """The closed candles of day ``d`` over REST, from where an earlier run stopped."""
        day_start = day_start_ms(d)
        day_end = day_start + DAY_MS
        resume = manifest.partial.get(d, day_start)
        stop = min(day_end, self.now_ms // MINUTE_MS * MINUTE_MS)  # candles closed by now
        got: list[Kline] = []
        t = resume
        while t < stop and not self._stop.is_set():
            needed = (stop - t) // MINUTE_MS
            limit = needed if needed < 100 else min(needed, REST_PAGE)
            page = self.rest.klines(
                symbol, "1m", limit=limit, start_time=t, end_time=stop - 1, now_ms=self.now_ms
            )
            closed = [k for k in page if k.closed and k.open_time < stop]
            got.extend(closed)
            if len(page) < limit or not closed:
                break
            t = closed[-1].open_time + MINUTE_MS
        if day_end <= self.now_ms:  # the day is over: whole now, or never listed
            (manifest.complete if got or resume > day_start else manifest.absent).add(d)
            manifest.partial.pop(d, None)
        else:
            manifest.partial[d] = got[-1].open_time + MINUTE_MS if got else resume
        return candles_from_klines(symbol, got)
