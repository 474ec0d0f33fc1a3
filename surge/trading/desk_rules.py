"""The order desk's fixed rules: which trade states are open questions, how long it waits for what,
what each protective order is, and where a position's take profit and stop loss lie.

Why one module: the entry, protection, closing, watching and reconciliation parts of the desk all
decide on these, and one price rule for the protective orders means a resumed, adopted or late
position is protected exactly as a fresh one is.
"""

from __future__ import annotations

from decimal import Decimal

from surge.config import TradeSettings
from surge.exchange.precision import SymbolRules
from surge.models import CLOSING, FILLED, PROTECTED, SENT, UNKNOWN, Position
from surge.trading.live import STOP, TARGET
from surge.trading.paper import STOP_LOSS, TAKE_PROFIT

__all__ = [
    "ENTRY_SEND_WINDOW_S",
    "FIRED",
    "HELD",
    "LATE_FILL_WATCH_S",
    "PROTECTING",
    "RESOLVE_MARGIN_MS",
    "RETRY_S",
    "ROLE_REASON",
    "ROLE_TYPE",
    "UNRESOLVED_REPORT_S",
    "UNRESOLVED_STATES",
    "new_position",
    "protective_prices",
]

#: An intent not sent this long after its signal is void: nothing was sent, and the moment has passed.
ENTRY_SEND_WINDOW_S = 30.0
#: "No such order" is final only once the exchange's clock is past the request's recvWindow by this.
RESOLVE_MARGIN_MS = 5_000
#: How long the symbol of an entry proven never executed is still watched for a late fill.
LATE_FILL_WATCH_S = 600.0
#: A step that failed is tried again after this, doubling up to the second figure.
RETRY_S = (0.25, 4.0)
#: How often an unresolved trade is reported as an ERROR while the desk keeps asking.
UNRESOLVED_REPORT_S = 30.0
#: States in which the exchange may hold something the ledger does not fully know yet.
UNRESOLVED_STATES = frozenset({SENT, UNKNOWN, FILLED, CLOSING})
#: States of a position already held: a row the disk refuses is kept in memory (see LedgerWriter).
HELD = frozenset({FILLED, PROTECTED, CLOSING})
#: Algo order states that still protect the position (``TRIGGERING``: firing, not yet filled).
PROTECTING = frozenset({"NEW", "TRIGGERING"})
#: Algo order states that mean it fired: the position is being (or was) closed by it.
FIRED = frozenset({"TRIGGERED", "FINISHED"})
#: The exit reason a protective order's fill gives a position, and the order type of each role.
ROLE_REASON = {STOP: STOP_LOSS, TARGET: TAKE_PROFIT}
ROLE_TYPE = {STOP: "STOP_MARKET", TARGET: "TAKE_PROFIT_MARKET"}


def protective_prices(settings: TradeSettings, rules: SymbolRules, entry: Decimal) -> tuple[float, float]:
    """(take profit, stop loss) of a long entered at ``entry``, on the symbol's tick."""
    take_profit = rules.price(entry * (1 + Decimal(str(settings.take_profit_pct)) / 100))
    stop_loss = rules.price(entry * (1 - Decimal(str(settings.stop_loss_pct)) / 100))
    return float(take_profit), float(stop_loss)


def new_position(
    settings: TradeSettings,
    rules: SymbolRules,
    key: str,
    symbol: str,
    qty: Decimal,
    entry: Decimal,
    when: int,
    *,
    triggers: dict[str, float] | None = None,
) -> Position:
    """The position of a fill (``qty`` at ``entry``, at ``when`` ms), its entry fee counted.

    ``triggers``: prices of protective orders already on the exchange by order type (an adopted
    position keeps them); the settings' prices fill in what is missing.
    """
    take_profit, stop_loss = protective_prices(settings, rules, entry)
    found = triggers or {}
    fee = Decimal(str(settings.taker_fee_pct)) / 100
    return Position(
        key=key,
        symbol=symbol,
        qty=float(qty),
        entry_price=float(entry),
        entry_time=when,
        take_profit=found.get(ROLE_TYPE[TARGET]) or take_profit,
        stop_loss=found.get(ROLE_TYPE[STOP]) or stop_loss,
        deadline=when + int(settings.max_hold_s * 1000),
        fees=float(entry * qty * fee),
    )
