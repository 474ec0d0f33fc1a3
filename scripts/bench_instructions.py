#!/usr/bin/env python3
"""Instructions per kline event on the stream's hot path, counted by valgrind; prints ONE JSON object.

Why: the wall-clock benchmarks (``bench_stream.py``'s firehose, ``bench_run.py``'s CPU per event)
swing by more than 5 % between runs of the same code on a shared 2-core machine, so they cannot tell
whether a change made the hot path dearer by a few percent. Instructions counted by
``valgrind --tool=callgrind`` repeat to about 1 % whatever else the machine is doing.

What is counted: a :class:`MultiplexedKlineManager` (from each ``--tree``, a directory holding a
``surge`` package, e.g. ``git archive REV | tar -x -C DIR``) subscribes 200 streams and reads
``--events`` kline frames (in bursts of 200, one per stream) from a minimal in-process WebSocket
feeder over loopback, up to the batch callback. The feeder is the same code for every tree and sends
one burst, built before the manager starts, again and again. The process runs twice per tree, at
``--events`` and at ``--events / 6``; the difference, less the difference of building the frames
alone (a third pair of runs), divided by the events in between, is the client's cost per event:
start-up and imports cancel out. Each figure is the median of ``--repeat`` such measurements.

``--path loop`` counts the other half of an event's cost, the strategy loop's: ``Bot._on_klines``
(from each tree) on chunks of the same shape, every symbol passing the filter with a known volume
baseline, so each 1m update is a decision; the chunk is built once, so nothing is subtracted. An
event's cost in the bot is about the sum of the two figures.

Usage: python scripts/bench_instructions.py --tree /tmp/old --tree . [--path loop] [--events 24000]
[--repeat 1]. Needs valgrind on PATH. Takes about two minutes per tree and repeat (the loop: less).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SYMBOLS = [f"S{i:03d}USDT" for i in range(100)]
STREAMS = [f"{s.lower()}@kline_{iv}" for s in SYMBOLS for iv in ("1m", "4h")]
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3


def say(msg: str) -> None:
    print(f"bench_instructions: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- the measured child process


def _frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes([0x81, n]) + payload
    if n < 65536:
        return bytes([0x81, 126]) + n.to_bytes(2, "big") + payload
    return bytes([0x81, 127]) + n.to_bytes(8, "big") + payload


def _kline(stream: str, e_time: int) -> bytes:
    sym, interval = stream.split("@kline_")
    t = 1_764_547_200_000
    body = {
        "t": t, "T": t + 59_999, "s": sym.upper(), "i": interval, "f": 1, "L": 2, "o": "1.2345",
        "c": "1.2395", "h": "1.2445", "l": "1.2245", "v": "12345.6", "n": 321, "x": False,
        "q": "15234.5", "V": "1.0", "Q": "1.0", "B": "0",
    }  # fmt: skip
    data = {"e": "kline", "E": e_time, "s": sym.upper(), "k": body}
    return json.dumps({"stream": stream, "data": data}, separators=(",", ":")).encode()


def _read_frame(conn: socket.socket) -> tuple[int, bytes]:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            part = conn.recv(n - len(buf))
            if not part:
                raise EOFError
            buf += part
        return buf

    head = exact(2)
    n = head[1] & 0x7F
    if n == 126:
        n = int.from_bytes(exact(2), "big")
    elif n == 127:
        n = int.from_bytes(exact(8), "big")
    mask = exact(4) if head[1] & 0x80 else b"\0\0\0\0"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(exact(n)))
    return head[0] & 0x0F, payload


def _feed(srv: socket.socket, bursts: list[bytes]) -> None:
    """Handshake, answer SUBSCRIBEs, then send every burst; answer requests until the close."""
    conn, _ = srv.accept()
    request = b""
    while b"\r\n\r\n" not in request:
        request += conn.recv(4096)
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key")
    )
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    conn.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    subscribed: set[str] = set()
    sent = False
    try:
        while True:
            if not sent and subscribed == set(STREAMS):
                for burst in bursts:
                    conn.sendall(burst)
                sent = True
            opcode, payload = _read_frame(conn)
            if opcode == 8:
                break
            if opcode == 1:
                msg = json.loads(payload)
                if msg.get("method") == "SUBSCRIBE":
                    subscribed.update(msg["params"])
                result = [] if msg.get("method") == "LIST_SUBSCRIPTIONS" else None
                conn.sendall(_frame(json.dumps({"result": result, "id": msg["id"]}).encode()))
    except (EOFError, OSError):
        pass
    conn.close()


def child(events: int, build_only: bool) -> None:
    # one burst sent again and again (nothing on the path drops an event for its E): building the
    # frames costs next to nothing per event, so the subtraction below stays small
    burst = b"".join(_frame(_kline(s, int(time.time() * 1000))) for s in STREAMS)
    bursts = [burst] * (events // len(STREAMS))
    if build_only:
        return
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    feeder = threading.Thread(target=_feed, args=(srv, bursts), name="feeder", daemon=True)
    feeder.start()
    from surge.stream import MultiplexedKlineManager

    total = len(bursts) * len(STREAMS)
    got = [0]
    done = threading.Event()

    def batch(klines: list) -> None:  # type: ignore[type-arg]
        got[0] += len(klines)
        if got[0] >= total:
            done.set()

    mgr = MultiplexedKlineManager(
        lambda k: None,
        ws_url=f"ws://127.0.0.1:{srv.getsockname()[1]}",
        streams_per_connection=len(STREAMS),
        batch_callback=batch,
        silence_timeout_s=3600.0,  # valgrind is ~50x slower: no liveness probe mid-run
        probe_timeout_s=3600.0,
    )
    for s in SYMBOLS:
        mgr.subscribe_kline(s, "1m")
        mgr.subscribe_kline(s, "4h")
    mgr.start()
    ok = done.wait(1800)
    mgr.stop()
    feeder.join(10)
    if not ok:
        sys.exit(f"only {got[0]} of {total} events arrived")


def loop_child(events: int) -> None:
    """The strategy loop's side: ``Bot._on_klines`` on chunks of the same shape (one update of each
    stream, 1m and 4h, every symbol passing the filter with its volume baseline known), as the loop
    receives them from the manager; no signal (the candles move 0.4 %)."""

    from surge.app import Bot
    from surge.config import Settings
    from surge.models import Kline

    minute = 60_000
    now = int(time.time() * 1000)
    current = now // minute * minute
    with tempfile.TemporaryDirectory() as home:
        bot = Bot(Settings(home=Path(home)))
        bot.passing = set(SYMBOLS)
        bot.streaming_1m = set(SYMBOLS)
        for s in SYMBOLS:
            history = [
                Kline(s, "1m", t, t + minute - 1, 1.0, 1.0, 1.0, 1.0, 100.0, 100.0, 10, True, 0)
                for t in range(current - 40 * minute, current, minute)
            ]
            bot.rule.seed(s, history)
        chunk = [
            Kline(s, iv, current, current + minute - 1, 1.234, 1.244, 1.224, 1.239, 50.0, 62.0, 5, False, now)
            for s in SYMBOLS
            for iv in ("1m", "4h")
        ]
        on_klines = bot._on_klines
        for _ in range(events // len(chunk)):
            on_klines(chunk)


# ----------------------------------------------------------------- the driver


def _count(tree: Path | None, events: int, build_only: bool, path: str = "stream") -> int:
    """Instructions of one child process under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out"]
        cmd += [sys.executable, __file__, "--path", path, "--child", str(events)]
        cmd += ["--build-only"] if build_only else []
        env = dict(os.environ, PYTHONHASHSEED="0")  # the same set and dict layouts run after run
        if tree is not None:
            env["PYTHONPATH"] = str(tree)
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
        if run.returncode != 0:
            raise SystemExit(f"child failed ({run.returncode}): {run.stderr[-2000:]}")
        found = re.search(r"Collected : (\d+)", run.stderr)
        if not found:
            raise SystemExit("no instruction count in valgrind's output")
        return int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", type=Path, help="a directory with a surge package (repeat)")
    ap.add_argument(
        "--path",
        choices=("stream", "loop"),
        default="stream",
        help="stream: the manager up to the batch callback (default); loop: Bot._on_klines on chunks",
    )
    ap.add_argument("--events", type=int, default=24_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        if args.path == "loop":
            loop_child(args.child)
        else:
            child(args.child, args.build_only)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not on PATH")
    trees = args.tree or [Path(__file__).resolve().parent.parent]
    big, small = args.events, args.events // 6
    extra = (big // len(STREAMS) - small // len(STREAMS)) * len(STREAMS)
    out: dict[str, object] = {"path": args.path, "events_counted": extra}
    if args.path == "stream":
        say(f"{extra} events between the two runs; building the frames alone first")
        build = statistics.median(
            _count(None, big, True) - _count(None, small, True) for _ in range(args.repeat)
        )
        out["build_instructions_per_event"] = round(build / extra)
    else:
        build = 0  # the loop's chunk is built once, before the events: it cancels out
    per_tree = {}
    for tree in trees:
        say(f"tree {tree}")
        diffs = [
            _count(tree, big, False, args.path) - _count(tree, small, False, args.path)
            for _ in range(args.repeat)
        ]
        per_tree[str(tree)] = round((statistics.median(diffs) - build) / extra)
    out["instructions_per_event"] = per_tree
    if len(per_tree) > 1:
        first, *rest = per_tree.values()
        out["change_pct_vs_first"] = [round(100.0 * (v - first) / first, 2) for v in rest]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
