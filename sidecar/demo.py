"""Tiny HTTP upstreams that answer with their own name: the demo's control and regions, and the
integration tests' witnesses (they record what they received, so tests can check the bytes)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    server: UpstreamServer
    protocol_version = "HTTP/1.1"
    # Without this, keep-alive requests stall ~40 ms on Nagle + delayed ACK (envoy-notes §5).
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        received = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        self.server.record(received)
        status = self.server.status
        payload = json.dumps(
            {
                "upstream": self.server.name,
                "method": self.command,
                "path": self.path,
                "body_len": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
            }
        ).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 drops connections under load (envoy-notes §5)

    def __init__(
        self, name: str, host: str, port: int, keep: int = 10_000, announce: Callable[[str], None] | None = None
    ) -> None:
        super().__init__((host, port), _Handler)
        self.name = name
        self.announce = announce
        self.status = 200
        self.received: deque[Received] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)
        if self.announce is not None:
            self.announce(f"{self.name:>8} ← {received.method} {received.target} ({len(received.body)} bytes)")

    def start(self) -> UpstreamServer:
        self._thread = threading.Thread(target=self.serve_forever, name=f"upstream-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
