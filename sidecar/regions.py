"""The ``region`` table: where each region's upstream is, for ``envoy.mode: xds``.

``silo-router region add/remove/list`` write and read it; the sidecar's ADS server
(``xds/ads.py``) turns it into Envoy clusters and routes and is told of every change by the
directory's LISTEN/NOTIFY channel (the table's trigger). Writes go through the directory loader's
upsert, so adding a region that is already there with the same address notifies nobody.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import psycopg
from psycopg_pool import AsyncConnectionPool

from sidecar.config import Address
from sidecar.db import Pool
from sidecar.directory.loader import REGION_NAME, DirectoryData, RegionRow, load_directory
from sidecar.errors import ConfigError, DirectoryUnavailable

MAX_PORT = 65_535

Target = Pool | str
"""A pool (the sidecar) or a DSN (the CLI)."""
Added = Literal["added", "updated", "unchanged"]


class RegionError(ConfigError):
    code = "region_error"


def region_row(name: str, address: str) -> RegionRow:
    """What ``region add`` accepts: a region name as everywhere else, and ``host:port`` with a port
    Envoy takes. (A row written with SQL skips this; Envoy then rejects the update and keeps the
    last good one, which ``silo_router_xds_nacks_total`` shows.)"""
    if not REGION_NAME.match(name):
        raise RegionError(f"bad region name {name!r} (letters, digits, - and _ only)")
    parsed = Address.parse(address, f"region {name}")
    if not 0 < parsed.port <= MAX_PORT:
        raise RegionError(f"region {name}: port {parsed.port} is not between 1 and {MAX_PORT}")
    return RegionRow(name, str(parsed))


async def add_region(target: Target, name: str, address: str) -> Added:
    """Insert the region or move it to ``address``."""
    report = await load_directory(target, DirectoryData(regions=(region_row(name, address),)))
    counts = report.regions
    return "added" if counts.inserted else "updated" if counts.updated else "unchanged"


async def seed_regions(target: Target, regions: Mapping[str, Address]) -> None:
    """Upsert the settings file's regions (xds mode starts from what a static config routed to)."""
    rows = tuple(RegionRow(name, str(address)) for name, address in sorted(regions.items()))
    if rows:
        await load_directory(target, DirectoryData(regions=rows))


async def remove_region(target: Target, name: str) -> tuple[bool, int]:
    """Delete the region: (whether it existed, organizations still mapped to it).

    Those organizations' webhooks get the core's unknown-region answer from then on (Sentry's
    CellResolutionError: a 500 the provider retries), until they are moved or the region returns.
    """
    async with _connection(target) as conn, conn.transaction():
        deleted = await conn.execute("DELETE FROM region WHERE name = %s", (name,))
        cur = await conn.execute("SELECT count(*) FROM organization_mapping WHERE region_name = %s", (name,))
        row = await cur.fetchone()
    return deleted.rowcount > 0, int(row[0]) if row else 0


async def list_regions(target: Target) -> list[RegionRow]:
    async with _connection(target) as conn:
        cur = await conn.execute("SELECT name, address FROM region ORDER BY name")
        return [RegionRow(str(name), address) for name, address in await cur.fetchall()]


@contextlib.asynccontextmanager
async def _connection(target: Target) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    try:
        if isinstance(target, AsyncConnectionPool):
            async with target.connection() as conn:
                yield conn
        else:
            async with await psycopg.AsyncConnection.connect(target, autocommit=True) as conn:
                yield conn
    except psycopg.Error as exc:
        raise DirectoryUnavailable(f"region table: {exc.__class__.__name__}: {exc}") from exc
