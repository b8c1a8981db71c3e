"""Sidecar CPU per stored webhook on the store-and-202 path, in process, against a real PostgreSQL.

``concurrency`` tasks each loop ``enqueue`` of the bench's GitHub push (2 KB, one region) through
``BatchingOutbox`` on the product's pool (``db.open_pool`` with ``sidecar_server``'s arguments),
``n`` webhooks a round. Reported per webhook: this process's CPU (``time.process_time``: every
thread, so the pool's too), wall time, the mean batch size (``batched / batches``) and, for the
embedded server, PostgreSQL's CPU (postmaster and backends, from ``/proc``).

``--work-us`` burns that much CPU in each task before every enqueue, blocking the loop as the
rest of a request (gRPC, routing) does in the live sidecar: webhooks then arrive spread out
instead of all at once, and batches shrink to what a CPU-bound sidecar actually sees. It is
subtracted from the reported CPU.

``--baseline FILE`` alternates rounds with another ``BatchingOutbox`` (a copy of an older
``sidecar/outbox/batching.py``) on a pool with ``--baseline-pool-check`` (the old default: on),
so a change is compared side by side on the same database and the same noisy machine.

    python -m bench.outbox_cpu [--n 3000] [--concurrency 32] [--rounds 5] [--work-us 0]
                               [--loop uvloop] [--baseline /tmp/batching_orig.py]

Uses ``BENCH_DATABASE_URL`` (a private schema in it) when set, else an embedded pgserver in a
temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg

from bench import stack, webhooks
from sidecar import db
from sidecar.core.decision import Store
from sidecar.core.mailbox import Mailbox
from sidecar.core.request import Request
from sidecar.outbox.batching import BatchingOutbox
from sidecar.wire.server import LOOPS, run

ENVOY_HEADERS = (
    (":scheme", "http"),
    (":authority", "127.0.0.1:10000"),
    ("x-forwarded-proto", "http"),
    ("x-request-id", "5b1d4a4e-4a9e-4c7f-9d2c-3f7d1f0a9b11"),
)
"""What Envoy adds to wrk's request before the ext_proc filter sees it (as ``bench.hotpath``)."""


class _Batching(Protocol):
    batches: int
    batched: int

    async def enqueue(self, decision: Store, request: Request) -> list[int]: ...

    async def aclose(self) -> None: ...


@dataclass
class Variant:
    name: str
    outbox_class: Any
    pool_check: bool | None
    """None: ``db.open_pool``'s default, as ``sidecar_server`` gets it."""
    max_wait_s: float | None = None
    """None: the class's default."""
    cpu_us: list[float] = field(default_factory=list)
    wall_us: list[float] = field(default_factory=list)
    db_us: list[float] = field(default_factory=list)
    batch: list[float] = field(default_factory=list)


class NullOutbox:
    """Answers at once, writes nothing: what the harness itself costs (the pauses, the clients)."""

    def __init__(self, pool: db.Pool, **_: Any) -> None:
        self.batches = 0
        self.batched = 0

    async def enqueue(self, decision: Store, request: Request) -> list[int]:
        self.batches += 1
        self.batched += 1
        return [0]

    async def aclose(self) -> None:
        pass


def github_push() -> tuple[Store, Request]:
    """The bench's ``full_store`` webhook as the router hands it to the outbox."""
    http = webhooks.github_push()
    headers = {
        ":method": http.method,
        ":path": http.path,
        **dict(ENVOY_HEADERS),
        **{k.lower(): v for k, v in http.headers.items()},
        "content-length": str(len(http.body)),
    }
    request = Request(http.method, http.path, "", headers, http.body)
    mailbox = Mailbox("github", "10", bucket_key=7, event_type="push", always_bucket=True)
    return Store("github", ("us",), mailbox, 10, "stored"), request


def _load_class(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"baseline_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.BatchingOutbox


def _ticks(pid: int) -> int:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    return 0


def _db_ticks(postmaster: int | None) -> int:
    """CPU ticks of the postmaster and its children (backends, walwriter, checkpointer…)."""
    if postmaster is None:
        return 0
    total = _ticks(postmaster)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
                if int(stat[1]) == postmaster:
                    total += int(stat[11]) + int(stat[12])
    return total


def _spin(us: float) -> None:
    end = time.process_time() + us / 1e6
    while time.process_time() < end:
        pass


async def _round(
    outbox: _Batching, n: int, concurrency: int, work_us: float, think_s: float, postmaster: int | None
) -> tuple[float, float, float, float]:
    decision, request = github_push()
    per_task = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]

    async def client(count: int) -> None:
        for _ in range(count):
            if think_s:
                await asyncio.sleep(random.expovariate(1 / think_s))
            if work_us:
                _spin(work_us)
            await outbox.enqueue(decision, request)

    batches, batched = outbox.batches, outbox.batched
    ticks = _db_ticks(postmaster)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(count) for count in per_task))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    db_s = (_db_ticks(postmaster) - ticks) / os.sysconf("SC_CLK_TCK")
    mean_batch = (outbox.batched - batched) / max(1, outbox.batches - batches)
    return cpu / n * 1e6 - work_us, wall / n * 1e6, db_s / n * 1e6, mean_batch


async def measure(url: str, postmaster: int | None, variants: list[Variant], args: argparse.Namespace) -> None:
    pools = {}
    outboxes: dict[str, _Batching] = {}
    try:
        for variant in variants:
            check = {} if variant.pool_check is None else {"check": variant.pool_check}
            pool = pools[variant.name] = await db.open_pool(url, max_size=8, timeout=5.0, **check)
            wait = {} if variant.max_wait_s is None else {"max_wait_s": variant.max_wait_s}
            outboxes[variant.name] = variant.outbox_class(pool, **wait)
            await _round(outboxes[variant.name], min(args.n, 500), args.concurrency, 0, 0, None)  # warm
        for number in range(args.rounds):
            order = variants if number % 2 == 0 else variants[::-1]  # A B, B A, …: drift hits both
            for variant in order:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute("TRUNCATE webhook_payload")
                    await conn.execute("CHECKPOINT")
                cpu, wall, db_us, batch = await _round(
                    outboxes[variant.name], args.n, args.concurrency, args.work_us, args.think_ms / 1000, postmaster
                )
                variant.cpu_us.append(cpu)
                variant.wall_us.append(wall)
                variant.db_us.append(db_us)
                variant.batch.append(batch)
                print(
                    f"round {number + 1} {variant.name:>8}: {cpu:7.1f} µs CPU/webhook, {wall:7.1f} µs wall,"
                    f" PostgreSQL {db_us:6.1f} µs, mean batch {batch:5.1f}",
                    flush=True,
                )
    finally:
        for name, outbox in outboxes.items():
            await outbox.aclose()
            await pools[name].close()


@contextlib.contextmanager
def database() -> Iterator[stack.Database]:
    with tempfile.TemporaryDirectory(prefix="outbox-cpu-") as workdir, stack.database(Path(workdir)) as database:
        yield database


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outbox_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="webhooks per round")
    parser.add_argument("--concurrency", type=int, default=32, help="enqueues in flight")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work-us", type=float, default=0.0, help="CPU burnt before each enqueue")
    parser.add_argument(
        "--think-ms", type=float, default=0.0, help="mean pause (exponential) before each enqueue, no CPU"
    )
    parser.add_argument("--null", action="store_true", help="also run NullOutbox: the harness's own cost")
    parser.add_argument("--max-wait-ms", type=float, help="the current variant's max_wait_s, in ms")
    parser.add_argument("--loop", choices=LOOPS, default="uvloop")
    parser.add_argument("--baseline", type=Path, help="a batching.py to compare with")
    parser.add_argument("--baseline-pool-check", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--pool-check", action=argparse.BooleanOptionalAction, help="the current variant's (default: open_pool's)"
    )
    args = parser.parse_args(argv)
    max_wait_s = None if args.max_wait_ms is None else args.max_wait_ms / 1000
    variants = [Variant("current", BatchingOutbox, args.pool_check, max_wait_s)]
    if args.baseline:
        variants.insert(0, Variant("baseline", _load_class(args.baseline), args.baseline_pool_check))
    if args.null:
        variants.append(Variant("null", NullOutbox, None))

    with database() as database_:

        async def main_() -> None:
            await db.migrate(database_.url)
            await measure(database_.url, database_.postmaster, variants, args)

        run(main_(), loop=args.loop)
    print(
        f"\n{args.n} webhooks × {args.rounds} rounds, {args.concurrency} in flight,"
        f" {args.work_us:g} µs of other work each, {args.loop}; medians:"
    )
    print("| variant | sidecar CPU µs/webhook | wall µs/webhook | PostgreSQL CPU µs/webhook | mean batch |")
    print("|---|---|---|---|---|")
    for v in variants:
        print(
            f"| {v.name} | {statistics.median(v.cpu_us):.1f} | {statistics.median(v.wall_us):.1f}"
            f" | {statistics.median(v.db_us):.1f} | {statistics.median(v.batch):.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
