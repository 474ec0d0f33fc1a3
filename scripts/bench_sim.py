#!/usr/bin/env python3
"""Benchmark the simulated exchange; prints ONE JSON object on stdout.

Why: the simulator must never be the bottleneck of the bot's client benchmarks (the bar: at least
150,000 kline events/s to one connection whose client only counts frames). The number only means
something next to what the same machine can do at all, so the same run measures a bare
``websockets`` server pushing a fixed frame of the same size through the same counting client.

Keys:
  ws_events_per_s               simulator (own process, firehose mode) -> one connection
  bare_websockets_events_per_s  bare websockets server (own process) pushing one fixed frame
  ws_frame_bytes                payload size of one simulated event (the bare frame has the same size)
  per_stream_events_per_s       {min, median, max}: 1,062 kline streams (531 symbols x 1m/4h) over
                                6 connections at the normal 250 ms push (expect ~4 each)
  rest_requests_per_s           from scripts/bench_sim_rest.py (run as a subprocess) when present,
                                else null with ``rest_note`` saying why

Usage: python scripts/bench_sim.py [--seconds 3] [--skip-streams]
The ``--child`` modes are internal: they run one server in a subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
FIREHOSE_STREAMS = 20  # streams on the benchmark connection (the firehose cycles through them)


# --------------------------------------------------------------------------- servers (child processes)


SEED = 7


def _make_market(symbols: int) -> Any:
    """The simulator's own market model, as `surge sim` builds it."""
    from surge.sim.market import Market

    return Market(symbols, SEED)


def _child_sim(firehose: bool, symbols: int) -> None:
    """The whole simulator (market, REST and WebSocket servers) as `surge sim` runs it."""
    from surge.sim.simulator import Simulator

    sim = Simulator(n_symbols=symbols, seed=SEED)
    sim.start()
    if firehose:
        sim.ws.firehose(True)
    print(f"URL {sim.ws_url}", flush=True)
    sys.stdin.read()  # parent closes stdin to stop us
    sim.stop()


def _child_bare(size: int) -> None:
    """A bare websockets server that pushes one fixed frame as fast as it can: the baseline."""
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    frame = ('{"stream":"btcusdt@kline_1m","data":' + "x" * max(0, size - 40) + "}")[:size]
    frame = frame.ljust(size, " ")

    async def handler(ws: Any) -> None:
        try:
            while True:
                await ws.send(frame)
        except ConnectionClosed:
            pass

    async def main() -> None:
        async with serve(handler, HOST, 0, compression=None, ping_interval=None) as server:
            port = server.sockets[0].getsockname()[1]
            print(f"URL ws://{HOST}:{port}", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


class Child:
    """A server in its own process; ``url`` from its first stdout line; stopped by closing stdin."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("URL "):
            self.close()
            raise RuntimeError(f"child {args} did not start: {line!r}")
        self.url = line[4:]
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])  # ws://127.0.0.1:PORT/market

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- counting client


def ws_connect(port: int, path: str) -> tuple[socket.socket, bytes]:
    """Raw WebSocket handshake on a plain socket: no library between the frames and the counter."""
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed during handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"handshake refused: {head[:200]!r}")
    return sock, rest


class FrameReader:
    """Splits a server byte stream into frames; answers pings (masked pong, as a client must)."""

    def __init__(self, sock: socket.socket, pending: bytes = b"", keep_payload: bool = False) -> None:
        self.sock = sock
        self.buf = pending
        self.keep = keep_payload
        self.frames = 0
        self.payload_bytes = 0
        self.payloads: list[bytes] = []

    def feed(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        n = len(buf)
        pos = 0
        frames = 0
        keep = self.keep
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            else:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > n:
                break
            opcode = buf[pos] & 0x0F
            if opcode == 1 or opcode == 2:
                frames += 1
                self.payload_bytes += length
                if keep:
                    self.payloads.append(buf[start:end])
            elif opcode == 9:  # ping -> pong with the same payload, masked with a zero key
                payload = buf[start:end]
                self.sock.sendall(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
            pos = end
        self.frames += frames
        self.buf = buf[pos:]


def count_frames(port: int, path: str, seconds: float, warmup: float = 0.5) -> tuple[float, int]:
    """Frames per second received on one connection, after a warm-up; and the mean payload size."""
    sock, pending = ws_connect(port, path)
    reader = FrameReader(sock, pending)
    recv = sock.recv
    end_warm = time.perf_counter() + warmup
    while time.perf_counter() < end_warm:
        reader.feed(recv(1 << 20))
    start_frames, start_bytes = reader.frames, reader.payload_bytes
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        reader.feed(recv(1 << 20))
        now = time.perf_counter()
        if now >= deadline:
            break
    frames = reader.frames - start_frames
    size = (reader.payload_bytes - start_bytes) // max(frames, 1)
    sock.close()
    return frames / (now - t0), size


def per_stream_rates(port: int, symbols: list[str], seconds: float, connections: int = 6) -> list[float]:
    """Subscribe symbols x {1m,4h} over ``connections`` sockets (live SUBSCRIBE) and measure each stream."""
    names = [f"{s.lower()}@kline_{i}" for s in symbols for i in ("1m", "4h")]
    chunks = [names[i::connections] for i in range(connections)]
    sel = selectors.DefaultSelector()
    readers = []
    for idx, chunk in enumerate(chunks):
        sock, pending = ws_connect(port, "/market/stream")
        payload = json.dumps({"method": "SUBSCRIBE", "params": chunk, "id": idx + 1}).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        header = (
            bytes((0x81, 0x80 | 127)) + len(payload).to_bytes(8, "big")
            if len(payload) >= 65536
            else (
                bytes((0x81, 0x80 | 126)) + len(payload).to_bytes(2, "big")
                if len(payload) >= 126
                else bytes((0x81, 0x80 | len(payload)))
            )
        )
        sock.sendall(header + mask + masked)
        sock.setblocking(False)
        reader = FrameReader(sock, pending, keep_payload=True)
        readers.append(reader)
        sel.register(sock, selectors.EVENT_READ, reader)
    counts = dict.fromkeys(names, 0)

    def pump(until: float, record: bool) -> None:
        while time.perf_counter() < until:
            for key, _ in sel.select(0.05):
                reader = key.data
                try:
                    data = reader.sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                reader.feed(data)
                if record:
                    for p in reader.payloads:
                        if p.startswith(b'{"stream":"'):
                            name = p[11 : p.index(b'"', 11)].decode()
                            if name in counts:
                                counts[name] += 1
                reader.payloads.clear()

    pump(time.perf_counter() + 1.0, False)  # subscribe acks and first rounds
    t0 = time.perf_counter()
    pump(t0 + seconds, True)
    elapsed = time.perf_counter() - t0
    for reader in readers:
        sel.unregister(reader.sock)
        reader.sock.close()
    return [counts[n] / elapsed for n in names]


def rest_rate() -> tuple[float | None, str | None]:
    """REST requests/s at zero latency: the last JSON line of scripts/bench_sim_rest.py, if present."""
    path = ROOT / "scripts" / "bench_sim_rest.py"
    if not path.exists():
        return None, "scripts/bench_sim_rest.py does not exist yet"
    proc = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, cwd=str(ROOT), timeout=300
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip().startswith("{")]
    if proc.returncode != 0 or not lines:
        return None, f"bench_sim_rest.py failed (exit {proc.returncode}): {proc.stderr.strip()[-200:]}"
    data = json.loads(lines[-1])
    value = data.get("rest_requests_per_s")
    if value is None:
        value = next((v for k, v in data.items() if k.endswith("requests_per_s")), None)
    return (float(value) if value is not None else None), None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measurement window per figure")
    parser.add_argument("--skip-streams", action="store_true", help="skip the 1,062-stream rate figure")
    parser.add_argument("--skip-rest", action="store_true", help="skip the REST figure")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind = args.child[0]
        if kind == "sim":
            _child_sim(firehose=args.child[1] == "firehose", symbols=int(args.child[2]))
        elif kind == "bare":
            _child_bare(int(args.child[1]))
        return 0

    result: dict[str, Any] = {}
    with Child("sim", "firehose", "531") as child:
        symbols = _symbols_of(child.port)
        streams = "/".join(f"{s.lower()}@kline_1m" for s in symbols[:FIREHOSE_STREAMS])
        rate, size = count_frames(child.port, f"/market/stream?streams={streams}", args.seconds)
    result["ws_events_per_s"] = round(rate)
    result["ws_frame_bytes"] = size
    with Child("bare", str(size)) as child:
        bare, _ = count_frames(child.port, "/", args.seconds)
    result["bare_websockets_events_per_s"] = round(bare)
    result["ws_vs_bare"] = round(rate / bare, 3) if bare else None
    if not args.skip_streams:
        with Child("sim", "normal", "531") as child:
            symbols = _symbols_of(child.port)
            rates = per_stream_rates(child.port, symbols, max(args.seconds, 3.0))
        result["per_stream_events_per_s"] = {
            "streams": len(rates),
            "min": round(min(rates), 2),
            "median": round(statistics.median(rates), 2),
            "max": round(max(rates), 2),
        }
    if args.skip_rest:
        result["rest_requests_per_s"] = None
    else:
        result["rest_requests_per_s"], why = rest_rate()
        if why:
            result["rest_note"] = why
    print(json.dumps(result))
    return 0


def _symbols_of(port: int) -> list[str]:
    """The market's tradable symbols, as the child builds them (same seed, same list)."""
    del port
    return _make_market(531).tradable_symbols()


if __name__ == "__main__":
    threading.current_thread().name = "bench-main"
    sys.exit(main())
