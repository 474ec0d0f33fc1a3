"""Start-up reconciliation: the ledger against the exchange, before the desk thread runs.

Why it is shaped like this: the desk keeps no state that matters outside its ledger, so a restart, a
crash or ``kill -9`` resumes every unfinished trade from its row, through the very same steps.
Positions the ledger lacks are adopted (their trade starts at "filled", so protection is checked and
put back); our protective orders that protect nothing are cancelled. Flatness is not concluded here:
the first positions check and the one after it do that, as always.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from surge.exchange.answers import AlgoOrder, OrderAnswer, PositionRisk
from surge.exchange.orders import fmt_decimal
from surge.models import FILLED, INTENT, SENT, UNKNOWN, Position, Trade
from surge.trading.account_reads import listed
from surge.trading.desk_rules import LATE_FILL_WATCH_S, new_position
from surge.trading.desk_state import DeskContext, DeskStart, StepRetry
from surge.trading.live import CLIENT_ID_PREFIX, EXTERNAL, STOP, TARGET, client_id, key_from_client_id

__all__ = ["Reconciler"]


class Reconciler:
    """One reconciliation, on the caller's thread of ``OrderDesk.start()``."""

    def __init__(self, ctx: DeskContext) -> None:
        self.ctx = ctx

    def run(self) -> DeskStart:
        """Resume, adopt and clean up (see the module doc); the desk's state holds the result."""
        ctx = self.ctx
        found = DeskStart()
        rows = ctx.account.risk_rows(None)
        for r in rows:
            if str(r.leverage) == str(ctx.settings.leverage):
                ctx.account.leverage_set.add(r.symbol)
        algos = [
            a
            for a in listed(ctx.client.open_algo_orders())
            if isinstance(a, AlgoOrder) and _ours(a.client_algo_id)
        ]
        self._report_open_orders()
        for trade in self._unfinished_trades().values():
            self._resume(trade, rows, found)
        self._adopt_unknown_positions(rows, algos, found)
        self._keep_watching_external_closes()
        self._cancel_orphans(algos)
        ctx.log.info(
            "reconciliation: %d open, %d adopted, %d resumed, %d entries unresolved",
            len(found.open),
            found.adopted,
            found.resumed,
            len(found.in_flight),
        )
        return found

    def _report_open_orders(self) -> None:
        for o in listed(self.ctx.client.open_orders()):
            if isinstance(o, OrderAnswer) and _ours(o.client_order_id):
                self.ctx.log.warning(
                    "reconcile: %s: open order %s left from a previous run (status %s)",
                    o.symbol,
                    o.client_order_id,
                    o.status,
                )

    def _unfinished_trades(self) -> dict[str, Trade]:
        """The ledger's unfinished trades, and a trade row for any open position from before the
        ledger had them."""
        ctx = self.ctx
        trades = {t.key: t for t in ctx.store.trades(venue=ctx.venue, unfinished=True)}
        for p in ctx.store.open_positions(venue=ctx.venue):
            if p.key not in trades:
                trade = Trade(p.key, p.symbol, FILLED, qty=repr(p.qty), note="resumed without a trade row")
                ctx.store.adopt_trade(trade, p, venue=ctx.venue)
                trades[p.key] = trade
        return trades

    def _resume(self, trade: Trade, rows: list[PositionRisk], found: DeskStart) -> None:
        ctx, state = self.ctx, self.ctx.state
        if trade.state == INTENT:  # never sent: the moment has passed
            ctx.store.void_trade(trade, "not sent before the bot stopped", venue=ctx.venue)
            ctx.log.warning("reconcile: %s: entry %s was never sent: void", trade.symbol, trade.key)
            return
        state.trades[trade.key] = trade
        state.retry[trade.key] = StepRetry()  # its next step at once
        state.checked_protection.add(trade.key)
        position = ctx.store.position(trade.key, venue=ctx.venue)
        if position is not None and position.is_open:
            position = self._as_on_exchange(position, rows)
            state.positions[trade.key] = position
            found.open.append(position)
        elif trade.state in (SENT, UNKNOWN):
            found.in_flight[trade.key] = trade.symbol
        found.resumed += 1
        ctx.log.info("reconcile: %s: resuming trade %s (%s)", trade.symbol, trade.key, trade.state)

    def _adopt_unknown_positions(
        self, rows: list[PositionRisk], algos: list[AlgoOrder], found: DeskStart
    ) -> None:
        """Positions on the exchange the ledger lacks: longs adopted (and protected), shorts left alone."""
        ctx, state = self.ctx, self.ctx.state
        mine = {t.symbol for t in state.trades.values()}
        for row in rows:
            amount, symbol = row.position_amt, row.symbol
            if amount == 0 or symbol in mine:
                continue
            if amount < 0:
                ctx.log.warning(
                    "reconcile: %s: a SHORT position of %s is on the account; surge only trades "
                    "longs and leaves it alone",
                    symbol,
                    fmt_decimal(amount),
                )
                continue
            position = self._adopted_position(row, [a for a in algos if a.symbol == symbol])
            trade = Trade(position.key, symbol, FILLED, qty=fmt_decimal(amount), note="adopted")
            ctx.store.adopt_trade(trade, position, venue=ctx.venue)
            state.trades[trade.key] = trade
            state.positions[trade.key] = position
            state.checked_protection.add(trade.key)
            found.open.append(position)
            found.adopted += 1
            ctx.log.warning(
                "reconcile: %s: position %s @ %s on the exchange is not in the database: adopted as %s",
                symbol,
                fmt_decimal(amount),
                fmt_decimal(row.entry_price),
                position.key,
            )

    def _keep_watching_external_closes(self) -> None:
        """A close believed on positionRisk's word alone stays watched across a restart: this start's
        one read (empty or garbled, say) cannot rule out that the position is still there."""
        ctx = self.ctx
        symbols = {t.symbol for t in ctx.state.trades.values()}
        now_ms = ctx.wall() * 1000
        for p in ctx.store.positions(include_closed=True, limit=100, venue=ctx.venue):
            left = LATE_FILL_WATCH_S - (now_ms - (p.exit_time or 0)) / 1000
            if p.exit_reason == EXTERNAL and left > 0 and p.symbol not in symbols:
                ctx.state.voided_unknown.setdefault(p.symbol, (p.key, ctx.clock() + left))

    def _cancel_orphans(self, algos: list[AlgoOrder]) -> None:
        """Our protective orders on symbols the desk holds nothing on protect nothing: cancelled."""
        ctx = self.ctx
        symbols = {t.symbol for t in ctx.state.trades.values()}
        keep = {client_id(k, r) for k in ctx.state.trades for r in (STOP, TARGET)}
        for a in algos:
            cid = a.client_algo_id
            if (
                cid not in keep
                and a.symbol not in symbols
                and ctx.client.cancel_algo_order(client_algo_id=cid)
            ):
                ctx.log.warning(
                    "reconcile: %s: protective order %s protected nothing: cancelled", a.symbol, cid
                )

    def _as_on_exchange(self, position: Position, rows: list[PositionRisk]) -> Position:
        """A resumed position with the exchange's quantity and entry price where they differ (a partial
        fill of a protective order, a manual change while the bot was away): logged, stored."""
        row = next((r for r in rows if r.symbol == position.symbol), None)
        if row is None or row.position_amt <= 0:
            return position  # flat or unknown: the positions check decides, with proof
        amount, entry = row.position_amt, row.entry_price
        qty, ledger_entry = Decimal(repr(position.qty)), Decimal(repr(position.entry_price))
        if entry <= 0:
            entry = ledger_entry
        if amount == qty and abs(entry - ledger_entry) <= entry * Decimal("0.000001"):
            return position
        updated = replace(position, qty=float(amount), entry_price=float(entry))
        self.ctx.store.update_position(updated, venue=self.ctx.venue)
        self.ctx.log.warning(
            "reconcile: %s: the ledger says %s @ %s, the exchange %s @ %s: adopting the exchange's",
            position.symbol,
            position.qty,
            position.entry_price,
            fmt_decimal(amount),
            fmt_decimal(entry),
        )
        return updated

    def _adopted_position(self, row: PositionRisk, algos: list[AlgoOrder]) -> Position:
        """A Position for an exchange position the ledger lacks; key and triggers from our protective
        orders when they exist (their ids carry the signal key)."""
        ctx = self.ctx
        entered = row.update_time or ctx.client.now_ms()
        key = next(
            (k for a in algos if (k := key_from_client_id(a.client_algo_id))), f"{row.symbol}:{entered}"
        )
        triggers = {a.order_type: float(a.trigger_price) for a in algos}
        rules = ctx.account.rules_of(row.symbol)
        return new_position(
            ctx.settings,
            rules,
            key,
            row.symbol,
            row.position_amt,
            row.entry_price,
            entered,
            triggers=triggers,
        )


def _ours(cid: str) -> bool:
    return cid.startswith(CLIENT_ID_PREFIX)
