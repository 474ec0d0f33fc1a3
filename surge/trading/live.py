"""Live trading's names on the exchange: client order ids, exit reasons, and the start banner.

Why the ids look like this: every order id derives from the signal. ``client_id(signal.key, role)``
is deterministic, so a retry after a timeout and a restart after a crash talk about the *same*
orders, and the ids carry the signal key back (:func:`key_from_client_id`), so a position found on
the exchange can be tied to its signal. The order desk (:mod:`surge.trading.desk`) does the trading.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = [
    "CLIENT_ID_PREFIX",
    "EXTERNAL",
    "AccountSummary",
    "client_id",
    "key_from_client_id",
]

#: Every client order / algo id this bot sends starts with this: other orders on the account are not ours.
CLIENT_ID_PREFIX = "sg-"
#: Exit reason of a position closed on the exchange by something other than the bot's orders
#: (manually, by liquidation): the position is gone and the fill is not ours to know.
EXTERNAL = "external"
ENTRY, STOP, TARGET, EXIT = "e", "sl", "tp", "x"
_ROLES = (ENTRY, STOP, TARGET, EXIT)
_MAX_CLIENT_ID = 36
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            return out


def client_id(key: str, role: str) -> str:
    """The client order / algo id of ``role`` ("e" entry, "sl", "tp", "x" exit) for a signal key.

    ``sg-<role>-<SYMBOL>-<open_time base36>`` (readable, and :func:`key_from_client_id` recovers the
    key) when that fits Binance's ``^[.A-Z:/a-z0-9_-]{1,36}$``; otherwise ``sg-<role>-`` plus a hash.
    """
    if role not in _ROLES:
        raise ValueError(f"unknown role {role!r}")
    symbol, _, open_time = key.partition(":")
    if symbol.isalnum() and symbol.isascii() and open_time.isdigit():
        cid = f"{CLIENT_ID_PREFIX}{role}-{symbol}-{_base36(int(open_time))}"
        if len(cid) <= _MAX_CLIENT_ID:
            return cid
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{CLIENT_ID_PREFIX}{role}-h{digest}"[:_MAX_CLIENT_ID]


def key_from_client_id(cid: str) -> str | None:
    """The signal key back from a readable client id (None for hashed or foreign ids)."""
    parts = cid.split("-")
    if len(parts) != 4 or f"{parts[0]}-" != CLIENT_ID_PREFIX or parts[1] not in _ROLES:
        return None
    try:
        return f"{parts[2]}:{int(parts[3], 36)}"
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """What the start banner shows in live mode: the money at stake and the limits in force."""

    asset: str
    wallet_balance: float
    available_balance: float
    leverage: int
    position_usdt: float
    max_open_positions: int
    take_profit_pct: float
    stop_loss_pct: float
    max_hold_s: float

    def lines(self) -> list[str]:
        return [
            f"LIVE TRADING on Binance USD-M: balance {self.wallet_balance:.2f} {self.asset} "
            f"(available {self.available_balance:.2f})",
            f"limits: {self.position_usdt:g} USDT per position at {self.leverage}x leverage, at most "
            f"{self.max_open_positions} open; take profit {self.take_profit_pct:g}%, stop loss "
            f"{self.stop_loss_pct:g}%, max hold {self.max_hold_s:g} s",
        ]
