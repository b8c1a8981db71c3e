"""BatchingOutbox against a real PostgreSQL: concurrent enqueues share a transaction, a failure fails
the whole batch, and no caller is answered before the commit."""

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

pytestmark = pytest.mark.db


def request(n: int) -> Request:
    body = b'{"n": %d, "raw": "\xff\x00"}' % n
    return Request.from_target("POST", f"/extensions/github/webhook/?n={n}", {"x-n": str(n)}, body)


def store(regions: tuple[str, ...] = ("de", "us"), bucket_key: int | None = None, always: bool = True) -> Store:
    return Store("github", regions, Mailbox("github", "10", bucket_key=bucket_key, always_bucket=always), 10, "t")


async def rows(url: str) -> list[dict[str, Any]]:
    """Read through a connection of its own: only committed rows are visible."""
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT id, region_name, mailbox_name, request_body, request_path FROM webhook_payload")
        return await cur.fetchall()


async def test_concurrent_enqueues_share_transactions_and_each_gets_its_own_rows(pool: db.Pool, db_url: str) -> None:
    outbox = BatchingOutbox(pool, max_batch=8, max_wait_s=0.002)
    results = await asyncio.gather(*(outbox.enqueue(store(), request(n)) for n in range(20)))
    assert outbox.batched == 20 and outbox.batches < 20  # 8 + 8 + 4 at most: grouped
    by_id = {row["id"]: row for row in await rows(db_url)}
    assert len(by_id) == 40
    for n, ids in enumerate(results):
        assert [by_id[i]["region_name"] for i in ids] == ["de", "us"]  # region order, as PostgresOutbox
        assert {bytes(by_id[i]["request_body"]) for i in ids} == {request(n).body}
        assert {by_id[i]["request_path"] for i in ids} == {f"/extensions/github/webhook/?n={n}"}


async def test_volume_gated_and_plain_webhooks_commit_in_one_batch(pool: db.Pool, db_url: str) -> None:
    outbox = BatchingOutbox(pool, max_wait_s=0.002)
    gated = store(("us",), bucket_key=7, always=False)
    plain, counted = await asyncio.gather(outbox.enqueue(store(), request(1)), outbox.enqueue(gated, request(2)))
    assert outbox.batches == 1
    by_id = {row["id"]: row for row in await rows(db_url)}
    assert [by_id[i]["mailbox_name"] for i in counted] == ["github:10"]  # under the volume threshold
    assert [by_id[i]["region_name"] for i in plain] == ["de", "us"]
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT hits FROM webhook_volume WHERE provider = 'github' AND integration_id = 10")
        assert await cur.fetchone() == (1,)


async def test_one_bad_webhook_fails_every_caller_of_its_batch_and_stores_nothing(pool: db.Pool, db_url: str) -> None:
    outbox = BatchingOutbox(pool, max_wait_s=0.01)
    bad = store(("",))  # violates CHECK (region_name <> '')
    answers = await asyncio.gather(
        outbox.enqueue(store(), request(1)),
        outbox.enqueue(bad, request(2)),
        outbox.enqueue(store(), request(3)),
        return_exceptions=True,
    )
    assert outbox.batches == 1
    assert all(isinstance(answer, OutboxUnavailable) for answer in answers)
    assert len({id(answer) for answer in answers}) == 3  # each caller its own exception
    assert await rows(db_url) == []
    # The outbox keeps working afterwards.
    assert len(await outbox.enqueue(store(), request(4))) == 2


async def test_a_failing_commit_answers_no_caller_with_ids(pool: db.Pool, db_url: str) -> None:
    """A deferred constraint fails at COMMIT, after the INSERT returned ids: nobody may get them."""
    async with pool.connection() as conn:
        await conn.execute(
            "CREATE FUNCTION bench_fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF NEW.request_path LIKE '%fail-at-commit%' THEN RAISE EXCEPTION 'refused at commit'; END IF;"
            " RETURN NULL; END $$"
        )
        await conn.execute(
            "CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON webhook_payload"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bench_fail_at_commit()"
        )
    try:
        outbox = BatchingOutbox(pool, max_wait_s=0.01)
        poisoned = Request.from_target("POST", "/extensions/github/webhook/?fail-at-commit", {}, b"{}")
        answers = await asyncio.gather(
            outbox.enqueue(store(), request(1)), outbox.enqueue(store(), poisoned), return_exceptions=True
        )
        assert outbox.batches == 1
        assert all(isinstance(answer, OutboxUnavailable) for answer in answers), answers
        assert await rows(db_url) == []
    finally:
        async with pool.connection() as conn:
            await conn.execute("DROP TRIGGER fail_at_commit ON webhook_payload")
            await conn.execute("DROP FUNCTION bench_fail_at_commit()")


async def test_nobody_is_answered_while_the_transaction_cannot_commit(pool: db.Pool, db_url: str) -> None:
    """A lock holds the INSERT back: every caller waits; once released, each one's rows are
    already visible to another connection at the moment it is answered."""
    outbox = BatchingOutbox(pool, max_wait_s=0.001)
    answered: list[int] = []

    async def enqueue_and_look(n: int) -> None:
        ids = await outbox.enqueue(store(), request(n))
        visible = {row["id"] for row in await rows(db_url)}
        assert set(ids) <= visible, "answered before the commit"
        answered.append(n)

    async with await psycopg.AsyncConnection.connect(db_url) as blocker:
        await blocker.execute("LOCK TABLE webhook_payload IN EXCLUSIVE MODE")
        tasks = [asyncio.create_task(enqueue_and_look(n)) for n in range(6)]
        await asyncio.sleep(0.3)
        assert answered == [] and not any(task.done() for task in tasks)
        await blocker.commit()  # releases the lock
        await asyncio.gather(*tasks)
    assert sorted(answered) == list(range(6))


async def test_a_caller_that_gives_up_before_its_batch_closes_is_not_written(pool: db.Pool, db_url: str) -> None:
    outbox = BatchingOutbox(pool, max_wait_s=0.2)
    gone = asyncio.create_task(outbox.enqueue(store(), request(1)))
    await asyncio.sleep(0.01)
    gone.cancel()
    kept = await outbox.enqueue(store(), request(2))
    await outbox.aclose()
    assert sorted(row["id"] for row in await rows(db_url)) == sorted(kept)


async def test_no_regions_is_answered_at_once_without_a_transaction(pool: db.Pool) -> None:
    outbox = BatchingOutbox(pool)
    assert await outbox.enqueue(store(()), request(1)) == []
    assert outbox.batches == 0


async def test_the_caller_that_fills_the_batch_ends_the_wait(pool: db.Pool, db_url: str) -> None:
    """The batch is still open, waiting up to 60 s for more, when the caller that fills it arrives:
    it is written then, not when the wait runs out."""
    outbox = BatchingOutbox(pool, max_batch=4, max_wait_s=60.0)
    first = asyncio.ensure_future(outbox.enqueue(store(), request(0)))
    await asyncio.sleep(0.05)  # the gathering has started and is waiting
    assert not first.done() and outbox.batches == 0
    rest = [outbox.enqueue(store(), request(n)) for n in range(1, 4)]
    results = await asyncio.wait_for(asyncio.gather(first, *rest), 10)
    assert outbox.batches == 1 and outbox.batched == 4
    assert len(await rows(db_url)) == 8 and all(len(ids) == 2 for ids in results)
