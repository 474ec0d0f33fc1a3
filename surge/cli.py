"""The ``surge`` command line: parse, call into the package, print, exit with the contract's codes.

Exit codes: 0 success, 1 runtime failure (exchange unreachable, nothing done), 2 bad usage or bad
config, 3 another ``surge run`` holds the lock. A :class:`SurgeError` becomes one line on stderr;
click's own usage errors already exit 2.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import click

from surge import __version__
from surge.config import Settings, load_settings
from surge.errors import EXIT_OK, SurgeError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def fail(message: str, code: int) -> NoReturn:
    """Print ``surge: error: message`` on stderr and exit with ``code``: no traceback."""
    click.echo(f"surge: error: {message}", err=True)
    sys.exit(code)


class SurgeGroup(click.Group):
    """Turns every SurgeError raised by a command into its one-line message and exit code."""

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


def wait_for_shutdown_signal(stop: threading.Event) -> None:
    """Block until SIGINT or SIGTERM (Ctrl+C / Ctrl+Break on Windows) or until ``stop`` is set."""

    def _handler(signum: int, frame: object) -> None:
        stop.set()

    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _handler)
    while not stop.wait(0.5):  # a timed wait keeps signal delivery prompt on every platform
        pass


@click.group(cls=SurgeGroup, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="surge")
@config_option
def main(config_path: str | None) -> None:
    """surge: a surge bot for Binance USD-M perpetual futures.

    It scans every TRADING USDT perpetual, keeps the symbols whose 4-hour candle passes a filter,
    streams their 1-minute klines and enters a (paper, unless you opt in twice) trade when a
    1-minute candle surges. Configuration: flags > environment (SURGE_REST_URL, SURGE_WS_URL,
    SURGE_HOME, SURGE_CONFIG) > TOML file > built-in defaults.

    Exit codes: 0 success, 1 runtime failure, 2 bad usage or config, 3 already running.
    """


@main.command("sim", context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65534),
    default=0,
    show_default=True,
    help="REST port (0: any free port). The WebSocket server takes PORT+1, or any free port with 0.",
)
@click.option(
    "--symbols", type=click.IntRange(1, 5000), default=531, show_default=True, help="USDT perpetuals to list."
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(0, 60_000),
    default=0.0,
    show_default=True,
    help="Delay added to every REST request (147 is what a trader far from Tokyo sees).",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Market seed: same seed, same market.")
@click.option(
    "--surge-every",
    type=click.FloatRange(0, 86_400),
    default=20.0,
    show_default=True,
    help="Seconds between the built-in surges on random symbols (0: none).",
)
def sim_command(host: str, port: int, symbols: int, latency_ms: float, seed: int, surge_every: float) -> None:
    """Serve the simulated Binance USD-M exchange (REST and WebSocket) until interrupted.

    The first line on stdout is `REST http://HOST:PORT WS ws://HOST:PORT`; point the bot at it with
    SURGE_REST_URL and SURGE_WS_URL. Test controls live under /_sim/ on the REST port.
    """
    from surge.sim import Simulator  # the simulator is a leaf: load it only for this command

    simulator = Simulator(
        n_symbols=symbols,
        seed=seed,
        host=host,
        port=port,
        ws_port=port + 1 if port else 0,
        latency_ms=latency_ms,
        surge_interval_s=surge_every or None,
    )
    try:
        simulator.start()
    except OSError as exc:
        raise SurgeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        click.echo(f"REST {simulator.rest_url} WS {simulator.ws_url}")
        sys.stdout.flush()
        wait_for_shutdown_signal(threading.Event())
    finally:
        simulator.stop()
    sys.exit(EXIT_OK)


# --------------------------------------------------------------------------- filter-4h (issue 3)


@main.command("filter-4h", context_settings=CONTEXT)
@click.option("--symbols", default=None, metavar="A,B,...",
              help="Scan only these symbols (default: every TRADING USDT perpetual).")
@click.option("--workers", type=int, default=None,
              help="Parallel requests, 1..3 (default: filter_4h.workers, 3).")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@config_option
@click.pass_context
def filter_4h_command(ctx: click.Context, symbols: str | None, workers: int | None, as_json: bool,
                      no_progress: bool, config_path: str | None) -> None:
    """One-shot 4h filter scan of every TRADING USDT perpetual (or --symbols).

    A symbol passes when min_change_pct <= change of its current 4h candle <= max_change_pct and the
    quote volume of its latest closed 4h candle >= min_quote_volume ([filter_4h] in the config).
    Closed candles are cached in $SURGE_HOME/surge.db, so a repeated scan in the same 4h window
    needs about one request. Symbols the exchange rejects land in "errors" (exit 0); exit 1 when
    the exchange is unreachable or nothing could be checked.
    """
    import json

    from surge.errors import EXIT_RUNTIME
    from surge.filter4h import ScanProgress, format_table, run_scan

    settings = settings_for(ctx, config_path, **{"filter_4h.workers": workers})
    wanted: list[str] | None = None
    if symbols is not None:
        wanted = [s.strip() for s in symbols.split(",") if s.strip()]
        if not wanted:
            raise click.UsageError("--symbols needs at least one symbol, e.g. --symbols BTCUSDT,ETHUSDT")

    bar: Any = None
    shown = 0

    def on_progress(p: ScanProgress) -> None:
        nonlocal bar, shown
        if bar is None:
            bar = click.progressbar(length=p.total, label="filter-4h", file=sys.stderr, show_pos=True,
                                    item_show_func=lambda text: text)
            bar.__enter__()
        bar.update(p.done - shown, f"batch {p.batch}/{p.batches}, {p.passed} passed, "
                                   f"{p.requests} requests, weight {p.used_weight}")
        shown = p.done

    show_progress = not no_progress and sys.stderr.isatty()
    try:
        result = run_scan(settings, wanted, progress=on_progress if show_progress else None)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        click.echo(format_table(result))
    if result.checked == 0:
        if result.errors:
            first = next(iter(sorted(result.errors.items())))
            fail(f"nothing checked: {first[0]}: {first[1]}", EXIT_RUNTIME)
        fail("nothing checked: no symbol to scan", EXIT_RUNTIME)
    sys.exit(EXIT_OK)
