"""PostgresDirectory against a real PostgreSQL (the shared cases run in test_memory.py)."""

from __future__ import annotations

import pytest
from psycopg_pool import AsyncConnectionPool

from sidecar import db
from sidecar.core.lookup import NOT_FOUND, ByExternalId, ByIntegrationId, Integration, Organization, Resolution
from sidecar.directory.loader import load_directory
from sidecar.directory.postgres import PostgresDirectory
from sidecar.errors import DirectoryUnavailable

pytestmark = pytest.mark.db

DATA = {
    "organizations": [{"id": 1, "slug": "acme", "region": "us"}, {"id": 2, "slug": "globex", "region": "de"}],
    "integrations": [
        {"id": 10, "provider": "github", "external_id": "4711", "organizations": [1, 2], "metadata": {"a": [1]}}
    ],
}


async def test_resolves_integration_with_metadata_and_organizations(pool: db.Pool) -> None:
    await load_directory(pool, DATA)
    found = await PostgresDirectory(pool).resolve((ByExternalId("github", "4711"),))
    assert found == Resolution(
        Integration(10, "github", "4711", "active", {"a": [1]}),
        (Organization(1, "acme", "us"), Organization(2, "globex", "de")),
    )
    assert found.regions == ("de", "us")


async def test_sees_changes_at_once(pool: db.Pool) -> None:
    await load_directory(pool, DATA)
    directory = PostgresDirectory(pool)
    async with pool.connection() as conn:
        await conn.execute("UPDATE organization_integration SET status = 'disabled' WHERE organization_id = 2")
        await conn.execute("UPDATE integration SET status = 'disabled'")
    found = await directory.resolve((ByIntegrationId(10),))
    assert found.organizations == (Organization(1, "acme", "us"),)
    assert await directory.resolve((ByIntegrationId(10, active_only=True),)) == NOT_FOUND


async def test_unreachable_database_is_directory_unavailable() -> None:
    pool: db.Pool = AsyncConnectionPool("host=/nonexistent port=1 connect_timeout=1", open=False, timeout=0.3)
    await pool.open(wait=False)
    try:
        with pytest.raises(DirectoryUnavailable):
            await PostgresDirectory(pool).resolve((ByIntegrationId(10),))
    finally:
        await pool.close()


async def test_closed_pool_is_directory_unavailable(db_url: str) -> None:
    pool = await db.open_pool(db_url, max_size=1, timeout=2)
    await pool.close()
    with pytest.raises(DirectoryUnavailable):
        await PostgresDirectory(pool).resolve((ByIntegrationId(10),))
