"""Closed 1m candles on disk: one Arrow IPC (Feather v2) file per symbol and UTC month.

Why this format and layout:

* **Arrow IPC, LZ4-compressed** rather than Parquet + zstd. The backtest loads 22.9 M candles and has
  to run at 2 M candles/s *including* the load, so decoding must cost a small fraction of that
  budget. An IPC file is Arrow's in-memory layout written as it is: reading it is a buffer
  decompression (LZ4 runs at GB/s) and no page decoding, where Parquet decodes dictionary/RLE pages
  and zstd frames. Measured on the 2-core target for one month (43,200 rows, 8 columns, warm page
  cache, read into numpy): IPC uncompressed 0.56 ms (2.8 MB), **IPC LZ4 2.0 ms (1.8 MB)**, IPC zstd
  4.1 ms (1.5 MB), Parquet zstd 6.3 ms (2.0 MB). For the backtest's 22.9 M candles that is about
  1 s of loading with LZ4 against 3.3 s with Parquet (of an 11.5 s budget), for 40 % less disk
  than uncompressed (about 0.9 GB for 30 days of 531 symbols). pyarrow is the one dependency
  either way.
* **One file per symbol and month**: a download touches only the months it adds to, a merge rewrites
  at most ~3 MB, and a read of a date range opens only the months it overlaps.
* Every file is written whole to a temporary file and renamed over the old one (``os.replace``), so
  a reader (or a crash) sees the old month or the new one, never half of either. Files are 0600 and
  directories 0700, like everything in ``$SURGE_HOME``.
* Columns are plain numpy dtypes (int64 times in ms, float64 prices and volumes, int64 trades):
  a read is one numpy array per column, no Python object per row.

Writes to one symbol are serialised by a per-symbol lock; different symbols can be written from
different threads at once (the download does so).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from surge.runtime import replaced_atomically
from surge.universe import symbol_name_problem

MINUTE_MS = 60_000
DIR_MODE = 0o700
FILE_SUFFIX = ".arrow"
_MONTH_FILE = re.compile(r"^(\d{4})-(\d{2})\.arrow$")
_COMPRESSION = "lz4"

SCHEMA = pa.schema(
    [
        ("open_time", pa.int64()),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("quote_volume", pa.float64()),
        ("trades", pa.int64()),
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
_DTYPES = {name: np.int64 if name in ("open_time", "trades") else np.float64 for name in COLUMNS}


class HistoryStoreError(ValueError):
    """A symbol name or candle array the store refuses (a bug of the caller, or a path attack)."""


@dataclass(frozen=True, slots=True)
class SymbolCandles:
    """Closed 1m candles of one symbol, ascending, unique, minute-aligned; gaps possible."""

    symbol: str
    open_time: np.ndarray  # int64 ms
    open: np.ndarray  # float64 (same for high, low, close, volume, quote_volume)
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    quote_volume: np.ndarray
    trades: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    @classmethod
    def empty(cls, symbol: str) -> SymbolCandles:
        return cls(symbol, **{name: np.empty(0, dtype=_DTYPES[name]) for name in COLUMNS})

    @classmethod
    def from_columns(cls, symbol: str, columns: dict[str, np.ndarray]) -> SymbolCandles:
        """Candles from column arrays (any order of rows, duplicates allowed: the *first* row of an
        open_time wins), sorted and deduplicated; every column cast to the store's dtype."""
        arrays = {name: np.ascontiguousarray(columns[name], dtype=_DTYPES[name]) for name in COLUMNS}
        times = arrays["open_time"]
        if times.size and not (np.all(times[1:] > times[:-1])):
            _, first = np.unique(times, return_index=True)  # sorted unique times, first occurrence
            arrays = {name: values[first] for name, values in arrays.items()}
        return cls(symbol, **arrays)

    def columns(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in COLUMNS}

    def slice(self, start_ms: int | None, end_ms: int | None) -> SymbolCandles:
        """The candles with ``start_ms <= open_time < end_ms`` (None: unbounded); a view, no copy."""
        times = self.open_time
        lo = 0 if start_ms is None else int(np.searchsorted(times, start_ms, side="left"))
        hi = len(times) if end_ms is None else int(np.searchsorted(times, end_ms, side="left"))
        if lo == 0 and hi == len(times):
            return self
        return SymbolCandles(self.symbol, **{n: v[lo:hi] for n, v in self.columns().items()})


@dataclass(frozen=True, slots=True)
class SymbolSummary:
    """What ``surge history list`` shows of one symbol (computed from the files, nothing cached)."""

    symbol: str
    first_ms: int | None
    last_ms: int | None
    candles: int
    bytes: int


def month_key(ms: int) -> tuple[int, int]:
    """(year, month) of a UTC millisecond timestamp."""
    d = datetime.fromtimestamp(ms / 1000.0, tz=UTC)
    return d.year, d.month


def month_start_ms(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _check_symbol(symbol: str) -> str:
    problem = symbol_name_problem(symbol)
    if problem is not None or symbol != symbol.upper():
        raise HistoryStoreError(f"not a symbol name: {symbol!r:.40}")
    return symbol


class HistoryStore:
    """The candle files under ``root`` (``$SURGE_HOME/history``): ``root/SYMBOL/YYYY-MM.arrow``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @classmethod
    def for_home(cls, home: Path) -> HistoryStore:
        return cls(Path(home) / "history")

    # ------------------------------------------------------------------ layout

    def symbol_dir(self, symbol: str) -> Path:
        return self.root / _check_symbol(symbol)

    def month_path(self, symbol: str, year: int, month: int) -> Path:
        return self.symbol_dir(symbol) / f"{year:04d}-{month:02d}{FILE_SUFFIX}"

    def ensure_dir(self, symbol: str) -> Path:
        """The symbol's directory, created 0700 (with ``root``) if missing."""
        folder = self.symbol_dir(symbol)
        _make_private_dirs(folder)
        return folder

    def symbols(self) -> list[str]:
        """Every symbol with at least one month file, sorted."""
        if not self.root.is_dir():
            return []
        out = []
        for entry in self.root.iterdir():
            if entry.is_dir() and symbol_name_problem(entry.name) is None and self.months(entry.name):
                out.append(entry.name)
        return sorted(out)

    def months(self, symbol: str) -> list[tuple[int, int]]:
        """(year, month) of every stored month of ``symbol``, ascending."""
        folder = self.symbol_dir(symbol)
        if not folder.is_dir():
            return []
        found = []
        for entry in folder.iterdir():
            m = _MONTH_FILE.match(entry.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2))))
        return sorted(found)

    # ------------------------------------------------------------------ reading

    def read(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> SymbolCandles:
        """The stored candles with ``start_ms <= open_time < end_ms`` (None: unbounded), ascending."""
        wanted = []
        for year, month in self.months(symbol):
            lo = month_start_ms(year, month)
            hi = month_start_ms(*next_month(year, month))
            if (end_ms is None or lo < end_ms) and (start_ms is None or hi > start_ms):
                wanted.append(self.month_path(symbol, year, month))
        if not wanted:
            return SymbolCandles.empty(symbol)
        parts = [_read_file(path) for path in wanted]
        if len(parts) == 1:
            columns = parts[0]
        else:
            columns = {name: np.concatenate([p[name] for p in parts]) for name in COLUMNS}
        return SymbolCandles(symbol, **columns).slice(start_ms, end_ms)

    def summary(self, symbol: str) -> SymbolSummary:
        """First and last open time, candle count and bytes on disk, from the files' metadata and
        their first and last rows (no full read)."""
        candles = size = 0
        first: int | None = None
        last: int | None = None
        for year, month in self.months(symbol):
            path = self.month_path(symbol, year, month)
            size += path.stat().st_size
            times = _read_file(path, ("open_time",))["open_time"]
            if times.size:
                candles += int(times.size)
                first = int(times[0]) if first is None else first
                last = int(times[-1])
        return SymbolSummary(symbol, first, last, candles, size)

    # ------------------------------------------------------------------ writing

    def write(self, symbol: str, candles: SymbolCandles) -> None:
        """Merge ``candles`` into the month files they touch (new rows win on an equal open_time).

        Each month file is replaced atomically; months not touched are not rewritten.
        """
        _check_symbol(symbol)
        if len(candles) == 0:
            return
        new = SymbolCandles.from_columns(symbol, candles.columns())
        if np.any(new.open_time % MINUTE_MS != 0):
            raise HistoryStoreError(f"{symbol}: open times must be whole minutes (ms)")
        with self._lock(symbol):
            folder = self.symbol_dir(symbol)
            _make_private_dirs(folder)
            for (year, month), part in _split_by_month(new):
                path = self.month_path(symbol, year, month)
                if path.exists():
                    old = _read_file(path)
                    # new rows first: from_columns keeps the first row of an open_time
                    merged = {name: np.concatenate([part.columns()[name], old[name]]) for name in COLUMNS}
                    part = SymbolCandles.from_columns(symbol, merged)
                _write_file(path, part)

    def _lock(self, symbol: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(symbol)
            if lock is None:
                lock = self._locks[symbol] = threading.Lock()
            return lock


def _split_by_month(candles: SymbolCandles) -> list[tuple[tuple[int, int], SymbolCandles]]:
    """The (sorted) candles cut at month boundaries: a binary search per month, no loop per row."""
    times = candles.open_time
    out = []
    i = 0
    while i < len(times):
        year, month = month_key(int(times[i]))
        end = month_start_ms(*next_month(year, month))
        j = int(np.searchsorted(times, end, side="left"))
        out.append(
            (
                (year, month),
                SymbolCandles(candles.symbol, **{n: v[i:j] for n, v in candles.columns().items()}),
            )
        )
        i = j
    return out


def _make_private_dirs(folder: Path) -> None:
    """``folder`` and its missing parents, 0700 whatever the umask (mkdir's mode is filtered by it)."""
    if folder.is_dir():
        return
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for p in missing:
        os.chmod(p, DIR_MODE)


def _read_file(path: Path, names: tuple[str, ...] = COLUMNS) -> dict[str, np.ndarray]:
    """One month file as numpy arrays (one per column; decompressed once, no per-row work)."""
    with pa.OSFile(str(path), "rb") as source:
        reader = ipc.open_file(source)
        table = reader.read_all().select(list(names))
    return {name: np.asarray(table.column(name).to_numpy(), dtype=_DTYPES[name]) for name in names}


def _write_file(path: Path, candles: SymbolCandles) -> None:
    """The month's candles to ``path`` through a temporary file in the same directory (0600)."""
    table = pa.Table.from_arrays([pa.array(getattr(candles, n)) for n in COLUMNS], schema=SCHEMA)
    options = ipc.IpcWriteOptions(compression=_COMPRESSION)
    with (
        replaced_atomically(path) as tmp,
        pa.OSFile(tmp, "wb") as sink,
        ipc.new_file(sink, SCHEMA, options=options) as writer,
    ):
        writer.write_table(table, max_chunksize=max(1, len(candles)))
