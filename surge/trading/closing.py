"""A position's end: the bot's own close at market, and the proof of how a position became flat.

Why it is shaped like this: a position is recorded closed only when one of its protective orders or
our own close filled, or when two consecutive positionRisk reads of the symbol by name agree that it
is flat (a zero row, or no row at all: v3 lists only symbols with a position or open orders). The
close is a reduce-only market sell, sent at most once per ``recvWindow``, its outcome read back by
its client id as an entry's is.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from surge.exchange.answers import AlgoOrder, OrderAnswer
from surge.exchange.codes import ErrorCode
from surge.exchange.orders import ExchangeError, fmt_decimal
from surge.models import Position, Trade
from surge.trading.account_reads import Malformed
from surge.trading.desk_rules import FIRED, RESOLVE_MARGIN_MS, ROLE_REASON
from surge.trading.desk_state import DeskContext
from surge.trading.live import EXIT, EXTERNAL, STOP, TARGET, client_id
from surge.trading.outcomes import TradeClosed
from surge.trading.paper import MAX_HOLD
from surge.trading.protection import Protector

__all__ = ["Closer"]


class Closer:
    """CLOSING -> closed, and the proof of an exit the exchange made."""

    def __init__(self, ctx: DeskContext, protector: Protector) -> None:
        self.ctx = ctx
        self.protector = protector

    def step(self, trade: Trade) -> None:
        """CLOSING: a reduce-only market sell, at most once per recvWindow, until the position is flat."""
        ctx = self.ctx
        position = ctx.state.positions.get(trade.key) or ctx.store.position(trade.key, venue=ctx.venue)
        if position is None:
            raise Malformed(f"trade {trade.key} is closing but has no position in the ledger")
        ctx.state.positions[trade.key] = position
        if trade.exit_sent_at is not None and self._exit_settled(trade, position, trade.exit_sent_at):
            return
        amount = ctx.account.amount(trade.symbol)
        if amount <= 0:
            proof = self.exit_proof(trade)
            if proof is not None:
                self.closed(trade, position, proof[0], proof[1])
            elif self.flat_confirmed(trade):
                self.exchange_exit(trade, position)
            else:
                ctx.soon(trade.key, 1.0)
            return
        ctx.state.flat_reads.pop(trade.key, None)
        self._send_exit(trade, position, amount)

    def _exit_settled(self, trade: Trade, position: Position, sent_at: int) -> bool:
        """Our close was sent: True when its answer decides this step (filled, working, or not known
        yet within its recvWindow); False when a new close may be sent."""
        ctx = self.ctx
        order = ctx.client.get_order(trade.symbol, client_order_id=client_id(trade.key, EXIT))
        if isinstance(order, OrderAnswer) and order.filled:
            self.closed(trade, position, order, trade.exit_reason or MAX_HOLD)
            return True
        if isinstance(order, OrderAnswer) and order.status in ("NEW", "PARTIALLY_FILLED"):
            ctx.soon(trade.key)
            return True
        if order is None and ctx.client.now_ms() <= sent_at + trade.recv_window + RESOLVE_MARGIN_MS:
            ctx.soon(trade.key, 0.5)
            return True
        return False

    def _send_exit(self, trade: Trade, position: Position, amount: Decimal) -> None:
        ctx = self.ctx
        sent = ctx.ledger.save(replace(trade, exit_sent_at=ctx.client.now_ms()))
        try:
            order = ctx.client.new_order(
                trade.symbol,
                "SELL",
                ctx.account.rules_of(trade.symbol).quantity(amount),
                client_order_id=client_id(trade.key, EXIT),
                reduce_only=True,
                resp_type="RESULT",
            )
        except ExchangeError as exc:
            if exc.code == ErrorCode.REDUCE_ONLY_REJECT:  # nothing left to reduce
                ctx.soon(trade.key, 1.0)  # the next step proves how it ended (or reads flat again)
                return
            raise
        except Exception as exc:  # noqa: BLE001 - may have executed: the next step asks by its id
            ctx.ledger.save(replace(sent, note=str(exc)))
            ctx.soon(trade.key)
            return
        if isinstance(order, OrderAnswer) and order.status == "FILLED" and order.avg_price > 0:
            self.closed(sent, position, order, sent.exit_reason or MAX_HOLD)
        else:
            ctx.soon(trade.key, 0.05)  # read the fill back by its id

    def closed(self, trade: Trade, position: Position, order: OrderAnswer, reason: str) -> None:
        """Flat, and we know how: cancel what protected it, then record the exit (one transaction)."""
        ctx = self.ctx
        self.protector.cancel(trade.key)
        price = order.fill_price
        if price <= 0:
            price = Decimal(repr(ctx.client.rest.ticker_prices().get(trade.symbol, position.entry_price)))
        when = order.stamp or ctx.client.now_ms()
        qty, entry = Decimal(repr(position.qty)), Decimal(repr(position.entry_price))
        fee = Decimal(str(ctx.settings.taker_fee_pct)) / 100
        fees = Decimal(repr(position.fees)) + price * qty * fee
        closed = replace(
            position,
            exit_price=float(price),
            exit_time=when,
            exit_reason=reason,
            fees=float(fees),
            pnl=float((price - entry) * qty - fees),
        )
        ctx.ledger.flush()  # its fill and closing rows first (a full disk held them back)
        ctx.store.record_trade_close(trade, closed, venue=ctx.venue)
        ctx.log.info(
            "closed %s (%s) @ %s: pnl %.4f USDT", trade.symbol, reason, fmt_decimal(price), closed.pnl
        )
        ctx.state.finish(trade.key)
        ctx.post(TradeClosed(closed))

    def exit_proof(self, trade: Trade) -> tuple[OrderAnswer, str] | None:
        """The fill that made the position flat, if one of ours did: a protective order or our close."""
        client = self.ctx.client
        for role in (STOP, TARGET):
            algo = client.get_algo_order(client_algo_id=client_id(trade.key, role))
            if isinstance(algo, AlgoOrder) and algo.algo_status in FIRED and algo.actual_id:
                order = client.get_order(trade.symbol, order_id=algo.actual_id)
                if isinstance(order, OrderAnswer) and order.executed_qty > 0:
                    return order, ROLE_REASON[role]
        order = client.get_order(trade.symbol, client_order_id=client_id(trade.key, EXIT))
        if isinstance(order, OrderAnswer) and order.filled:
            return order, trade.exit_reason or MAX_HOLD
        return None

    def exchange_exit(self, trade: Trade, position: Position) -> None:
        """The position is flat on the exchange: record how (a fill of ours), or as external."""
        ctx = self.ctx
        proof = self.exit_proof(trade)
        if proof is not None:
            self.closed(trade, position, proof[0], proof[1])
            return
        ctx.log.warning(
            "%s: position %s closed outside the bot (manually or liquidated)", trade.symbol, trade.key
        )
        last = ctx.client.rest.ticker_prices().get(trade.symbol, position.entry_price)
        self.closed(trade, position, OrderAnswer(avg_price=Decimal(repr(last))), EXTERNAL)
        # flat on positionRisk's word alone, which can be wrong twice in a row: if the position shows
        # again it is adopted under its key and protected (as a late entry is), not left unprotected
        ctx.watch_symbol(trade.symbol, trade.key)

    def flat_confirmed(self, trade: Trade) -> bool:
        """A flat read with no fill of ours to explain it: believed on the second consecutive one."""
        reads = self.ctx.state.flat_reads.get(trade.key, 0) + 1
        self.ctx.state.flat_reads[trade.key] = reads
        if reads < 2:
            self.ctx.log.info(
                "%s: flat on one positionRisk read with no fill of ours: confirming on the next", trade.symbol
            )
        return reads >= 2
