"""Single-instance lock (released by the kernel, even on kill -9) and the atomic heartbeat file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from surge.runtime import AlreadyRunning, InstanceLock, lock_holder, read_heartbeat, write_json_atomic

HOLDER = """
import sys, time
from surge.runtime import InstanceLock
lock = InstanceLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()  # hold until the test closes stdin or kills us
"""


def start_holder(home: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"  # blocks until the child holds the lock
    return proc


def test_second_instance_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    proc = start_holder(tmp_path)
    try:
        assert lock_holder(tmp_path) == (True, proc.pid)
        with pytest.raises(AlreadyRunning) as info:
            InstanceLock(tmp_path).acquire()
        assert info.value.exit_code == 3 and f"already running (pid {proc.pid})" in str(info.value)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert lock_holder(tmp_path) == (False, None)
    with InstanceLock(tmp_path) as lock:
        assert lock.held and lock_holder(tmp_path) == (True, os.getpid())
    assert not lock.held


def test_kill_9_releases_the_lock(tmp_path: Path) -> None:
    proc = start_holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdin.close()
    assert lock_holder(tmp_path) == (False, None)
    InstanceLock(tmp_path).acquire().release()


def test_no_lock_file_means_not_running(tmp_path: Path) -> None:
    assert lock_holder(tmp_path / "nowhere") == (False, None)


def test_heartbeat_is_never_torn(tmp_path: Path) -> None:
    """A reader racing a writer always sees a whole JSON document."""
    path = tmp_path / "heartbeat.json"
    write_json_atomic(path, {"n": -1})
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            write_json_atomic(path, {"n": n, "pad": "x" * 4096})
            n += 1

    t = threading.Thread(target=writer, name="test-heartbeat-writer")
    t.start()
    try:
        seen: set[int] = set()
        reads = 0
        deadline = time.monotonic() + 30
        while (reads < 2_000 or len(seen) < 5) and time.monotonic() < deadline:
            data = read_heartbeat(tmp_path)
            assert data is not None
            seen.add(data["n"])
            reads += 1
        assert len(seen) >= 5
    finally:
        stop.set()
        t.join(timeout=10)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_missing_or_corrupt_heartbeat(tmp_path: Path) -> None:
    assert read_heartbeat(tmp_path) is None
    (tmp_path / "heartbeat.json").write_text("{not json")
    assert read_heartbeat(tmp_path) is None
    (tmp_path / "heartbeat.json").write_text(json.dumps([1, 2]))
    assert read_heartbeat(tmp_path) is None
