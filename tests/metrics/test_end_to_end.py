"""``surge run --metrics-port`` end to end: a real ``surge run --sim`` process scraped over loopback, the
text parsed with ``prometheus_client``'s own parser, and every value checked against another view of
the same truth (``surge status --json``, the ledger), not only found; then an in-process bot whose
loop the test holds still, to see ``/health`` turn 503 while ``/metrics`` keeps answering."""

from __future__ import annotations

import re
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from surge import __version__
from surge.app import Bot
from surge.config import load_settings
from surge.metrics import MetricsServer
from surge.sim import Simulator
from surge.store import read_store
from tests.bot_harness import (
    BotProcess,
    baseline_ready,
    bot_env,
    cli_json,
    free_port,
    make_simulator,
    positions_of,
    signals_of,
    surge_cli,
    wait_for,
    write_config,
)

#: Liquid symbols of the --sim market (an injected move shows at once); every symbol passes the 4h
#: filter. The market's own surges (one every 20 s) may add signals: values are compared with the
#: ledger, whatever it holds, never with a fixed count.
ENTERED, OTHER = "BTCUSDT", "ETHUSDT"
OVERRIDES: dict[str, dict[str, Any]] = {
    "filter_4h": {"min_change_pct": -100.0, "max_change_pct": 1000.0, "min_quote_volume": 0.0},
}


@dataclass(frozen=True)
class Run:
    bot: BotProcess
    home: Path
    url: str  # the metrics server
    sim_url: str  # the simulator's REST, for its /_sim controls


def scrape(url: str) -> dict[str, float]:
    """Every sample of one scrape by name (labels folded into the name: ``x{le="0.005"}``)."""
    answer = requests.get(url + "/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def buckets(sample: dict[str, float]) -> list[tuple[float, float]]:
    """(le, cumulative count) of the latency histogram, in bound order."""
    found = []
    for name, value in sample.items():
        m = re.fullmatch(r'surge_decision_latency_seconds_bucket\{le="([^"]+)"\}', name)
        if m:
            found.append((float(m.group(1)), value))
    return sorted(found)


def control(sim_url: str, name: str, **args: Any) -> None:
    answer = requests.get(f"{sim_url}/_sim/{name}", params=args, timeout=30)
    assert answer.status_code == 200, answer.text


def ledger(home: Path) -> tuple[int, int, int, float]:
    """(signals, entries, open positions, realised PnL) of venue "sim", through the Store API."""
    store = read_store(home)
    assert store is not None
    with store:
        return (
            store.signal_count(venue="sim"),
            len(store.positions(include_closed=True, venue="sim")),
            len(store.open_positions(venue="sim")),
            store.realised_pnl(venue="sim"),
        )


def trading_view(sample: dict[str, float]) -> tuple[int, int, int, float]:
    return (
        int(sample["surge_signals_total"]),
        int(sample["surge_entries_total"]),
        int(sample["surge_open_positions"]),
        sample["surge_realised_pnl_usdt"],
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("metrics")
    home = root / "home"
    port = free_port()
    config = write_config(root / "surge.toml", OVERRIDES)
    bot = BotProcess(
        home, None, [ENTERED, OTHER], config=config, extra=["--sim", "--metrics-port", str(port)]
    )
    try:
        text = bot.wait_log("simulated exchange on", 90)
        found = re.search(r"simulated exchange on (http://\S+)", text)
        assert found is not None, text
        bot.wait_ready(90)
        assert f"metrics on http://127.0.0.1:{port}/metrics" in bot.log()
        wait_for(lambda: baseline_ready(home, 2), 90, "both volume baselines")
        yield Run(bot, home, f"http://127.0.0.1:{port}", found.group(1))
    finally:
        bot.ensure_stopped()


def test_streams_and_connections_are_what_surge_status_says(run: Run) -> None:
    def same() -> Any:
        status = cli_json(run.home, "status")
        sample = scrape(run.url)
        got = (int(sample["surge_streams"]), int(sample["surge_connections"]))
        return got == (status["streams"], status["connections"]) and (got, status)

    (streams, connections), status = wait_for(same, 60, "/metrics and surge status to agree")
    assert streams == 4 and connections >= 1  # kline_1m and kline_4h of two symbols
    assert status["running"] is True
    sample = scrape(run.url)
    assert sample["surge_streams_wanted"] == 4
    assert sample["surge_universe_symbols"] == 2 and sample["surge_passing_symbols"] == 2
    assert sample['surge_build_info{mode="paper",venue="sim",version="' + __version__ + '"}'] == 1
    assert sample["surge_rest_weight_limit"] > 0 and sample["surge_rest_weight_peak"] > 0
    assert sample["surge_rest_rate_limited_total"] == 0
    assert sample["process_resident_memory_bytes"] > 0  # the process basics are there too


def test_events_and_the_latency_histogram_grow_between_scrapes(run: Run) -> None:
    first = scrape(run.url)
    second = wait_for(
        lambda: (
            (s := scrape(run.url))["surge_events_total"] > first["surge_events_total"]
            and s["surge_decision_latency_seconds_count"] > first["surge_decision_latency_seconds_count"]
            and s
        ),
        60,
        "more events and more timed decisions",
    )
    assert second["surge_last_message_age_seconds"] < 30
    for sample in (first, second):
        counts = [c for _, c in buckets(sample)]
        assert counts == sorted(counts), counts  # cumulative: never fewer at a higher bound
        assert buckets(sample)[-1] == (float("inf"), sample["surge_decision_latency_seconds_count"])
    # nothing hides: each bucket only grows from one scrape to the next
    assert all(b >= a for (_, a), (_, b) in zip(buckets(first), buckets(second), strict=True))


def test_an_injected_surge_shows_in_signals_entries_and_positions_and_the_exit_in_realised_pnl(
    run: Run,
) -> None:
    before = trading_view(scrape(run.url))
    control(run.sim_url, "surge", symbol=ENTERED, change_pct=5.0, volume_multiple=10.0)
    wait_for(
        lambda: [p for p in positions_of(run.home, ENTERED) if p.is_open], 60, f"a position on {ENTERED}"
    )
    held = wait_for(
        lambda: (v := trading_view(scrape(run.url))) == ledger(run.home) and v,
        30,
        "/metrics to agree with the ledger",
        detail=lambda: (trading_view(scrape(run.url)), ledger(run.home)),
    )
    signals, entries, open_positions, _ = held
    assert signals > before[0] and entries > before[1] and open_positions >= 1
    assert signals >= len(signals_of(run.home, ENTERED)) >= 1
    # a paper exit: below the 2.5 % stop loss
    control(run.sim_url, "surge", symbol=ENTERED, change_pct=-5.0, volume_multiple=0.0)
    wait_for(
        lambda: all(not p.is_open for p in positions_of(run.home, ENTERED)), 60, f"{ENTERED}'s stop loss"
    )
    after = wait_for(
        lambda: (v := trading_view(scrape(run.url))) == ledger(run.home) and v,
        30,
        "/metrics to agree with the ledger after the exit",
        detail=lambda: (trading_view(scrape(run.url)), ledger(run.home)),
    )
    [closed] = [p for p in positions_of(run.home, ENTERED) if not p.is_open]
    assert closed.pnl is not None and closed.pnl < 0
    # the ledger's own sum, and the same sum made here from every closed position's row
    assert after[3] == pytest.approx(ledger(run.home)[3], abs=1e-9)
    closed_pnl = [p.pnl for p in positions_of(run.home) if not p.is_open]
    assert after[3] == pytest.approx(sum(closed_pnl), abs=1e-9) and after[3] != held[3]


def test_health_is_200_while_running_and_other_paths_404(run: Run) -> None:
    answer = requests.get(run.url + "/health", timeout=10)
    assert answer.status_code == 200 and answer.text.startswith("ok")
    assert requests.get(run.url + "/nothing", timeout=10).status_code == 404


def test_sigterm_stops_the_server_with_the_bot(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "surge.toml", OVERRIDES)
    bot = BotProcess(
        tmp_path / "home", None, [OTHER], config=config, extra=["--sim", "--metrics-port", str(port)]
    )
    try:
        bot.wait_ready(90)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(url + "/health", timeout=10).status_code == 200, 30, "a healthy bot")
        bot.signal(signal.SIGTERM)
        assert bot.wait(30) == 0, bot.log()[-2000:]
    finally:
        bot.ensure_stopped()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/health", timeout=5)  # nothing listens after the stop
    assert "Traceback" not in bot.log()


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--metrics-port", "TAKEN"], 1, "already in use"),
        (["--metrics-port", "TAKEN", "--metrics-host", "192.0.2.1"], 2, "not an address of this machine"),
        (["--metrics-port", "0"], 2, "--metrics-port"),
        (["--metrics-port", "65536"], 2, "--metrics-port"),
        (["--metrics-host", "127.0.0.1"], 2, "--metrics-host needs --metrics-port"),
    ],
)
def test_bad_metrics_flags_exit_with_one_line(
    tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    """A port in use is a runtime failure (1); an address not on this machine (TEST-NET-1: bound,
    never contacted), a port out of range or a host without a port is bad usage (2)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        args = [port if a == "TAKEN" else a for a in args]
        proc = surge_cli(tmp_path / "home", "run", "--sim", "--symbols", OTHER, "--duration", "5", *args)
    assert proc.returncode == code, proc.stderr
    assert needle in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- a held loop, in process


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = make_simulator([ENTERED])
    yield simulator
    simulator.stop()


def test_a_held_loop_turns_health_503_while_metrics_still_answer_and_one_thread_serves(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop is held the way a real wedge holds it: it waits for the store's lock (taken here) at
    its next heartbeat. /health must turn 503 within the staleness limit; /metrics must go on (it
    never touches the loop's store), and come back to 200 when the loop does."""
    for key, value in bot_env(tmp_path / "home", sim).items():
        monkeypatch.setenv(key, value)
    bot = Bot(load_settings(config_path=write_config(tmp_path / "surge.toml")), symbols=[ENTERED])
    bot.metrics = MetricsServer("127.0.0.1", 0)
    before = {t.ident for t in threading.enumerate()}
    thread = threading.Thread(target=bot.run, name="test-bot", daemon=True)
    thread.start()
    try:
        wait_for(lambda: bot.ready_at is not None, 60, "the bot to be ready")
        url = bot.metrics.url
        wait_for(lambda: requests.get(url + "/health", timeout=10).status_code == 200, 30, "a healthy bot")
        named = [t.name for t in threading.enumerate() if t.ident not in before and t.name == "surge-metrics"]
        assert named == ["surge-metrics"]
        assert b"surge_" not in prometheus_client.generate_latest()  # a private registry, not the global one
        assert bot.store is not None
        with bot.store._lock:  # the loop blocks at its next heartbeat's ledger read
            answer = wait_for(  # the text: a 503 Response is falsy
                lambda: (r := requests.get(url + "/health", timeout=10)).status_code == 503 and r.text,
                30,
                "/health to see the stale heartbeat",
            )
            assert answer.startswith("stale")
            assert scrape(url)["surge_streams"] >= 1  # /metrics does not wait for the loop
        wait_for(lambda: requests.get(url + "/health", timeout=10).status_code == 200, 30, "the loop back")
    finally:
        bot.request_stop()
        thread.join(30)
    assert not thread.is_alive()
    assert [t for t in threading.enumerate() if t.name == "surge-metrics"] == []
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/health", timeout=5)
