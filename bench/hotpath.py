"""The sidecar's own Python work per request, in process: the servicer fed ProcessingRequests as
Envoy sends them, against a warm in-memory directory, timed in a loop (no gRPC, no Envoy).

The closed-loop numbers include grpcio's per-stream cost (the floor) and the machine's noise;
this isolates what the routing adds on top, and what the no-op's servicer costs for the same
messages, so a change to the hot path can be judged in seconds.

``--evict-mb N`` writes N MiB between two requests and times the requests alone: the CPU caches
are then as cold as in the live sidecar, where Envoy, wrk, PostgreSQL and gRPC's poller run
between two of its requests. The added cost comes out close to the live one measured at equal
load by ``make bench`` with 8 MiB on the third round's Intel machine and 32 MiB on the fourth
round's AMD EPYC (docs/performance.md); without it, it is the tight-loop cost.

    python -m bench.hotpath [--loop uvloop] [--n 20000] [--case jira] [--evict-mb 32]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from bench import webhooks
from bench.webhooks import HttpRequest
from sidecar import metrics
from sidecar.core import Context, Secrets
from sidecar.directory.cache import CachedDirectory
from sidecar.directory.memory import InMemoryDirectory
from sidecar.outbox.memory import InMemoryOutbox
from sidecar.router import Router
from sidecar.wire.noop import NoopProcessor
from sidecar.wire.server import LOOPS, freeze_heap, run
from sidecar.wire.servicer import ExternalProcessor
from sidecar.wire.stream import MemoryStream, Stream

ENVOY_HEADERS = (
    (":scheme", "http"),
    (":authority", "127.0.0.1:10000"),
    ("x-forwarded-proto", "http"),
    ("x-request-id", "5b1d4a4e-4a9e-4c7f-9d2c-3f7d1f0a9b11"),
)
"""What Envoy adds to wrk's request before the ext_proc filter sees it."""


def messages(request: HttpRequest) -> list[ep.ProcessingRequest]:
    """The ProcessingRequests Envoy sends for ``request``: headers, then the buffered body if any."""
    headers = ep.ProcessingRequest()
    http = headers.request_headers
    pairs = [(":method", request.method), (":path", request.path), *ENVOY_HEADERS, *request.headers.items()]
    if request.body:
        pairs.append(("content-length", str(len(request.body))))
    for key, value in pairs:
        http.headers.headers.append(base_pb2.HeaderValue(key=key, raw_value=value.encode("latin-1")))
    http.end_of_stream = not request.body
    wire = [headers]
    if request.body:
        body = ep.ProcessingRequest()
        body.request_body.body = request.body
        body.request_body.end_of_stream = True
        wire.append(body)
    return wire


Process = Callable[[object, Stream], Awaitable[None]]


async def _per_request_us(process: Process, wire: list[ep.ProcessingRequest], n: int, evict: bytearray) -> float:
    """CPU µs per request (process time, so another process on the core does not count)."""

    async def once() -> None:
        await process(None, MemoryStream(wire))

    for _ in range(200):  # warm: metric children, prebuilt answers, the path match cache
        await once()
    if not evict:
        started = time.process_time()
        for _ in range(n):
            await once()
        return (time.process_time() - started) / n * 1e6
    lines = bytes(len(evict[::64]))
    spent = 0
    for round_number in range(n):
        evict[round_number % 64 :: 64] = lines  # one byte in every cache line: evicts what the request left
        started_ns = time.process_time_ns()
        await once()
        spent += time.process_time_ns() - started_ns
    return spent / n / 1e3


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    build: Callable[[], HttpRequest]


CASES = (
    Case("jira_glance (header, JWT + lookup)", webhooks.jira_issue_glance),
    Case("slack_event (body, signature + lookup)", webhooks.slack_event),
    Case("github_push (body, store: in-memory outbox)", webhooks.github_push),
)


async def measure(n: int, rounds: int, only: str = "", evict_mb: int = 0) -> list[tuple[str, float, float]]:
    metrics.initialise(regions=("us", "de"))
    directory = CachedDirectory(InMemoryDirectory.from_data(webhooks.DIRECTORY), observe=metrics.observe_cache)
    secrets = Secrets(slack_signing_secret=webhooks.SLACK_SECRET)
    regions = frozenset({"us", "de"})
    router = Router(directory, InMemoryOutbox(), lambda: Context(now=time.time(), secrets=secrets, regions=regions))
    full, noop = ExternalProcessor(router).Process, NoopProcessor().Process
    freeze_heap()  # as the servers do at startup (wire/server.new_server)
    evict = bytearray(evict_mb << 20)
    rows = []
    for case in CASES:
        if not case.name.startswith(only):
            continue
        wire = messages(case.build())
        noop_us, full_us = [], []
        for _ in range(rounds):  # alternated; the least disturbed round (min): the machine is shared
            noop_us.append(await _per_request_us(noop, wire, n, evict))
            full_us.append(await _per_request_us(full, wire, n, evict))
        rows.append((case.name, min(noop_us), min(full_us)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=LOOPS, default="uvloop")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--case", default="", help="only the cases whose name starts with this")
    parser.add_argument("--evict-mb", type=int, default=0, help="MiB written between requests (cold caches)")
    args = parser.parse_args(argv)
    rows: list[tuple[str, float, float]] = []

    async def main_() -> None:
        rows.extend(await measure(args.n, args.rounds, args.case, args.evict_mb))

    run(main_(), loop=args.loop)
    print("| case | no-op servicer µs | sidecar µs | added µs |")
    print("|---|---|---|---|")
    for name, noop_us, full_us in rows:
        print(f"| {name} | {noop_us:.1f} | {full_us:.1f} | {full_us - noop_us:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
