"""The equity picture: a PNG of the fixed size, not blank, with the entries in their colours, written
atomically, and matplotlib loaded only when a picture is drawn."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from surge.backtest.plot import plot_equity
from surge.backtest.trades import STOP_LOSS, TAKE_PROFIT, Trade
from surge.errors import SurgeError

MIN = 60_000
T0 = 1_790_812_800_000  # 2026-10-01 00:00 UTC
END = T0 + 3 * 1_440 * MIN
GREEN = (44, 160, 44)  # matplotlib's tab:green
RED = (214, 39, 40)  # tab:red


def trade(symbol: str, entry_min: int, exit_min: int, pnl: float) -> Trade:
    return Trade(
        symbol=symbol,
        signal_time=T0 + entry_min * MIN,
        entry_time=T0 + entry_min * MIN,
        entry_price=1.0,
        qty=100.0,
        exit_time=T0 + exit_min * MIN,
        exit_price=1.0 + pnl / 100.0,
        exit_reason=TAKE_PROFIT if pnl > 0 else STOP_LOSS,
        fees=0.1,
        pnl=pnl,
    )


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG signature and IHDR chunk (no decoder involved)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def pixels_near(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    return int(np.all(np.abs(image[..., :3].astype(int) - colour) <= tolerance, axis=-1).sum())


def some_trades(winners: bool = True, losers: bool = True) -> list[Trade]:
    out = []
    for i in range(40):
        won = i % 3 != 0
        if (won and winners) or (not won and losers):
            out.append(trade(f"S{i % 7}USDT", 30 + i * 100, 90 + i * 100, 2.0 if won else -3.0))
    return out


def test_png_has_the_fixed_size_and_is_not_blank(tmp_path: Path) -> None:
    path = tmp_path / "equity.png"
    plot_equity(some_trades(), T0, END, path)
    assert png_size(path) == (1200, 700)
    with Image.open(path) as img:
        image = np.asarray(img.convert("RGB"))
    assert image.shape == (700, 1200, 3)
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 50  # lines, fills, text: far from a blank or single-colour picture
    assert (image != 255).any(axis=-1).mean() > 0.02  # a few percent of the pixels are not white
    assert pixels_near(image, GREEN) > 100  # winners marked green
    assert pixels_near(image, RED) > 100  # losers marked red, and the drawdown fill
    assert [p.name for p in tmp_path.iterdir()] == ["equity.png"]  # no temporary file left


def test_winners_only_draw_no_red_marker(tmp_path: Path) -> None:
    path = tmp_path / "winners.png"
    plot_equity(some_trades(losers=False), T0, END, path)
    with Image.open(path) as img:
        image = np.asarray(img.convert("RGB"))
    assert pixels_near(image, GREEN) > 100
    equity_panel = image[: int(0.65 * image.shape[0])]  # above the drawdown panel (its zero line is red)
    assert pixels_near(equity_panel, RED) == 0  # no loser: no red marker, no red legend entry


def test_no_trades_still_draws_the_axes(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    plot_equity([], T0, END, path)
    assert png_size(path) == (1200, 700)
    with Image.open(path) as img:
        image = np.asarray(img.convert("RGB"))
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10


def test_replaces_an_existing_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "equity.png"
    path.write_bytes(b"old")
    plot_equity(some_trades(), T0, END, path)
    assert png_size(path) == (1200, 700)


def test_unwritable_path_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SurgeError, match="cannot write"):
        plot_equity(some_trades(), T0, END, tmp_path / "missing" / "equity.png")


def test_matplotlib_is_loaded_only_when_drawing() -> None:
    code = (
        "import sys, surge.backtest.plot, surge.backtest.report\n"
        "assert 'matplotlib' not in sys.modules, 'imported at module load'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
