"""A stand-in for a running ``surge run``, for the commands that read ``$SURGE_HOME`` while a bot
runs (``status``, ``watch``): a child process that holds the instance lock and writes the heartbeats
it is handed, as the bot does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BOT = """
import json, os, sys
from pathlib import Path
from surge.runtime import InstanceLock, write_json_atomic
home = Path(sys.argv[1])
lock = InstanceLock(home).acquire()
for line in sys.stdin:  # each line: a heartbeat to write, the way `surge run` writes it
    beat = json.loads(line)
    beat.setdefault("pid", os.getpid())
    write_json_atomic(home / "heartbeat.json", beat)
    print("written", flush=True)
"""


class FakeBot:
    """A child process that holds the lock and writes the heartbeats it is handed."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BOT, str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.pid = self.proc.pid

    def beat(self, **fields: object) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(fields) + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "written"  # blocks until the file is in place

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
