"""``surge run --metrics-port N``: ``/metrics`` (Prometheus text) and ``/health`` from one thread.

Why one plain thread and no framework: a scrape is a few kilobytes computed in about a millisecond,
every 15 s or so; a server that handles one request at a time (``wsgiref``'s, not its threading
mix-in) is all it needs, and it adds exactly one thread, ``surge-metrics``, started by
:func:`surge.startup.start` and joined by :func:`surge.startup.shutdown`. Between requests the
thread folds the decision latencies (:mod:`surge.metrics.histogram`) so the ring never overflows.

A slow or silent client cannot wedge it: every request has :data:`REQUEST_DEADLINE_S` in all to be
read and answered (a deadline over the whole request, not a per-``recv`` timeout a client could reset
by trickling bytes), after which its connection is dropped.

``/health`` is 200 while the loop's last heartbeat (handed over in memory every 2 s, see
:func:`surge.heartbeat.publish`) is younger than :data:`STALE_AFTER_S` and the bot is not stopping;
503 otherwise: not started yet, stuck (a loop that stops beating), stopping or stopped. Other paths
are 404. Binding: an address in use or refused is a runtime failure (exit 1: the command was right,
the machine is not ready for it); a host that is not an address of this machine is bad usage (exit 2).
"""

from __future__ import annotations

import errno
import io
import ipaddress
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app

from surge.errors import ConfigError, SurgeError
from surge.metrics.collector import BotCollector
from surge.metrics.histogram import LatencyHistogram
from surge.runtime import Spell

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from surge.app import Bot
    from surge.heartbeat import Heartbeat

log = logging.getLogger("surge.metrics")

#: ``/health`` turns 503 when the last heartbeat is older: three of the loop's 2 s heartbeats.
STALE_AFTER_S = 6.0
#: Everything one request may take, from its first byte read to its last byte sent.
REQUEST_DEADLINE_S = 1.0
#: How long the thread waits for a connection before it folds latencies and checks for a stop:
#: also how late a stop is noticed.
IDLE_FOLD_S = 0.25
DEFAULT_HOST = "127.0.0.1"


class Health:
    """The verdict of ``/health`` from the heartbeats the loop hands over (see the module docstring).

    ``note`` is called by the loop, ``status`` by the server thread: one tuple attribute, replaced
    whole, so a reader never sees half of an update."""

    def __init__(
        self,
        *,
        stale_after_s: float = STALE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.stopping = stopping
        self._last: tuple[float, bool] | None = None  # (clock at the heartbeat, its "running")

    def note(self, running: bool) -> None:
        self._last = (self.clock(), running)

    def status(self) -> tuple[int, str]:
        """(HTTP status, one line saying why)."""
        last = self._last
        if self.stopping():
            return 503, "stopping"
        if last is None:
            return 503, "starting: no heartbeat yet"
        at, running = last
        age = self.clock() - at
        if not running:
            return 503, "stopped"
        if age > self.stale_after_s:
            return 503, f"stale: the last heartbeat is {age:.1f}s old (limit {self.stale_after_s:g}s)"
        return 200, f"ok: last heartbeat {age:.1f}s ago"


class MetricsServer:
    """The ``--metrics-port`` server of one ``surge run``: made by the CLI, started and stopped by
    :mod:`surge.startup` (see the module docstring). ``clock`` times the heartbeats (tests)."""

    def __init__(self, host: str, port: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.host, self.port = host, port
        self.health = Health(clock=clock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._idle: Callable[[], object] = lambda: None
        self._closed: Callable[[], None] = lambda: None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` as bound (the port the OS chose when asked for port 0)."""
        assert self._url is not None, "not bound yet"
        return self._url

    def heartbeat(self, beat: Heartbeat) -> None:
        """The loop's heartbeat, handed over in memory (the loop's thread; a tuple store)."""
        self.health.note(beat["running"])

    def start(self, bot: Bot) -> None:
        """Serve ``bot``'s metrics: a private registry (never the process-global one, which other
        libraries may fill), the bot's collector and the process's own basics."""
        registry = CollectorRegistry(auto_describe=False)
        collector = BotCollector(bot, LatencyHistogram(bot.latency))
        registry.register(collector)
        ProcessCollector(registry=registry)
        self.health.stopping = bot.stop_event.is_set
        self.open(wsgi_app(registry, self.health), idle=collector.histogram.fold, closed=collector.close)

    def open(
        self,
        app: WSGIApplication,
        *,
        idle: Callable[[], object] = lambda: None,
        closed: Callable[[], None] = lambda: None,
    ) -> None:
        """Bind and start the thread serving ``app``; ``idle`` runs between requests, ``closed`` once
        the thread has ended. Raises SurgeError (exit 1) or ConfigError (exit 2) when it cannot bind."""
        self._server = bind(self.host, self.port)
        host, port = self._server.socket.getsockname()[:2]
        self._url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self._server.set_app(app)
        self._idle, self._closed = idle, closed
        self._thread = threading.Thread(target=self._serve, name="surge-metrics", daemon=True)
        self._thread.start()
        log.info("metrics on %s/metrics, health on %s/health", self.url, self.url)

    def stop(self, timeout: float = 1.5) -> bool:
        """Stop the thread and close the socket; True if the thread ended within ``timeout``."""
        if self._thread is None or self._server is None:
            return True
        self._stop.set()
        self._thread.join(timeout)
        ended = not self._thread.is_alive()
        if ended:
            self._server.server_close()
            self._closed()
        else:
            log.warning("the metrics server did not stop within %.1fs", timeout)
        return ended

    def _serve(self) -> None:
        server = self._server
        assert server is not None
        failing = Spell(log, "the metrics server")
        while not self._stop.is_set():
            try:
                server.handle_request()  # one request, or none within IDLE_FOLD_S
                self._idle()
            except Exception as exc:  # noqa: BLE001 - a metrics bug must not end the thread: /health stays up
                failing.failed(exc, "serving on")
            else:
                failing.ok()


def wsgi_app(registry: CollectorRegistry, health: Health) -> WSGIApplication:
    """``/metrics`` from ``registry``, ``/health`` from ``health``, 404 elsewhere. A failing collector
    answers 500 and is logged once per spell (never a traceback on stderr: ``--quiet`` runs)."""
    metrics = make_wsgi_app(registry)
    failing = Spell(log, "answering /metrics")

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        try:
            if path == "/metrics":
                body = list(metrics(environ, start_response))
                failing.ok()
                return body
            code, text = health.status() if path == "/health" else (404, "not found: try /metrics or /health")
        except Exception as exc:  # noqa: BLE001 - one failed scrape is a 500, not a dead server
            failing.failed(exc, "answered 500")
            code, text = 500, "internal error (see the bot's log)"
        data = (text + "\n").encode()
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
        start_response(f"{code} {HTTPStatus(code).phrase}", headers)
        return [data]

    return app


def bind(host: str, port: int) -> _Server:
    """The listening socket (see the module docstring for the exit codes). A host that is not
    loopback is logged as a warning: anyone who can reach it reads the bot's positions and PnL."""
    if not host.strip():  # "" would mean every address of the machine
        raise ConfigError("--metrics-host: empty (give an address, e.g. 127.0.0.1)")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--metrics-host {host!r}: not a known host or address ({exc.strerror})") from None
    # IPv4 first: "localhost" may list ::1 first on a machine whose IPv6 is switched off
    family, _, _, _, address = min(found, key=lambda info: info[0] != socket.AF_INET)
    try:
        server = _Server(address, family)
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"--metrics-host {host!r}: not an address of this machine") from None
        if exc.errno == errno.EADDRINUSE:
            raise SurgeError(f"--metrics-port {port}: address {host}:{port} already in use") from None
        raise SurgeError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    if not ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback:
        log.warning(
            "metrics and /health are exposed on %s:%d (--metrics-host %s): anyone who can reach it "
            "can read the bot's positions and PnL; keep it behind a firewall",
            address[0],
            server.server_address[1],
            host,
        )
    return server


# --------------------------------------------------------------------------- the HTTP plumbing


class _Server(WSGIServer):
    """wsgiref's one-request-at-a-time server, on any address family, without a reverse DNS lookup
    of its own address at bind (``HTTPServer.server_bind`` asks for its FQDN: seconds on a machine
    with a slow resolver), and with errors logged, not printed."""

    timeout = IDLE_FOLD_S  # handle_request() waits this long for a connection

    def __init__(self, address: Any, family: socket.AddressFamily) -> None:
        self.address_family = family
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics request from %s failed", client_address, exc_info=True)


class _Handler(WSGIRequestHandler):
    """One request under one deadline (:data:`REQUEST_DEADLINE_S`), logged at debug, not to stderr."""

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain reader: replaced by one that keeps the deadline
        self.rfile = io.BufferedReader(
            _DeadlineReader(self.connection, time.monotonic() + REQUEST_DEADLINE_S)
        )

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics %s: " + format, self.address_string(), *args)

    def get_stderr(self) -> Any:
        return _LogStream()


class _DeadlineReader(io.RawIOBase):
    """A socket's reads bounded by one deadline for the whole request; writes then inherit the
    remaining time as the socket's timeout (``sendall``'s timeout is over the whole call)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"request not read within {REQUEST_DEADLINE_S:g}s")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _LogStream:
    """Where wsgiref writes what goes wrong inside a request: the log at debug (never stderr)."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("metrics request: %s", text.rstrip())
        return len(text)

    def flush(self) -> None:
        pass


__all__ = ["DEFAULT_HOST", "STALE_AFTER_S", "Health", "MetricsServer", "bind", "wsgi_app"]
