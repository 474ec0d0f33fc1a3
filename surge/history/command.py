"""``surge history download`` and ``surge history list``: the click group the CLI registers.

Dates are checked before any request (a malformed date, ``--from`` after ``--to``, ``--days`` with
``--from``: exit 2); "today" is the exchange's day (its clock, not this machine's), so it is known
only after the first request. Everything else is :mod:`surge.history.archive`.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import date, timedelta
from typing import TYPE_CHECKING

import click

from surge.cli_shared import (
    CONTEXT,
    SurgeGroup,
    config_option,
    fail,
    settings_for,
    symbols_option,
    text_table,
)
from surge.errors import EXIT_OK, EXIT_RUNTIME, ConfigError, SurgeError
from surge.history import require_history_extra

if TYPE_CHECKING:
    from surge.config import Settings
    from surge.history.archive import DownloadReport

#: The most days one download may cover (ten years): a typo in --from must not plan a century.
MAX_DAYS = 3660
DEFAULT_DAYS = 30
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ERRORS_SHOWN = 20


class HistoryWriteError(SurgeError):
    """The history store could not be written (disk full, permissions): exit 1."""


@click.group("history", cls=SurgeGroup, context_settings=CONTEXT)
def history_group() -> None:
    """Stored 1m candles for backtests: download them from Binance's public archive, list them."""


def parse_day(text: str, flag: str) -> date:
    """``YYYY-MM-DD`` as a date; anything else is a usage error naming the flag."""
    try:
        if not _DATE.match(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag} must be a date as YYYY-MM-DD, got {text!r:.40}") from None


def resolve_range(
    days: int | None, start: str | None, end: str | None
) -> tuple[int | None, date | None, date | None]:
    """The flags checked without the clock: (days, from, to) with exactly one way of saying it."""
    if days is not None and (start is not None or end is not None):
        raise click.UsageError("--days cannot be combined with --from/--to")
    if end is not None and start is None:
        raise click.UsageError("--to needs --from")
    if start is None:
        n = DEFAULT_DAYS if days is None else days
        if not 1 <= n <= MAX_DAYS:
            raise click.UsageError(f"--days must be between 1 and {MAX_DAYS}, got {n}")
        return n, None, None
    first = parse_day(start, "--from")
    last = parse_day(end, "--to") if end is not None else None
    if last is not None and first > last:
        raise click.UsageError(f"--from {first} is after --to {last}")
    if last is not None and (last - first).days + 1 > MAX_DAYS:
        raise click.UsageError(f"--from/--to span more than {MAX_DAYS} days")
    return None, first, last


def range_for_today(
    days: int | None, first: date | None, last: date | None, today: date
) -> tuple[date, date]:
    """[first, last] once the exchange's today is known; a range starting in the future is exit 2."""
    if days is not None:
        return today - timedelta(days=days - 1), today
    assert first is not None
    last = today if last is None else last
    if first > today:
        raise ConfigError(f"--from {first} is after today ({today}, UTC)")
    return first, min(last, today)


@history_group.command("download", context_settings=CONTEXT)
@click.option(
    "--days",
    type=int,
    default=None,
    help=f"The N UTC days ending today, today included (default {DEFAULT_DAYS}).",
)
@click.option("--from", "start", default=None, metavar="YYYY-MM-DD", help="First UTC day.")
@click.option(
    "--to", "end", default=None, metavar="YYYY-MM-DD", help="Last UTC day, included (default: today)."
)
@click.option(
    "--symbols", default=None, help="Comma-separated symbols (default: every TRADING USDT perpetual)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@config_option
@click.pass_context
def download_command(
    ctx: click.Context,
    days: int | None,
    start: str | None,
    end: str | None,
    symbols: str | None,
    as_json: bool,
    no_progress: bool,
    config_path: str | None,
) -> None:
    """Download 1m klines into $SURGE_HOME/history (archive files, REST for days not archived yet).

    Whole months already over come as monthly files, other days as daily files, today (and a recent
    day the archive has not published yet) over REST, weight-aware. Checksums are verified; a
    second run downloads nothing it has. A day the archive does not have is remembered as "not
    listed" and not asked again. Exit 1 if any file failed (the others are stored).
    """
    n_days, first, last = resolve_range(days, start, end)
    wanted = symbols_option(symbols)
    settings = settings_for(ctx, config_path)
    report = _download(settings, n_days, first, last, wanted, show_progress=not (no_progress or as_json))
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        click.echo(
            f"history: {report.symbols} symbols, {report.files_downloaded} files downloaded, "
            f"{report.files_skipped} already stored, {report.rest_requests} REST requests, "
            f"{report.candles} candles in {report.elapsed_s:.1f} s"
        )
    if report.errors:
        for line in report.errors[:_ERRORS_SHOWN]:
            click.echo(f"history: failed: {line}", err=True)
        more = (
            f" ({len(report.errors) - _ERRORS_SHOWN} more not shown)"
            if len(report.errors) > _ERRORS_SHOWN
            else ""
        )
        fail(f"{len(report.errors)} file(s) failed and were not stored{more}", EXIT_RUNTIME)
    sys.exit(EXIT_OK)


def _download(
    settings: Settings,
    n_days: int | None,
    first: date | None,
    last: date | None,
    wanted: list[str] | None,
    *,
    show_progress: bool,
) -> DownloadReport:
    """One run against ``settings``' exchange and archive; the range is resolved on the exchange's day."""
    require_history_extra("surge history")
    from surge.exchange.rest import BinanceRest, symbol_infos
    from surge.history.archive import WORKERS, ArchiveClient, Downloader, day_of
    from surge.history.store import HistoryStore
    from surge.runtime import prepare_home
    from surge.universe import universe_from_exchange_info

    started = time.monotonic()
    prepare_home(settings.home)
    store = HistoryStore.for_home(settings.home)
    archive = ArchiveClient(settings.data_url, pool_size=WORKERS)
    try:
        with BinanceRest(settings.rest_url, pool_size=WORKERS) as rest:
            now_ms = rest.server_time()
            day_first, day_last = range_for_today(n_days, first, last, day_of(now_ms))
            info = rest.exchange_info(filters=False)
            if wanted is None:
                symbols = [s.symbol for s in universe_from_exchange_info(info)]
            else:
                known = {s.symbol for s in symbol_infos(info)}
                unknown = [s for s in wanted if s not in known]
                if unknown:
                    raise ConfigError(f"--symbols: not listed by the exchange: {', '.join(unknown)}")
                symbols = wanted
            downloader = Downloader(store, archive, rest, now_ms=now_ms)
            if show_progress and sys.stderr.isatty():
                with click.progressbar(
                    length=len(symbols), label="history", file=sys.stderr, show_pos=True
                ) as bar:
                    report = downloader.run(symbols, day_first, day_last, progress=bar.update)
            else:
                report = downloader.run(symbols, day_first, day_last)
            report.elapsed_s = time.monotonic() - started  # the whole command, exchangeInfo included
            return report
    except OSError as exc:  # the store's files (the network errors are turned into SurgeErrors below us)
        raise HistoryWriteError(f"cannot write {store.root}: {exc.strerror or exc}") from None
    finally:
        archive.close()


@history_group.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@config_option
@click.pass_context
def list_command(ctx: click.Context, as_json: bool, config_path: str | None) -> None:
    """What is stored: per symbol the first and last day, candles and bytes on disk; totals."""
    from surge.cli_shared import utc_text

    settings = settings_for(ctx, config_path)
    require_history_extra("surge history")
    from surge.history.store import HistoryStore

    store = HistoryStore.for_home(settings.home)
    rows = [store.summary(symbol) for symbol in store.symbols()]

    def day(ms: int | None) -> str | None:
        return utc_text(ms)[:10] if ms is not None else None

    total_candles = sum(r.candles for r in rows)
    total_bytes = sum(r.bytes for r in rows)
    if as_json:
        payload = {
            "symbols": [
                {
                    "symbol": r.symbol,
                    "first_day": day(r.first_ms),
                    "last_day": day(r.last_ms),
                    "candles": r.candles,
                    "bytes": r.bytes,
                }
                for r in rows
            ],
            "total": {"symbols": len(rows), "candles": total_candles, "bytes": total_bytes},
        }
        click.echo(json.dumps(payload))
        return
    if not rows:
        click.echo(f"no history stored in {store.root} (see: surge history download)")
        return
    table = [
        [r.symbol, day(r.first_ms) or "-", day(r.last_ms) or "-", str(r.candles), _size(r.bytes)]
        for r in rows
    ]
    table.append([f"total ({len(rows)})", "", "", str(total_candles), _size(total_bytes)])
    click.echo(text_table(["SYMBOL", "FIRST DAY", "LAST DAY", "CANDLES", "SIZE"], table, numeric={3, 4}))


def _size(n: int) -> str:
    """Bytes as B, KB, MB or GB (powers of 1024), one decimal above bytes."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:.1f} {unit}"
