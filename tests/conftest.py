"""Shared fixtures: one PostgreSQL for the whole session (DATABASE_URL, else embedded pgserver).

With DATABASE_URL the tests work in a private schema (search_path) that is dropped at the end,
so they never touch the tables of the database they are pointed at.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from sidecar import db


def _with_schema(url: str, schema: str) -> str:
    return make_conninfo(url, options=f"-c search_path={schema}")


def _create_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))


def _drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server itself (its default database): DATABASE_URL, or a pgserver stopped at the end."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    server = db.embedded_server(tmp_path_factory.mktemp("pgserver") / "pg")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A database URL for the session, not yet migrated (a private schema under DATABASE_URL)."""
    if not os.environ.get("DATABASE_URL"):
        yield server_url
        return
    schema = f"silo_test_{os.getpid()}"
    _create_schema(server_url, schema)
    try:
        yield _with_schema(server_url, schema)
    finally:
        _drop_schema(server_url, schema)


@pytest.fixture(scope="session")
async def migrated_url(database_url: str) -> str:
    await db.migrate(database_url)
    return database_url


@pytest.fixture
async def db_url(migrated_url: str) -> str:
    """The migrated schema with every table emptied (ids restart at 1)."""
    async with await psycopg.AsyncConnection.connect(migrated_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'schema_migrations'"
        )
        tables = [sql.Identifier(row[0]) for row in await cur.fetchall()]
        if tables:
            await conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(sql.SQL(", ").join(tables)))
    return migrated_url


@pytest.fixture
def empty_url(server_url: str) -> Iterator[str]:
    """A brand-new empty schema (for migration tests), dropped afterwards."""
    schema = f"silo_empty_{uuid.uuid4().hex[:12]}"
    _create_schema(server_url, schema)
    try:
        yield _with_schema(server_url, schema)
    finally:
        _drop_schema(server_url, schema)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[db.Pool]:
    pool = await db.open_pool(db_url, max_size=4, timeout=5.0)
    try:
        yield pool
    finally:
        await pool.close()
