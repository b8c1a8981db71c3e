"""``run_delivery``: the delivery workers of one process, with their pool, sender and metrics.

Started by ``silo-router deliver`` and inside ``silo-router up``. Any number of processes on any
number of hosts may run it against one database: claims keep them apart (``claims.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sidecar import db, metrics
from sidecar.config import Settings
from sidecar.outbox.base import Deliveries
from sidecar.outbox.claims import PostgresDeliveries
from sidecar.outbox.sender import HttpSender
from sidecar.outbox.worker import Clock, DeliveryHooks, Worker, worker_name

log = logging.getLogger(__name__)

BACKLOG_EVERY_S = 15.0
REGIONS_EVERY_S = 30.0
BacklogReport = Callable[[str, int, float], None]
"""(region, pending rows, age of the oldest in seconds)."""


def quiet_http_log() -> None:
    """httpx logs every request at INFO: one line per delivery is noise, the outcome is in metrics."""
    http_log = logging.getLogger("httpx")
    if http_log.level == logging.NOTSET:
        http_log.setLevel(logging.WARNING)


def worker_dsn(dsn: str) -> str:
    """``dsn`` with ``synchronous_commit=off``: the worker's writes do not wait for the WAL flush.

    A database crash may then forget the last few outcomes (well under a second's worth): those
    rows are pending again and delivered again, which at-least-once delivery allows anyway, and
    the wait saved is most of a row's cost. The request path's enqueue keeps the default: its
    commit is what a 202 promises.
    """
    options = conninfo_to_dict(dsn).get("options") or ""
    return make_conninfo(dsn, options=f"{options} -c synchronous_commit=off".strip())


class PrometheusHooks:
    """``DeliveryHooks`` onto ``sidecar.metrics`` (label rules live there)."""

    def delivered(self, provider: str | None, region: str, seconds_since_added: float) -> None:
        metrics.record_delivered(provider, region)

    def retried(self, provider: str | None, region: str, reason: str) -> None:
        metrics.record_retried(provider, region)

    def dropped(self, provider: str | None, region: str, status: int) -> None:
        metrics.record_dropped(provider, region, f"http_{status}")

    def dead(self, provider: str | None, region: str, reason: str) -> None:
        metrics.record_dead(provider, region, reason)

    def followup(self, kind: str, outcome: str) -> None:
        log.debug("follow-up %s: %s", kind, outcome)


async def run_delivery(
    settings: Settings,
    dsn: str,
    stop: asyncio.Event,
    *,
    workers: int | None = None,
    clock: Clock = time.time,
    hooks: DeliveryHooks | None = None,
    report_backlog: BacklogReport = metrics.set_backlog,
) -> None:
    """Run ``workers`` (default ``delivery.workers``) until ``stop`` is set; sends in flight finish."""
    s = settings.delivery
    count = workers or s.workers
    quiet_http_log()
    # One connection per worker, one for the backlog sampler, one spare for releases. No check on
    # checkout: it would double the round trips of every row, and a worker retries failures anyway.
    timeout = settings.sidecar.db_connect_timeout_s
    pool = await db.open_pool(worker_dsn(dsn), max_size=count + 2, timeout=timeout, min_size=1, check=False)
    sender = HttpSender(settings)
    store = PostgresDeliveries(pool, keep_delivered=s.retention_s > 0)
    chosen_hooks = hooks or PrometheusHooks()
    try:
        running = [
            Worker(store, sender, clock, s, stop, name=worker_name(index), hooks=chosen_hooks).run()
            for index in range(count)
        ]
        log.info("delivery: %d worker(s), egress %s", count, settings.envoy.egress)
        background = [sample_backlog(store, clock, settings, stop, report_backlog)]
        if settings.envoy.mode == "xds":
            await refresh_region_hosts(pool, sender)  # before the first send: the Host of each region
            background.append(follow_region_hosts(pool, sender, stop))
        await asyncio.gather(*running, *background)
    finally:
        await sender.aclose()
        await pool.close()


async def refresh_region_hosts(pool: db.Pool, sender: HttpSender) -> None:
    """xds mode: region addresses live in the region table, not in the settings file."""
    from sidecar.regions import list_regions

    try:
        rows = await list_regions(pool)
    except Exception as exc:  # keep the last known hosts; Envoy routes regardless
        log.warning("cannot read the region table: %s", exc.__class__.__name__)
        return
    sender.set_region_hosts({row.name: row.address for row in rows if row.address})


async def follow_region_hosts(pool: db.Pool, sender: HttpSender, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REGIONS_EVERY_S)
        await refresh_region_hosts(pool, sender)


async def sample_backlog(
    store: Deliveries, clock: Clock, settings: Settings, stop: asyncio.Event, report: BacklogReport
) -> None:
    """Every ``BACKLOG_EVERY_S``: pending rows and the oldest one's age per region (0 for none)."""
    while not stop.is_set():
        try:
            now = clock()
            seen = set()
            for backlog in await store.backlog():
                seen.add(backlog.region)
                oldest = backlog.oldest_date_added
                report(backlog.region, backlog.pending, now - oldest if oldest is not None else 0.0)
            for region in settings.regions:
                if region not in seen:
                    report(region, 0, 0.0)
        except Exception as exc:  # a sample missed is not worth stopping delivery for
            log.warning("backlog sample failed: %s", exc.__class__.__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), BACKLOG_EVERY_S)
