"""listen_for_changes against a real PostgreSQL: invalidation, reconnection, stop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import psycopg
import pytest

from sidecar import db
from sidecar.core.lookup import ByIntegrationId
from sidecar.directory.cache import CachedDirectory
from sidecar.directory.listen import APPLICATION_NAME, listen_for_changes
from sidecar.directory.loader import load_directory
from sidecar.directory.postgres import PostgresDirectory

pytestmark = pytest.mark.db

DATA = {
    "organizations": [{"id": 1, "slug": "acme", "region": "us"}],
    "integrations": [{"id": 10, "provider": "github", "external_id": "4711", "organizations": [1]}],
}


@dataclass
class Spy:
    invalidations: int = 0
    listening: int = 0
    listening_event: asyncio.Event = field(default_factory=asyncio.Event)

    def invalidate_all(self) -> None:
        self.invalidations += 1

    def on_listening(self) -> None:
        self.listening += 1
        self.listening_event.set()


async def eventually(check: Callable[[], Awaitable[bool] | bool], within_s: float = 2.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def listening(db_url: str) -> AsyncIterator[tuple[Spy, asyncio.Event, asyncio.Task[None]]]:
    spy, stop = Spy(), asyncio.Event()
    task = asyncio.create_task(
        listen_for_changes(db_url, spy, stop, poll_s=0.1, backoff_s=0.05, on_listening=spy.on_listening)
    )
    await asyncio.wait_for(spy.listening_event.wait(), 5)
    yield spy, stop, task
    stop.set()
    await asyncio.wait_for(task, 2)


async def listener_pids(conn: psycopg.AsyncConnection[tuple[int]]) -> list[int]:
    cur = await conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (APPLICATION_NAME,))
    return [row[0] for row in await cur.fetchall()]


async def test_a_row_change_invalidates_the_cache_within_a_second(db_url: str, pool: db.Pool) -> None:
    await load_directory(pool, DATA)
    cache, stop = CachedDirectory(PostgresDirectory(pool)), asyncio.Event()
    task = asyncio.create_task(listen_for_changes(db_url, cache, stop, poll_s=0.1))
    await eventually(lambda: cache.invalidations >= 1)  # the flush after LISTEN
    assert (await cache.resolve((ByIntegrationId(10),))).integration.status == "active"  # type: ignore[union-attr]
    assert len(cache) == 1

    async with pool.connection() as conn:
        await conn.execute("UPDATE integration SET status = 'disabled' WHERE id = 10")
    started = time.monotonic()
    await eventually(lambda: len(cache) == 0, within_s=1.0)
    assert time.monotonic() - started < 1.0
    assert (await cache.resolve((ByIntegrationId(10),))).integration.status == "disabled"  # type: ignore[union-attr]
    stop.set()
    await asyncio.wait_for(task, 2)


@pytest.mark.parametrize(
    "change",
    [
        "INSERT INTO region (name) VALUES ('eu')",
        "UPDATE organization_mapping SET region_name = 'de'",
        "DELETE FROM organization_integration",
        "TRUNCATE organization_mapping",
    ],
)
async def test_every_kind_of_change_notifies(
    pool: db.Pool, listening: tuple[Spy, asyncio.Event, asyncio.Task[None]], change: str
) -> None:
    await load_directory(pool, DATA)
    spy, _, _ = listening
    before = spy.invalidations
    async with pool.connection() as conn:
        await conn.execute(change)
    await eventually(lambda: spy.invalidations > before)


async def test_notification_payload_names_the_table_and_ids(db_url: str, pool: db.Pool) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("LISTEN silo_directory")
        await load_directory(pool, DATA)
        async with pool.connection() as writer:
            await writer.execute("UPDATE integration SET external_id = '9' WHERE id = 10")
        payloads = [n.payload async for n in conn.notifies(timeout=0.5)]
    decoded = [json.loads(p) for p in payloads]
    assert {
        "table": "integration",
        "op": "INSERT",
        "ids": {"id": 10, "provider": "github", "external_id": "4711"},
    } in decoded
    assert {
        "table": "integration",
        "op": "UPDATE",
        "ids": {"id": 10, "provider": "github", "external_id": "9"},
        "old_ids": {"id": 10, "provider": "github", "external_id": "4711"},
    } in decoded


async def test_reconnects_relistens_and_flushes_after_the_connection_is_killed(
    pool: db.Pool, listening: tuple[Spy, asyncio.Event, asyncio.Task[None]]
) -> None:
    spy, _, task = listening
    async with pool.connection() as conn:
        [old_pid] = await listener_pids(conn)
        await conn.execute("SELECT pg_terminate_backend(%s)", (old_pid,))
        await eventually(lambda: spy.listening >= 2, within_s=5)
        [new_pid] = await listener_pids(conn)
    assert new_pid != old_pid
    assert not task.done()
    flushed = spy.invalidations
    assert flushed >= 2  # the flush of each LISTEN
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO region (name) VALUES ('eu')")
    await eventually(lambda: spy.invalidations > flushed)


async def test_unreachable_database_keeps_retrying_until_stopped(caplog: pytest.LogCaptureFixture) -> None:
    spy, stop = Spy(), asyncio.Event()
    task = asyncio.create_task(
        listen_for_changes("host=/nonexistent port=1", spy, stop, backoff_s=0.01, max_backoff_s=0.05)
    )
    await eventually(lambda: sum("reconnecting" in r.getMessage() for r in caplog.records) >= 3)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert spy.listening == 0
    # an outage keeps the cache: cached routes keep working while the database is down
    assert spy.invalidations == 0


async def test_stop_ends_the_listener_promptly(listening: tuple[Spy, asyncio.Event, asyncio.Task[None]]) -> None:
    _, stop, task = listening
    stop.set()
    started = time.monotonic()
    await asyncio.wait_for(task, 1)
    assert time.monotonic() - started < 0.5
