"""The ``--metrics-port`` server on a real loopback socket: /health's verdicts on a heartbeat clock the
test controls, 404 elsewhere, one thread named surge-metrics and none after the stop, a silent or
trickling client dropped at the request deadline while others are still served, a failing collector
answered 500 without killing the thread, and the bind errors' exit codes."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from surge.errors import EXIT_RUNTIME, EXIT_USAGE, ConfigError, SurgeError
from surge.metrics import STALE_AFTER_S, Health, MetricsServer
from surge.metrics.server import REQUEST_DEADLINE_S, bind, wsgi_app
from tests.waiting import wait_for


class Clock:
    """The heartbeat clock /health reads: moved by the test, never by sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Readings:
    """A collector whose value the test sets; ``fail`` makes the next scrapes raise."""

    def __init__(self) -> None:
        self.value = 1.0
        self.fail = False

    def collect(self) -> Iterator[Metric]:
        if self.fail:
            raise RuntimeError("a collector bug")
        yield GaugeMetricFamily("surge_test_value", "A value the test sets.", value=self.value)


def metrics_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "surge-metrics"]


@pytest.fixture
def served() -> Iterator[tuple[MetricsServer, Clock, Readings, threading.Event]]:
    clock, readings, stopping = Clock(), Readings(), threading.Event()
    server = MetricsServer("127.0.0.1", 0, clock=clock)
    server.health.stopping = stopping.is_set
    registry = CollectorRegistry(auto_describe=False)
    registry.register(readings)
    server.open(wsgi_app(registry, server.health))
    try:
        yield server, clock, readings, stopping
    finally:
        assert server.stop()


def get(url: str) -> requests.Response:
    return requests.get(url, timeout=10)


def test_health_follows_the_heartbeat_clock(
    served: tuple[MetricsServer, Clock, Readings, threading.Event],
) -> None:
    server, clock, _, stopping = served
    health = server.url + "/health"
    first = get(health)
    assert first.status_code == 503 and "starting" in first.text
    server.heartbeat({"running": True})  # type: ignore[typeddict-item]  # /health reads only "running"
    assert get(health).status_code == 200
    clock.now += STALE_AFTER_S  # exactly at the limit: still fresh
    assert get(health).status_code == 200
    clock.now += 0.5
    stale = get(health)
    assert stale.status_code == 503 and "stale" in stale.text and "6.5s" in stale.text
    server.heartbeat({"running": True})  # type: ignore[typeddict-item]
    assert get(health).status_code == 200  # the loop beats again
    stopping.set()
    assert get(health).status_code == 503 and "stopping" in get(health).text
    stopping.clear()
    server.heartbeat({"running": False})  # type: ignore[typeddict-item]  # the final heartbeat
    assert get(health).status_code == 503 and "stopped" in get(health).text


def test_metrics_and_404(served: tuple[MetricsServer, Clock, Readings, threading.Event]) -> None:
    server, _, readings, _ = served
    readings.value = 42.5
    answer = get(server.url + "/metrics")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    [family] = list(text_string_to_metric_families(answer.text))
    assert family.name == "surge_test_value" and family.samples[0].value == 42.5
    for path in ("/", "/metrics/", "/healthz", "/favicon.ico"):
        assert get(server.url + path).status_code == 404, path


def test_a_failing_collector_answers_500_and_the_server_goes_on(
    served: tuple[MetricsServer, Clock, Readings, threading.Event], caplog: pytest.LogCaptureFixture
) -> None:
    server, _, readings, _ = served
    readings.fail = True
    assert get(server.url + "/metrics").status_code == 500
    assert get(server.url + "/metrics").status_code == 500
    assert sum("answering /metrics failed" in r.getMessage() for r in caplog.records) == 1  # once a spell
    readings.fail = False
    assert get(server.url + "/metrics").status_code == 200
    assert metrics_threads() and metrics_threads()[0].is_alive()


def test_one_thread_named_surge_metrics_while_on_and_none_after_the_stop() -> None:
    before = {t.ident for t in threading.enumerate()}
    server = MetricsServer("127.0.0.1", 0)
    server.open(wsgi_app(CollectorRegistry(auto_describe=False), Health()))
    try:
        added = [t for t in threading.enumerate() if t.ident not in before]
        assert [t.name for t in added] == ["surge-metrics"]
        for _ in range(5):
            assert get(server.url + "/health").status_code == 503  # no thread per request either
        assert [t.name for t in threading.enumerate() if t.ident not in before] == ["surge-metrics"]
    finally:
        t0 = time.monotonic()
        assert server.stop()
        stopped_in = time.monotonic() - t0
    assert metrics_threads() == [] and stopped_in < 1.5
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/health", timeout=5)  # the socket is closed too


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _raw_client(server: MetricsServer, timeout: float) -> socket.socket:
    """A plain TCP connection to the server, for clients that do not speak HTTP properly."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.settimeout(timeout)
    return sock


def test_a_silent_client_is_dropped_at_the_deadline_and_others_are_served_meanwhile(
    served: tuple[MetricsServer, Clock, Readings, threading.Event],
) -> None:
    server, _, _, _ = served
    silent = _raw_client(server, timeout=0.1)
    try:
        t0 = time.monotonic()
        wait_for(lambda: _closed_by_server(silent), 10, "the server to drop the silent client")
        dropped_after = time.monotonic() - t0
        answer = get(server.url + "/metrics")
        assert answer.status_code == 200
        assert dropped_after < REQUEST_DEADLINE_S + 2.0  # the deadline, plus a loaded machine's slack
    finally:
        silent.close()


def test_a_client_trickling_bytes_cannot_keep_the_server(
    served: tuple[MetricsServer, Clock, Readings, threading.Event],
) -> None:
    """A per-recv timeout would be reset by every byte; the deadline is over the whole request."""
    server, _, _, _ = served
    slow = _raw_client(server, timeout=0.2)  # one byte per 0.2 s, well inside any per-recv timeout
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200
    sent = 0
    t0 = time.monotonic()

    def dropped() -> bool:
        nonlocal sent
        try:
            slow.send(request[sent : sent + 1])
            sent += 1
        except OSError:
            return True
        return _closed_by_server(slow)

    try:
        wait_for(dropped, 15, "the server to drop the trickling client", poll=0)
        assert time.monotonic() - t0 < REQUEST_DEADLINE_S + 3.0
        assert sent < len(request)
        assert get(server.url + "/health").status_code in (200, 503)  # still serving
    finally:
        slow.close()


def test_a_port_in_use_is_a_runtime_failure_and_an_address_not_here_is_bad_usage() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SurgeError) as in_use:
            bind("127.0.0.1", port)
    assert in_use.value.exit_code == EXIT_RUNTIME and "already in use" in str(in_use.value)
    with pytest.raises(ConfigError) as elsewhere:  # TEST-NET-1: no machine has it; nothing is sent
        bind("192.0.2.1", 0)
    assert elsewhere.value.exit_code == EXIT_USAGE and "--metrics-host" in str(elsewhere.value)
    with pytest.raises(ConfigError):
        bind(" ", 0)  # not "every address": an empty host is a mistake


def test_stale_means_three_missed_heartbeats_of_the_loop() -> None:
    from surge.app import HEARTBEAT_EVERY_S

    assert STALE_AFTER_S == 3 * HEARTBEAT_EVERY_S


def test_a_host_other_than_loopback_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="surge.metrics")
    bind("127.0.0.1", 0).server_close()
    assert not caplog.records
    bind("0.0.0.0", 0).server_close()  # listens for an instant, accepts nothing
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "exposed" in record.getMessage()
