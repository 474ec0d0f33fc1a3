"""``surge watch``: a live dashboard of a running bot, from another terminal, reading ``$SURGE_HOME`` only.

Why it looks like this:

* **Read-only, like ``surge status``.** Everything comes from the instance lock (is a bot running, and
  which pid), the heartbeat file the bot writes every 2 s (connections, REST weight, the last price of
  each open position's symbol) and the database opened read-only (positions, signals, realised PnL).
  The dashboard never talks to the bot and never writes: it cannot slow or endanger the trading, and
  it works on a copy of a home, or after the bot died (showing what it left).
* **A snapshot, then a picture.** :func:`collect_snapshot` reads and checks everything once (the
  heartbeat may be from an older version or a hand edit: every value is type-checked there);
  :func:`render` turns a snapshot into text at a fixed width with no clock or file access of its own,
  so tests render a made-up snapshot and check the words on the screen.
* **Ages at the time of looking.** The heartbeat's ages are as of its write; the screen adds the time
  since, so a bot that stopped writing shows its last message getting older, not frozen.
* **Unrealised PnL** of an open position is ``(last price - entry) * qty - fees so far`` (the entry's
  fee; the exit's is not paid yet), from the last 1m close the bot saw for that symbol.
* **Terminal or not.** On a terminal the screen refreshes in place (rich ``Live``, no refresh thread:
  it is redrawn from the loop); piped or redirected, one plain line per refresh (a log a person or a
  script can read); ``--once`` prints one screen and exits. Ctrl+C leaves with exit 0.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from surge.cli_shared import duration_text, number_text, utc_text
from surge.errors import SurgeError
from surge.heartbeat import ConnectionHealth, RestWeight, number_of
from surge.models import Position
from surge.operator.report import DAY_MS
from surge.store.ledger import SignalRecord

#: A heartbeat older than this from a bot that holds the lock: stuck? (``surge status`` warns at 30 s too.)
STALE_S = 30.0
#: How many of the newest signals the screen lists.
SIGNALS_SHOWN = 8


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """An open position and the last price the bot saw for its symbol (None: not known)."""

    position: Position
    last_price: float | None

    @property
    def unrealised(self) -> float | None:
        """PnL if it closed at the last price now, after the entry's fee (before the exit's)."""
        if self.last_price is None:
            return None
        p = self.position
        return (self.last_price - p.entry_price) * p.qty - p.fees

    @property
    def move_pct(self) -> float | None:
        if self.last_price is None or not self.position.entry_price:
            return None
        return (self.last_price / self.position.entry_price - 1.0) * 100.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one screen shows, read and checked once. Times are seconds since the epoch."""

    taken_at: float
    home: str
    running: bool
    pid: int | None
    written_at: float | None = None  # of the running bot's heartbeat; not running: of the one left behind
    locked_at: float | None = None  # when the running bot took the lock (its heartbeat may not exist yet)
    current: bool = False  # the heartbeat is the running bot's own
    mode: str | None = None
    venue: str | None = None
    started_at: float | None = None
    connections: list[ConnectionHealth] = field(default_factory=list)
    connected: int = 0  # the heartbeat's count (also from a bot too old to list its connections)
    streams: int = 0
    last_message_at: float | None = None
    latency_ms_p99: float | None = None
    rest_weight: RestWeight | None = None
    positions: list[OpenPosition] = field(default_factory=list)
    signals: list[SignalRecord] = field(default_factory=list)
    signal_count: int = 0
    realised_today: float = 0.0
    closed_today: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def heartbeat_age(self) -> float | None:
        return None if self.written_at is None else max(0.0, self.taken_at - self.written_at)

    @property
    def stale(self) -> bool:
        """The lock is held but the heartbeat is old (or never came within STALE_S of the lock): stuck?"""
        if not self.running:
            return False
        since = self.written_at if self.written_at is not None else self.locked_at
        return since is None or self.taken_at - since > STALE_S

    @property
    def unrealised(self) -> float | None:
        """Sum over the open positions whose last price is known (None when none is)."""
        known = [p.unrealised for p in self.positions if p.unrealised is not None]
        return sum(known) if known else None

    def age_now(self, age_at_write: float | None) -> float | None:
        """An age the heartbeat gave as of its write, as of this snapshot."""
        if age_at_write is None or self.written_at is None:
            return None
        return age_at_write + max(0.0, self.taken_at - self.written_at)


# --------------------------------------------------------------------------- reading


def _text(data: Mapping[str, Any] | None, key: str) -> str | None:
    value = data.get(key) if data else None
    return value if isinstance(value, str) else None


def _connections(raw: object) -> list[ConnectionHealth]:
    """The heartbeat's per-connection list, entries that are not what we wrote left out."""
    out: list[ConnectionHealth] = []
    for c in raw if isinstance(raw, list) else ():
        if not isinstance(c, dict):
            continue
        out.append(
            ConnectionHealth(
                name=str(c.get("name", "?")),
                connected=c.get("connected") is True,
                streams=int(number_of(c, "streams") or 0),
                last_message_age_s=number_of(c, "last_message_age_s"),
                reconnects=int(number_of(c, "reconnects") or 0),
                age_s=number_of(c, "age_s") or 0.0,
            )
        )
    return out


def _prices(raw: object) -> dict[str, float]:
    if not isinstance(raw, dict):
        return {}
    return {
        str(k): float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _weight(raw: object) -> RestWeight | None:
    if not isinstance(raw, dict):
        return None
    values = {key: number_of(raw, key) for key in ("used", "peak", "limit", "rate_limited")}
    if any(v is None for v in values.values()):
        return None
    return RestWeight(
        used=int(values["used"] or 0),
        peak=int(values["peak"] or 0),
        limit=int(values["limit"] or 0),
        rate_limited=int(values["rate_limited"] or 0),
    )


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def collect_snapshot(home: Path, now: float | None = None, signals_shown: int = SIGNALS_SHOWN) -> Snapshot:
    """What the screen shows, read from ``home`` without writing anything there.

    ``running``/``pid`` come from the lock (kill -9 leaves a heartbeat but releases the lock); the
    heartbeat counts only when its pid is the lock holder's. Positions, signals and realised PnL are
    those of the running bot's venue, else of every venue (as ``surge status`` counts them).
    Raises :class:`SurgeError` when the home or the database cannot be read.
    """
    from surge.runtime import LOCK_NAME, current_heartbeat
    from surge.store import read_store
    from surge.store.reports import closed_positions

    now = time.time() if now is None else now
    running, pid, heartbeat, live = current_heartbeat(home)
    current = live is not None
    venue = _text(live, "venue")
    prices = _prices(live.get("last_prices")) if live else {}

    positions: list[OpenPosition] = []
    signals: list[SignalRecord] = []
    count = closed = 0
    realised = 0.0
    store = read_store(home)
    if store is not None:
        with store:
            positions = [OpenPosition(p, prices.get(p.symbol)) for p in store.open_positions(venue=venue)]
            signals = store.signals(signals_shown, venue=venue)
            count = store.signal_count(venue=venue)
            today = closed_positions(store, int(now * 1000) // DAY_MS * DAY_MS, venue=venue)
            closed = len(today)
            realised = sum(c.position.pnl or 0.0 for c in today)
    return Snapshot(
        taken_at=now,
        home=str(home),
        running=running,
        pid=pid if running else None,
        written_at=number_of(live if running else heartbeat, "written_at"),
        locked_at=_mtime(home / LOCK_NAME) if running else None,
        current=current,
        mode=_text(live, "mode"),
        venue=venue,
        started_at=number_of(live, "started_at"),
        connections=_connections(live.get("stream_connections")) if live else [],
        connected=int(number_of(live, "connections") or 0),
        streams=int(number_of(live, "streams") or 0),
        last_message_at=number_of(live, "last_message_at"),
        latency_ms_p99=number_of(live, "latency_ms_p99"),
        rest_weight=_weight(live.get("rest_weight")) if live else None,
        positions=positions,
        signals=signals,
        signal_count=count,
        realised_today=realised,
        closed_today=closed,
    )


# --------------------------------------------------------------------------- the screen


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def _usdt(value: float | None) -> str:
    return "-" if value is None else f"{value:+,.4f}"


def _state_line(snap: Snapshot) -> str:
    """Running or not, whose heartbeat, how old: the first thing a person looks for."""
    if not snap.running:
        last = f" (last heartbeat {utc_text(int(snap.written_at * 1000))} UTC)" if snap.written_at else ""
        return f"NOT RUNNING{last}"
    extra = [x for x in (snap.mode, snap.venue) if x]
    if snap.started_at is not None:
        extra.append(f"up {duration_text(max(0.0, snap.taken_at - snap.started_at))}")
    pid = snap.pid if snap.pid is not None else "unknown"
    state = f"running, pid {pid}" + (f" ({', '.join(extra)})" if extra else "")
    age = snap.heartbeat_age
    if snap.stale:
        return f"STALE: {state}, heartbeat {'never written' if age is None else f'{age:.0f} s old'}"
    return f"{state}, " + ("no heartbeat yet" if age is None else f"heartbeat {_age(age)} ago")


def _weight_text(weight: RestWeight | None) -> str:
    if weight is None:
        return "-"
    used, limit, peak = weight["used"], weight["limit"], weight["peak"]
    return f"{used} / {limit} (peak {peak}, 429/418 seen: {weight['rate_limited']})"


def _connection_count(snap: Snapshot) -> str:
    down = sum(1 for c in snap.connections if not c["connected"])
    return f"{snap.connected} up" + (f", {down} down" if down else "") + f", {snap.streams} streams"


def _summary(snap: Snapshot) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    last = snap.taken_at - snap.last_message_at if snap.last_message_at is not None else None
    p99 = f"{snap.latency_ms_p99:.2f} ms" if snap.latency_ms_p99 is not None else "-"
    rows = [
        ("connections", _connection_count(snap)),
        ("last message", f"{_age(max(0.0, last))} ago" if last is not None else "-"),
        ("decision p99", p99),
        ("REST weight", _weight_text(snap.rest_weight)),
        ("signals", str(snap.signal_count)),
        ("open positions", f"{len(snap.positions)}, unrealised {_usdt(snap.unrealised)} USDT"),
        ("realised today", f"{_usdt(snap.realised_today)} USDT over {snap.closed_today} closed (UTC day)"),
    ]
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def _table(title: str, headers: list[str], numeric: set[int]) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
    )
    for i, header in enumerate(headers):
        table.add_column(header, justify="right" if i in numeric else "left", no_wrap=True)
    return table


def _connections_table(snap: Snapshot) -> RenderableType:
    if not snap.connections:
        if not snap.running:
            return Text("Streams: none (not running)")
        if snap.connected:  # a heartbeat from a surge that does not list its connections
            return Text(f"Streams: {snap.connected} connections, no detail in the heartbeat")
        return Text("Streams: no connection")
    table = _table(
        "Streams", ["connection", "state", "streams", "last message", "reconnects", "up for"], {2, 3, 4}
    )
    for c in snap.connections:
        age = snap.age_now(c.get("last_message_age_s"))
        table.add_row(
            c["name"],
            "up" if c["connected"] else "DOWN",
            str(c["streams"]),
            f"{_age(age)} ago" if age is not None else "-",
            str(c["reconnects"]),
            duration_text(c["age_s"]) if c["connected"] else "-",
        )
    return table


def _positions_table(snap: Snapshot) -> RenderableType:
    if not snap.positions:
        return Text("Open positions: none")
    headers = [
        "symbol",
        "qty",
        "entry",
        "last",
        "move %",
        "unrealised",
        "target",
        "stop",
        "hold left",
    ]
    table = _table("Open positions", headers, {1, 2, 3, 4, 5, 6, 7})
    now_ms = int(snap.taken_at * 1000)
    for op in snap.positions:
        p = op.position
        table.add_row(
            p.symbol,
            number_text(p.qty, 6),  # 6 significant digits: the table fits 110 columns untruncated
            number_text(p.entry_price, 6),
            number_text(op.last_price, 6) if op.last_price is not None else "-",
            f"{op.move_pct:+.2f}" if op.move_pct is not None else "-",
            _usdt(op.unrealised),
            number_text(p.take_profit, 6),
            number_text(p.stop_loss, 6),
            duration_text(max(0, p.deadline - now_ms) / 1000),
        )
    return table


def _signals_table(snap: Snapshot) -> RenderableType:
    if not snap.signals:
        return Text("Last signals: none yet")
    headers = ["time (UTC)", "symbol", "change %", "volume x", "price", "outcome"]
    table = _table("Last signals", headers, {2, 3, 4})
    for r in snap.signals:
        table.add_row(
            utc_text(r.signal.time),
            r.signal.symbol,
            f"{r.signal.change_pct:+.2f}",
            f"{r.signal.volume_multiple:.2f}",
            number_text(r.signal.price),
            "entered" if r.entered else f"skipped: {r.skip_reason or '-'}",
        )
    return table


def screen(snap: Snapshot) -> RenderableType:
    """The dashboard as one rich renderable (what :func:`render` prints and ``Live`` redraws)."""
    head = Text(f"surge watch  {utc_text(int(snap.taken_at * 1000))} UTC  {snap.home}", style="bold")
    state = Text(_state_line(snap), style="bold red" if snap.stale or not snap.running else "bold green")
    parts: list[RenderableType] = [head, state]
    parts += [Text(p, style="yellow") for p in snap.problems]
    for section in (_summary(snap), _connections_table(snap), _positions_table(snap), _signals_table(snap)):
        parts += [Text(""), section]
    return Group(*parts)


def render(snap: Snapshot, width: int) -> str:
    """The screen as plain text ``width`` columns wide (no colour, no terminal needed)."""
    console = Console(
        file=io.StringIO(), width=width, color_system=None, force_terminal=False, highlight=False, emoji=False
    )
    with console.capture() as captured:
        console.print(screen(snap))
    return "".join(line.rstrip() + "\n" for line in captured.get().splitlines())


def plain_line(snap: Snapshot) -> str:
    """One refresh as one line, for a pipe or a log file."""
    if snap.running:
        state = f"running pid {snap.pid}" + (" STALE" if snap.stale else "")
    else:
        state = "not running"
    down = sum(1 for c in snap.connections if not c["connected"])
    last = snap.taken_at - snap.last_message_at if snap.last_message_at is not None else None
    weight = snap.rest_weight
    fields = [
        f"{utc_text(int(snap.taken_at * 1000))} {state}",
        f"connections {snap.connected} up" + (f", {down} down" if down else ""),
        f"streams {snap.streams}",
        f"last message {_age(max(0.0, last)) if last is not None else '-'}",
        f"weight {weight['used']}/{weight['limit']}" if weight else "weight -",
        f"open {len(snap.positions)} unrealised {_usdt(snap.unrealised)}",
        f"realised today {_usdt(snap.realised_today)} ({snap.closed_today} closed)",
        f"signals {snap.signal_count}",
        *snap.problems,
    ]
    return " | ".join(fields)


# --------------------------------------------------------------------------- the loops


def _next(collect: Callable[[], Snapshot], last: Snapshot) -> Snapshot:
    """The next snapshot; a failed read (a database being replaced, a home moved) is shown on the
    last one's data rather than ending the watch: the person is watching for exactly such trouble."""
    try:
        return collect()
    except SurgeError as exc:
        return replace(last, taken_at=time.time(), problems=[f"cannot read: {exc}"])


def watch_plain(
    collect: Callable[[], Snapshot],
    out: IO[str],
    interval_s: float,
    count: int | None = None,
    stop: threading.Event | None = None,
) -> None:
    """One line per refresh on ``out`` until ``count`` lines, ``stop``, or Ctrl+C (KeyboardInterrupt)."""
    stop = stop or threading.Event()
    snap = collect()  # the first read fails loudly: a wrong SURGE_HOME should not look like a quiet bot
    shown = 0
    while True:
        out.write(plain_line(snap) + "\n")
        out.flush()
        shown += 1
        if (count is not None and shown >= count) or stop.wait(interval_s):
            return
        snap = _next(collect, snap)


def watch_live(
    collect: Callable[[], Snapshot],
    console: Console,
    interval_s: float,
    count: int | None = None,
    stop: threading.Event | None = None,
) -> None:
    """The screen redrawn in place every ``interval_s`` until ``count`` frames, ``stop`` or Ctrl+C."""
    stop = stop or threading.Event()
    snap = collect()
    shown = 1
    with Live(screen(snap), console=console, auto_refresh=False, redirect_stdout=False) as live:
        while (count is None or shown < count) and not stop.wait(interval_s):
            snap = _next(collect, snap)
            live.update(screen(snap), refresh=True)
            shown += 1


__all__ = [
    "STALE_S",
    "OpenPosition",
    "Snapshot",
    "collect_snapshot",
    "plain_line",
    "render",
    "screen",
    "watch_live",
    "watch_plain",
]
