"""A live trade's entry: sent once, its outcome resolved by client id, its fill read back.

Why it is shaped like this: a placement answered with a timeout, 5xx, 408, -1006, -1007 or garbage
may have executed, so the entry is never sent again. The desk asks by client id, with backoff, for as
long as it takes; only an explicit "no such order" after the request's ``recvWindow`` has passed on
the exchange's clock proves that it never executed, and only then is the trade void. Quantity and
average price come from the order (or the position's ``entryPrice``), never from a missing or
``"0.00"`` ``avgPrice`` in the placement's answer.
"""

from __future__ import annotations

from dataclasses import replace

from surge.exchange.answers import OrderAnswer
from surge.exchange.codes import RETRY_LATER
from surge.exchange.orders import ExchangeError, fmt_decimal, size_order
from surge.models import FILLED, INTENT, SENT, UNKNOWN, Signal, Trade
from surge.trading.account_reads import Malformed
from surge.trading.desk_rules import ENTRY_SEND_WINDOW_S, RESOLVE_MARGIN_MS, new_position
from surge.trading.desk_state import DeskContext
from surge.trading.live import ENTRY, client_id
from surge.trading.outcomes import TradeOpened, TradeVoid
from surge.trading.protection import Protector

__all__ = ["EntryFlow"]


class EntryFlow:
    """INTENT -> SENT -> (UNKNOWN) -> FILLED, or void; a fill is protected at once."""

    def __init__(self, ctx: DeskContext, protector: Protector) -> None:
        self.ctx = ctx
        self.protector = protector

    def send(self, trade: Trade) -> None:
        """INTENT: size the entry, record it as sent, and send it (once)."""
        ctx = self.ctx
        signal = ctx.state.signals.get(trade.key)
        reason = self._not_now(trade, signal)
        if reason is not None or signal is None:
            self.void(trade, reason or "not sent before the bot stopped")
            return
        decision = size_order(ctx.account.rules_of(trade.symbol), ctx.settings.position_usdt, signal.price)
        if not decision.ok:
            self.void(trade, f"size: {decision.reason}")
            return
        ctx.account.ensure_leverage(trade.symbol)
        sent = ctx.ledger.save(
            replace(
                trade,
                state=SENT,
                qty=fmt_decimal(decision.quantity),
                entry_sent_at=ctx.client.now_ms(),
                recv_window=ctx.client.recv_window_ms,
            )
        )
        self._place(sent, decision.quantity)

    def _not_now(self, trade: Trade, signal: Signal | None) -> str | None:
        """Why the entry is not to be sent at all (the trade is then void), or None."""
        ctx = self.ctx
        if ctx.state.stopping:
            return "shutting down before the entry was sent"
        if signal is None:
            return "not sent before the bot stopped"
        if ctx.wall() - (trade.signal_at or 0.0) > ENTRY_SEND_WINDOW_S:
            return f"not sent within {ENTRY_SEND_WINDOW_S:.0f}s of the signal ({trade.note})"
        watch = ctx.state.voided_unknown.get(trade.symbol)
        if watch is not None and ctx.clock() <= watch[1]:
            # the last trade here ended without proof (void on "no such order", or flat on positionRisk's
            # word alone): a position may still be there, which a second entry would double
            return f"the end of {watch[0]} is not proven yet: not entering on top of it"
        held = ctx.state.held_by_other(trade.symbol, trade.key)
        if held is not None:  # adopted here (a late fill, a reappearing position) after the loop decided
            return f"{held} is held on {trade.symbol}: not entering on top of it"
        return None

    def _place(self, sent: Trade, quantity: object) -> None:
        ctx = self.ctx
        cid = client_id(sent.key, ENTRY)
        try:
            order = ctx.client.new_order(
                sent.symbol, "BUY", quantity, client_order_id=cid, resp_type="RESULT"
            )
        except ExchangeError as exc:
            if exc.code in RETRY_LATER:  # refused before execution: nothing is on the exchange
                ctx.ledger.save(replace(sent, state=INTENT, note=f"code {exc.code}: {exc.msg}"))
                raise
            self.void(sent, f"refused by the exchange: code {exc.code}: {exc.msg}")
            return
        except Exception as exc:  # noqa: BLE001 - lost, late, 5xx, garbled: it may have executed
            ctx.ledger.save(replace(sent, state=UNKNOWN, note=str(exc)))
            ctx.log.warning(
                "%s: entry %s: %s; asking the exchange by client id (never sent twice)", sent.symbol, cid, exc
            )
            ctx.soon(sent.key)
            return
        if not self.take_fill(sent, order):
            ctx.soon(sent.key, 0.05)  # the answer lacked the fill: read it back now

    def resolve(self, trade: Trade) -> None:
        """SENT or UNKNOWN: what became of the entry, by its client id."""
        ctx = self.ctx
        cid = client_id(trade.key, ENTRY)
        order = ctx.client.get_order(trade.symbol, client_order_id=cid)
        if order is None:
            sent_at = trade.entry_sent_at or 0
            if ctx.client.now_ms() > sent_at + trade.recv_window + RESOLVE_MARGIN_MS:
                self.void(
                    trade,
                    f"the entry never executed: no order {cid} on the exchange after its "
                    f"recvWindow passed ({trade.note or 'its answer was lost'})",
                    watch=True,
                )
            else:
                ctx.soon(trade.key, 0.5)
            return
        if not isinstance(order, OrderAnswer):
            raise Malformed(f"order {cid}: {order!r:.200}")
        status, executed = order.status, order.executed_qty
        if status in ("NEW", "PARTIALLY_FILLED") or (status == "FILLED" and executed <= 0):
            ctx.soon(trade.key, 0.25)
            return
        if executed <= 0:
            self.void(trade, f"the entry {cid} ended {status} without a fill")
            return
        if not self.take_fill(trade, order):
            raise Malformed(f"order {cid} is {status} with {executed} executed but no price anywhere")

    def take_fill(self, trade: Trade, order: object) -> bool:
        """Record the fill ``order`` shows (quantity and average price read back, never a zero or a
        missing field); False when the answer does not carry it yet."""
        ctx = self.ctx
        if not isinstance(order, OrderAnswer) or order.status != "FILLED":
            return False
        qty, avg = order.executed_qty, order.fill_price
        if qty <= 0:
            return False
        if avg <= 0:
            avg = ctx.account.entry_price_from_position(trade.symbol)
            if avg <= 0:
                return False
        when = order.stamp or ctx.client.now_ms()
        rules = ctx.account.rules_of(trade.symbol)
        position = new_position(ctx.settings, rules, trade.key, trade.symbol, qty, avg, when)
        filled = replace(trade, state=FILLED, qty=fmt_decimal(qty), filled_at=ctx.wall(), note=None)
        ctx.ledger.write(lambda: ctx.store.record_fill(filled, position, venue=ctx.venue), held=True)
        ctx.state.trades[trade.key] = filled
        ctx.state.positions[trade.key] = position
        ctx.state.signals.pop(trade.key, None)
        ctx.log.info(
            "entered %s: %s @ %s (signal %s); take profit %s, stop loss %s",
            trade.symbol,
            fmt_decimal(qty),
            fmt_decimal(avg),
            trade.key,
            position.take_profit,
            position.stop_loss,
        )
        ctx.post(TradeOpened(position))
        self.protector.protect(filled)  # at once: every millisecond from here is a position without its stop
        return True

    def void(self, trade: Trade, reason: str, *, watch: bool = False) -> None:
        """A trade voided after its entry was sent (refused, or "no such order" after a lost answer) is
        watched a while for a late fill all the same, and its symbol not entered again meanwhile."""
        ctx = self.ctx
        ctx.store.void_trade(trade, reason, venue=ctx.venue)
        if watch or trade.state in (SENT, UNKNOWN):
            ctx.watch_symbol(trade.symbol, trade.key)
        ctx.log.warning("signal %s not entered: %s", trade.key, reason)
        ctx.state.finish(trade.key)
        ctx.post(TradeVoid(trade.key, trade.symbol, reason))
