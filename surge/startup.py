"""How ``surge run`` starts and stops: the order the parts come up in, and go down in.

Start: the notifications (when configured, first: the start's own findings are told), the store,
one REST client, the desk (paper, or live after the account check and the reconciliation), the 4h
scan (which also tells the exchange's clock), then the streams and the housekeeping worker, and the
pass set last (it submits the first 1m backfill). Stop: entries first, then the desk (live orders on
their way are resolved, bounded), the notifications' drain (beside the rest), the streams, the
worker, the cache and the final heartbeat, and the lock last. Functions over the
:class:`~surge.app.Bot` they start.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from surge.errors import EXIT_UNRESOLVED, ConfigError, SurgeError
from surge.exchange.codes import API_KEY_ERRORS, ErrorCode
from surge.exchange.orders import SignedRest, install_log_redaction
from surge.exchange.rest import BinanceRest, ExchangeError
from surge.filter4h import ScanResult
from surge.jobs import Housekeeper
from surge.notify.wiring import Notifications
from surge.store import open_store
from surge.stream import MultiplexedKlineManager
from surge.trading import PaperDesk
from surge.trading.desk import OrderDesk
from surge.universe import not_tradable

if TYPE_CHECKING:
    from surge.app import Bot

log = logging.getLogger("surge.app")


def start(bot: Bot) -> None:
    """Store, REST client, desk, the 4h scan, the streams and the housekeeping worker: everything
    ``surge run`` needs before its loop. Raises SurgeError (an exit) when any of it fails."""
    s = bot.settings
    # first, under the lock (a second instance sends nothing): the start's own findings are told too
    bot.trades.notifications = Notifications.start(bot)
    bot.store = open_store(s.home)
    if bot.metrics is not None:  # before the scan: a port in use exits at once, not after it
        bot.metrics.start(bot)  # what does not exist yet is left out of the scrapes until it does
    # pool: the scan's workers, plus the desk's two threads placing both protective orders at once
    bot.rest = BinanceRest(s.rest_url, pool_size=s.filter_4h.workers + 2)
    if bot.only is not None:
        check_symbols(bot.rest, bot.only, s.rest_url)
    bot.desk = start_live(bot) if bot.live else _start_paper(bot)
    bot.trades.start(bot.desk, bot.store)
    bot.rule.restore_cooldowns(bot.store.last_signal_times(venue=bot.venue))
    if len(bot.book):
        log.info("resuming %d open position(s): %s", len(bot.book), ", ".join(sorted(bot.book.symbols())))
    log.info("scanning the universe's 4h candles on %s", s.rest_url)
    scan_started_ms = int(bot.clock.wall() * 1000)
    result = bot._scan(None)  # an unreachable exchange raises here: exit 1 before anything started
    # serverTime is the exchange's clock when the scan began (its first request, exchangeInfo):
    # compare it with ours then, not after a cold scan of tens of seconds, or every "is this
    # candle closed" and max-hold check would run that far behind
    bot.clock_offset_ms = result.server_time - scan_started_ms if result.server_time else 0
    bot.filters.seed(set(result.decisions) | set(result.errors) - result.refused(), result)
    bot.start_scan = result
    bot.start_weight = result.weight
    log_scan(result)
    bot.manager = MultiplexedKlineManager(
        bot.events.put,
        logging.getLogger("surge.stream"),
        ws_url=s.ws_url,
        streams_per_connection=s.stream.streams_per_connection,
        on_gap=bot.events.put,
        # one list per received chunk instead of one queue item per kline: one put, one get
        # and one wake-up of this loop per chunk (hundreds of klines at Binance cadence)
        batch_callback=bot.events.put,
        **{"decode_last": ("4h",), **bot.stream_tuning},  # 4h klines are only filed: 1m decisions first
    )
    bot.manager.start()
    # before the pass set: it submits the 1m backfill that seeds every volume baseline, which
    # would otherwise be dropped and the baseline left to the first closed candle, a minute later
    bot.housekeeper = Housekeeper(bot.events.put)
    bot.backfill.start(bot.rest, bot.housekeeper)
    # recording: a 4h close is timed by the loop's reading of its item, the one the recording keeps
    recorder = bot.recorder
    monotonic = bot.clock.monotonic if recorder is None else lambda: recorder.item_mono
    bot.filters.start(bot.rest, bot.store, bot.housekeeper, bot.manager, monotonic)
    for sym in sorted(bot.filters.universe):
        bot.manager.subscribe_kline(sym, "4h")
    bot.apply_pass_set(set(result.passed))


def _start_paper(bot: Bot) -> PaperDesk:
    assert bot.store is not None
    desk = PaperDesk(bot.settings.trade, bot.store, bot.venue, bot.on_outcome)
    for p in desk.start():
        bot.book.add(p)
    return desk


def shutdown(bot: Bot) -> None:
    """Stop entries, close streams, flush, release: bounded so SIGTERM ends within 10 s."""
    bot.unresolved = bot.trades.stop()
    if bot.unresolved:
        bot.exit_code = EXIT_UNRESOLVED
    notifications = bot.trades.notifications
    if notifications is not None:
        notifications.close()  # what is queued goes out while the rest stops (bounded)
    if bot.recorder is not None:
        bot.recorder.stop(timeout=1.5)  # the loop has ended: nothing more to record (2 s at worst)
    if bot.manager is not None:
        bot.manager.stop(timeout=4.0)
    if bot.housekeeper is not None:
        bot.housekeeper.stop(timeout=3.0)
    try:
        bot.filters.flush_closed_4h()
    except Exception as exc:  # noqa: BLE001 - a cache write must not stop the shutdown
        log.warning("could not cache the last closed 4h candles: %s", exc)
    _last_heartbeat(bot)
    if bot.rest is not None:
        bot.rest.close()
    if bot.store is not None:
        bot.store.close()
    if bot.simulator is not None:
        bot.simulator.stop()
    if notifications is not None:
        notifications.stop()
    if bot.lock is not None:
        bot.lock.release()
    log.info("stopped")


def _last_heartbeat(bot: Bot) -> None:
    """The final heartbeat (``running`` false: ``surge status`` says stopped), then the metrics
    server, which answered ``/health`` with 503 "stopping" until now."""
    try:
        if bot.store is not None and bot.manager is not None and not bot.lock_lost:
            bot.write_heartbeat(running=False)
    except OSError as exc:
        log.warning("could not write the final heartbeat: %s", exc)
    if bot.metrics is not None:
        bot.metrics.stop(timeout=1.5)


def start_live(bot: Bot) -> OrderDesk:
    """Signed client over the bot's own REST client, the account banner, reconciliation.

    Raises SurgeError (exit 1, one line) when the exchange refuses the keys: better at start,
    before anything was streamed, than at the first signal.
    """
    assert bot.rest is not None and bot.store is not None and bot.credentials is not None
    install_log_redaction()
    signed = SignedRest(bot.rest, bot.credentials)
    desk = OrderDesk(
        bot.settings.trade,
        signed,
        bot.store,
        bot.venue,
        bot.events.put,
        clock=bot.clock.monotonic,
        wall=bot.clock.wall,
    )
    try:
        summary = desk.account_summary()
    except ExchangeError as exc:
        hint = API_KEY_ERRORS.get(exc.code) if isinstance(exc.code, ErrorCode) else None
        if hint is None:
            raise
        raise SurgeError(f"the exchange refused the API key (code {exc.code}: {exc.msg}): {hint}") from None
    for line in summary.lines():
        log.info("%s", line)
    log.info(
        "live trading on %s: protective orders on the exchange's Algo Service; state under venue %r",
        bot.settings.rest_url,
        bot.venue,
    )
    found = desk.start()  # hedge-mode check, the ledger against the exchange, then the desk's threads
    for p in found.open:
        bot.book.add(p)
    bot.trades.entering.update(found.in_flight)
    if found.open:
        log.info(
            "holding %d position(s) on the exchange: %s",
            len(found.open),
            ", ".join(sorted(p.symbol for p in found.open)),
        )
    return desk


def check_symbols(rest: BinanceRest, only: set[str], rest_url: str) -> None:
    """``--symbols`` against exchangeInfo before anything else (one request, weight 1).

    A typo, a delisted or a USDC symbol would otherwise be scanned, never streamed, and the bot
    would idle until stopped and exit 0: better a usage error (exit 2) naming them, before a live
    desk reconciles anything.
    """
    bad = not_tradable(rest.exchange_info(), sorted(only))
    if bad:
        raise ConfigError(f"--symbols: not a TRADING USDT perpetual on {rest_url}: {', '.join(sorted(bad))}")


def log_scan(result: ScanResult) -> None:
    log.info(
        "4h filter: %d of %d symbols pass (%d requests, weight %d, %.1fs)",
        len(result.passed),
        result.checked,
        result.requests,
        result.weight,
        result.elapsed_s,
    )


__all__ = ["check_symbols", "shutdown", "start", "start_live"]
