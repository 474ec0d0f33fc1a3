"""The text of each notification: short, read on a phone's lock screen, one event per message.

Pure functions of the event (no clock, no I/O), so the notifier thread formats them off the loop and
the tests check the words directly. A message is (title, body, type); the type is apprise's
("info", "success", "warning", "failure"), which some services show as a colour or an icon.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from surge.models import Position, Signal

INFO, SUCCESS, WARNING, FAILURE = "info", "success", "warning", "failure"
#: How a count of one kind reads in "... and 1 more exit, 12 more signals".
NOUNS = {
    "signal": ("signal", "signals"),
    "entry": ("entry", "entries"),
    "exit": ("exit", "exits"),
    "error": ("error", "errors"),
    "outage": ("outage message", "outage messages"),
    "ban": ("rate-limit message", "rate-limit messages"),
    "reconcile": ("reconcile finding", "reconcile findings"),
    "daily": ("daily summary", "daily summaries"),
}
MAX_BODY = 600  # a log line with a long exception: the phone shows the start anyway


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    body: str
    type: str = INFO


@dataclass(frozen=True, slots=True)
class SignalSeen:
    """A signal and why it was not entered (None: entered, or on its way)."""

    signal: Signal
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class Outage:
    """Streams silent for longer than ``[notify] outage_s`` (``begun``), or talking again."""

    begun: bool
    silent: tuple[str, ...]  # connection names, or ("the whole feed",)
    silent_s: float  # how long the longest was silent when noticed
    lasted_s: float = 0.0  # when over: how long the outage lasted


@dataclass(frozen=True, slots=True)
class RateLimited:
    """The exchange answered 429/418: requests are held back (``banned_s``: a long 418 ban)."""

    answers: int  # new 429/418 answers since the last check
    paused_s: float  # how long the REST gate stays shut
    banned_s: float | None = None


@dataclass(frozen=True, slots=True)
class DailySummary:
    day: str  # YYYY-MM-DD (UTC)
    trades: int
    wins: int
    pnl: float


def _usdt(value: float) -> str:
    return f"{value:+.2f} USDT"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def signal_message(event: SignalSeen) -> Message:
    s = event.signal
    body = f"{s.symbol} {s.change_pct:+.2f}% in 1m, volume x{s.volume_multiple:.1f}, at {s.price:g}"
    if event.refusal:
        body += f"\nnot entered: {event.refusal}"
    return Message(f"surge: signal {s.symbol}", body)


def entry_message(p: Position) -> Message:
    until = time.strftime("%H:%M", time.gmtime(p.deadline / 1000))
    body = (
        f"{p.symbol} long {p.qty:g} at {p.entry_price:g}\n"
        f"TP {p.take_profit:g} / SL {p.stop_loss:g}, max hold until {until} UTC"
    )
    return Message(f"surge: ENTER {p.symbol}", body)


def exit_message(p: Position) -> Message:
    pnl = p.pnl or 0.0
    exit_price = p.exit_price if p.exit_price is not None else p.entry_price
    move = exit_price / p.entry_price * 100 - 100 if p.entry_price else 0.0
    held = ((p.exit_time or p.entry_time) - p.entry_time) / 1000
    body = (
        f"{p.symbol} {p.exit_reason or 'closed'}: PnL {_usdt(pnl)} ({move:+.2f}%)\n"
        f"{p.entry_price:g} -> {exit_price:g}, held {_duration(held)}"
    )
    return Message(f"surge: EXIT {p.symbol} {_usdt(pnl)}", body, SUCCESS if pnl >= 0 else WARNING)


def outage_message(o: Outage) -> Message:
    names = ", ".join(o.silent[:4]) + (f" and {len(o.silent) - 4} more" if len(o.silent) > 4 else "")
    if o.begun:
        return Message(
            "surge: stream outage", f"no market data on {names} for {_duration(o.silent_s)}", FAILURE
        )
    return Message(
        "surge: streams back", f"market data flows again; the outage lasted {_duration(o.lasted_s)}", SUCCESS
    )


def ban_message(r: RateLimited) -> Message:
    if r.banned_s is not None:
        body = f"IP banned by the exchange (HTTP 418) for {_duration(r.banned_s)}: REST requests stopped"
    else:
        body = f"{r.answers} rate-limit answer(s) (HTTP 429/418); REST paused {_duration(r.paused_s)}"
    return Message("surge: rate limited", body, FAILURE)


def daily_message(d: DailySummary) -> Message:
    if not d.trades:
        return Message(f"surge: {d.day}", f"{d.day}: no trade closed")
    rate = d.wins / d.trades * 100
    body = f"{d.day}: PnL {_usdt(d.pnl)}, {d.trades} trade(s), {d.wins} win(s) ({rate:.0f}%)"
    return Message(f"surge: {d.day} {_usdt(d.pnl)}", body, SUCCESS if d.pnl >= 0 else WARNING)


def text_message(kind: str, text: str) -> Message:
    """An error or a reconcile finding: the log line itself, cut to what a phone shows."""
    body = text if len(text) <= MAX_BODY else text[: MAX_BODY - 3] + "..."
    title = "surge: ERROR" if kind == "error" else f"surge: {kind}"
    return Message(title, body, FAILURE if kind == "error" else WARNING)


def render(kind: str, event: object) -> Message:
    """The message of one posted event (see :meth:`surge.notify.notifier.Notifier.post`)."""
    if isinstance(event, Message):
        return event
    if isinstance(event, SignalSeen):
        return signal_message(event)
    if isinstance(event, Position):
        return exit_message(event) if kind == "exit" else entry_message(event)
    if isinstance(event, Outage):
        return outage_message(event)
    if isinstance(event, RateLimited):
        return ban_message(event)
    if isinstance(event, DailySummary):
        return daily_message(event)
    return text_message(kind, str(event))


def more_text(dropped: dict[str, int]) -> str:
    """The note of what a full queue could not keep: "... and 12 more signals, 1 more exits"."""
    parts = [f"{n} more {NOUNS.get(kind, (kind, kind))[n > 1]}" for kind, n in sorted(dropped.items()) if n]
    return "... and " + ", ".join(parts) + " (not sent: too many at once)" if parts else ""


__all__ = [
    "DailySummary",
    "Message",
    "Outage",
    "RateLimited",
    "SignalSeen",
    "more_text",
    "render",
]
