"""``surge history download|list`` against a real Simulator on 127.0.0.1 (archive and REST on its
port, SURGE_DATA_URL pointed at it): candles equal to REST klines, checksum mismatch refused, resume,
404 days, header and headerless CSV, REST for today and for a day not published yet, monthly files,
the --json shapes and the exit codes."""

from __future__ import annotations

import io
import json
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from surge.config import load_settings
from surge.history.archive import ATTEMPTS
from surge.history.command import _download, history_group
from surge.history.store import HistoryStore
from surge.sim import Simulator
from surge.sim.archive import Archive
from tests.archive_sim import DAY, MIN, NOW, Clock, archive_simulator, ms, reset_archive

KEYS = ["symbols", "files_downloaded", "files_skipped", "rest_requests", "candles", "elapsed_s"]


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock(NOW / 1000)


@pytest.fixture(scope="module")
def sim(clock: Clock) -> Iterator[Simulator]:
    with archive_simulator(clock, seed=4) as s:
        yield s


@pytest.fixture
def arch(sim: Simulator, clock: Clock) -> Iterator[Archive]:
    archive = sim.rest.archive
    reset_archive(archive, clock)
    sim.rest.reset_stats()
    sim.rest.unban()
    yield archive
    archive.clear_faults()
    archive.configure(lag_s=0, header="auto", time_unit="ms")
    clock.t = NOW / 1000


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def env_for(sim: Simulator, home: Path, data_url: str | None = None) -> dict[str, str]:
    return {
        "SURGE_HOME": str(home),
        "SURGE_REST_URL": sim.rest_url,
        "SURGE_DATA_URL": data_url or sim.rest_url,
        "SURGE_CONFIG": "",
    }


def run(sim: Simulator, home: Path, *args: str, data_url: str | None = None) -> Result:
    return CliRunner().invoke(history_group, list(args), env=env_for(sim, home, data_url))


def download(sim: Simulator, home: Path, *args: str) -> tuple[dict[str, Any], Result]:
    result = run(sim, home, "download", "--json", "--no-progress", *args)
    assert result.exit_code in (0, 1), (result.exit_code, result.output)
    return json.loads(result.stdout), result


def rest_candles(sim: Simulator, symbol: str, start: int, end: int) -> list[tuple]:
    """(open_time, open, high, low, close, volume, quote_volume, trades) of every closed candle in
    [start, end) as the simulator's REST klines give them."""
    now = sim.market.now_ms()
    rows = []
    while start < end:
        page = sim.market.klines(symbol, "1m", start_ms=start, end_ms=end - 1, limit=1500, now_ms=now)
        for k in page:
            if k.open_time + MIN <= now:
                rows.append((k.open_time, k.open, k.high, k.low, k.close, k.volume, k.quote_volume, k.trades))
        if not page:
            break
        start = page[-1].open_time + MIN
    return rows


def stored(home: Path, symbol: str, start: int, end: int) -> list[tuple]:
    c = HistoryStore.for_home(home).read(symbol, start, end)
    return list(
        zip(
            c.open_time.tolist(),
            c.open.tolist(),
            c.high.tolist(),
            c.low.tolist(),
            c.close.tolist(),
            c.volume.tolist(),
            c.quote_volume.tolist(),
            c.trades.tolist(),
            strict=True,
        )
    )


def assert_same(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(np.array(a, dtype=float), np.array(b, dtype=float), rtol=1e-12)


# --------------------------------------------------------------------------- the happy path and resume


def test_days_3_archive_files_rest_today_then_resume(
    sim: Simulator, arch: Archive, home: Path, clock: Clock
) -> None:
    report, result = download(sim, home, "--days", "3", "--symbols", "BTCUSDT,ETHUSDT")
    assert result.exit_code == 0, result.output
    assert list(report) == KEYS
    assert report["symbols"] == 2
    assert report["files_downloaded"] == 4  # 2 symbols x (23rd, 24th); the 25th is today
    assert report["files_skipped"] == 0
    today_closed = (NOW - ms("2026-11-25T00:00")) // MIN
    assert report["candles"] == 2 * (2 * 1440 + today_closed)
    assert report["rest_requests"] >= 2 * 3  # 1300 candles of today in pages of 499, per symbol
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert_same(stored(home, symbol, 0, 2**62), rest_candles(sim, symbol, ms("2026-11-23T00:00"), NOW))
    # second run, ten minutes later: nothing from the archive, today's new candles over REST
    arch.reset_stats()
    clock.t += 600
    again, result = download(sim, home, "--days", "3", "--symbols", "BTCUSDT,ETHUSDT")
    assert result.exit_code == 0, result.output
    assert again["files_downloaded"] == 0 and again["files_skipped"] == 4
    assert again["candles"] == 2 * 10
    assert arch.stats()["requests"] == 0
    assert_same(
        stored(home, "BTCUSDT", 0, 2**62), rest_candles(sim, "BTCUSDT", ms("2026-11-23T00:00"), NOW + 600_000)
    )


def test_partial_day_is_completed_from_the_archive_once_published(
    sim: Simulator, arch: Archive, home: Path, clock: Clock
) -> None:
    download(sim, home, "--days", "1", "--symbols", "BTCUSDT")
    clock.t = ms("2026-11-26T00:10") / 1000  # the 25th is over and published (lag 0)
    report, result = download(sim, home, "--from", "2026-11-25", "--to", "2026-11-25", "--symbols", "BTCUSDT")
    assert result.exit_code == 0, result.output
    assert report["files_downloaded"] == 1 and report["rest_requests"] == 0
    assert_same(
        stored(home, "BTCUSDT", ms("2026-11-25T00:00"), ms("2026-11-26T00:00")),
        rest_candles(sim, "BTCUSDT", ms("2026-11-25T00:00"), ms("2026-11-26T00:00")),
    )


def test_day_not_published_yet_comes_over_rest(
    sim: Simulator, arch: Archive, home: Path, clock: Clock
) -> None:
    clock.t = ms("2026-11-26T00:30") / 1000
    arch.configure(lag_s=6 * 3600)  # yesterday is not in the archive yet
    report, result = download(sim, home, "--days", "2", "--symbols", "SOLUSDT")
    assert result.exit_code == 0, result.output
    assert report["files_downloaded"] == 0
    assert report["candles"] == 1440 + 30
    assert_same(
        stored(home, "SOLUSDT", 0, 2**62),
        rest_candles(sim, "SOLUSDT", ms("2026-11-25T00:00"), ms("2026-11-26T00:30")),
    )
    again, _ = download(sim, home, "--days", "2", "--symbols", "SOLUSDT")
    assert again["files_skipped"] == 1 and again["candles"] == 0  # the 25th is whole now


def test_monthly_file_for_a_month_over(sim: Simulator, arch: Archive, home: Path) -> None:
    report, result = download(sim, home, "--from", "2026-10-01", "--to", "2026-10-31", "--symbols", "ETHUSDT")
    assert result.exit_code == 0, result.output
    listing = sim.market.listing_ms("ETHUSDT")
    assert report["files_downloaded"] == 1
    assert arch.stats()["zip_requests"] == 1  # one monthly file, no daily ones
    assert report["candles"] == (ms("2026-11-01T00:00") - listing) // MIN
    assert_same(
        stored(home, "ETHUSDT", 0, 2**62), rest_candles(sim, "ETHUSDT", listing, ms("2026-11-01T00:00"))
    )
    again, _ = download(sim, home, "--from", "2026-10-01", "--to", "2026-10-31", "--symbols", "ETHUSDT")
    assert again["files_downloaded"] == 0 and again["files_skipped"] == 1


# --------------------------------------------------------------------------- refusals and 404s


def test_checksum_mismatch_is_refused_others_stored(sim: Simulator, arch: Archive, home: Path) -> None:
    arch.corrupt("BTCUSDT-1m-2026-11-23.zip")
    report, result = download(sim, home, "--from", "2026-11-22", "--to", "2026-11-24", "--symbols", "BTCUSDT")
    assert result.exit_code == 1
    assert "BTCUSDT-1m-2026-11-23.zip" in result.stderr and "checksum mismatch" in result.stderr
    assert report["files_downloaded"] == 2
    times = HistoryStore.for_home(home).read("BTCUSDT").open_time
    assert not np.any((times >= ms("2026-11-23T00:00")) & (times < ms("2026-11-24T00:00")))
    assert np.count_nonzero(times >= ms("2026-11-24T00:00")) == 1440
    arch.clear_faults()
    again, result = download(sim, home, "--from", "2026-11-22", "--to", "2026-11-24", "--symbols", "BTCUSDT")
    assert result.exit_code == 0, result.output
    assert again["files_downloaded"] == 1 and again["files_skipped"] == 2  # only the refused day


def test_a_5xx_spell_is_retried_and_loses_nothing(sim: Simulator, arch: Archive, home: Path) -> None:
    arch.error_next(2, 503)  # the first file's CHECKSUM twice: a third attempt gets it
    report, result = download(sim, home, "--from", "2026-11-22", "--to", "2026-11-23", "--symbols", "BTCUSDT")
    assert result.exit_code == 0, result.output
    assert report["files_downloaded"] == 2
    assert arch.stats()["by_status"]["503"] == 2
    times = HistoryStore.for_home(home).read("BTCUSDT").open_time
    assert len(times) == 2 * 1440 and len(np.unique(times)) == 2 * 1440


def test_an_archive_failing_past_the_retries_names_the_file_and_a_rerun_gets_it(
    sim: Simulator, arch: Archive, home: Path
) -> None:
    arch.error_next(1000, 500)
    report, result = download(sim, home, "--from", "2026-11-22", "--to", "2026-11-22", "--symbols", "BTCUSDT")
    assert result.exit_code == 1
    assert f"BTCUSDT-1m-2026-11-22.zip: HTTP 500 after {ATTEMPTS} attempts" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert report["files_downloaded"] == 0 and arch.stats()["by_status"] == {"500": ATTEMPTS}
    arch.clear_faults()  # the day was not recorded absent: the next run asks again
    again, result = download(sim, home, "--from", "2026-11-22", "--to", "2026-11-22", "--symbols", "BTCUSDT")
    assert result.exit_code == 0, result.output
    assert (
        again["files_downloaded"] == 1 and len(HistoryStore.for_home(home).read("BTCUSDT").open_time) == 1440
    )


def test_old_missing_day_is_not_listed_and_not_asked_again(sim: Simulator, arch: Archive, home: Path) -> None:
    arch.missing("ETHUSDT-1m-2026-11-20.zip")
    report, result = download(sim, home, "--from", "2026-11-20", "--to", "2026-11-21", "--symbols", "ETHUSDT")
    assert result.exit_code == 0, result.output
    assert report["files_downloaded"] == 1 and report["rest_requests"] == 0  # no REST for an old day
    arch.reset_stats()
    again, _ = download(sim, home, "--from", "2026-11-20", "--to", "2026-11-21", "--symbols", "ETHUSDT")
    assert again["files_downloaded"] == 0 and again["files_skipped"] == 2
    assert arch.stats()["requests"] == 0


def test_days_before_the_listing_are_absent(sim: Simulator, arch: Archive, home: Path) -> None:
    listing = sim.market.listing_ms("BTCUSDT")
    first = datetime.fromtimestamp((listing - 3 * DAY) / 1000, tz=UTC).date().isoformat()
    last = datetime.fromtimestamp(listing / 1000, tz=UTC).date().isoformat()
    report, result = download(sim, home, "--from", first, "--to", last, "--symbols", "BTCUSDT")
    assert result.exit_code == 0, result.output
    assert report["files_downloaded"] == 1


def test_headerless_and_microsecond_files(sim: Simulator, arch: Archive, home: Path) -> None:
    arch.configure(header="never")
    download(sim, home, "--from", "2026-11-20", "--to", "2026-11-20", "--symbols", "XRPUSDT")
    arch.configure(header="always", time_unit="us")
    download(sim, home, "--from", "2026-11-21", "--to", "2026-11-21", "--symbols", "XRPUSDT")
    assert_same(
        stored(home, "XRPUSDT", 0, 2**62),
        rest_candles(sim, "XRPUSDT", ms("2026-11-20T00:00"), ms("2026-11-22T00:00")),
    )


# --------------------------------------------------------------------------- the command


def test_universe_by_default_and_list(sim: Simulator, arch: Archive, home: Path) -> None:
    report, result = download(sim, home, "--from", "2026-11-24", "--to", "2026-11-24")
    assert result.exit_code == 0, result.output
    tradable = sim.market.tradable_symbols()
    assert report["symbols"] == len(tradable)
    listed = run(sim, home, "list", "--json")
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert [s["symbol"] for s in data["symbols"]] == sorted(tradable)
    first = data["symbols"][0]
    assert set(first) == {"symbol", "first_day", "last_day", "candles", "bytes"}
    assert (first["first_day"], first["last_day"], first["candles"]) == ("2026-11-24", "2026-11-24", 1440)
    assert data["total"] == {
        "symbols": len(tradable),
        "candles": 1440 * len(tradable),
        "bytes": sum(s["bytes"] for s in data["symbols"]),
    }
    text = run(sim, home, "list")
    assert text.exit_code == 0 and "BTCUSDT" in text.stdout and "2026-11-24" in text.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--from", "2026-11-24", "--to", "2026-11-20"],
        ["--from", "2026-13-01", "--to", "2026-12-02"],
        ["--from", "24.11.2026"],
        ["--days", "3", "--from", "2026-11-20"],
        ["--to", "2026-11-20"],
        ["--days", "0"],
        ["--symbols", "BTC/USDT"],
    ],
)
def test_bad_dates_exit_2_before_any_request(
    sim: Simulator, arch: Archive, home: Path, args: list[str]
) -> None:
    result = run(sim, home, "download", "--json", *args)
    assert result.exit_code == 2, result.output
    assert sim.rest.stats()["requests"] == 0 and arch.stats()["requests"] == 0


def test_unreachable_archive_exit_1_one_line(sim: Simulator, arch: Archive, home: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = run(sim, home, "download", "--json", "--days", "2", "--symbols", "BTCUSDT", data_url=dead)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "data archive unreachable" in lines[0] and "Traceback" not in result.output


def test_unreachable_exchange_exit_1(sim: Simulator, arch: Archive, home: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    env = env_for(sim, home) | {"SURGE_REST_URL": dead}
    result = CliRunner().invoke(history_group, ["download", "--days", "1", "--no-progress"], env=env)
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1


def test_progress_bar_on_a_terminal_counts_every_symbol(
    sim: Simulator, arch: Archive, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    settings = load_settings(env=env_for(sim, home))
    report = _download(settings, 2, None, None, ["BTCUSDT", "ETHUSDT"], show_progress=True)
    assert report.files_downloaded == 2 and not report.errors
    assert "history" in err.getvalue() and "2/2" in err.getvalue()


def test_data_url_setting_default_env_and_bad_value(sim: Simulator, arch: Archive, home: Path) -> None:
    assert load_settings(env={}).data_url == "https://data.binance.vision"
    assert load_settings(env={"SURGE_DATA_URL": "http://127.0.0.1:9/"}).data_url == "http://127.0.0.1:9"
    result = run(sim, home, "download", "--days", "1", data_url="ftp://example")
    assert result.exit_code == 2 and "SURGE_DATA_URL" in result.stderr
    assert sim.rest.stats()["requests"] == 0
