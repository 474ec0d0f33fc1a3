"""The simulator's data archive over real HTTP: Binance's layout, candles identical to REST klines,
CHECKSUM files, header or not, publishing by the market clock, listing and unknown-symbol 404s, the
corrupt/missing faults, the LRU and the archive's own request counts."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from surge.sim import Simulator
from surge.sim.archive import HEADER, Archive
from tests.archive_sim import NOW, Clock, archive_simulator, ms, reset_archive


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock(NOW / 1000)


@pytest.fixture(scope="module")
def sim(clock: Clock) -> Iterator[Simulator]:
    with archive_simulator(clock, seed=3) as s:
        yield s


@pytest.fixture
def arch(sim: Simulator, clock: Clock) -> Iterator[Archive]:
    archive = sim.rest.archive
    reset_archive(archive, clock)
    yield archive
    archive.clear_faults()
    archive.configure(lag_s=0, header="auto", time_unit="ms")
    clock.t = NOW / 1000


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def daily(symbol: str, day: str) -> str:
    return f"/data/futures/um/daily/klines/{symbol}/1m/{symbol}-1m-{day}.zip"


def monthly(symbol: str, month: str) -> str:
    return f"/data/futures/um/monthly/klines/{symbol}/1m/{symbol}-1m-{month}.zip"


def fetch(http: requests.Session, sim: Simulator, path: str) -> requests.Response:
    return http.get(sim.rest_url + path, timeout=30)


def csv_lines(body: bytes) -> tuple[str, list[str]]:
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        names = zf.namelist()
        assert len(names) == 1
        return names[0], zf.read(names[0]).decode().splitlines()


def rest_rows(http: requests.Session, sim: Simulator, symbol: str, start: int, n: int) -> list[str]:
    rows = []
    while n > 0:
        limit = min(n, 1000)
        params = {"symbol": symbol, "interval": "1m", "startTime": start, "limit": limit}
        got = http.get(sim.rest_url + "/fapi/v1/klines", params=params, timeout=30).json()
        rows += [",".join(str(v) for v in row) for row in got]
        start += limit * 60_000
        n -= limit
    return rows


def test_daily_file_is_the_rest_klines_of_that_day(
    sim: Simulator, arch: Archive, http: requests.Session
) -> None:
    r = fetch(http, sim, daily("BTCUSDT", "2026-11-24"))
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"
    name, lines = csv_lines(r.content)
    assert name == "BTCUSDT-1m-2026-11-24.csv"
    assert lines[0] == HEADER  # 2026: after Binance added the header row
    assert len(lines) == 1 + 1440
    assert lines[1:] == rest_rows(http, sim, "BTCUSDT", ms("2026-11-24T00:00"), 1440)
    assert lines[1].startswith(f"{ms('2026-11-24T00:00')},")
    assert lines[1].split(",")[6] == str(ms("2026-11-24T00:00") + 59_999)


def test_checksum_names_the_sha256_of_the_zip(sim: Simulator, arch: Archive, http: requests.Session) -> None:
    path = daily("ETHUSDT", "2026-11-23")
    body = fetch(http, sim, path).content
    check = fetch(http, sim, path + ".CHECKSUM")
    assert check.status_code == 200
    assert check.text == f"{hashlib.sha256(body).hexdigest()}  ETHUSDT-1m-2026-11-23.zip\n"
    assert fetch(http, sim, path).content == body  # deterministic, from the cache


def test_header_modes_and_microseconds(sim: Simulator, arch: Archive, http: requests.Session) -> None:
    path = daily("SOLUSDT", "2026-11-22")
    _, with_header = csv_lines(fetch(http, sim, path).content)
    arch.configure(header="never")
    _, without = csv_lines(fetch(http, sim, path).content)
    assert with_header[0] == HEADER and without == with_header[1:]
    arch.configure(header="auto", time_unit="us")
    _, micro = csv_lines(fetch(http, sim, path).content)
    first = micro[1].split(",")
    assert int(first[0]) == ms("2026-11-22T00:00") * 1000
    assert first[1:6] == with_header[1].split(",")[1:6]


def test_published_once_over_plus_lag(
    sim: Simulator, arch: Archive, http: requests.Session, clock: Clock
) -> None:
    today = fetch(http, sim, daily("BTCUSDT", "2026-11-25"))
    assert today.status_code == 404 and b"<Code>NoSuchKey</Code>" in today.content
    assert today.headers["Content-Type"] == "application/xml"
    assert fetch(http, sim, daily("BTCUSDT", "2026-11-25") + ".CHECKSUM").status_code == 404
    clock.t = ms("2026-11-26T00:30") / 1000
    arch.configure(lag_s=3600)
    assert fetch(http, sim, daily("BTCUSDT", "2026-11-25")).status_code == 404  # 30 min after, lag 1 h
    clock.t = ms("2026-11-26T01:00") / 1000
    assert fetch(http, sim, daily("BTCUSDT", "2026-11-25")).status_code == 200


def test_monthly_only_once_the_month_is_over(sim: Simulator, arch: Archive, http: requests.Session) -> None:
    listing = sim.market.listing_ms("BTCUSDT")
    assert fetch(http, sim, monthly("BTCUSDT", "2026-11")).status_code == 404
    r = fetch(http, sim, monthly("BTCUSDT", "2026-10"))
    assert r.status_code == 200
    name, lines = csv_lines(r.content)
    assert name == "BTCUSDT-1m-2026-10.csv"
    times = [int(line.split(",")[0]) for line in lines[1:]]
    assert times[0] == listing and times[-1] == ms("2026-10-31T23:59")  # from the listing on
    assert len(times) == (ms("2026-11-01T00:00") - listing) // 60_000
    assert lines[1:4] == rest_rows(http, sim, "BTCUSDT", listing, 3)
    assert fetch(http, sim, monthly("BTCUSDT", "2026-09")).status_code == 404  # before the listing


def test_before_listing_unknown_symbol_and_bad_paths_404(
    sim: Simulator, arch: Archive, http: requests.Session
) -> None:
    listing_day = datetime.fromtimestamp(sim.market.listing_ms("BTCUSDT") / 1000, tz=UTC).date()
    before = (listing_day - timedelta(days=1)).isoformat()
    assert fetch(http, sim, daily("BTCUSDT", before)).status_code == 404
    assert fetch(http, sim, daily("BTCUSDT", listing_day.isoformat())).status_code == 200
    for path in (
        daily("NOSUCHUSDT", "2026-11-20"),
        "/data/futures/um/daily/klines/BTCUSDT/1m/ETHUSDT-1m-2026-11-20.zip",
        "/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2026-13-01.zip",
        "/data/futures/um/daily/klines/BTCUSDT/5m/BTCUSDT-5m-2026-11-20.zip",
        "/data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2026-11-20.zip",
    ):
        r = fetch(http, sim, path)
        assert r.status_code == 404, path
        assert b"NoSuchKey" in r.content


def test_corrupt_and_missing_controls_over_http(
    sim: Simulator, arch: Archive, http: requests.Session
) -> None:
    path = daily("XRPUSDT", "2026-11-20")
    good = fetch(http, sim, path + ".CHECKSUM").text
    r = http.get(
        sim.rest_url + "/_sim/archive/corrupt", params={"file": "XRPUSDT-1m-2026-11-20.zip"}, timeout=10
    )
    assert r.status_code == 200 and r.json()["ok"]
    bad = fetch(http, sim, path + ".CHECKSUM").text
    assert bad != good and bad.endswith("  XRPUSDT-1m-2026-11-20.zip\n")
    assert hashlib.sha256(fetch(http, sim, path).content).hexdigest() == good.split()[0]
    http.get(sim.rest_url + "/_sim/archive/missing", params={"file": "XRPUSDT-1m-2026-11-20.zip"}, timeout=10)
    assert fetch(http, sim, path).status_code == 404
    assert fetch(http, sim, path + ".CHECKSUM").status_code == 404
    http.get(sim.rest_url + "/_sim/archive/clear_faults", timeout=10)
    assert fetch(http, sim, path + ".CHECKSUM").text == good
    r = http.get(sim.rest_url + "/_sim/archive/options", params={"header": "sometimes"}, timeout=10)
    assert r.status_code == 400
    spell = {"count": "2", "status": "502"}
    r = http.get(sim.rest_url + "/_sim/archive/error_next", params=spell, timeout=10)
    assert r.status_code == 200 and r.json()["ok"]
    assert [fetch(http, sim, path).status_code for _ in range(3)] == [502, 502, 200]
    http.get(sim.rest_url + "/_sim/archive/error_next", params={"count": "5"}, timeout=10)
    http.get(sim.rest_url + "/_sim/archive/clear_faults", timeout=10)  # ends a spell too
    assert fetch(http, sim, path).status_code == 200
    r = http.get(sim.rest_url + "/_sim/archive/error_next", params={"status": "200"}, timeout=10)
    assert r.status_code == 400


def test_archive_requests_are_counted_apart_from_binance(
    sim: Simulator, arch: Archive, http: requests.Session
) -> None:
    sim.rest.reset_stats()
    path = daily("BTCUSDT", "2026-11-21")
    fetch(http, sim, path + ".CHECKSUM")
    fetch(http, sim, path)
    fetch(http, sim, daily("BTCUSDT", "2026-11-25"))
    stats = http.get(sim.rest_url + "/_sim/archive/stats", timeout=10).json()["result"]
    assert stats["requests"] == 3
    assert stats["zip_requests"] == 2 and stats["checksum_requests"] == 1
    assert stats["by_status"] == {"200": 2, "404": 1}
    assert stats["builds"] == 1 and stats["cache_hits"] == 1  # the zip and its CHECKSUM: one build
    assert sim.stats()["archive"]["requests"] == 3
    assert sim.rest.stats()["requests"] == 0  # not a Binance request: no weight, no limiter


def test_lru_is_bounded_in_bytes(sim: Simulator) -> None:
    small = Archive(sim.market, cache_bytes=1)
    for day in ("2026-11-20", "2026-11-21", "2026-11-22"):
        status, _, _ = small.get(daily("BTCUSDT", day))
        assert status == 200
    stats = small.stats()
    assert stats["cached_files"] == 1 and stats["builds"] == 3
