"""The ``surge`` command line: parse, call into the package, print, exit with the contract's codes.

Exit codes: 0 success, 1 runtime failure (exchange unreachable, nothing done), 2 bad usage or bad
config, 3 another ``surge run`` holds the lock, 4 ``surge run --live`` stopped with a live entry or
close unresolved (logged as an ERROR naming it; the next start reconciles it). A
:class:`SurgeError` becomes one line on stderr; click's own usage errors already exit 2.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from surge import __version__
from surge.cli_shared import (
    CONTEXT,
    SurgeGroup,
    config_option,
    duration_text,
    fail,
    number_text,
    settings_for,
    symbols_option,
    text_table,
    utc_text,
)
from surge.config import Settings
from surge.errors import EXIT_OK, ConfigError, SurgeError
from surge.heartbeat import number_of
from surge.record import DEFAULT_MAX_MB, EXPECTED_MB_PER_HOUR

#: GIL switch interval of the ``surge run`` process (CPython's default is 5 ms; see run_command).
SWITCH_INTERVAL_S = 0.0005

if TYPE_CHECKING:
    from pathlib import Path

    from surge.exchange.orders import Credentials
    from surge.heartbeat import Heartbeat
    from surge.metrics import MetricsServer
    from surge.record.recorder import Recorder


def install_stop_handlers(stop: Callable[[], None]) -> None:
    """SIGINT and SIGTERM (Ctrl+C / Ctrl+Break on Windows) call ``stop`` instead of killing us."""

    def _handler(signum: int, frame: object) -> None:
        stop()

    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _handler)


def wait_for_shutdown_signal(stop: threading.Event) -> None:
    """Block until SIGINT or SIGTERM or until ``stop`` is set."""
    install_stop_handlers(stop.set)
    while not stop.wait(0.5):  # a timed wait keeps signal delivery prompt on every platform
        pass


#: The commands ``surge run`` never needs, imported only when used (see SurgeGroup).
LAZY_COMMANDS = {
    "history": "surge.history.command:history_group",
    "backtest": "surge.backtest.command:backtest_command",
    "report": "surge.operator.command:report_command",
    "watch": "surge.operator.command:watch_command",
    "notify": "surge.notify.command:notify_command",
}


@click.group(cls=SurgeGroup, context_settings=CONTEXT, lazy=LAZY_COMMANDS)
@click.version_option(__version__, "-V", "--version", prog_name="surge")
@config_option
def main(config_path: str | None) -> None:
    """surge: a surge bot for Binance USD-M perpetual futures.

    It scans every TRADING USDT perpetual, keeps the symbols whose 4-hour candle passes a filter,
    streams their 1-minute klines and enters a (paper, unless you opt in twice) trade when a
    1-minute candle surges. Configuration: flags > environment (SURGE_REST_URL, SURGE_WS_URL,
    SURGE_HOME, SURGE_CONFIG) > TOML file > built-in defaults.

    Exit codes: 0 success, 1 runtime failure, 2 bad usage or config, 3 already running, 4 a live
    run stopped with an entry or close unresolved (the next start reconciles it).
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
@click.option(
    "--push-phases",
    type=click.Choice(["per_connection", "aligned"]),
    default="per_connection",
    show_default=True,
    help="When each WebSocket connection gets its 250 ms kline pushes: at its own phase, as connections "
    "on different Binance edge servers would, or all in the same instant (a worst case for a client).",
)
@click.option(
    "--push-mode",
    type=click.Choice(["on_change", "every_tick"]),
    default="on_change",
    show_default=True,
    help="on_change: a kline stream is pushed only when its candle changed (Binance; thin symbols stay "
    "silent between trades); every_tick: every subscribed stream every 250 ms (throughput benchmarks).",
)
def sim_command(
    host: str,
    port: int,
    symbols: int,
    latency_ms: float,
    seed: int,
    surge_every: float,
    push_phases: str,
    push_mode: str,
) -> None:
    """Serve the simulated Binance USD-M exchange (REST and WebSocket) until interrupted.

    The first line on stdout is `REST http://HOST:PORT WS ws://HOST:PORT/market`; point the bot at it
    with SURGE_REST_URL and SURGE_WS_URL (kline streams are served on the /market route only, as on
    Binance). Test controls live under /_sim/ on the REST port.
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
        push_phases=push_phases,
        push_mode=push_mode,
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


# --------------------------------------------------------------------------- filter-4h


@main.command("filter-4h", context_settings=CONTEXT)
@click.option(
    "--symbols",
    default=None,
    metavar="A,B,...",
    help="Scan only these symbols (default: every TRADING USDT perpetual).",
)
@click.option(
    "--workers", type=int, default=None, help="Parallel requests, 1..3 (default: filter_4h.workers, 3)."
)
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@config_option
@click.pass_context
def filter_4h_command(
    ctx: click.Context,
    symbols: str | None,
    workers: int | None,
    as_json: bool,
    no_progress: bool,
    config_path: str | None,
) -> None:
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
    wanted = symbols_option(symbols)

    bar: Any = None
    shown = 0

    def on_progress(p: ScanProgress) -> None:
        nonlocal bar, shown
        if bar is None:
            bar = click.progressbar(
                length=p.total,
                label="filter-4h",
                file=sys.stderr,
                show_pos=True,
                item_show_func=lambda text: text,
            )
            bar.__enter__()
        bar.update(
            p.done - shown,
            f"batch {p.batch}/{p.batches}, {p.passed} passed, {p.requests} requests, weight {p.used_weight}",
        )
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


# --------------------------------------------------------------------------- run


def _run_simulator(credentials: Credentials | None) -> Any:
    """The simulated exchange of ``surge run --sim`` (unstarted: the bot starts it under its lock)."""
    from surge.sim import Simulator

    simulator = Simulator(n_symbols=531, seed=1, surge_interval_s=20.0)
    if credentials is not None:  # the simulated account accepts exactly the keys we trade with
        simulator.rest.account.api_keys = {credentials.api_key: credentials.api_secret}
    return simulator


def _check_live_opt_in(settings: Settings, live_flag: bool, sim: bool = False) -> Credentials | None:
    """Live trading only when asked twice: ``[trade] mode = "live"`` AND ``--live``.

    Returns the :class:`~surge.exchange.orders.Credentials` to trade with, or None for paper. Either
    opt-in alone, or missing keys, is a usage error (exit 2) naming what is missing: a bot that
    silently falls back to paper when the user meant live (or the reverse) is worse than one that
    refuses to start. With ``--sim`` the keys may be left unset: the simulator's demo keys are used.
    """
    from surge.exchange.orders import Credentials

    live_mode = settings.trade.mode == "live"
    if live_flag and not live_mode:
        raise ConfigError('--live needs [trade] mode = "live" in the config file as well (it says "paper")')
    if live_mode and not live_flag:
        raise ConfigError('[trade] mode = "live" needs --live on the command line as well: not trading live')
    if not live_flag:
        return None
    if sim and not settings.api_key and not settings.api_secret:
        from surge.sim.account import DEFAULT_API_KEY, DEFAULT_API_SECRET

        return Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET)
    keys = (("SURGE_API_KEY", settings.api_key), ("SURGE_API_SECRET", settings.api_secret))
    missing = [name for name, value in keys if not value]
    if missing:
        raise ConfigError(f"live trading needs {' and '.join(missing)} in the environment")
    return Credentials(settings.api_key or "", settings.api_secret or "")


@main.command("run", context_settings=CONTEXT)
@click.option("--sim", is_flag=True, help="Start the built-in simulated exchange on loopback; trade on it.")
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=None,
    metavar="SECONDS",
    help="Stop cleanly after this many seconds (default: run until SIGINT/SIGTERM).",
)
@click.option("--symbols", default=None, metavar="A,B,...", help="Watch only these symbols (default: all).")
@click.option(
    "--live",
    is_flag=True,
    help='Trade for real. Also needs [trade] mode = "live" and SURGE_API_KEY/SURGE_API_SECRET '
    "(with --sim: on the simulator, with those keys if set, else its demo keys).",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="Log to $SURGE_HOME/logs/surge.log only, not also to stderr (cron, services: the "
    "file is size-bounded, a redirected stderr is not). Errors before the log exists "
    "still go to stderr.",
)
@click.option(
    "--record",
    "record_dir",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Record everything the decisions consume (kline frames with their receive time, the REST "
    "backfills and 4h scans, the loop's clock) under DIR, for `surge replay DIR`: zlib-compressed "
    f"files, one per hour, about {EXPECTED_MB_PER_HOUR} MB/hour for the whole universe (a few MB/hour "
    "with --symbols). Written off the trading loop: if the disk fails or falls behind, what was "
    "not recorded is logged and trading goes on.",
)
@click.option(
    "--record-max-mb",
    type=click.FloatRange(min=1),
    default=DEFAULT_MAX_MB,
    show_default=True,
    metavar="MB",
    help="Disk bound of --record: beyond it the OLDEST recording files in DIR are deleted (a replay "
    "needs a session's first file).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    metavar="N",
    help="Serve Prometheus metrics on http://HOST:N/metrics and a health check on /health (200 while "
    "the trading loop's heartbeat is fresh, 503 otherwise). Off by default. A port in use exits 1.",
)
@click.option(
    "--metrics-host",
    default=None,
    metavar="HOST",
    help="Address for --metrics-port (default 127.0.0.1). Any other than loopback exposes the bot's "
    "positions and PnL to whoever can reach it (logged as a warning).",
)
@config_option
@click.pass_context
def run_command(
    ctx: click.Context,
    sim: bool,
    duration: float | None,
    symbols: str | None,
    live: bool,
    quiet: bool,
    record_dir: str | None,
    record_max_mb: float,
    metrics_port: int | None,
    metrics_host: str | None,
    config_path: str | None,
) -> None:
    """Run the bot: 4h filter, 1m kline streams, surge rule, paper (or live) trades.

    Universe -> 4h filter (warm from $SURGE_HOME/surge.db) -> kline_4h streams for every symbol and
    kline_1m streams for those that pass -> the [surge] rule on every 1m update -> an entry with
    take-profit, stop-loss and max hold. State survives restarts; SIGINT/SIGTERM stop it cleanly
    (exit 0). One instance per SURGE_HOME: a second one exits 3. Logs: $SURGE_HOME/logs/surge.log.

    Live trading needs both opt-ins, [trade] mode = "live" in the config AND --live (either alone
    exits 2), and the keys in SURGE_API_KEY / SURGE_API_SECRET (environment only; never logged).
    It shows the balance and the limits, reconciles the database with the exchange's positions and
    orders, then enters at market with the stop loss and take profit on the exchange. Try it on the
    testnet first: [exchange] venue = "testnet" (or "demo") in the config. --sim --live trades on the
    built-in simulator: with SURGE_API_KEY / SURGE_API_SECRET if set (registered as the simulated
    account's keys, so your setup is exercised as is), else with the simulator's demo keys.
    A wrong key or secret exits 1 at start with the exchange's code (-1022, -2014, -2015); a Hedge
    Mode account exits 2. Every live trade is a row written before each exchange call: a lost or
    late answer is asked about by client order id, never sent twice; a restart resumes it. On
    SIGINT/SIGTERM an entry on its way gets its fill and protective orders first (about 15 s at most);
    if it cannot be resolved in time the run exits 4 naming it, and the next start resumes it.
    """
    from surge.app import Bot
    from surge.runtime import setup_logging

    settings = settings_for(ctx, config_path)
    credentials = _check_live_opt_in(settings, live, sim)
    wanted = symbols_option(symbols)
    recorder = _recorder(record_dir, record_max_mb)
    simulator = _run_simulator(credentials) if sim else None
    extra = [credentials.api_key, credentials.api_secret] if credentials is not None else []
    secrets = [settings.api_key, settings.api_secret, *extra, *_notify_secrets(settings)]
    setup_logging(settings.home, secrets=secrets, stderr=not quiet)
    _tune_for_the_loop()
    venue = "sim" if sim else None
    bot = Bot(
        settings,
        symbols=wanted,
        duration_s=duration,
        venue=venue,
        simulator=simulator,
        credentials=credentials,
        recorder=recorder,
    )
    bot.metrics = _metrics_server(metrics_port, metrics_host)  # bound and started under the lock
    install_stop_handlers(bot.request_stop)
    bot.run()
    sys.exit(bot.exit_code)  # 4 when a live entry or close was still unresolved at the stop


def _notify_secrets(settings: Settings) -> list[str]:
    """The tokens of the notification URLs: redacted from the log like the API keys, whatever logs them."""
    if not settings.notify.urls:
        return []
    from surge.notify.urls import secrets_of

    return [secret for url in settings.notify.urls for secret in secrets_of(url)]


def _tune_for_the_loop() -> None:
    """The process settings of ``surge run``, before any thread.

    The strategy loop waits on a queue that the connection threads fill while they parse whole
    chunks of frames: with CPython's default 5 ms GIL switch interval a woken loop can wait up to
    5 ms per event for its turn, which is the whole decision-latency budget. 0.5 ms costs little.
    And weeks of running must not ratchet the memory high-water up (malloc tuning)."""
    from surge.runtime import tune_malloc

    sys.setswitchinterval(SWITCH_INTERVAL_S)
    tune_malloc()


def _metrics_server(port: int | None, host: str | None) -> MetricsServer | None:
    """The --metrics-port server, unbound (the bot binds it once it holds the lock: a second instance
    exits 3, not 1 for a port in use). --metrics-host alone is a usage error: it would serve nothing."""
    if port is None:
        if host is not None:
            raise ConfigError("--metrics-host needs --metrics-port: no metrics are served without a port")
        return None
    from surge.metrics import DEFAULT_HOST, MetricsServer

    return MetricsServer(host or DEFAULT_HOST, port)


def _recorder(record_dir: str | None, max_mb: float) -> Recorder | None:
    """The --record writer (None without it); an unusable DIR exits 2 before anything starts."""
    if record_dir is None:
        return None
    from pathlib import Path

    from surge.record.recorder import Recorder, check_record_dir

    return Recorder(check_record_dir(Path(record_dir)), max_mb=max_mb)


# --------------------------------------------------------------------------- replay


@main.command("replay", context_settings=CONTEXT)
@click.argument("directory", metavar="DIR", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help='Replay under this config instead of the recording\'s own ("what if"); SURGE_CONFIG and '
    "$SURGE_HOME/surge.toml are not read.",
)
@click.pass_context
def replay_command(ctx: click.Context, directory: str, as_json: bool, config_path: str | None) -> None:
    """Replay a `surge run --record DIR` recording through the bot's own decision code.

    The recorded kline frames, REST answers and clock readings go through the same rule, 4h filter,
    trade flow and paper desk as in `surge run`, on virtual time, as fast as the CPU allows, into a
    temporary database (never $SURGE_HOME/surge.db); nothing is sent anywhere and a live run replays
    as paper. With the recording's own config (the default) it yields the run's signals and paper
    positions exactly; with --config FILE it answers "what if" over the same market. The newest
    session in DIR is replayed.

    JSON: {"frames", "signals": [{"key", "symbol", "time", "price"}], "positions": [{"key", "symbol",
    "entry_price", "exit_price", "exit_reason", "pnl"}], "elapsed_s"}. Exit 2: no recording in DIR
    or not readable; exit 1: a file unreadable part way (what came before it is replayed, and shown).
    """
    import json
    from pathlib import Path

    from surge.errors import EXIT_RUNTIME
    from surge.record.replay import format_report, replay

    given = config_path or ctx.find_root().params.get("config_path")
    settings = settings_for(ctx, config_path) if given else None
    report = replay(Path(directory).expanduser(), settings)
    click.echo(json.dumps(report.to_json()) if as_json else format_report(report))
    for warning in report.warnings:
        click.echo(f"surge: warning: {warning}", err=True)
    sys.exit(EXIT_RUNTIME if report.truncated else EXIT_OK)


# ------------------------------------------------------------------- status, signals, positions
# Read-only: they open the database read-only (never create $SURGE_HOME, never migrate, never wait on a
# running bot's transaction) and work while `surge run` writes, from another process.

#: A heartbeat older than this while the lock is held means the bot is alive but stuck (or its
#: heartbeat stopped): worth a warning, because cron will not restart a process that holds the lock.
HEARTBEAT_STALE_S = 30.0


def collect_status(
    settings: Settings, now: float | None = None
) -> tuple[dict[str, Any], Heartbeat | None, list[str]]:
    """The contract's status object, the heartbeat file as read, and warnings for a person.

    ``running``/``pid`` come from the lock, never from the heartbeat alone: kill -9 leaves a heartbeat
    behind but the kernel releases the lock. A heartbeat written by another pid than the lock holder's
    is from an earlier run and is ignored. Signal and position counts come from the database (the
    heartbeat's copy may be seconds old): for the running bot's venue, else for every venue.
    """
    import time

    from surge.runtime import current_heartbeat
    from surge.store import read_store

    now = time.time() if now is None else now
    home = settings.home
    running, pid, heartbeat, live = current_heartbeat(home)

    venue = live.get("venue") if live else None
    venue = venue if isinstance(venue, str) else None
    signals = open_positions = 0
    store = read_store(home)
    if store is not None:
        with store:
            signals = store.signal_count(venue=venue)
            open_positions = store.open_position_count(venue=venue)

    last_message = number_of(live, "last_message_at")
    status = {
        "running": running,
        "pid": pid if running else None,
        "connections": int(number_of(live, "connections") or 0),
        "streams": int(number_of(live, "streams") or 0),
        "threads": int(number_of(live, "threads") or 0),
        "last_message_age_s": round(max(0.0, now - last_message), 3) if last_message is not None else None,
        "signals": signals,
        "open_positions": open_positions,
    }

    notes = _stale_notes(home, pid, live, now) if running else []
    return status, heartbeat, notes


def _stale_notes(home: Path, pid: int | None, live: Heartbeat | None, now: float) -> list[str]:
    """A running bot whose heartbeat is old (or never came): stuck? cron will not restart it."""
    import os

    from surge.runtime import LOCK_NAME

    written = number_of(live, "written_at")
    if written is not None:
        age = now - written
        if age > HEARTBEAT_STALE_S:
            return [
                f"warning: running but the heartbeat is {age:.0f} s old "
                f"(pid {pid}: stuck? check $SURGE_HOME/logs/surge.log)"
            ]
        return []
    try:
        since = now - os.stat(home / LOCK_NAME).st_mtime  # the lock file is written on acquire
    except OSError:
        since = 0.0
    if since > HEARTBEAT_STALE_S:
        return [f"warning: running but no heartbeat written in {since:.0f} s (pid {pid})"]
    return []


def format_status(
    status: dict[str, Any],
    heartbeat: Heartbeat | None,
    notes: list[str],
    home: object,
    now: float | None = None,
) -> str:
    """A few aligned lines for a person; the JSON object is the machine's view."""
    import time

    now = time.time() if now is None else now
    if status["running"]:
        extra = []
        if heartbeat and heartbeat.get("pid") == status["pid"]:
            for key in ("mode", "venue"):
                if isinstance(heartbeat.get(key), str):
                    extra.append(heartbeat[key])
            started = number_of(heartbeat, "started_at")
            if started is not None:
                extra.append(f"up {duration_text(max(0.0, now - started))}")
        pid = status["pid"] if status["pid"] is not None else "unknown"
        running = f"yes, pid {pid}" + (f" ({', '.join(extra)})" if extra else "")
    else:
        written = number_of(heartbeat, "written_at")
        last = f" (last heartbeat {utc_text(int(written * 1000))} UTC)" if written is not None else ""
        running = "no" + last
    age = status["last_message_age_s"]
    rows = [
        ("running", running),
        ("connections", str(status["connections"])),
        ("streams", str(status["streams"])),
        ("threads", str(status["threads"])),
        ("last message", f"{age:.1f} s ago" if age is not None else "-"),
        ("signals", str(status["signals"])),
        ("open positions", str(status["open_positions"])),
        ("home", str(home)),
    ]
    return "\n".join([*(f"{name:<16}{value}" for name, value in rows), *notes])


@main.command("status", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
@config_option
@click.pass_context
def status_command(ctx: click.Context, as_json: bool, config_path: str | None) -> None:
    """Whether `surge run` is running on this SURGE_HOME, and what it is doing.

    Running and pid come from the instance lock (a killed bot is not reported as running); connections,
    streams, threads and the age of the last market message from its heartbeat file; signals and open
    positions from the database. Warns when the bot holds the lock but its heartbeat is over 30 s old.
    """
    import json

    settings = settings_for(ctx, config_path)
    status, heartbeat, notes = collect_status(settings)
    if as_json:
        click.echo(json.dumps(status))
        for note in notes:
            click.echo(note, err=True)
    else:
        click.echo(format_status(status, heartbeat, notes, settings.home))
    sys.exit(EXIT_OK)


def format_signals(records: list[Any]) -> str:
    """Signals as a table with UTC times, newest first, with what became of each.

    A venue column appears when the rows come from more than one (a simulator demo and real trading
    on the same SURGE_HOME), so they are never mistaken for each other.
    """
    if not records:
        return "no signals recorded yet"
    rows = [
        [
            utc_text(r.signal.time),
            r.signal.symbol,
            f"{r.signal.change_pct:+.2f}",
            f"{r.signal.volume_multiple:.2f}",
            f"{r.signal.quote_volume:,.0f}",
            number_text(r.signal.price),
            "entered" if r.entered else f"skipped: {r.skip_reason or '-'}",
            r.venue,
        ]
        for r in records
    ]
    headers = ["time (UTC)", "symbol", "change %", "volume x", "quote vol", "price", "outcome", "venue"]
    if len({r.venue for r in records}) == 1:
        headers, rows = headers[:-1], [r[:-1] for r in rows]
    return text_table(headers, rows, numeric={2, 3, 4, 5})


@main.command("signals", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list on stdout.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show at most this many (the newest).",
)
@config_option
@click.pass_context
def signals_command(ctx: click.Context, as_json: bool, limit: int, config_path: str | None) -> None:
    """Recorded surge signals, newest first, entered or skipped (and why).

    JSON: a list of {"time": ms, "symbol", "change_pct", "volume_multiple", "price"}.
    """
    import json

    from surge.store import read_store

    settings = settings_for(ctx, config_path)
    store = read_store(settings.home)
    records = []
    if store is not None:
        with store:
            records = store.signals(limit)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "time": r.signal.time,
                        "symbol": r.signal.symbol,
                        "change_pct": r.signal.change_pct,
                        "volume_multiple": r.signal.volume_multiple,
                        "price": r.signal.price,
                    }
                    for r in records
                ]
            )
        )
    else:
        click.echo(format_signals(records))
    sys.exit(EXIT_OK)


#: ``surge positions --json``: one object per position with these keys, in this order (the venue
#: last: "sim" for the simulator, else the exchange's host, "live:"-prefixed for live trades).
POSITION_KEYS = (
    "symbol",
    "key",
    "qty",
    "entry_price",
    "entry_time",
    "take_profit",
    "stop_loss",
    "exit_price",
    "exit_time",
    "exit_reason",
    "fees",
    "pnl",
    "venue",
)


def format_positions(records: list[Any], include_closed: bool, realised: float) -> str:
    """Open positions with their exits to come, or (--all) every position with its outcome and PnL.

    A venue column appears when the positions come from more than one venue.
    """
    positions = [r.position for r in records]
    if not positions:
        return "no positions recorded yet" if include_closed else "no open positions"
    headers, rows, numeric = _all_positions(positions) if include_closed else _open_positions(positions)
    if len({r.venue for r in records}) > 1:
        headers = [*headers, "venue"]
        rows = [[*row, r.venue] for row, r in zip(rows, records, strict=True)]
    table = text_table(headers, rows, numeric)
    if not include_closed:
        return f"{table}\n{len(positions)} open position{'s' if len(positions) != 1 else ''}"
    n_closed = sum(1 for p in positions if not p.is_open)
    return (
        f"{table}\nrealised PnL: {realised:+.4f} USDT over {n_closed} closed position"
        f"{'s' if n_closed != 1 else ''} (fees included), {len(positions) - n_closed} open"
    )


def _open_positions(positions: list[Any]) -> tuple[list[str], list[list[str]], set[int]]:
    """Headers, rows and numeric columns of the open positions' table (their exits to come)."""
    headers = ["entered (UTC)", "symbol", "qty", "entry", "take profit", "stop loss", "fees"]
    rows = [
        [
            utc_text(p.entry_time),
            p.symbol,
            number_text(p.qty),
            number_text(p.entry_price),
            number_text(p.take_profit),
            number_text(p.stop_loss),
            f"{p.fees:.4f}",
            utc_text(p.deadline),
        ]
        for p in positions
    ]
    return [*headers, "max hold until (UTC)"], rows, {2, 3, 4, 5, 6}


def _all_positions(positions: list[Any]) -> tuple[list[str], list[list[str]], set[int]]:
    """Headers, rows and numeric columns of every position's table (--all: outcomes and PnL)."""
    headers = ["entered (UTC)", "symbol", "qty", "entry", "exited (UTC)", "exit", "fees", "pnl", "reason"]
    rows = [
        [
            utc_text(p.entry_time),
            p.symbol,
            number_text(p.qty),
            number_text(p.entry_price),
            utc_text(p.exit_time) if p.exit_time is not None else "open",
            number_text(p.exit_price) if p.exit_price is not None else "-",
            f"{p.fees:.4f}",
            f"{p.pnl:+.4f}" if p.pnl is not None else "-",
            p.exit_reason or "-",
        ]
        for p in positions
    ]
    return headers, rows, {2, 3, 5, 6, 7}


@main.command("positions", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list on stdout.")
@click.option("--all", "include_closed", is_flag=True, help="Closed positions too, and the realised PnL.")
@config_option
@click.pass_context
def positions_command(
    ctx: click.Context, as_json: bool, include_closed: bool, config_path: str | None
) -> None:
    """Open positions (or --all, newest first) with entry, exit, reason and PnL (fees included).

    JSON: a list of {"symbol", "key", "qty", "entry_price", "entry_time", "take_profit", "stop_loss",
    "exit_price", "exit_time", "exit_reason", "fees", "pnl", "venue"} (times in ms; exit fields null
    while open; venue "sim", the exchange's host, or "live:<venue>" for live trades).
    """
    import json

    from surge.store import read_store

    settings = settings_for(ctx, config_path)
    store = read_store(settings.home)
    records: list[Any] = []
    realised = 0.0
    if store is not None:
        with store:
            records = store.position_records(include_closed=include_closed)
            realised = store.realised_pnl() if include_closed else 0.0
    if as_json:
        click.echo(
            json.dumps(
                [
                    {key: r.venue if key == "venue" else getattr(r.position, key) for key in POSITION_KEYS}
                    for r in records
                ]
            )
        )
    else:
        click.echo(format_positions(records, include_closed, realised))
    sys.exit(EXIT_OK)


# ------------------------------------------------------------------- offline and operator commands
# Each lives in its own package (history, backtest, operator) and loads its heavy libraries
# (pyarrow, numpy, matplotlib, rich) only when it runs, so `surge --help` and `surge run` stay light.
