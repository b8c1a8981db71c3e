"""CLI: ``silo-router deliver`` and ``silo-router outbox stats|list|show|replay|purge``.

``register`` adds them to the main parser (``sidecar/cli.py``); each command is a function
``(args, settings) -> exit status`` like the others there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from typing import Any, TypeVar

from sidecar import db
from sidecar.config import Settings
from sidecar.outbox import admin

T = TypeVar("T")


def register(subparsers: Any, common_parent: argparse.ArgumentParser) -> None:
    """Add ``deliver`` and ``outbox`` to ``subparsers`` (the main parser's); every command takes ``common_parent``."""
    deliver = subparsers.add_parser("deliver", parents=[common_parent], help="deliver stored webhooks to their regions")
    deliver.add_argument("--workers", type=int, default=None, help="concurrent drains (default: delivery.workers)")
    deliver.add_argument("--once", action="store_true", help="deliver what is due now, then exit")
    deliver.set_defaults(run=_deliver)

    outbox = subparsers.add_parser("outbox", help="inspect and repair the outbox")
    commands = outbox.add_subparsers(dest="outbox_command", required=True)
    filters = _filter_parent()
    stats = commands.add_parser("stats", parents=[common_parent, filters], help="rows per state, region, provider")
    stats.set_defaults(run=_stats)

    listing = commands.add_parser("list", parents=[common_parent, filters], help="matching rows, oldest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--after", type=int, default=0, help="start after this id (paging)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=_list)

    show = commands.add_parser("show", parents=[common_parent], help="one row with its stored request")
    show.add_argument("id", type=int)
    show.add_argument("--body", action="store_true", help="print the whole body")
    show.add_argument("--reveal", action="store_true", help="do not mask credentials and follow-up URLs")
    show.set_defaults(run=_show)

    replay = commands.add_parser("replay", parents=[common_parent, filters], help="dead letters back to pending")
    replay.add_argument("--dry-run", action="store_true", help="count, change nothing")
    replay.set_defaults(run=_replay)

    purge = commands.add_parser("purge", parents=[common_parent, filters], help="delete delivered or dead rows")
    purge.add_argument("--dry-run", action="store_true", help="count, change nothing")
    purge.add_argument("--force", action="store_true", help="allow --state pending (loses undelivered webhooks)")
    purge.set_defaults(run=_purge)


def _filter_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("filters")
    group.add_argument("--provider")
    group.add_argument("--region")
    group.add_argument("--mailbox", help="exact name, or a prefix ending in * (github:42*)")
    group.add_argument("--state", choices=admin.STATES)
    group.add_argument("--older-than", type=admin.parse_duration, metavar="AGE", help="e.g. 90s, 15m, 6h, 3d")
    group.add_argument("--newer-than", type=admin.parse_duration, metavar="AGE")
    return parent


def _filters(args: argparse.Namespace) -> admin.Filters:
    return admin.Filters(args.provider, args.region, args.mailbox, args.state, args.older_than, args.newer_than)


# -- deliver ------------------------------------------------------------------------------------


def _deliver(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers is not None and args.workers < 1:
        print("silo-router: --workers must be at least 1", file=sys.stderr)
        return 2
    asyncio.run(_deliver_async(settings, args.workers, args.once))
    return 0


async def _deliver_async(settings: Settings, workers: int | None, once: bool) -> None:
    from sidecar import metrics
    from sidecar.outbox.runner import run_delivery

    dsn = await asyncio.to_thread(db.database_url, settings)
    if once:
        print(f"delivered or settled: {await deliver_once(settings, dsn, workers)}")
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    metrics.wipe_multiprocess_dir()  # a restarted container's old files would be summed again
    metrics.initialise(regions=settings.region_names)
    exporter = metrics.start_exporter(settings.sidecar.metrics)
    try:
        await run_delivery(settings, dsn, stop, workers=workers)
    finally:
        exporter.stop()


async def deliver_once(settings: Settings, dsn: str, workers: int | None = None) -> int:
    """Drain every due queue with ``workers`` workers, then return how many rows were handled."""
    from sidecar.outbox.claims import PostgresDeliveries
    from sidecar.outbox.runner import quiet_http_log, worker_dsn
    from sidecar.outbox.sender import HttpSender
    from sidecar.outbox.worker import Worker, worker_name

    s = settings.delivery
    count = workers or s.workers
    quiet_http_log()
    timeout = settings.sidecar.db_connect_timeout_s
    pool = await db.open_pool(worker_dsn(dsn), max_size=count + 1, timeout=timeout, min_size=1, check=False)
    sender = HttpSender(settings)
    try:
        store = PostgresDeliveries(pool, keep_delivered=s.retention_s > 0)
        stop = asyncio.Event()
        drains = [Worker(store, sender, time.time, s, stop, name=worker_name(i)).drain() for i in range(count)]
        return sum(await asyncio.gather(*drains))
    finally:
        await sender.aclose()
        await pool.close()


# -- outbox --------------------------------------------------------------------------------------


def _with_pool(settings: Settings, work: Callable[[db.Pool], Awaitable[T]]) -> T:
    async def run() -> T:
        dsn = await asyncio.to_thread(db.database_url, settings)
        pool = await db.open_pool(dsn, max_size=2, timeout=settings.sidecar.db_connect_timeout_s, min_size=1)
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


def _stats(args: argparse.Namespace, settings: Settings) -> int:
    filters, now = _filters(args), time.time()

    async def work(pool: db.Pool) -> tuple[list[admin.StateCount], dict[str, int]]:
        return await admin.stats(pool, filters, now), await admin.followup_stats(pool)

    counts, followups = _with_pool(settings, work)
    print(f"{'state':<10} {'region':<12} {'provider':<18} {'rows':>9} {'oldest':>9}")
    for c in counts:
        print(f"{c.state:<10} {c.region:<12} {c.provider or '-':<18} {c.rows:>9} {human(c.oldest_age_s):>9}")
    if not counts:
        print("(no rows)")
    if followups:
        print("follow-ups: " + ", ".join(f"{state} {n}" for state, n in followups.items()))
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    filters, now = _filters(args), time.time()
    found = _with_pool(settings, lambda pool: admin.list_rows(pool, filters, now, args.limit, args.after))
    if args.json:
        for row in found:
            print(json.dumps(asdict(row)))
        return 0
    print(f"{'id':>9} {'state':<9} {'region':<8} {'mailbox':<32} {'tries':>5} {'age':>7} {'next':>7} last")
    for r in found:
        next_in = human(r.next_attempt_in_s) if r.next_attempt_in_s is not None else "-"
        last = " ".join(str(part) for part in (r.last_status, r.last_error) if part is not None) or "-"
        print(
            f"{r.id:>9} {r.state:<9} {r.region_name:<8} {r.mailbox_name:<32} {r.attempts:>5}"
            f" {human(r.age_s):>7} {next_in:>7} {last}"
        )
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    now = time.time()
    detail = _with_pool(settings, lambda pool: admin.show(pool, args.id, now, reveal=args.reveal))
    if detail is None:
        print(f"no outbox row {args.id}", file=sys.stderr)
        return 1
    r = detail.summary
    print(f"id:          {r.id}  ({r.state}, {r.attempts} attempt(s), {detail.replays} replay(s))")
    print(f"mailbox:     {r.mailbox_name} → region {r.region_name}  provider {r.provider or '-'}")
    print(f"integration: {detail.integration_id if detail.integration_id is not None else '-'}")
    print(f"added:       {human(r.age_s)} ago")
    if r.next_attempt_in_s is not None:
        print(f"next:        in {human(r.next_attempt_in_s)}")
    if detail.claimed_by:
        print(f"claimed by:  {detail.claimed_by}")
    print(f"last:        {r.last_status if r.last_status is not None else '-'} {r.last_error or ''}".rstrip())
    if detail.followup is not None:
        f = detail.followup
        print(f"follow-up:   {f['kind']} {f['state']} → {f['url']} ({f['attempts']} attempt(s))")
    print(f"request:     {detail.request_method} {detail.request_path}")
    for name, value in detail.request_headers.items():
        print(f"  {name}: {value}")
    body = detail.request_body
    shown = body if args.body else body[:400]
    print(f"body ({len(body)} bytes):")
    print(shown.decode("utf-8", errors="backslashreplace") + ("" if len(shown) == len(body) else " …"))
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    return _bulk(args, settings, "replayed", admin.replay)


def _purge(args: argparse.Namespace, settings: Settings) -> int:
    async def purge(pool: db.Pool, filters: admin.Filters, now: float, progress: admin.Progress) -> int:
        return await admin.purge(pool, filters, now, progress, allow_pending=args.force)

    return _bulk(args, settings, "purged", purge)


Bulk = Callable[[db.Pool, admin.Filters, float, admin.Progress], Awaitable[int]]


def _bulk(args: argparse.Namespace, settings: Settings, verb: str, operation: Bulk) -> int:
    filters, now = _filters(args), time.time()
    if verb == "replayed" and filters.state not in (None, "dead"):
        print("silo-router: replay takes dead letters only", file=sys.stderr)
        return 2
    if verb == "purged" and filters.state is None:
        print("silo-router: purge needs --state (delivered or dead)", file=sys.stderr)
        return 2
    if args.dry_run:
        counted = replace(filters, state="dead") if verb == "replayed" else filters
        print(f"would be {verb}: {_with_pool(settings, lambda pool: admin.count(pool, counted, now))}")
        return 0

    def progress(done: int, total: int) -> None:
        print(f"{verb} {done}/{total}", file=sys.stderr, flush=True)

    try:
        done = _with_pool(settings, lambda pool: operation(pool, filters, now, progress))
    except ValueError as exc:
        print(f"silo-router: {exc}", file=sys.stderr)
        return 2
    print(f"{verb}: {done}")
    return 0


def human(seconds: float) -> str:
    """``42s``, ``4m12s``, ``3h05m``, ``2d04h``."""
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
