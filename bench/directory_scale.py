"""Directory lookup cost against directory size: 10k to 1M integrations, cold and warm cache.

Integrations are bulk-loaded with COPY into a schema of their own (row triggers off: a million
change notifications would only measure LISTEN/NOTIFY). Each integration belongs to one
organization, alternately in ``us`` and ``de``. For each size, ``lookups`` random installations
are resolved one after the other through a new pool and a new ``CachedDirectory`` (cold: every
lookup is a query), then again through the same cache (warm: every lookup is a hit).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from sidecar import db
from sidecar.core.lookup import ByExternalId
from sidecar.directory.cache import CachedDirectory
from sidecar.directory.postgres import PostgresDirectory

SCHEMA = f"silo_bench_directory_{os.getpid()}"
CHUNK = 50_000


@dataclass(frozen=True, slots=True)
class DirectoryPoint:
    integrations: int
    load_s: float
    lookups: int
    cold_p50_us: float
    cold_p99_us: float
    cold_mean_us: float
    warm_p50_us: float
    warm_p99_us: float
    warm_mean_us: float


def _pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(len(ordered) * p / 100) - 1))]


async def _copy(
    conn: psycopg.AsyncConnection[object], statement: str, lines: Callable[[int], str], lo: int, hi: int
) -> None:
    async with conn.cursor() as cur, cur.copy(statement.encode()) as copy:
        for start in range(lo, hi, CHUNK):
            await copy.write("".join(lines(i) for i in range(start, min(hi, start + CHUNK))))


async def _load(url: str, lo: int, hi: int) -> None:
    """Integrations, organizations and links with ids ``lo < id <= hi``."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        try:
            await conn.execute("SET session_replication_role = replica")
        except psycopg.Error:
            await conn.rollback()  # not a superuser: the triggers fire, the load is only slower
        await _copy(
            conn,
            "COPY integration (id, provider, external_id, status, metadata) FROM STDIN",
            lambda i: f"{i}\tgithub\t{i}\tactive\t{{}}\n",
            lo + 1,
            hi + 1,
        )
        await _copy(
            conn,
            "COPY organization_mapping (organization_id, slug, region_name) FROM STDIN",
            lambda i: f"{i}\torg-{i}\t{'us' if i % 2 else 'de'}\n",
            lo + 1,
            hi + 1,
        )
        await _copy(
            conn,
            "COPY organization_integration (organization_id, integration_id) FROM STDIN",
            lambda i: f"{i}\t{i}\n",
            lo + 1,
            hi + 1,
        )
        await conn.commit()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("ANALYZE integration, organization_mapping, organization_integration")


async def _timed_lookups(directory: CachedDirectory, ids: Sequence[int]) -> list[float]:
    spent = []
    for integration_id in ids:
        started = time.perf_counter()
        found = await directory.resolve((ByExternalId("github", str(integration_id)),))
        spent.append((time.perf_counter() - started) * 1e6)
        if found.integration is None or not found.regions:
            raise RuntimeError(f"integration {integration_id} not found")
    return spent


async def directory_scale(
    url: str, sizes: Sequence[int], say: Callable[[str], None] = print, lookups: int = 2000
) -> list[DirectoryPoint]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
    scoped = make_conninfo(url, options=f"-c search_path={SCHEMA}")
    points = []
    try:
        await db.migrate(scoped)
        loaded = 0
        rng = random.Random(5)
        for size in sorted(sizes):
            started = time.perf_counter()
            await _load(scoped, loaded, size)
            load_s = time.perf_counter() - started
            loaded = size
            ids = rng.sample(range(1, size + 1), min(lookups, size))
            pool = await db.open_pool(scoped, max_size=2)
            try:
                cache = CachedDirectory(PostgresDirectory(pool), max_entries=max(len(ids), 1))
                cold = await _timed_lookups(cache, ids)
                warm = await _timed_lookups(cache, ids)
            finally:
                await pool.close()
            point = DirectoryPoint(
                size, load_s, len(ids),
                _pct(cold, 50), _pct(cold, 99), statistics.fmean(cold),
                _pct(warm, 50), _pct(warm, 99), statistics.fmean(warm),
            )  # fmt: skip
            points.append(point)
            say(f"  {size:>9,} integrations (loaded in {load_s:5.1f} s): cold p50 {point.cold_p50_us:6.0f} µs "
                f"p99 {point.cold_p99_us:6.0f} µs; warm p50 {point.warm_p50_us:5.1f} µs "
                f"p99 {point.warm_p99_us:5.1f} µs")  # fmt: skip
    finally:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
    return points
