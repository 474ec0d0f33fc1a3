"""Single-instance lock (released by the kernel, even on kill -9) and the atomic heartbeat file."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
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


# --------------------------------------------------------------------------- hardening (issue 10)

PRIVATE_FILES = """
import json, os, stat, sys
from pathlib import Path
os.umask(int(sys.argv[2], 8))
from surge.runtime import InstanceLock, setup_logging, write_json_atomic
from surge.store import open_store
home = Path(sys.argv[1]) / "deep" / "home"
log_path = setup_logging(home, stderr=False)
lock = InstanceLock(home).acquire()
write_json_atomic(home / "heartbeat.json", {"pid": os.getpid()})
with open_store(home) as store:
    store.put_current_opens([("BTCUSDT", "4h", 0, 1.0)])
    paths = [home, home.parent, home / "logs", log_path, home / "surge.lock", home / "heartbeat.json",
             home / "surge.db", home / "surge.db-wal", home / "surge.db-shm"]
    print(json.dumps({str(p.relative_to(sys.argv[1])): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths}))
"""


@pytest.mark.parametrize("umask", ["000", "022"])
def test_home_and_every_file_in_it_are_private_whatever_the_umask(tmp_path: Path, umask: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PRIVATE_FILES, str(tmp_path), umask],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    modes = json.loads(proc.stdout)
    dirs = {"deep", "deep/home", "deep/home/logs"}
    assert {p: m for p, m in modes.items() if p in dirs} == dict.fromkeys(dirs, "0o700")
    assert {p: m for p, m in modes.items() if p not in dirs} == dict.fromkeys(set(modes) - dirs, "0o600")


def test_existing_loose_files_are_tightened(tmp_path: Path) -> None:
    from surge.store import open_store

    with open_store(tmp_path):
        pass
    for name in ("surge.db", "surge.lock"):
        (tmp_path / name).touch()
        os.chmod(tmp_path / name, 0o644)
    with open_store(tmp_path), InstanceLock(tmp_path):
        assert {oct(os.stat(tmp_path / n).st_mode & 0o777) for n in ("surge.db", "surge.lock")} == {"0o600"}


def test_a_deleted_lock_file_is_locked_again_at_the_next_check(tmp_path: Path) -> None:
    with InstanceLock(tmp_path) as lock:
        assert lock.check() is None
        (tmp_path / "surge.lock").unlink()
        assert lock_holder(tmp_path) == (False, None)  # the window: a second bot could start now...
        assert "locked it again" in (lock.check() or "")
        assert lock_holder(tmp_path) == (True, os.getpid())  # ...and after the check it cannot
        with pytest.raises(AlreadyRunning):
            InstanceLock(tmp_path).acquire()
        replacement = tmp_path / "other"
        replacement.write_text("")
        os.replace(replacement, tmp_path / "surge.lock")  # replaced, not deleted: same answer
        assert "locked it again" in (lock.check() or "")
        with pytest.raises(AlreadyRunning):
            InstanceLock(tmp_path).acquire()
    assert lock_holder(tmp_path) == (False, None)


def test_a_bot_whose_lock_file_another_bot_took_over_stops(tmp_path: Path) -> None:
    from surge.runtime import LockLost

    lock = InstanceLock(tmp_path).acquire()
    try:
        (tmp_path / "surge.lock").unlink()
        proc = start_holder(tmp_path)  # a second bot started in the window (no heartbeat to warn it)
        try:
            # twice "checking again" (the other may be a starting bot about to give up), then LockLost
            assert "held by pid" in (lock.check() or "") and "held by pid" in (lock.check() or "")
            with pytest.raises(LockLost, match=f"pid {proc.pid}"):
                lock.check()
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
    finally:
        lock.release()


def test_a_start_refuses_when_a_live_bot_heartbeats_here_without_the_lock(tmp_path: Path) -> None:
    """The bot whose lock file was deleted still writes its heartbeat: a new start sees it and exits 3
    rather than run beside it (the old bot re-takes the lock file at its next beat)."""
    proc = start_holder(tmp_path)
    try:
        (tmp_path / "surge.lock").unlink()
        write_json_atomic(
            tmp_path / "heartbeat.json", {"pid": proc.pid, "running": True, "written_at": time.time()}
        )
        with pytest.raises(AlreadyRunning, match=f"pid {proc.pid}"):
            InstanceLock(tmp_path).acquire()
        write_json_atomic(
            tmp_path / "heartbeat.json", {"pid": proc.pid, "running": True, "written_at": time.time() - 60}
        )
        InstanceLock(tmp_path).acquire().release()  # a stale heartbeat (a bot that hangs) does not count
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_acquire_locks_the_file_the_path_names_even_if_it_was_replaced_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race ``open`` -> (another process replaces surge.lock) -> ``flock``: the lock would be on a
    file nobody else can find. acquire() compares inodes and locks the one the path names."""
    import surge.runtime as runtime

    real = runtime._try_lock
    replaced = []

    def racing(fd: int) -> bool:
        if not replaced:
            new = tmp_path / "new"
            new.write_text("")
            os.replace(new, tmp_path / "surge.lock")
            replaced.append(True)
        return real(fd)

    monkeypatch.setattr(runtime, "_try_lock", racing)
    with InstanceLock(tmp_path) as lock:
        assert replaced
        mine, named = os.fstat(lock._fd), os.stat(tmp_path / "surge.lock")
        assert (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)
        monkeypatch.setattr(runtime, "_try_lock", real)
        with pytest.raises(AlreadyRunning):
            InstanceLock(tmp_path).acquire()


PROBER = """
import sys, time
from surge.runtime import lock_holder
print("probing", flush=True)
end = time.monotonic() + float(sys.argv[2])
n = 0
while time.monotonic() < end:
    lock_holder(sys.argv[1])
    n += 1
print(n, flush=True)
"""


def test_status_probes_never_make_a_start_fail(tmp_path: Path) -> None:
    """`surge status` asks whether the lock is held without taking it: starts racing a busy prober
    are never refused (before: 199 of 2,771 concurrent starts saw the probe's lock and exited 3)."""
    (tmp_path / "surge.lock").touch()
    prober = subprocess.Popen(
        [sys.executable, "-c", PROBER, str(tmp_path), "4"], stdout=subprocess.PIPE, text=True
    )
    assert prober.stdout is not None and prober.stdout.readline().strip() == "probing"
    refused = starts = 0
    end = time.monotonic() + 3
    while time.monotonic() < end and prober.poll() is None:
        try:
            InstanceLock(tmp_path).acquire().release()
        except AlreadyRunning:
            refused += 1
        starts += 1
    probes = int(prober.communicate(timeout=30)[0].strip())
    assert starts > 100 and probes > 1000
    assert refused == 0, f"{refused} of {starts} starts refused while {probes} probes ran"


def test_windows_locks_a_byte_the_pid_is_not_in() -> None:
    """Windows refuses to read a locked byte, so the pid (read by a rival) must lie elsewhere. No
    Windows here: msvcrt is played by a recorder of the byte ranges locked."""
    import surge.runtime as runtime

    class Recorder:
        LK_NBLCK, LK_UNLCK = 2, 0

        def __init__(self) -> None:
            self.ranges: list[tuple[int, int, int]] = []

        def locking(self, fd: int, mode: int, nbytes: int) -> None:
            start = os.lseek(fd, 0, os.SEEK_CUR)
            self.ranges.append((mode, start, start + nbytes))

    rec = Recorder()
    fd, name = tempfile.mkstemp()
    try:
        os.write(fd, b"12345".ljust(runtime.PID_BYTES - 1) + b"\n")
        assert runtime._win_try_lock(fd, rec)
        runtime._win_unlock(fd, rec)
        assert [mode for mode, _, _ in rec.ranges] == [rec.LK_NBLCK, rec.LK_UNLCK]
        assert rec.ranges[0][1:] == rec.ranges[1][1:]  # unlocks what it locked
        assert all(start >= runtime.PID_BYTES for _, start, _ in rec.ranges)  # never the pid's bytes
        assert runtime._read_pid(fd) == 12345  # read within PID_BYTES, from offset 0
    finally:
        os.close(fd)
        os.unlink(name)


@pytest.mark.parametrize(
    ("setup", "code", "needle"),
    [
        ("home_is_a_file", 2, "is not a directory"),
        ("lock_is_a_directory", 2, "surge.lock is a directory"),
        ("disk_full", 1, "File too large"),
    ],
)
def test_an_unusable_home_at_start_is_one_line_and_the_contracts_exit_code(
    tmp_path: Path, setup: str, code: int, needle: str
) -> None:
    """A home that is a file or holds a directory named surge.lock is the set-up's fault (exit 2); a
    full disk (played by RLIMIT_FSIZE: every write past byte 0 fails with EFBIG) is a runtime failure
    that a later start may not meet (exit 1). Either way one line, no traceback."""
    import resource

    home = tmp_path / "home"
    if setup == "home_is_a_file":
        home.write_text("")
    elif setup == "lock_is_a_directory":
        (home / "surge.lock").mkdir(parents=True)

    def limit() -> None:
        if setup == "disk_full":
            resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))

    env = {k: v for k, v in os.environ.items() if not k.startswith("SURGE_")}
    env.update(SURGE_HOME=str(home), SURGE_REST_URL="http://127.0.0.1:9", SURGE_WS_URL="ws://127.0.0.1:9")
    for args in (["run", "--symbols", "BTCUSDT"], ["status"]):
        if args == ["status"] and setup != "home_is_a_file":
            continue  # status writes nothing (and a directory named surge.lock is held by no bot)
        proc = subprocess.run(
            [sys.executable, "-m", "surge", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=limit,
        )
        assert proc.returncode == code, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0].startswith("surge: error: ") and needle in lines[0], lines


@pytest.mark.parametrize(
    ("err", "code"), [(errno.EROFS, 2), (errno.EACCES, 2), (errno.ENOSPC, 1), (errno.EFBIG, 1)]
)
def test_a_lock_file_that_cannot_be_made_is_a_surge_error_with_the_right_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, code: int
) -> None:
    """Read-only or forbidden (cannot be played as root with chmod): the set-up, exit 2. No room:
    exit 1, a later start may work. Never a raw OSError, which the CLI would show as a traceback."""
    import surge.runtime as runtime
    from surge.errors import SurgeError

    def refuse(path: object, *args: object) -> int:
        raise OSError(err, os.strerror(err), str(path))

    monkeypatch.setattr(runtime.os, "open", refuse)
    with pytest.raises(SurgeError) as info:
        InstanceLock(tmp_path).acquire()
    assert info.value.exit_code == code and os.strerror(err) in str(info.value)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_killed_bot_not_reaped_yet_is_not_running() -> None:
    """A container's init may never reap a bot killed with -9: its pid answers kill(0) as a zombie,
    and its fresh heartbeat must not keep the next start out (the cron job retried for 10 s)."""
    from surge.runtime import _pid_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    try:
        assert not _pid_alive(child.pid)
        assert _pid_alive(os.getpid())
    finally:
        child.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_is_tuned_unless_the_user_tuned_it() -> None:
    """A freed large body must not raise glibc's mmap threshold (and the RSS high-water) for good, nor
    each thread keep an arena of its own; the user's own environment settings win."""
    import platform

    code = "from surge.runtime import tune_malloc; print(','.join(tune_malloc()))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    glibc = platform.libc_ver()[0] == "glibc"
    assert out.stdout.strip() == ("mmap_threshold,arena_max" if glibc else ""), out.stderr
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == ("arena_max" if glibc else ""), out.stderr
    env["MALLOC_ARENA_MAX"] = "4"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "", out.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_heap_trimmer_gives_free_heap_pages_back_once_a_period() -> None:
    """Freed C-heap memory below a live allocation stays resident until trimmed (glibc frees only
    at the heap's top): the trimmer gives it back, once per minute of the wall clock, a few seconds
    after it turned (the streams' candles close then), whenever the ticks come."""
    code = """
import sys
from surge.runtime import HeapTrimmer
def rss_kb():
    return int(open("/proc/self/statm").read().split()[1]) * 4
trimmer = HeapTrimmer(every_s=60.0, offset_s=5.0)
transient = [bytearray(2000) for _ in range(20000)]  # ~40 MB of heap chunks (below mmap's threshold)
keep = [bytearray(600) for _ in range(50)]  # long-lived, allocated above them
del transient
before = rss_kb()
trimmer.tick(100.0)
after = rss_kb()
trimmer.tick(124.9)  # the minute turned at 120, its burst is not over: nothing
first = trimmer.trims
trimmer.tick(125.0)  # 5 s after the minute turned
trimmer.tick(183.0)  # the next minute's trim waits for 185
second = trimmer.trims
trimmer.tick(187.0)
print(before, after, first, second, trimmer.trims)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    before, after, first, second, trims = (int(x) for x in out)
    assert (first, second, trims) == (1, 2, 3)  # on the wall clock's minute, offset_s after it turned
    assert before - after > 20_000, (before, after)  # most of the 40 MB given back
