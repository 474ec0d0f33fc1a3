"""The backtest picture: realised equity on top, its drawdown underneath, the entries marked.

It draws exactly the figures :mod:`surge.backtest.report` computes (the same equity points, the same
peak-to-trough drawdown, the totals in the title), so the picture and the text never disagree. It
takes plain :class:`Trade` values and a time range, nothing of the backtest engine, so ``surge
report`` can draw the live ledger with it.

matplotlib is imported inside :func:`plot_equity`: ``surge --help`` and every command without
``--plot`` never pay for loading it. The figure is built with the object API on an Agg canvas rather
than through ``pyplot`` and ``matplotlib.use("Agg")``: it is headless whatever backend the process
has (no display is ever needed), it leaves the process-wide backend and pyplot's figure registry
alone, and nothing stays alive after the call. The file is written under a temporary name and
renamed, so a crash never leaves half a PNG under the wanted name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from surge.backtest.report import equity_points, totals
from surge.backtest.trades import Trade
from surge.cli_shared import utc_text
from surge.errors import SurgeError
from surge.runtime import replaced_atomically

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Fixed size, so pictures of different runs compare side by side: 1200 x 700 pixels.
FIGURE_INCHES = (12.0, 7.0)
DPI = 100
WINNER_COLOUR = "tab:green"
LOSER_COLOUR = "tab:red"


def _ms_to_datetime64(ms: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(ms, dtype=np.int64).astype("datetime64[ms]")


def _title(summary: dict[str, Any], start_ms: int, end_ms: int) -> str:
    factor = summary["profit_factor"]
    return (
        f"surge backtest {utc_text(start_ms)[:16]} to {utc_text(end_ms)[:16]} UTC\n"
        f"{summary['trades']} trades, win rate {summary['win_rate'] * 100:.1f} %, "
        f"PnL {summary['pnl']:+,.2f} USDT, "
        f"profit factor {'-' if factor is None else f'{factor:.2f}'}, "
        f"max drawdown {summary['max_drawdown']:,.2f} USDT, exposure {summary['exposure'] * 100:.1f} %"
    )


def _draw(fig: Figure, trades: Sequence[Trade], start_ms: int, end_ms: int) -> None:
    import matplotlib.dates as mdates

    exit_times, equity = equity_points(trades)
    # the curve starts at 0 at the start of the period and holds its last value until the end
    xs = np.array([start_ms, *exit_times, max(end_ms, exit_times[-1] if exit_times else end_ms)])
    ys = np.array([0.0, *equity, equity[-1] if equity else 0.0])
    drawdown = ys - np.maximum.accumulate(ys)  # ys[0] is 0: the peak starts there
    when = _ms_to_datetime64(xs)

    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot(when, ys, drawstyle="steps-post", color="tab:blue", linewidth=1.2, label="realised equity")
    top.axhline(0.0, color="grey", linewidth=0.6)

    if trades:
        # each entry sits on the equity realised when it was entered (the last exit at or before it)
        entry_ms = np.array([t.entry_time for t in trades], dtype=np.int64)
        at = np.searchsorted(np.asarray(xs[1:-1], dtype=np.int64), entry_ms, side="right")
        entry_equity = np.concatenate(([0.0], np.asarray(equity, dtype=float)))[at]
        won = np.array([t.pnl > 0 for t in trades])
        for mask, colour, label in ((won, WINNER_COLOUR, "entry, won"), (~won, LOSER_COLOUR, "entry, lost")):
            if mask.any():
                top.scatter(
                    _ms_to_datetime64(entry_ms[mask]),
                    entry_equity[mask],
                    marker="^",
                    s=28,
                    color=colour,  # opaque: a winner reads green, a loser red, even where they crowd
                    zorder=3,
                    label=label,
                )
    top.set_ylabel("equity (USDT)")
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left", fontsize="small")

    bottom.fill_between(when, drawdown, 0.0, step="post", color=LOSER_COLOUR, alpha=0.35, linewidth=0)
    bottom.plot(when, drawdown, drawstyle="steps-post", color=LOSER_COLOUR, linewidth=0.8)
    bottom.set_ylabel("drawdown (USDT)")
    bottom.set_xlabel("time (UTC)")
    bottom.grid(True, alpha=0.3)
    if end_ms > start_ms:
        bottom.set_xlim(when[0], when[-1])
    locator = mdates.AutoDateLocator(tz=mdates.UTC)
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=mdates.UTC))

    fig.suptitle(_title(totals(trades, start_ms, end_ms), start_ms, end_ms), fontsize="medium")


def plot_equity(trades: Sequence[Trade], start_ms: int, end_ms: int, path: Path) -> None:
    """Write the PNG (1200 x 700) of ``trades`` over ``[start_ms, end_ms)`` to ``path``: equity and
    drawdown as in :mod:`surge.backtest.report`, entries marked green (won) or red (lost), the totals
    in the title. A path that cannot be written raises :class:`SurgeError` (one line, exit 1)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    _draw(fig, trades, start_ms, end_ms)
    try:
        with replaced_atomically(path, mode=0o644) as tmp, open(tmp, "wb") as out:
            fig.savefig(out, format="png", dpi=DPI)
    except OSError as exc:
        raise SurgeError(f"cannot write {path}: {exc.strerror or exc}") from exc


__all__ = ["DPI", "FIGURE_INCHES", "plot_equity"]
