"""What every ``surge`` command shares: the error exit, ``--config``, ``--symbols``, the group that
turns a SurgeError into one line, and the plain-text table and number formats of the reports.

Kept out of ``cli.py`` so the command modules (the live bot's, the offline history and backtest
ones) can share them without importing each other.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from surge.config import Settings, load_settings
from surge.errors import SurgeError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def fail(message: str, code: int) -> NoReturn:
    """Print ``surge: error: message`` on stderr and exit with ``code``: no traceback."""
    click.echo(f"surge: error: {message}", err=True)
    sys.exit(code)


class SurgeGroup(click.Group):
    """Turns every SurgeError raised by a command into its one-line message and exit code.

    ``lazy`` names commands by ``"module:attribute"``, imported only when that command is run or
    listed (``--help``): ``surge run``, restarted by cron every few minutes, does not pay for
    importing the backtest, history and report commands it never uses.
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = self.lazy.get(cmd_name)
        if where is None:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = where.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{where} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SurgeError as exc:
            fail(str(exc), exc.exit_code)


def config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--config PATH`` on every command that reads settings (same as SURGE_CONFIG)."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="TOML config file (default: $SURGE_CONFIG, else $SURGE_HOME/surge.toml if present).",
    )(func)


def settings_for(ctx: click.Context, config_path: str | None, **overrides: Any) -> Settings:
    """Settings with this command's flags on top; a bad config raises ConfigError (exit 2)."""
    root = ctx.find_root().params.get("config_path")
    return load_settings(config_path=config_path or root, overrides=overrides)


def symbols_option(text: str | None) -> list[str] | None:
    """``--symbols A,B``: the names, upper-cased and deduplicated (None when not given). A malformed
    name or an empty list exits 2 before any request."""
    if text is None:
        return None
    from surge.universe import parse_symbol_list

    wanted = parse_symbol_list(text)
    if not wanted:
        raise click.UsageError("--symbols needs at least one symbol, e.g. --symbols BTCUSDT,ETHUSDT")
    return wanted


def utc_text(ms: int | None) -> str:
    """Milliseconds since the epoch as ``YYYY-mm-dd HH:MM:SS`` UTC (the exchange's clock, not local)."""
    from datetime import UTC, datetime

    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration_text(seconds: float) -> str:
    """A span for people: "42s", "3m 07s", "2h 05m" (``status`` and ``watch`` show the same)."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def number_text(value: float, digits: int = 8) -> str:
    """A price or quantity with ``digits`` significant digits and never an exponent (0.00001234)."""
    import math

    text = f"{value:.{digits}g}"
    if "e" not in text:
        return text
    decimals = max(0, min(16, digits - 1 - math.floor(math.log10(abs(value)))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def text_table(headers: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    """Columns aligned to their widest cell: numbers (column indices in ``numeric``) to the right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])
