"""The positions check: exits the exchange made (proven), protection put back where it is missing,
and positions that show up after their entry was given up.

Why it is shaped like this: one all-symbols positionRisk read per round. A row missing from that
answer is no information (the symbol is then asked about by name), a garbled answer neither:
protection is never cancelled because of one odd answer. A held position's protection check is queued
as a chore of its own, so an entry arriving meanwhile waits for at most one request.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from functools import partial

from surge.exchange.answers import OrderAnswer
from surge.exchange.orders import fmt_decimal
from surge.models import FILLED, PROTECTED, Trade
from surge.trading.closing import Closer
from surge.trading.desk_rules import new_position
from surge.trading.desk_state import DeskContext, StepRetry
from surge.trading.live import ENTRY, client_id
from surge.trading.outcomes import TradeOpened
from surge.trading.protection import Protector

__all__ = ["PositionWatch"]


class PositionWatch:
    """One positions check per call of :meth:`poll` (the desk decides how often)."""

    def __init__(self, ctx: DeskContext, closer: Closer, protector: Protector) -> None:
        self.ctx = ctx
        self.closer = closer
        self.protector = protector

    def watched(self) -> bool:
        """Whether there is anything to check: a held position, or a symbol watched for a late fill."""
        state = self.ctx.state
        return bool(state.voided_unknown) or any(
            t.state in (FILLED, PROTECTED) for t in state.trades.values()
        )

    def poll(self) -> None:
        """One positionRisk read: exits the exchange made (proven), and protection put back where missing."""
        ctx = self.ctx
        watched = [t for t in ctx.state.trades.values() if t.state in (FILLED, PROTECTED)]
        amounts = ctx.account.amounts(ctx.account.risk_rows(None))
        for trade in watched:
            amount = amounts.get(trade.symbol)
            if amount is None:  # no row for it in the all-symbols answer: ask about this symbol alone
                amount = ctx.account.amount(trade.symbol)
            self._check_one(trade, amount)
        self._adopt_late_entries(amounts)

    def _check_one(self, trade: Trade, amount: Decimal) -> None:
        ctx = self.ctx
        position = ctx.state.positions.get(trade.key)
        if position is None:
            return
        if amount > 0:
            ctx.state.flat_reads.pop(trade.key, None)
            if trade.state == PROTECTED:
                ctx.state.chores.append(
                    (f"{trade.symbol} protection check", partial(self.protector.check, trade.key))
                )
            return
        proof = self.closer.exit_proof(trade)
        if proof is not None:
            self.closer.closed(trade, position, proof[0], proof[1])
        elif self.closer.flat_confirmed(trade):
            self.closer.exchange_exit(trade, position)

    def _adopt_late_entries(self, amounts: Mapping[str, Decimal]) -> None:
        """An entry proven "never executed" that executed after all (a matching engine far behind), or a
        position believed flat on two wrong positionRisk answers: it shows on the exchange, its entry
        with our client id. Adopt it under its key and protect it."""
        ctx = self.ctx
        now = ctx.clock()
        for symbol, (key, until) in list(ctx.state.voided_unknown.items()):
            if now > until:
                del ctx.state.voided_unknown[symbol]
                continue
            if amounts.get(symbol, Decimal(0)) <= 0 or any(
                t.symbol == symbol for t in ctx.state.trades.values()
            ):
                continue
            order = ctx.client.get_order(symbol, client_order_id=client_id(key, ENTRY))
            if not isinstance(order, OrderAnswer) or order.executed_qty <= 0:
                continue
            del ctx.state.voided_unknown[symbol]
            self._adopt_late(key, symbol, order)

    def _adopt_late(self, key: str, symbol: str, order: OrderAnswer) -> None:
        ctx = self.ctx
        qty, avg = order.executed_qty, order.avg_price
        if avg <= 0:
            avg = ctx.account.entry_price_from_position(symbol)
        when = order.update_time or ctx.client.now_ms()
        trade = Trade(key, symbol, FILLED, qty=fmt_decimal(qty), filled_at=ctx.wall(), note="late fill")
        position = new_position(ctx.settings, ctx.account.rules_of(symbol), key, symbol, qty, avg, when)
        ctx.store.adopt_trade(trade, position, venue=ctx.venue)
        ctx.state.trades[key] = trade
        ctx.state.positions[key] = position
        ctx.state.checked_protection.add(key)
        ctx.state.retry[key] = StepRetry()
        ctx.log.error("%s: entry %s executed after it was given up: adopted and being protected", symbol, key)
        ctx.post(TradeOpened(position, adopted=True))
