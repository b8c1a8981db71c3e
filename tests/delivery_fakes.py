"""Test doubles for delivery: a fake egress listener (regions behind one port, as Envoy's egress
listener routes on ``x-silo-route``), a fake Slack/Discord, and a clock the test moves."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FakeClock:
    """Wall time plus an offset the test advances: rows the database stamps with now() are due at once."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass(frozen=True, slots=True)
class Seen:
    region: str | None
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def number(self) -> int | None:
        """The ``id`` of a JSON body (tests number their payloads)."""
        try:
            found = json.loads(self.body).get("id")
        except (ValueError, AttributeError):
            return None
        return found if isinstance(found, int) else None


@dataclass(frozen=True, slots=True)
class Answer:
    status: int = 200
    body: bytes = b'{"ok":true}'
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    delay_s: float = 0.0


Behaviour = Callable[[Seen], Answer]
SEEN_PATH = "/__seen"
"""GET it from a fake egress in another process: [[region, id], …] in arrival order."""


class _Handler(BaseHTTPRequestHandler):
    server: RecordingServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        if self.path == SEEN_PATH:
            self._report_seen()
            return
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        seen = Seen(headers.get("x-silo-route"), self.command, self.path, headers, body, time.time())
        answer = self.server.answer_for(seen)
        if answer.delay_s:
            time.sleep(answer.delay_s)
        self.send_response(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value)
        self.send_header("content-length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def _report_seen(self) -> None:
        with self.server._lock:
            body = json.dumps(self.server.numbers).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class RecordingServer(ThreadingHTTPServer):
    """Records every request; answers from a per-region script, then ``behaviour`` (200 by default)."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = behaviour
        self.seen: list[Seen] = []
        self.numbers: list[tuple[str | None, int | None]] = []
        self.scripts: dict[str | None, deque[Answer]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, region: str | None, *answers: Answer | int) -> None:
        """The next answers for ``region``, in order (an int is a status with the default body)."""
        with self._lock:
            self.scripts[region].extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    def answer_for(self, seen: Seen) -> Answer:
        with self._lock:
            self.seen.append(seen)
            self.numbers.append((seen.region, seen.number))
            script = self.scripts.get(seen.region)
            if script:
                return script.popleft()
        return self.behaviour(seen) if self.behaviour is not None else Answer()

    def received(self, region: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if region is None or s.region == region]

    def ids(self, region: str | None = None) -> list[int]:
        """The ``id`` of each JSON body received, in arrival order."""
        with self._lock:
            return [n for r, n in self.numbers if n is not None and (region is None or r == region)]

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that went away mid-answer (a killed worker, a timeout) is part of the tests

    def start(self) -> RecordingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@dataclass
class Hooks:
    """``DeliveryHooks`` that keep what they were told."""

    events: list[tuple[str, ...]] = field(default_factory=list)

    def delivered(self, provider: str | None, region: str, seconds_since_added: float) -> None:
        self.events.append(("delivered", str(provider), region))

    def retried(self, provider: str | None, region: str, reason: str) -> None:
        self.events.append(("retried", str(provider), region, reason))

    def dropped(self, provider: str | None, region: str, status: int) -> None:
        self.events.append(("dropped", str(provider), region, str(status)))

    def dead(self, provider: str | None, region: str, reason: str) -> None:
        self.events.append(("dead", str(provider), region, reason))

    def followup(self, kind: str, outcome: str) -> None:
        self.events.append(("followup", kind, outcome))

    def count(self, kind: str) -> int:
        return sum(1 for event in self.events if event[0] == kind)


class FailFirst:
    """Answers 503 to the first request for each of ``ids``, 200 otherwise."""

    def __init__(self, ids: set[int]) -> None:
        self.ids = set(ids)
        self._lock = threading.Lock()

    def __call__(self, seen: Seen) -> Answer:
        with self._lock:
            if seen.number in self.ids:
                self.ids.discard(seen.number)
                return Answer(503)
        return Answer()


class EgressProcess:
    """A fake egress listener in a process of its own, as Envoy is: the worker under test does not
    share its interpreter (and its GIL) with the server it sends to."""

    def __init__(self, fail_first: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        import subprocess
        import sys

        args = [sys.executable, __file__, ",".join(str(n) for n in sorted(fail_first))]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def ids(self) -> list[int]:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", SEEN_PATH)
            numbers = json.loads(connection.getresponse().read())
        finally:
            connection.close()
        return [n for _, n in numbers if n is not None]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


if __name__ == "__main__":
    import sys

    fail = {int(n) for n in sys.argv[1].split(",") if n} if len(sys.argv) > 1 else set()
    server = RecordingServer(FailFirst(fail)).start()
    print(server.port, flush=True)
    threading.Event().wait()
