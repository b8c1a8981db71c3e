"""sidecar.db: migrations, the pool, the embedded server shared between processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from sidecar import db
from sidecar.config import Settings

VERSIONS = [version for version, _ in db.migration_files()]


def test_migration_files_are_numbered_in_order() -> None:
    assert VERSIONS[:2] == ["0001_directory", "0002_outbox"]
    assert sorted(VERSIONS) == VERSIONS


@pytest.mark.db
async def test_migrate_applies_each_file_once(empty_url: str) -> None:
    assert await db.migrate(empty_url) == VERSIONS
    assert await db.migrate(empty_url) == []
    async with await psycopg.AsyncConnection.connect(empty_url) as conn:
        cur = await conn.execute("SELECT version FROM schema_migrations ORDER BY version")
        assert [row[0] for row in await cur.fetchall()] == VERSIONS


@pytest.mark.db
async def test_concurrent_migrations_apply_everything_exactly_once(empty_url: str) -> None:
    results = await asyncio.gather(*(db.migrate(empty_url) for _ in range(3)))
    assert sorted(results) == [[], [], VERSIONS]


@pytest.mark.db
async def test_open_pool_connects_in_autocommit(db_url: str) -> None:
    pool = await db.open_pool(db_url, max_size=2, timeout=5)
    try:
        async with pool.connection() as conn:
            assert conn.autocommit
            cur = await conn.execute("SELECT count(*) FROM webhook_payload")
            assert await cur.fetchone() == (0,)
    finally:
        await pool.close()


async def test_open_pool_fails_fast_when_the_database_is_unreachable() -> None:
    with pytest.raises(PoolTimeout):
        await db.open_pool("host=/nonexistent port=1", max_size=1, timeout=0.3)


def test_configured_url_wins(tmp_path: Path) -> None:
    settings = Settings(database_url="postgresql://u@db/x", data_dir=tmp_path)
    assert db.database_url(settings) == "postgresql://u@db/x"
    assert not (tmp_path / "pg").exists()


def test_redact_hides_the_password() -> None:
    assert db.redact("postgresql://user:s3cret@db.example:5432/silo") == "postgresql://user:***@db.example:5432/silo"
    assert "s3cret" not in db.redact("host=db user=u password=s3cret")
    assert "s3cret" not in db.redact("postgresql://db/x?password=s3cret")
    assert db.redact("host=/tmp dbname=postgres") == "host=/tmp dbname=postgres"


@pytest.mark.db
@pytest.mark.slow
def test_another_process_reaches_the_same_embedded_server(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    url = db.database_url(settings)  # starts it: this process is its first user
    try:
        probe = (
            "import sys; from pathlib import Path; from sidecar import db, config;"
            "print(db.database_url(config.Settings(data_dir=Path(sys.argv[1]))))"
        )
        other = subprocess.run(
            [sys.executable, "-c", probe, str(settings.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert other.stdout.strip() == url
        # The other process has exited; the server it joined is still ours and still up.
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.embedded_server(settings.data_dir / "pg").cleanup()
    assert not (settings.data_dir / "pg" / "postmaster.pid").exists()
