"""The admin gRPC service over a real channel: Explain against the in-memory directory, the outbox
calls against real PostgreSQL, and its registration on the sidecar's own server."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from psycopg.rows import dict_row

from sidecar import config, db
from sidecar.admin import AdminService
from sidecar.app import sidecar_server
from sidecar.core import Context
from sidecar.directory.loader import load_directory, parse_directory
from sidecar.directory.memory import InMemoryDirectory
from sidecar.outbox.memory import InMemoryOutbox
from sidecar.protos.silo_router.admin.v1 import admin_pb2 as pb
from sidecar.protos.silo_router.admin.v1 import admin_pb2_grpc as pb_grpc
from sidecar.router import Router

DIRECTORY: dict[str, Any] = {
    "organizations": [{"id": 1, "slug": "acme", "region": "us"}, {"id": 2, "slug": "globex", "region": "de"}],
    "integrations": [{"id": 10, "provider": "github", "external_id": "4711", "organizations": [1, 2]}],
}
PUSH = json.dumps({"installation": {"id": 4711}, "repository": {"id": 7}}).encode()
PUSH_HEADERS = [
    pb.Header(name="Content-Type", value="application/json"),
    pb.Header(name="X-GitHub-Event", value="push"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def outbox_rows(pool: db.Pool) -> db.Pool:
    """Dead letters of two providers and regions, plus a pending and a delivered row."""
    rows = [
        # (mailbox, provider, region, state, age, last_error)
        ("github:10:7:push", "github", "us", "dead", timedelta(hours=5), "max_attempts"),
        ("github:10:7:push", "github", "de", "dead", timedelta(hours=5), "dropped: http_404"),
        ("github:11:1:issues", "github", "us", "dead", timedelta(minutes=5), "expired"),
        ("slack:21", "slack", "de", "dead", timedelta(minutes=1), "max_attempts"),
        ("github:10:7:push", "github", "us", "pending", timedelta(minutes=2), None),
        ("github:10:7:push", "github", "us", "delivered", timedelta(minutes=3), None),
    ]
    async with pool.connection() as conn:
        for mailbox, provider, region, state, age, error in rows:
            await conn.execute(
                "INSERT INTO webhook_payload (mailbox_name, provider, region_name, state, date_added, attempts,"
                " request_method, request_path, request_body, last_error, last_status)"
                " VALUES (%s, %s, %s, %s, now() - %s, 10, 'POST', '/extensions/x/webhook/', 'body', %s, %s)",
                (mailbox, provider, region, state, age, error, 404 if error and "404" in error else None),
            )
    return pool


@pytest.fixture
async def admin(pool: db.Pool) -> AsyncIterator[pb_grpc.AdminAsyncStub]:
    """The Admin servicer alone on a real grpc.aio server on a free port, and a stub over a channel."""
    router = Router(InMemoryDirectory.from_data(DIRECTORY), InMemoryOutbox(), lambda: Context(now=0.0))
    server = grpc.aio.server()
    pb_grpc.add_AdminServicer_to_server(AdminService(router, pool), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.AdminStub(channel)
    finally:
        await server.stop(None)


async def states(pool: db.Pool) -> list[tuple[int, str, int]]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT id, state, replays FROM webhook_payload ORDER BY id")
        return [(row["id"], row["state"], row["replays"]) for row in await cur.fetchall()]


# --- Explain -----------------------------------------------------------------------------------


@pytest.mark.db
async def test_explain_over_a_channel(admin: pb_grpc.AdminAsyncStub, pool: db.Pool) -> None:
    request = pb.ExplainRequest(method="POST", target="/extensions/github/webhook/", headers=PUSH_HEADERS, body=PUSH)
    answer = await admin.Explain(request)
    assert answer.kind == pb.DECISION_KIND_STORE
    assert (answer.reason, answer.status, list(answer.regions)) == ("stored", 202, ["de", "us"])
    assert answer.mailbox == "github:10:7:push"
    lookups = [step.text for step in answer.steps if step.stage == "lookup"]
    assert lookups == [
        "github integration with external id '4711': integration 10 (github '4711', active)"
        " → organization acme (id 1) in region us, organization globex (id 2) in region de"
    ]
    assert await states(pool) == []  # nothing stored


@pytest.mark.db
async def test_explain_control_and_reply_kinds(admin: pb_grpc.AdminAsyncStub) -> None:
    control = await admin.Explain(pb.ExplainRequest(method="GET", target="/api/0/"))
    assert (control.kind, control.reason, control.status) == (pb.DECISION_KIND_CONTROL, "not_a_webhook_path", 0)
    reply = await admin.Explain(pb.ExplainRequest(method="POST", target="/extensions/github/webhook/", body=b"["))
    assert (reply.kind, reply.status, reply.reason) == (pb.DECISION_KIND_REPLY, 400, "invalid_json")


@pytest.mark.db
async def test_explain_refuses_a_request_without_method_or_path(admin: pb_grpc.AdminAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.Explain(pb.ExplainRequest(method="POST", target="extensions/github/webhook/"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- the outbox --------------------------------------------------------------------------------


@pytest.mark.db
async def test_outbox_stats(admin: pb_grpc.AdminAsyncStub, outbox_rows: db.Pool) -> None:
    stats = await admin.OutboxStats(pb.OutboxStatsRequest())
    assert dict(stats.totals) == {"dead": 4, "pending": 1, "delivered": 1}
    dead_us = [c for c in stats.counts if (c.state, c.region, c.provider) == ("dead", "us", "github")]
    assert [c.rows for c in dead_us] == [2]
    assert dead_us[0].oldest_age_s == pytest.approx(5 * 3600, abs=60)
    only_slack = await admin.OutboxStats(pb.OutboxStatsRequest(filter=pb.OutboxFilter(provider="slack")))
    assert dict(only_slack.totals) == {"dead": 1}


@pytest.mark.db
async def test_list_dead_letters_with_filters_and_pages(admin: pb_grpc.AdminAsyncStub, outbox_rows: db.Pool) -> None:
    everything = await admin.ListDeadLetters(pb.ListDeadLettersRequest())
    assert [d.id for d in everything.dead_letters] == [1, 2, 3, 4]  # dead only, in id order
    first = everything.dead_letters[1]
    assert (first.mailbox, first.region, first.provider, first.attempts) == ("github:10:7:push", "de", "github", 10)
    assert (first.last_status, first.last_error) == (404, "dropped: http_404")

    async def ids(**filters: Any) -> list[int]:
        answer = await admin.ListDeadLetters(pb.ListDeadLettersRequest(filter=pb.OutboxFilter(**filters)))
        return [d.id for d in answer.dead_letters]

    assert await ids(provider="github") == [1, 2, 3]
    assert await ids(region="de") == [2, 4]
    assert await ids(mailbox="github:10:*") == [1, 2]
    assert await ids(mailbox="slack:21") == [4]
    assert await ids(older_than_s=3600) == [1, 2]
    assert await ids(newer_than_s=600) == [3, 4]
    page = await admin.ListDeadLetters(pb.ListDeadLettersRequest(limit=2, after_id=1))
    assert [d.id for d in page.dead_letters] == [2, 3]


@pytest.mark.db
async def test_replay_dead_letters(admin: pb_grpc.AdminAsyncStub, outbox_rows: db.Pool) -> None:
    answer = await admin.ReplayDeadLetters(pb.ReplayDeadLettersRequest(filter=pb.OutboxFilter(mailbox="github:10:*")))
    assert answer.replayed == 2
    assert await states(outbox_rows) == [
        (1, "pending", 1),
        (2, "pending", 1),
        (3, "dead", 0),
        (4, "dead", 0),
        (5, "pending", 0),
        (6, "delivered", 0),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.ReplayDeadLetters(pb.ReplayDeadLettersRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "set all" in (caught.value.details() or "")
    rest = await admin.ReplayDeadLetters(pb.ReplayDeadLettersRequest(all=True))
    assert rest.replayed == 2
    assert [state for _, state, _ in await states(outbox_rows)] == ["pending"] * 5 + ["delivered"]


# --- registered on the sidecar's server --------------------------------------------------------


@pytest.mark.db
async def test_the_sidecar_serves_the_admin_api_beside_ext_proc(db_url: str, tmp_path: Path) -> None:
    await load_directory(db_url, parse_directory(DIRECTORY))
    grpc_port = free_port()
    raw = {
        "data_dir": str(tmp_path),
        "regions": {"us": "127.0.0.1:9001", "de": "127.0.0.1:9002"},
        "sidecar": {"grpc": f"127.0.0.1:{grpc_port}", "metrics": f"127.0.0.1:{free_port()}"},
    }
    settings = config.from_mapping(raw, {}, tmp_path)
    stop = asyncio.Event()
    async with sidecar_server(settings, db_url, stop), grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = pb_grpc.AdminStub(channel)
        request = pb.ExplainRequest(
            method="POST", target="/extensions/github/webhook/", headers=PUSH_HEADERS, body=PUSH
        )
        answer = await stub.Explain(request)
        assert (answer.kind, list(answer.regions)) == (pb.DECISION_KIND_STORE, ["de", "us"])
        stats = await stub.OutboxStats(pb.OutboxStatsRequest())
        assert dict(stats.totals) == {}  # explaining stored nothing
        stop.set()
