"""Paper fills, exits in priority order, PnL with fees, and the book's risk limits."""

from __future__ import annotations

import pytest

from surge.config import TradeSettings
from surge.models import Signal
from surge.trading import MAX_HOLD, STOP_LOSS, TAKE_PROFIT, PaperBroker, PositionBook

SETTINGS = TradeSettings(
    position_usdt=100,
    take_profit_pct=2.0,
    stop_loss_pct=1.0,
    max_hold_s=3600,
    max_open_positions=2,
    slippage_pct=0.1,
    taker_fee_pct=0.05,
)


def signal(symbol: str = "ABCUSDT", price: float = 10.0, t: int = 1_000_000) -> Signal:
    return Signal(symbol, t, t - 30_000, 4.0, 5.0, 80_000, price)


def test_entry_pays_slippage_and_fee() -> None:
    p = PaperBroker(SETTINGS).open(signal())
    assert p.entry_price == pytest.approx(10.01)
    assert p.qty == pytest.approx(100 / 10.01)
    assert p.take_profit == pytest.approx(10.01 * 1.02) and p.stop_loss == pytest.approx(10.01 * 0.99)
    assert p.deadline == 1_000_000 + 3_600_000 and p.fees == pytest.approx(0.05)
    assert p.key == "ABCUSDT:970000" and p.is_open


@pytest.mark.parametrize(
    ("price", "dt", "reason"),
    [
        (10.3, 0, TAKE_PROFIT),
        (9.9, 0, STOP_LOSS),
        (10.05, 3_600_000, MAX_HOLD),
        (10.05, 3_599_999, None),
        (10.3, 3_600_000, TAKE_PROFIT),
    ],
)
def test_exit_reasons(price: float, dt: int, reason: str | None) -> None:
    broker = PaperBroker(SETTINGS)
    p = broker.open(signal())
    assert broker.exit_reason(p, price, p.entry_time + dt) == reason


def test_close_computes_pnl_net_of_fees() -> None:
    broker = PaperBroker(SETTINGS)
    p = broker.open(signal())
    closed = broker.close(p, 10.3, p.entry_time + 60_000, TAKE_PROFIT)
    exit_price = 10.3 * 0.999
    fees = 0.05 + exit_price * p.qty * 0.0005
    assert closed.exit_price == pytest.approx(exit_price) and closed.fees == pytest.approx(fees)
    assert closed.pnl == pytest.approx((exit_price - 10.01) * p.qty - fees)
    assert not closed.is_open and closed.exit_reason == TAKE_PROFIT
    loss = broker.close(p, 9.9, p.entry_time + 60_000, STOP_LOSS)
    assert loss.pnl < 0


def test_book_limits() -> None:
    broker = PaperBroker(SETTINGS)
    book = PositionBook(2)
    assert book.refusal("ABCUSDT") is None
    book.add(broker.open(signal("ABCUSDT")))
    assert "already open" in book.refusal("ABCUSDT")
    book.add(broker.open(signal("XYZUSDT")))
    assert "max_open_positions (2)" in book.refusal("QQQUSDT")
    closed = book.remove("ABCUSDT")
    assert closed is not None and book.refusal("QQQUSDT") is None and len(book) == 1
    with pytest.raises(ValueError):
        book.add(broker.close(closed, 10, 2_000_000, STOP_LOSS))
    restored = PositionBook(2, book.positions())
    assert restored.symbols() == {"XYZUSDT"}
