"""Databases for the integration tests: a private, migrated schema with the test directory loaded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import loaded_schema

from sidecar import db
from sidecar.directory.loader import load_directory

DIRECTORY = {
    "organizations": [
        {"id": 1, "slug": "acme", "region": "us"},
        {"id": 2, "slug": "globex", "region": "de"},
        {"id": 3, "slug": "initech", "region": "us"},
    ],
    "integrations": [
        {"id": 10, "provider": "github", "external_id": "4711", "status": "active", "organizations": [1]},
        {"id": 11, "provider": "github", "external_id": "4712", "status": "active", "organizations": [2, 3]},
        {"id": 12, "provider": "github", "external_id": "4713", "status": "active",
         "organizations": [{"id": 1, "status": "disabled"}]},
        {"id": 20, "provider": "slack", "external_id": "T0ACME", "status": "active", "organizations": [1]},
        {"id": 21, "provider": "slack", "external_id": "T0GLOBEX", "status": "active", "organizations": [2]},
        {"id": 30, "provider": "discord", "external_id": "81384788765712384", "status": "active", "organizations": [2]},
        {"id": 40, "provider": "jira", "external_id": "jira:acme-client-key", "status": "active", "organizations": [1],
         "metadata": {"shared_secret": "jira-shared-secret-for-tests"}},
    ],
}  # fmt: skip


def prepare(url: str) -> None:
    async def run() -> None:
        await db.migrate(url)
        await load_directory(url, DIRECTORY)

    asyncio.run(run())


@pytest.fixture(scope="session")
def edge_database(server_url: str) -> Iterator[str]:
    """A schema of its own (other tests truncate theirs), migrated and loaded with DIRECTORY."""
    with loaded_schema(server_url, "edge", DIRECTORY) as url:
        yield url


@pytest.fixture
def private_database(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A PostgreSQL server of its own, for a test that stops it: (url, stop)."""
    server = db.embedded_server(tmp_path / "pg")
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            server.cleanup()

    try:
        url = server.get_uri()
        prepare(url)
        yield url, stop
    finally:
        stop()
