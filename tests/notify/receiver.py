"""A real HTTP endpoint on 127.0.0.1 for apprise's ``json://`` URLs, in one named thread.

apprise's json:// plugin POSTs ``{"version", "title", "message", "attachments", "type"}``. The receiver
keeps every body it is sent and answers in its mode: ``ok`` (200), ``fail`` (500) or ``hang`` (no answer
until :meth:`Receiver.release`, then 200). One request at a time, as a slow phone service would.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

#: The password part of every test URL: it must never appear in a log, on stdout or on stderr.
TOKEN = "s3cretT0kenXYZ"


class Receiver:
    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server = HTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"test-receiver-{self.port}",
        )
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"json://surge:{TOKEN}@127.0.0.1:{self.port}{path}"

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self.bodies)

    def messages(self) -> list[str]:
        """Title and message of every request, one string each."""
        with self._lock:
            return [f"{b.get('title')}\n{b.get('message')}" for b in self.bodies]

    def release(self) -> None:
        """A hanging receiver answers the request it holds, and every later one at once."""
        self._released.set()

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
        assert not self._thread.is_alive()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.bodies.append(json.loads(body or b"{}"))
                    receiver.auth.append(self.headers.get("Authorization", ""))
                if receiver.mode == "hang":
                    receiver._released.wait(120)
                status = 500 if receiver.mode == "fail" else 200
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up waiting (its timeout): nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


__all__ = ["TOKEN", "Receiver"]
