"""``surge replay DIR``: a recording fed through the bot's own decision path, on virtual time.

The replay builds a real :class:`~surge.app.Bot` (its SurgeRule, FilterRefresh and LiveFilter4h,
TradeFlow, PositionBook and a PaperDesk: the classes ``surge run`` uses, not a copy) on a
:class:`~surge.clock.Clock` that reads the recording's time, restores the state the run's start
left (the 4h scan, the clock offset, cooldowns, resumed positions), then hands each recorded item to
the loop's own handler and each tick to the loop's own periodic decisions, with the clock set to the
readings the live loop had. Same inputs, same order, same times, same code: the same signals and
positions. With another config the rule, filter and exits are the other config's ("what if"), over
the same market; the REST answers are the recorded ones (a longer ``volume_lookback`` than the run's
has no more history than the run fetched).

Nothing leaves the process: no stream, no REST job (the recorded answers stand in for them), paper
always (a live run replays as paper), into a temporary database that is deleted afterwards, never
``$SURGE_HOME/surge.db``. As fast as the CPU allows: no clock is waited on.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

from surge.app import Bot, loop_handlers, schedule
from surge.clock import Clock
from surge.config import (
    Filter4hSettings,
    Settings,
    SurgeSettings,
    TradeSettings,
)
from surge.models import Signal
from surge.record.format import (
    FORMAT_VERSION,
    MESSAGE_RECORDS,
    Header,
    Klines,
    Lost,
    OneKline,
    RecordingError,
    Start,
    Tick,
    TruncatedRecording,
    message_of,
    read_frames,
    recording_files,
    scan_result,
    session_of,
)
from surge.store import open_store
from surge.stream import MultiplexedKlineManager
from surge.trading import PaperDesk

log = logging.getLogger("surge.replay")

_SECTIONS: dict[str, Any] = {"filter_4h": Filter4hSettings, "surge": SurgeSettings, "trade": TradeSettings}


@dataclass
class ReplayReport:
    """What ``surge replay`` prints (``to_json`` is the contract's object) and what it warns about."""

    frames: int = 0
    signals: list[dict[str, Any]] = field(default_factory=list)
    positions: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    session: str = ""
    files: int = 0
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "signals": self.signals,
            "positions": self.positions,
            "elapsed_s": round(self.elapsed_s, 3),
        }


class VirtualTime:
    """The replay's clock: it reads what the recording says the loop's clocks read."""

    def __init__(self, mono: float, wall: float) -> None:
        self.mono, self.wall = mono, wall
        self.clock = Clock(monotonic=lambda: self.mono, wall=lambda: self.wall)


class _NoStreams:
    """Stands in for the stream manager: a replay's klines come from the recording."""

    def subscribe_kline(self, symbol: str, interval: str) -> None:
        """Nothing to subscribe to."""

    def unsubscribe_kline(self, symbol: str, interval: str) -> None:
        """Nothing to unsubscribe from."""


def session_files(directory: Path) -> list[Path]:
    """The files of the newest recording session in ``directory`` (RecordingError: none)."""
    if not directory.is_dir():
        raise RecordingError(f"{directory}: no such directory")
    files = recording_files(directory)
    if not files:
        raise RecordingError(f"{directory} holds no recording (no *.srec file)")
    newest = session_of(files[-1])
    return [p for p in files if session_of(p) == newest]


def settings_of(header: Header, home: Path) -> Settings:
    """The recording's own decision settings (the defaults for any key it does not name)."""
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in header.settings.get(name, {}).items() if k in names}
        sections[name] = cls(**known)
    return Settings(**sections, home=home)


def replay(directory: Path, settings: Settings | None = None) -> ReplayReport:
    """Replay the newest session in ``directory`` with ``settings`` (None: the recording's own).

    Raises RecordingError (exit 2) when there is nothing to replay; a file unreadable part way is
    reported in ``warnings`` with ``truncated`` set, after replaying everything before it.
    """
    files = session_files(directory)
    report = ReplayReport(session=session_of(files[0]), files=len(files))
    sessions = {session_of(p) for p in recording_files(directory)}
    if len(sessions) > 1:
        report.warnings.append(
            f"{directory} holds {len(sessions)} recordings: replaying the newest, {report.session}"
        )
    started = time.perf_counter()
    records = _records(files, report)
    header = next(records, None)
    if not isinstance(header, Header):
        raise RecordingError(f"{files[0]} does not start with a recording header")
    if header.version != FORMAT_VERSION:
        raise RecordingError(
            f"{files[0]}: recording format {header.version}, this surge reads {FORMAT_VERSION}"
        )
    start = next(records, None)
    if not isinstance(start, Start):
        raise RecordingError(
            f"{files[0]} is not the recording's first hour (deleted by --record-max-mb?): "
            "a replay needs the start's state"
        )
    with tempfile.TemporaryDirectory(prefix="surge-replay-") as tmp:
        home = Path(tmp)
        chosen = settings_of(header, home) if settings is None else replace(settings, home=home)
        bot, now = _replay_bot(header, start, chosen)
        try:
            _feed(bot, now, start, records, report)
            _collect(bot, {p.key for p in start.resumed}, report)
        finally:
            assert bot.store is not None
            bot.store.close()
    report.elapsed_s = time.perf_counter() - started
    return report


def _records(files: list[Path], report: ReplayReport) -> Iterator[Any]:
    """Every record of the session in order; stops (with a warning) at the first unreadable frame or
    missing hour: past a hole the bot's state is no longer the run's, so nothing after it would be
    faithful."""
    part = 0
    for index, path in enumerate(files):
        try:
            for frame in read_frames(path):
                for record in frame:
                    if isinstance(record, Header) and index > 0:
                        if record.part != part + 1:
                            _stop_at(
                                report, f"{path.name}: hour files {part + 1} to {record.part - 1} are missing"
                            )
                            return
                        part = record.part
                        continue
                    yield record
        except TruncatedRecording as exc:
            _stop_at(report, str(exc))
            return
        except RecordingError as exc:
            if index == 0:
                raise
            _stop_at(report, str(exc))
            return


def _stop_at(report: ReplayReport, why: str) -> None:
    report.truncated = True
    report.warnings.append(f"{why}; replayed what came before it")


def _replay_bot(header: Header, start: Start, settings: Settings) -> tuple[Bot, VirtualTime]:
    """A Bot in the state ``surge.startup.start`` left the recorded run in, minus the network."""
    now = VirtualTime(start.mono, start.wall)
    venue = header.venue.removeprefix("live:")  # a live run replays as paper
    bot = Bot(settings, symbols=header.symbols, venue=venue, clock=now.clock)
    bot.store = store = open_store(settings.home)
    bot.clock_offset_ms = start.clock_offset_ms
    for position in start.resumed:  # the positions the run resumed, as the database held them
        opened = Signal(position.symbol, position.entry_time, _open_time(position.key), 0.0, 0.0, 0.0, 0.0)
        store.record_entry(opened, position, venue=venue)
    desk = bot.desk = PaperDesk(settings.trade, store, venue, bot.on_outcome)
    for position in desk.start():
        bot.book.add(position)
    bot.trades.start(desk, store)
    bot.rule.restore_cooldowns(start.cooldowns)
    scan = scan_result(start.scan)
    bot.filters.seed(set(start.universe), scan)
    # the start's pass set: the scan's own verdicts under the recorded rule, re-decided under another
    manager = cast("MultiplexedKlineManager", _NoStreams())  # only subscribe/unsubscribe are called
    bot.manager = manager
    bot.filters.start(None, store, None, manager, now.clock.monotonic)
    same_rule = header.settings.get("filter_4h") == asdict(settings.filter_4h)
    bot.apply_pass_set(set(scan.passed) if same_rule else bot.live4h.passing())
    return bot, now


def _feed(bot: Bot, now: VirtualTime, start: Start, records: Iterator[Any], report: ReplayReport) -> None:
    """Every record through the loop's own handlers and periodic decisions, at its clock readings."""
    handlers = loop_handlers(bot)
    due = schedule(bot, start.mono)
    frames = 0
    for record in records:
        if isinstance(record, Lost):
            report.warnings.append(
                f"the recording lost {record.count} item(s) of the loop here ({record.reason}): "
                "from here on the replay may differ from the run"
            )
            continue
        now.mono, now.wall = record.mono, record.wall
        if isinstance(record, Tick):
            bot.periodic_decisions(record.mono, record.wall, due)
        elif isinstance(record, MESSAGE_RECORDS):
            message = message_of(record)
            if isinstance(record, Klines):
                frames += len(record.klines)
            elif isinstance(record, OneKline):
                frames += 1
            handlers[type(message)](message)
    report.frames = frames


def _collect(bot: Bot, resumed: set[str], report: ReplayReport) -> None:
    """The signals the replay recorded and every position (resumed ones too), oldest first."""
    assert bot.store is not None
    signals = sorted(bot.store.signals(), key=lambda r: (r.signal.time, r.signal.key))
    report.signals = [
        {"key": r.signal.key, "symbol": r.signal.symbol, "time": r.signal.time, "price": r.signal.price}
        for r in signals
        if r.signal.key not in resumed  # the stand-ins written for the positions the run resumed
    ]
    positions = sorted(bot.store.positions(include_closed=True), key=lambda p: (p.entry_time, p.key))
    report.positions = [
        {
            "key": p.key,
            "symbol": p.symbol,
            "entry_price": p.entry_price,
            "exit_price": p.exit_price,
            "exit_reason": p.exit_reason,
            "pnl": p.pnl,
        }
        for p in positions
    ]


def _open_time(key: str) -> int:
    tail = key.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def format_report(report: ReplayReport) -> str:
    """The text output: what was replayed, each signal and position, and the totals."""
    lines = [
        f"replayed session {report.session}: {report.files} file(s), {report.frames} kline frames "
        f"in {report.elapsed_s:.2f} s",
        f"{len(report.signals)} signal(s)",
    ]
    lines += [f"  {s['key']}  {s['symbol']}  at {s['price']:g}" for s in report.signals]
    closed = [p for p in report.positions if p["exit_reason"] is not None]
    pnl = sum(p["pnl"] or 0.0 for p in closed)
    lines.append(
        f"{len(report.positions)} position(s), {len(closed)} closed, PnL {pnl:+.4f} USDT (fees included)"
    )
    for p in report.positions:
        exit_text = (
            f"{p['exit_reason']} at {p['exit_price']:g}, PnL {p['pnl']:+.4f}" if p["exit_reason"] else "open"
        )
        lines.append(f"  {p['key']}  entry {p['entry_price']:g}  {exit_text}")
    return "\n".join(lines)


__all__ = ["ReplayReport", "VirtualTime", "format_report", "replay", "session_files", "settings_of"]
