"""Fixtures for stream tests: the simulated WebSocket server on 127.0.0.1 and managers with short
timeouts, plus a deadline-based ``wait_until`` (no fixed sleeps: a loaded 2-core CI box is slow)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

from surge.models import Kline
from surge.sim.market import Market
from surge.sim.ws import WsServer
from surge.stream import MultiplexedKlineManager
from tests.waiting import wait_for

#: Tuning for tests: everything that waits is short, so faults heal in well under a second.
FAST = {
    "debounce_s": 0.01,
    "max_debounce_s": 0.1,
    "housekeeping_s": 0.1,
    "reply_timeout_s": 3.0,
    "retry_delay_s": 0.05,
    "retry_max_s": 0.5,
    "silence_timeout_s": 3.0,
    "probe_timeout_s": 1.0,
    "tick_s": 0.1,
    "backoff_base_s": 0.05,
    "backoff_max_s": 0.5,
    "stable_after_s": 1.0,
    "connect_timeout_s": 5.0,
}


def wait_until(pred: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """:func:`tests.waiting.wait_for` with this package's default deadline (streams on a loaded machine)."""
    wait_for(pred, timeout, what)


def name_of(k: Kline) -> str:
    return f"{k.symbol.lower()}@kline_{k.interval}"


class Collector:
    """Thread-safe callback: per-stream event times, candle open times, arrival times and the
    candle states delivered (each Kline with its ``E`` zeroed, to compare with what was sent)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, list[int]] = defaultdict(list)
        self.open_times: dict[str, list[int]] = defaultdict(list)
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.states: dict[str, set[Kline]] = defaultdict(set)
        self.count = 0

    def __call__(self, k: Kline) -> None:
        now = time.monotonic()
        name = name_of(k)
        with self.lock:
            self.events[name].append(k.event_time)
            self.open_times[name].append(k.open_time)
            self.arrivals[name].append(now)
            self.states[name].add(msgspec.structs.replace(k, event_time=0))
            self.count += 1

    def seen(self) -> set[str]:
        with self.lock:
            return set(self.events)

    def reset(self) -> None:
        with self.lock:
            self.events.clear()
            self.open_times.clear()
            self.arrivals.clear()
            self.states.clear()
            self.count = 0

    def out_of_order(self) -> list[str]:
        """Streams whose events did not come strictly in order, or came twice. An event is its (E,
        candle): a candle's final state and the next candle's first update may share one E."""
        with self.lock:
            keyed = {s: list(zip(e, self.open_times[s], strict=True)) for s, e in self.events.items()}
        pairs = {s: zip(keys, keys[1:], strict=False) for s, keys in keyed.items()}
        return sorted(s for s, steps in pairs.items() if any(a >= b for a, b in steps))

    def missing(self, sent: dict[str, set[Kline]]) -> dict[str, int]:
        """Per stream, how many of the candle states in ``sent`` (``WsServer.sent_klines()``) were
        never delivered: a state lost, whatever ``E`` it was stamped with."""
        with self.lock:
            lost = {s: len(states - self.states.get(s, set())) for s, states in sent.items()}
        return {s: n for s, n in lost.items() if n}

    def since(self, t: float) -> set[str]:
        """Streams with at least one event that arrived after monotonic time ``t``."""
        with self.lock:
            return {s for s, times in self.arrivals.items() if times and times[-1] > t}


@pytest.fixture(scope="session")
def market() -> Market:
    return Market(531, 1, surge_interval_s=None, thin_share=0.0)


@pytest.fixture
def make_server(market: Market) -> Iterator[Callable[..., WsServer]]:
    servers: list[WsServer] = []

    def make(**opts: Any) -> WsServer:
        srv = WsServer(market, "127.0.0.1", 0, **opts)
        srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def server(make_server: Callable[..., WsServer]) -> WsServer:
    return make_server()


@pytest.fixture
def make_manager() -> Iterator[Callable[..., MultiplexedKlineManager]]:
    managers: list[MultiplexedKlineManager] = []

    def make(callback: Callable[[Kline], Any], ws_url: str, **kw: Any) -> MultiplexedKlineManager:
        opts = {**FAST, **kw}
        mgr = MultiplexedKlineManager(callback, ws_url=ws_url, **opts)
        managers.append(mgr)
        return mgr

    yield make
    for mgr in managers:
        mgr.stop(5.0)


def server_sets(srv: WsServer) -> list[set[str]]:
    """Server-side subscription set of each open connection."""
    return [set(subs) for subs in srv.stats()["subscriptions"].values()]


def server_union(srv: WsServer) -> tuple[set[str], int]:
    """(union of every open connection's subscriptions, total including duplicates)."""
    sets = server_sets(srv)
    union: set[str] = set().union(*sets) if sets else set()
    return union, sum(len(s) for s in sets)


def manager_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("surge-ws")]
