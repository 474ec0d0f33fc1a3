"""A held position's protective orders: placed together at once, put back when missing, cancelled
when it is flat.

Why it is shaped like this: every millisecond between the entry's fill and its stop loss is a
position without protection, so the stop loss and take profit go out concurrently (the second on one
worker thread beside the desk's own), through the Algo Service, reduce-only. Their client ids derive
from the signal, so a retry asks by id before it places (never twice), and a ``TRIGGERING`` algo
order still protects. A trigger the price has already crossed (-2021) closes the position at market
for that reason instead.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from decimal import Decimal

from surge.exchange.answers import AlgoOrder
from surge.exchange.codes import ErrorCode
from surge.exchange.orders import ExchangeError, fmt_decimal
from surge.models import CLOSING, PROTECTED, Position, Trade
from surge.trading.account_reads import Malformed, listed
from surge.trading.desk_rules import FIRED, PROTECTING, ROLE_REASON, ROLE_TYPE
from surge.trading.desk_state import DeskContext
from surge.trading.live import STOP, TARGET, client_id

__all__ = ["TRIGGER_NOW", "Protector"]

#: The algo id :meth:`Protector.ensure_algo` gives a role whose trigger the price has crossed already.
TRIGGER_NOW = -1


class Protector:
    """Places, checks and cancels the protective orders of the desk's positions."""

    def __init__(self, ctx: DeskContext, *, concurrent: bool) -> None:
        self.ctx = ctx
        #: False places the stop loss, then the take profit (two round trips): the baseline of
        #: scripts/bench_live.py, measured against the concurrent placement
        self.concurrent = concurrent
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        if self.concurrent:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="surge-desk-protect")

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ placing both

    def protect(self, trade: Trade) -> None:
        """FILLED: both protective orders, placed together; PROTECTED once both are acknowledged."""
        ctx = self.ctx
        position = ctx.state.positions[trade.key]
        amount = ctx.account.rules_of(trade.symbol).quantity(position.qty)
        look_first = trade.key in ctx.state.checked_protection
        ctx.state.checked_protection.add(trade.key)  # a retry must ask before it places
        results = self._place_both(position, amount, look_first)
        ids = dict(results)
        trigger_now = [role for role, algo_id in results if algo_id == TRIGGER_NOW]
        if trigger_now:  # the price is already beyond a trigger (-2021): close at market for that reason
            ctx.ledger.save(replace(trade, state=CLOSING, exit_reason=ROLE_REASON[trigger_now[0]], note=None))
            return
        stop_id, target_id = ids.get(STOP), ids.get(TARGET)
        if stop_id is None or target_id is None:
            missing = [client_id(trade.key, r) for r in (STOP, TARGET) if ids.get(r) is None]
            ctx.state.trades[trade.key] = replace(trade, note=f"not protected yet: {', '.join(missing)}")
            raise Malformed(f"{trade.symbol} is NOT fully protected yet ({', '.join(missing)} missing)")
        done = ctx.ledger.save(
            replace(
                trade,
                state=PROTECTED,
                sl_algo_id=stop_id,
                tp_algo_id=target_id,
                protected_at=ctx.wall(),
                note=None,
            )
        )
        self._log_protected(done)

    def _place_both(
        self, position: Position, amount: Decimal, look_first: bool
    ) -> list[tuple[str, int | None]]:
        if self._pool is None:
            return [
                self.ensure_algo(position, STOP, amount, look_first),
                self.ensure_algo(position, TARGET, amount, look_first),
            ]
        other: Future[tuple[str, int | None]] = self._pool.submit(
            self.ensure_algo, position, TARGET, amount, look_first
        )
        return [self.ensure_algo(position, STOP, amount, look_first), other.result()]

    def _log_protected(self, done: Trade) -> None:
        took = ""
        if done.signal_at and done.filled_at and done.protected_at:
            took = (
                f" (signal -> protected {1000 * (done.protected_at - done.signal_at):.0f} ms, "
                f"unprotected {1000 * (done.protected_at - done.filled_at):.0f} ms)"
            )
        self.ctx.log.info(
            "%s: protective orders placed: %s, %s%s",
            done.symbol,
            client_id(done.key, STOP),
            client_id(done.key, TARGET),
            took,
        )

    # ------------------------------------------------------------------ one order

    def ensure_algo(
        self, position: Position, role: str, amount: Decimal, look_first: bool
    ) -> tuple[str, int | None]:
        """(role, algoId) once the protective order is open; None when it is not (yet); TRIGGER_NOW
        when the price is already beyond its trigger. Runs on the desk thread or its protect worker."""
        cid = client_id(position.key, role)
        if look_first:
            current = self.ctx.client.get_algo_order(client_algo_id=cid)
            if isinstance(current, AlgoOrder) and current.algo_status in PROTECTING | FIRED:
                return role, current.algo_id
        trigger = self.ctx.account.rules_of(position.symbol).price(
            position.stop_loss if role == STOP else position.take_profit
        )
        try:
            answer = self.ctx.client.new_algo_order(
                position.symbol,
                "SELL",
                ROLE_TYPE[role],
                trigger,
                client_algo_id=cid,
                quantity=amount,
                reduce_only=True,
            )
            return role, answer.algo_id if isinstance(answer, AlgoOrder) else 0
        except ExchangeError as exc:
            return role, self._refused(position, role, cid, trigger, exc)
        except Exception as exc:  # noqa: BLE001 - lost or garbled: ask by its id before placing again
            self.ctx.log.warning(
                "%s: %s %s: %s; asking the exchange before placing it again",
                position.symbol,
                ROLE_TYPE[role],
                cid,
                exc,
            )
            try:
                found = self.ctx.client.get_algo_order(client_algo_id=cid)
            except Exception:  # noqa: BLE001 - still unreachable: the next step asks again
                return role, None
            if isinstance(found, AlgoOrder) and found.algo_status in PROTECTING | FIRED:
                return role, found.algo_id
            return role, None

    def _refused(
        self, position: Position, role: str, cid: str, trigger: Decimal, exc: ExchangeError
    ) -> int | None:
        """The algo id a refusal still gives (the order exists already), TRIGGER_NOW, or None."""
        if exc.code == ErrorCode.ORDER_WOULD_IMMEDIATELY_TRIGGER:
            self.ctx.log.warning(
                "%s: %s at %s would trigger at once: closing at market",
                position.symbol,
                ROLE_TYPE[role],
                fmt_decimal(trigger),
            )
            return TRIGGER_NOW
        if exc.code == ErrorCode.DUPLICATED_CLIENT_ID:  # it is open already
            found = self.ctx.client.get_algo_order(client_algo_id=cid)
            return found.algo_id if isinstance(found, AlgoOrder) else None
        self.ctx.log.error(
            "%s: could not place %s %s (code %s: %s): the position is NOT fully protected; trying again",
            position.symbol,
            ROLE_TYPE[role],
            cid,
            exc.code,
            exc.msg,
        )
        return None

    # ------------------------------------------------------------------ checking and cancelling

    def check(self, key: str) -> None:
        """A protected position's orders are both open; one that is missing is placed again."""
        ctx = self.ctx
        trade = ctx.state.trades.get(key)
        if trade is None or trade.state != PROTECTED:
            return  # closing or closed since the positions check queued this
        open_ids = {a.client_algo_id for a in listed(ctx.client.open_algo_orders(trade.symbol))}
        missing = [r for r in (STOP, TARGET) if client_id(trade.key, r) not in open_ids]
        if not missing:
            return
        position = ctx.state.positions[trade.key]
        amount = ctx.account.rules_of(trade.symbol).quantity(position.qty)
        for role in missing:
            cid = client_id(trade.key, role)
            role_, algo_id = self.ensure_algo(position, role, amount, look_first=True)
            if algo_id == TRIGGER_NOW:
                ctx.ledger.save(replace(trade, state=CLOSING, exit_reason=ROLE_REASON[role_], note=None))
                return
            if algo_id is None:
                raise Malformed(f"{trade.symbol}: protective order {cid} is missing and could not be placed")
            ctx.log.warning("%s: protective order %s was missing: placed again", trade.symbol, cid)

    def cancel(self, key: str) -> None:
        """Cancel both protective orders; a failure is logged (reconciliation cancels leftovers later)."""
        for role in (STOP, TARGET):
            cid = client_id(key, role)
            try:
                if self.ctx.client.cancel_algo_order(client_algo_id=cid):
                    self.ctx.log.info("cancelled protective order %s", cid)
            except Exception as exc:  # noqa: BLE001 - the position is flat: a leftover reduce-only order is harmless
                self.ctx.log.warning(
                    "could not cancel protective order %s (%s); the next start will", cid, exc
                )
