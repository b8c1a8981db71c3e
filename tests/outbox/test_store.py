"""PostgresOutbox.enqueue against a real PostgreSQL, and the in-memory twin on the same cases."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from sidecar import db
from sidecar.core.decision import Store
from sidecar.core.mailbox import Mailbox
from sidecar.core.request import Request
from sidecar.errors import OutboxUnavailable
from sidecar.outbox.base import Outbox
from sidecar.outbox.memory import InMemoryOutbox
from sidecar.outbox.store import PostgresOutbox

BODY = b'{"action":"opened", "name":"caf\xc3\xa9"}\r\n\xff\xfe\x00 trailing  '  # not valid UTF-8
REQUEST = Request.from_target(
    "POST",
    "/extensions/github/webhook/?a=1&b=%20x",
    {":path": "/extensions/github/webhook/", ":method": "POST", "X-GitHub-Event": "push", "content-type": "x/y"},
    BODY,
)


def store(
    regions: tuple[str, ...] = ("de", "us"),
    integration_id: int | None = 10,
    bucket_key: int | None = None,
    always_bucket: bool = False,
    provider: str = "github",
) -> Store:
    identifier = str(integration_id) if integration_id is not None else "org1"
    mailbox = Mailbox(provider, identifier, bucket_key=bucket_key, always_bucket=always_bucket)
    return Store(provider, regions, mailbox, integration_id, reason="test")


async def rows(pool: db.Pool, columns: str = "*") -> list[dict[str, Any]]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {columns} FROM webhook_payload ORDER BY id")
        return await cur.fetchall()


# -- Postgres ------------------------------------------------------------------------------------


@pytest.mark.db
async def test_one_row_per_region_with_the_exact_request(pool: db.Pool) -> None:
    ids = await PostgresOutbox(pool).enqueue(store(), REQUEST)
    stored = await rows(pool)
    assert ids == [row["id"] for row in stored] and len(ids) == 2
    assert [row["region_name"] for row in stored] == ["de", "us"]
    for row in stored:
        assert row["request_body"] == BODY
        assert row["request_path"] == "/extensions/github/webhook/?a=1&b=%20x"
        assert row["request_method"] == "POST"
        assert row["request_headers"] == {"x-github-event": "push", "content-type": "x/y"}
        assert (row["mailbox_name"], row["provider"], row["integration_id"]) == ("github:10", "github", 10)
        assert (row["state"], row["attempts"], row["last_status"], row["delivered_at"]) == ("pending", 0, None, None)
        assert row["schedule_for"] == row["date_added"]  # due at once


@pytest.mark.db
async def test_no_regions_stores_nothing(pool: db.Pool) -> None:
    assert await PostgresOutbox(pool).enqueue(store(regions=()), REQUEST) == []
    assert await rows(pool) == []


@pytest.mark.db
async def test_request_without_body_and_without_integration(pool: db.Pool) -> None:
    request = Request.from_target("POST", "/plugins/x/organizations/1/webhook/")
    await PostgresOutbox(pool).enqueue(store(regions=("us",), integration_id=None), request)
    [row] = await rows(pool)
    assert (row["request_body"], row["integration_id"], row["request_path"]) == (b"", None, request.path)


@pytest.mark.db
async def test_a_failure_mid_way_leaves_no_rows(pool: db.Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "CREATE FUNCTION fail_on_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.region_name = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER fail_on_boom BEFORE INSERT ON webhook_payload FOR EACH ROW EXECUTE FUNCTION fail_on_boom()"
        )
    try:
        with pytest.raises(OutboxUnavailable):
            # "de" is written first, then "boom" fails: "de" must go too.
            await PostgresOutbox(pool).enqueue(store(regions=("de", "boom", "us"), bucket_key=5), REQUEST)
        assert await rows(pool) == []
    finally:
        async with pool.connection() as conn:
            await conn.execute("DROP FUNCTION fail_on_boom() CASCADE")


@pytest.mark.db
async def test_database_down_is_outbox_unavailable() -> None:
    pool: db.Pool = AsyncConnectionPool("host=/nonexistent port=1", open=False, timeout=0.3)
    await pool.open(wait=False)
    try:
        with pytest.raises(OutboxUnavailable):
            await PostgresOutbox(pool).enqueue(store(), REQUEST)
    finally:
        await pool.close()


@pytest.mark.db
async def test_concurrent_replicas_count_into_one_gate(pool: db.Pool) -> None:
    replicas = [PostgresOutbox(pool, volume_threshold=5), PostgresOutbox(pool, volume_threshold=5)]
    await asyncio.gather(*(replicas[i % 2].enqueue(store(regions=("us",), bucket_key=7), REQUEST) for i in range(10)))
    names = [row["mailbox_name"] for row in await rows(pool, "mailbox_name")]
    assert sorted(names) == ["github:10"] * 5 + ["github:10:7"] * 5
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT hits, bucketed_until - now() > interval '23 hours' FROM webhook_volume")
        assert await cur.fetchall() == [(10, True)]


@pytest.mark.db
async def test_a_new_window_restarts_the_count(pool: db.Pool) -> None:
    outbox = PostgresOutbox(pool, volume_threshold=3)
    for _ in range(3):
        await outbox.enqueue(store(regions=("us",), bucket_key=7), REQUEST)
    async with pool.connection() as conn:
        await conn.execute("UPDATE webhook_volume SET window_start = window_start - interval '1 hour'")
    for _ in range(3):
        await outbox.enqueue(store(regions=("us",), bucket_key=7), REQUEST)
    assert {row["mailbox_name"] for row in await rows(pool, "mailbox_name")} == {"github:10"}


@pytest.mark.db
async def test_the_flag_lapses_after_a_day(pool: db.Pool) -> None:
    outbox = PostgresOutbox(pool, volume_threshold=1)
    for _ in range(2):
        await outbox.enqueue(store(regions=("us",), bucket_key=7), REQUEST)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE webhook_volume SET bucketed_until = now() - interval '1 second',"
            " window_start = window_start - interval '1 hour'"
        )
    await outbox.enqueue(store(regions=("us",), bucket_key=7), REQUEST)
    names = [row["mailbox_name"] for row in await rows(pool, "mailbox_name")]
    assert names == ["github:10", "github:10:7", "github:10"]


# -- both backends -------------------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.db)])
def make_outbox(request: pytest.FixtureRequest) -> Callable[[int], Awaitable[tuple[Outbox, Callable[[], Any]]]]:
    """(outbox, names) per backend; names() lists the stored mailbox names in id order."""
    if request.param == "memory":

        async def memory(threshold: int) -> tuple[Outbox, Callable[[], Any]]:
            outbox = InMemoryOutbox(volume_threshold=threshold)

            async def names() -> list[str]:
                return [row.mailbox_name for row in outbox.rows]

            return outbox, names

        return memory
    pool: db.Pool = request.getfixturevalue("pool")

    async def postgres(threshold: int) -> tuple[Outbox, Callable[[], Any]]:
        async def names() -> list[str]:
            return [row["mailbox_name"] for row in await rows(pool, "mailbox_name")]

        return PostgresOutbox(pool, volume_threshold=threshold), names

    return postgres


async def test_volume_gate_crosses_above_the_threshold(make_outbox: Any) -> None:
    outbox, names = await make_outbox(3)
    for _ in range(5):
        await outbox.enqueue(store(regions=("us",), bucket_key=123), REQUEST)
    await outbox.enqueue(store(regions=("us",), integration_id=11, bucket_key=123), REQUEST)  # another integration
    await outbox.enqueue(store(regions=("us",), provider="gitlab", bucket_key=123), REQUEST)  # another provider
    assert await names() == ["github:10"] * 3 + ["github:10:23"] * 2 + ["github:11", "gitlab:10"]


async def test_always_bucket_and_no_bucket_key_skip_the_gate(make_outbox: Any) -> None:
    outbox, names = await make_outbox(0)
    await outbox.enqueue(store(regions=("us",), bucket_key=7, always_bucket=True), REQUEST)
    await outbox.enqueue(store(regions=("us",), bucket_key=None), REQUEST)
    await outbox.enqueue(store(regions=("us",), integration_id=None, bucket_key=7), REQUEST)
    assert await names() == ["github:10:7", "github:10", "github:org1"]


async def test_every_region_gets_the_same_mailbox_and_ids_follow_region_order(make_outbox: Any) -> None:
    outbox, names = await make_outbox(1)
    first = await outbox.enqueue(store(regions=("de", "us"), bucket_key=2), REQUEST)
    second = await outbox.enqueue(store(regions=("de", "us"), bucket_key=2), REQUEST)
    assert second[0] > first[1] and first[1] > first[0]
    assert await names() == ["github:10", "github:10", "github:10:2", "github:10:2"]


async def test_memory_twin_stores_the_same_row() -> None:
    outbox = InMemoryOutbox()
    ids = await outbox.enqueue(store(), REQUEST)
    assert ids == [1, 2]
    row = outbox.rows[0]
    assert (row.request_body, row.request_path, row.request_headers) == (
        BODY,
        "/extensions/github/webhook/?a=1&b=%20x",
        {"x-github-event": "push", "content-type": "x/y"},
    )
    assert outbox.pending("github:10") == outbox.rows


async def test_memory_fail_switch_stores_nothing() -> None:
    outbox = InMemoryOutbox()
    outbox.fail = True
    with pytest.raises(OutboxUnavailable):
        await outbox.enqueue(store(), REQUEST)
    assert outbox.rows == []


# -- async replies: a follow-up row with the region rows -----------------------------------------


def with_reply(regions: tuple[str, ...] = ("de", "us"), gated_mailbox: bool = False) -> Store:
    from sidecar.core.decision import ReplyTarget

    mailbox = Mailbox("slack", "20", bucket_key=3 if gated_mailbox else None)
    target = ReplyTarget("slack", "https://hooks.slack.com/commands/T1/2/x")
    return Store("slack", regions, mailbox, 20, "async_all_regions", reply_status=200, reply_to=target)


@pytest.mark.db
@pytest.mark.parametrize("gated_mailbox", [False, True])
async def test_an_async_reply_stores_its_follow_up_in_the_same_statement(pool: db.Pool, gated_mailbox: bool) -> None:
    ids = await PostgresOutbox(pool).enqueue(with_reply(gated_mailbox=gated_mailbox), REQUEST)
    stored = await rows(pool, "id, region_name, followup_id")
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT id, kind, url, provider, integration_id, state FROM webhook_followup")
        [followup] = await cur.fetchall()
    assert [row["id"] for row in stored] == ids
    assert {row["followup_id"] for row in stored} == {followup["id"]}
    assert (followup["kind"], followup["url"]) == ("slack", "https://hooks.slack.com/commands/T1/2/x")
    assert (followup["provider"], followup["integration_id"], followup["state"]) == ("slack", 20, "waiting")


@pytest.mark.db
async def test_plain_webhooks_have_no_follow_up(pool: db.Pool) -> None:
    await PostgresOutbox(pool).enqueue(store(), REQUEST)
    assert {row["followup_id"] for row in await rows(pool, "followup_id")} == {None}


async def test_memory_twin_stores_the_follow_up_too() -> None:
    outbox = InMemoryOutbox()
    await outbox.enqueue(with_reply(), REQUEST)
    [followup] = outbox.followups
    assert {row.followup_id for row in outbox.rows} == {followup.id}
    assert (followup.kind, followup.state) == ("slack", "waiting")
