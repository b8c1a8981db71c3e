"""The directory read from PostgreSQL: one query per lookup key, integration and organizations joined."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg
from psycopg.rows import class_row

from sidecar.core.lookup import (
    NOT_FOUND,
    ByExternalId,
    ByIntegrationId,
    ByOrganization,
    Integration,
    LookupKey,
    Organization,
    Resolution,
)
from sidecar.db import Pool
from sidecar.errors import DirectoryUnavailable


@dataclass(frozen=True, slots=True)
class _IntegrationRow:
    """One row per organization with an ACTIVE link and a mapping; org columns NULL when there is none."""

    id: int
    provider: str
    external_id: str
    status: str
    metadata: Mapping[str, Any]
    organization_id: int | None
    slug: str | None
    region_name: str | None


@dataclass(frozen=True, slots=True)
class _MappingRow:
    organization_id: int
    slug: str
    region_name: str


# The parenthesised inner join keeps the integration row when it has no organizations, and drops
# links whose organization has no mapping (no region to route to). Mapping status is not
# consulted: Sentry routes deactivated organizations too (reference §2.3).
_INTEGRATION_SQL: LiteralString = """
SELECT i.id, i.provider, i.external_id, i.status, i.metadata, m.organization_id, m.slug, m.region_name
FROM integration i
LEFT JOIN (organization_integration oi JOIN organization_mapping m ON m.organization_id = oi.organization_id)
       ON oi.integration_id = i.id AND oi.status = 'active'
WHERE {where} AND (NOT %(active_only)s OR i.status = 'active')
ORDER BY m.organization_id
"""
_BY_EXTERNAL_ID = _INTEGRATION_SQL.format(where="i.provider = %(provider)s AND i.external_id = %(external_id)s")
_BY_INTEGRATION_ID = _INTEGRATION_SQL.format(
    where="i.id = %(integration_id)s AND (%(provider)s::text IS NULL OR i.provider = %(provider)s)"
)
_BY_ORGANIZATION: LiteralString = (
    "SELECT organization_id, slug, region_name FROM organization_mapping WHERE organization_id = %(organization_id)s"
)


class PostgresDirectory:
    """``Directory`` over the tables of ``0001_directory.sql``. Takes a pool, never creates one."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def resolve(self, keys: tuple[LookupKey, ...]) -> Resolution:
        """Try ``keys`` in order on one pooled connection; the first that finds something wins."""
        if not keys:
            return NOT_FOUND
        try:
            async with self._pool.connection() as conn:
                for key in keys:
                    found = await _resolve_one(conn, key)
                    if found is not None:
                        return found
        except psycopg.Error as exc:
            raise DirectoryUnavailable(f"directory query failed: {exc.__class__.__name__}: {exc}") from exc
        return NOT_FOUND


def storable(text: str) -> bool:
    """Whether ``text`` can be a PostgreSQL ``text`` value at all: no NUL, and encodable as UTF-8
    (a JSON ``"\\ud800"`` decodes to a lone surrogate). An external id that cannot be stored names
    no integration; sent to the server it would fail the query, read as an outage (503) or a bug
    (500) instead of the plain "not found" it is."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bigint(value: int) -> bool:
    """Ids are bigint: a larger number names nothing (and the server would refuse the parameter)."""
    return -(2**63) <= value < 2**63


async def _resolve_one(conn: psycopg.AsyncConnection[Any], key: LookupKey) -> Resolution | None:
    match key:
        case ByExternalId(provider, external_id, active_only):
            if not (storable(provider) and storable(external_id)):
                return None
            params = {"provider": provider, "external_id": external_id, "active_only": active_only}
            return await _integration(conn, _BY_EXTERNAL_ID, params)
        case ByIntegrationId(integration_id, provider, active_only):
            if not _bigint(integration_id):
                return None
            params = {"integration_id": integration_id, "provider": provider, "active_only": active_only}
            return await _integration(conn, _BY_INTEGRATION_ID, params)
        case ByOrganization(organization_id):
            if not _bigint(organization_id):
                return None
            return await _organization(conn, organization_id)


async def _integration(
    conn: psycopg.AsyncConnection[Any], query: LiteralString, params: Mapping[str, object]
) -> Resolution | None:
    async with conn.cursor(row_factory=class_row(_IntegrationRow)) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    if not rows:
        return None
    first = rows[0]
    integration = Integration(first.id, first.provider, first.external_id, first.status, first.metadata)
    organizations = tuple(
        Organization(row.organization_id, row.slug, row.region_name)
        for row in rows
        if row.organization_id is not None and row.slug is not None and row.region_name is not None
    )
    return Resolution(integration, organizations)


async def _organization(conn: psycopg.AsyncConnection[Any], organization_id: int) -> Resolution | None:
    async with conn.cursor(row_factory=class_row(_MappingRow)) as cur:
        await cur.execute(_BY_ORGANIZATION, {"organization_id": organization_id})
        row = await cur.fetchone()
    if row is None:
        return None
    return Resolution(None, (Organization(row.organization_id, row.slug, row.region_name),))
