"""BatchingOutbox's parameters and connections: what reaches ``webhook_payload`` byte for byte
through its own array framing, and what happens to a connection that dies between batches."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from sidecar import db
from sidecar.core.decision import Store
from sidecar.core.mailbox import Mailbox
from sidecar.core.request import Request
from sidecar.errors import OutboxUnavailable
from sidecar.outbox.batching import BatchingOutbox
from sidecar.outbox.store import payload_headers

pytestmark = pytest.mark.db

BODY = b'{"name":"caf\xc3\xa9"}\r\n\xff\xfe\x00 trailing  '  # not valid UTF-8, with a NUL


def request(n: int, body: bytes | None = BODY) -> Request:
    headers = {":path": "/x", ":method": "POST", "x-n": str(n), "x-name": 'Zoë "quoted" \\ ☃', "content-type": "x/y"}
    return Request.from_target("POST", f"/extensions/gitea/webhook/é/?n={n}&q=%20", headers, body)


def store(regions: tuple[str, ...], integration_id: int | None) -> Store:
    mailbox = Mailbox("gitea", str(integration_id) if integration_id is not None else "org", always_bucket=True)
    return Store("gitea", regions, mailbox, integration_id, "test")


async def rows(url: str) -> dict[int, dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM webhook_payload")
        return {row["id"]: row for row in await cur.fetchall()}


async def test_every_column_round_trips_through_one_batch(pool: db.Pool, db_url: str) -> None:
    outbox = BatchingOutbox(pool, max_wait_s=0.01)
    cases = [
        (store(("us",), 10), request(1)),
        (store(("de", "eu", "us"), None), request(2)),  # no integration: NULL in the bigint[] column
        (store(("de", "us"), 2**62), request(3, body=None)),  # no body: stored as empty bytes
        (store(("eu",), 11), request(4, body=b"")),
    ]
    results = await asyncio.gather(*(outbox.enqueue(decision, req) for decision, req in cases))
    assert outbox.batches == 1
    stored = await rows(db_url)
    assert len(stored) == 7
    for (decision, req), ids in zip(cases, results, strict=True):
        assert [stored[i]["region_name"] for i in ids] == list(decision.regions)
        for i in ids:
            row = stored[i]
            assert row["integration_id"] == decision.integration_id
            assert row["mailbox_name"] == decision.mailbox.name()
            assert row["provider"] == "gitea"
            assert row["request_method"] == "POST"
            assert row["request_path"] == req.full_path
            assert row["request_headers"] == payload_headers(req)  # pseudo-headers left out
            assert bytes(row["request_body"]) == (req.body or b"")
            assert row["state"] == "pending"


async def test_ids_follow_input_order_across_webhooks_of_different_region_counts(pool: db.Pool) -> None:
    outbox = BatchingOutbox(pool, max_wait_s=0.01)
    regions = [("a",), ("a", "b", "c"), ("a", "b"), ("a",), ("a", "b", "c", "d")]
    results = await asyncio.gather(*(outbox.enqueue(store(r, 10), request(n)) for n, r in enumerate(regions)))
    assert outbox.batches == 1
    assert [len(ids) for ids in results] == [len(r) for r in regions]
    flat = [i for ids in results for i in ids]
    assert flat == sorted(flat) and len(set(flat)) == len(flat)


async def _terminate_the_one_connection(pool: db.Pool, url: str) -> None:
    async with pool.connection() as conn:
        pid = conn.info.backend_pid
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def test_a_connection_killed_right_after_use_fails_one_batch_then_the_pool_replaces_it(db_url: str) -> None:
    """Recently used connections are handed out without a test (CheckWhenIdle): the batch on a
    dead one fails as a whole (503, the provider retries), and the next batch gets a new one."""
    pool = await db.open_pool(db_url, max_size=1, min_size=1, check_idle_s=3600)
    try:
        outbox = BatchingOutbox(pool)
        await outbox.enqueue(store(("us",), 10), request(1))  # the outbox has used the connection
        await _terminate_the_one_connection(pool, db_url)
        with pytest.raises(OutboxUnavailable):
            await outbox.enqueue(store(("us",), 10), request(2))
        ids = await outbox.enqueue(store(("us",), 10), request(3))
        assert list((await rows(db_url)).keys()) == [1, *ids]
    finally:
        await pool.close()


async def test_a_connection_that_died_while_idle_is_replaced_before_any_batch_sees_it(db_url: str) -> None:
    pool = await db.open_pool(db_url, max_size=1, min_size=1, check_idle_s=0)  # idle for longer than 0 s
    try:
        outbox = BatchingOutbox(pool)
        await outbox.enqueue(store(("us",), 10), request(1))
        await _terminate_the_one_connection(pool, db_url)
        assert len(await outbox.enqueue(store(("us",), 10), request(2))) == 1
    finally:
        await pool.close()


class FakeConnection:
    """What ``AsyncConnectionPool.check_connection`` touches: autocommit and execute."""

    def __init__(self) -> None:
        self.autocommit = True
        self.broken = False
        self.dead = False
        self.checks = 0

    async def execute(self, query: str) -> None:
        self.checks += 1
        if self.dead:
            raise psycopg.OperationalError("server closed the connection")


async def test_check_when_idle_tests_only_connections_unused_for_longer_than_idle_s() -> None:
    now = [100.0]
    check = db.CheckWhenIdle(idle_s=1.0, clock=lambda: now[0])
    conn, other = FakeConnection(), FakeConnection()
    await check(conn)  # never handed out before: tested
    assert conn.checks == 1
    now[0] += 0.5
    await check(conn)
    await check(conn)
    assert conn.checks == 1  # in steady use: not tested
    await check(other)
    assert other.checks == 1  # each connection has its own time
    now[0] += 1.5
    await check(conn)
    assert conn.checks == 2  # idle longer than idle_s: tested again
    conn.broken = True
    await check(conn)
    assert conn.checks == 3  # known broken: tested (and failing, dropped by the pool)
    conn.broken, conn.dead = False, True
    now[0] += 5
    with pytest.raises(psycopg.OperationalError):
        await check(conn)
    conn.dead = False
    await check(conn)
    assert conn.checks == 5  # a failed test does not count as a hand-out
