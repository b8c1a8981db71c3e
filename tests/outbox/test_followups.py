"""Async replies: the regions' answer posted to Slack's response_url or Discord's interaction webhook."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from delivery_fakes import Answer, FakeClock, Hooks, RecordingServer
from psycopg.rows import dict_row
from test_worker import BACKOFF_1, enqueue, make_worker, rows, settings_for

from sidecar import db
from sidecar.core.decision import ReplyTarget
from sidecar.outbox.sender import HttpSender
from sidecar.outbox.worker import Worker, followup_body

pytestmark = pytest.mark.db

DISCORD_PATH = "/api/v10/webhooks/1063572232434495520/aW50ZXJhY3Rpb246MTA2"


@pytest.fixture
def egress() -> Iterator[RecordingServer]:
    server = RecordingServer(lambda seen: Answer(body=json.dumps({"text": f"from {seen.region}"}).encode())).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def provider() -> Iterator[RecordingServer]:
    """Slack's response_url host and Discord's API, in one fake."""
    server = RecordingServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def delivery(provider: RecordingServer) -> dict[str, Any]:
    return {"slack_response_hosts": [provider.origin], "discord_base_url": provider.origin}


@pytest.fixture
async def sender(egress: RecordingServer, provider: RecordingServer) -> AsyncIterator[HttpSender]:
    sender = HttpSender(settings_for(egress.port, **delivery(provider)))
    try:
        yield sender
    finally:
        await sender.aclose()


@pytest.fixture
def worker(pool: db.Pool, sender: HttpSender, clock: FakeClock, provider: RecordingServer) -> Worker:
    return make_worker(pool, sender, clock, Hooks(), **delivery(provider))


def slack(provider: RecordingServer, path: str = "/actions/T0001/1234/abcd") -> ReplyTarget:
    return ReplyTarget("slack", provider.origin + path)


async def followups(pool: db.Pool) -> list[dict[str, Any]]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM webhook_followup ORDER BY id")
        return await cur.fetchall()


async def test_slack_gets_the_last_regions_answer_once_every_region_answered(
    pool: db.Pool, worker: Worker, egress: RecordingServer, provider: RecordingServer
) -> None:
    await enqueue(pool, 1, regions=("de", "us"), reply_to=slack(provider), provider="slack")
    await worker.drain()
    assert sorted(seen.region or "" for seen in egress.received()) == ["de", "us"]
    [posted] = provider.received()
    assert (posted.method, posted.target) == ("POST", "/actions/T0001/1234/abcd")
    assert json.loads(posted.body) == {"text": "from us"}  # the last region, in region order
    assert posted.headers["content-type"] == "application/json"
    [followup] = await followups(pool)
    assert (followup["state"], followup["attempts"], followup["last_status"]) == ("delivered", 1, 200)


async def test_a_failing_region_does_not_hold_the_reply_back(
    pool: db.Pool, worker: Worker, egress: RecordingServer, provider: RecordingServer, clock: FakeClock
) -> None:
    await enqueue(pool, 1, regions=("de", "us"), reply_to=slack(provider), provider="slack")
    egress.script("us", 500)
    await worker.drain()
    [posted] = provider.received()  # both regions tried: de's answer goes out now
    assert json.loads(posted.body) == {"text": "from de"}
    clock.advance(BACKOFF_1 + 1)
    await worker.drain()
    assert [row["state"] for row in await rows(pool)] == ["delivered", "delivered"]
    assert len(provider.received()) == 1  # no second reply


async def test_nothing_is_posted_when_no_region_answered(
    pool: db.Pool, worker: Worker, egress: RecordingServer, provider: RecordingServer
) -> None:
    await enqueue(pool, 1, regions=("de", "us"), reply_to=slack(provider), provider="slack")
    egress.script("de", 404)
    egress.script("us", 404)
    await worker.drain()
    assert provider.received() == []
    [followup] = await followups(pool)
    assert (followup["state"], followup["last_error"]) == ("skipped", "no region answered 2xx")


async def test_a_region_answer_that_is_not_json_is_not_posted(
    pool: db.Pool, worker: Worker, egress: RecordingServer, provider: RecordingServer
) -> None:
    await enqueue(pool, 1, reply_to=slack(provider), provider="slack")
    egress.script("de", Answer(200, b"OK", (("content-type", "text/plain"),)))
    await worker.drain()
    assert provider.received() == []
    assert (await followups(pool))[0]["state"] == "skipped"


async def test_a_response_url_off_the_allow_list_is_never_called(
    pool: db.Pool, worker: Worker, provider: RecordingServer
) -> None:
    elsewhere = ReplyTarget("slack", "http://127.0.0.1:1/steal")
    await enqueue(pool, 1, reply_to=elsewhere, provider="slack")
    await worker.drain()
    assert provider.received() == []
    [followup] = await followups(pool)
    assert (followup["state"], followup["last_error"]) == ("dead", "not_allowed")


async def test_discord_gets_the_data_of_the_regions_answer(
    pool: db.Pool, worker: Worker, egress: RecordingServer, provider: RecordingServer, clock: FakeClock
) -> None:
    answer = {"type": 4, "data": {"content": "Resolved", "flags": 64}}
    egress.behaviour = lambda seen: Answer(body=json.dumps(answer).encode())
    await enqueue(pool, 1, reply_to=ReplyTarget("discord", DISCORD_PATH), provider="discord")
    provider.script(None, 404)  # the interaction webhook is not ready yet: retried
    await worker.drain()
    assert len(provider.received()) == 1
    assert (await followups(pool))[0]["state"] == "pending"
    clock.advance(5)
    await worker.drain()
    posted = provider.received()[-1]
    assert (posted.method, posted.target) == ("POST", DISCORD_PATH)
    assert json.loads(posted.body) == {"content": "Resolved", "flags": 64}
    assert (await followups(pool))[0]["state"] == "delivered"


async def test_a_reply_too_late_for_the_provider_is_not_posted(
    pool: db.Pool, worker: Worker, egress: RecordingServer, provider: RecordingServer, clock: FakeClock
) -> None:
    await enqueue(pool, 1, reply_to=slack(provider), provider="slack")
    egress.script("de", 503)
    await worker.drain()
    clock.advance(1801)  # Slack's response_url is valid for 30 minutes
    await worker.drain()
    assert [row["state"] for row in await rows(pool)] == ["delivered"]  # the region still gets it
    assert provider.received() == []
    assert (await followups(pool))[0]["state"] == "dead"


def test_followup_bodies() -> None:
    assert followup_body("slack", b'{"text": "x"}') == b'{"text": "x"}'
    assert followup_body("discord", b'{"type": 4, "data": {"content": "x"}}') == b'{"content":"x"}'
    for kind in ("slack", "discord"):
        assert followup_body(kind, None) is None
        assert followup_body(kind, b"") is None
        assert followup_body(kind, b"not json") is None
        assert followup_body(kind, b"[1]") is None
    assert followup_body("discord", b'{"type": 4}') is None
