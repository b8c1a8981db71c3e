"""The delivery worker against real PostgreSQL and a fake egress listener, with a clock the test moves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from delivery_fakes import Answer, EgressProcess, FakeClock, Hooks, RecordingServer, Seen
from psycopg.rows import dict_row

from sidecar import config, db
from sidecar.config import Settings
from sidecar.core.decision import ReplyTarget, Store
from sidecar.core.mailbox import Mailbox
from sidecar.core.request import Request
from sidecar.outbox import admin
from sidecar.outbox.claims import PostgresDeliveries
from sidecar.outbox.runner import worker_dsn
from sidecar.outbox.sender import HttpSender
from sidecar.outbox.store import PostgresOutbox
from sidecar.outbox.worker import Worker

pytestmark = pytest.mark.db

BACKOFF_1 = 3 * 60 * 1.4  # the wait after the first failed attempt: 4.2 minutes


def settings_for(egress_port: int, **delivery: Any) -> Settings:
    raw = {
        "regions": {"de": {"address": "de.internal:8000"}, "us": {"address": "us.internal:8000"}},
        "envoy": {"egress": f"127.0.0.1:{egress_port}"},
        "delivery": {
            "poll_interval_s": 0.01,
            "egress_retry_s": 0.01,
            "lease_s": 30,
            "timeout_s": 2,
            "parallel_threshold": 0,
            **delivery,
        },
    }
    return config.from_mapping(raw, {}, Path.cwd())


@pytest.fixture
def egress() -> Iterator[RecordingServer]:
    server = RecordingServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sender(egress: RecordingServer) -> AsyncIterator[HttpSender]:
    sender = HttpSender(settings_for(egress.port, slack_response_hosts=[egress.origin]))
    try:
        yield sender
    finally:
        await sender.aclose()


def make_worker(
    pool: db.Pool, sender: HttpSender, clock: FakeClock, hooks: Hooks | None = None, **delivery: Any
) -> Worker:
    settings = settings_for(0, **delivery).delivery
    store = PostgresDeliveries(pool, keep_delivered=settings.retention_s > 0)
    return Worker(store, sender, clock, settings, asyncio.Event(), hooks=hooks)


@pytest.fixture
def worker(pool: db.Pool, sender: HttpSender, clock: FakeClock) -> Worker:
    return make_worker(pool, sender, clock, Hooks())


async def enqueue(
    pool: db.Pool,
    n: int,
    *,
    mailbox: str = "42",
    regions: tuple[str, ...] = ("de",),
    reply_to: ReplyTarget | None = None,
    provider: str = "github",
) -> list[int]:
    decision = Store(provider, regions, Mailbox(provider, mailbox), 42, "test", reply_to=reply_to)
    body = json.dumps({"id": n, "mailbox": mailbox}).encode()
    headers = {"content-type": "application/json", "x-hub-signature-256": f"sha256={n:064x}"}
    request = Request.from_target("POST", f"/extensions/github/webhook/?n={n}", headers, body)
    return await PostgresOutbox(pool).enqueue(decision, request)


async def bulk_enqueue(pool: db.Pool, count: int, mailboxes: int) -> None:
    """``count`` rows in one statement (what ``enqueue`` writes, minus a round trip per row): payload
    n goes to mailbox ``github:m<n % mailboxes>``, region de, ids in n order."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO webhook_payload (mailbox_name, provider, region_name, integration_id, request_method,"
            " request_path, request_headers, request_body)"
            " SELECT 'github:m' || (n %% %(mailboxes)s), 'github', 'de', 42, 'POST', '/extensions/github/webhook/',"
            " '{\"content-type\": \"application/json\"}'::jsonb, convert_to(json_build_object('id', n)::text, 'UTF8')"
            " FROM generate_series(0, %(count)s - 1) AS n ORDER BY n",
            {"count": count, "mailboxes": mailboxes},
        )


async def rows(pool: db.Pool) -> list[dict[str, Any]]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM webhook_payload ORDER BY id")
        return await cur.fetchall()


async def states(pool: db.Pool) -> list[tuple[int, str, int]]:
    return [(row["id"], row["state"], row["attempts"]) for row in await rows(pool)]


# -- one row, as sent ------------------------------------------------------------------------


async def test_a_stored_webhook_is_sent_as_it_arrived(pool: db.Pool, worker: Worker, egress: RecordingServer) -> None:
    body = b'{"id": 1,  "caf\xc3\xa9": true}\r\n\xff'
    headers = {
        "content-type": "application/json",
        "x-hub-signature-256": "sha256=abc",
        "user-agent": "GitHub-Hookshot/1",
        "host": "hooks.example.com",
        "content-length": str(len(body)),
        "transfer-encoding": "chunked",
        "connection": "keep-alive, x-hop",
        "x-hop": "1",
        "x-forwarded-proto": "https",
        "x-silo-route": "us",
        "x-envoy-upstream-rq-timeout-ms": "1",
        "x-request-id": "r-1",
    }
    request = Request.from_target("PUT", "/extensions/github/webhook/?a=1&b=%20x", headers, body)
    await PostgresOutbox(pool).enqueue(Store("github", ("de",), Mailbox("github", "1"), 1, "t"), request)
    assert await worker.drain() == 1
    [seen] = egress.received()
    assert (seen.method, seen.target, seen.body) == ("PUT", "/extensions/github/webhook/?a=1&b=%20x", body)
    assert seen.region == "de"
    assert seen.headers["host"] == "de.internal:8000"  # the region's name, as Sentry's region client sends
    assert seen.headers["x-hub-signature-256"] == "sha256=abc"
    assert seen.headers["user-agent"] == "GitHub-Hookshot/1"
    assert seen.headers["x-request-id"] == "r-1"
    assert seen.headers["content-length"] == str(len(body))
    for gone in ("transfer-encoding", "x-hop", "x-forwarded-proto", "x-envoy-upstream-rq-timeout-ms", "accept"):
        assert gone not in seen.headers
    [row] = await rows(pool)
    assert (row["state"], row["attempts"], row["last_status"], row["claimed_by"]) == ("delivered", 1, 200, None)
    assert row["delivered_at"] is not None


# -- retries, backoff, head-of-line --------------------------------------------------------------


async def test_500_then_200_is_delivered_after_the_backoff_and_blocks_its_queue_meanwhile(
    pool: db.Pool, worker: Worker, egress: RecordingServer, clock: FakeClock
) -> None:
    await enqueue(pool, 1)
    await enqueue(pool, 2)
    await enqueue(pool, 3, regions=("us",))  # same mailbox, other region: its own queue
    egress.script("de", 500)
    await worker.drain()
    assert egress.ids("de") == [1]  # row 2 waits behind its failing head
    assert egress.ids("us") == [3]
    first = (await rows(pool))[0]
    assert (first["state"], first["attempts"], first["last_status"]) == ("pending", 1, 500)
    assert abs(first["schedule_for"].timestamp() - (clock() + BACKOFF_1)) < 5

    clock.advance(BACKOFF_1 - 10)
    assert await worker.drain() == 0  # not due yet
    clock.advance(11)
    await worker.drain()
    assert egress.ids("de") == [1, 1, 2]
    assert [(s, a) for _, s, a in await states(pool)] == [("delivered", 2), ("delivered", 1), ("delivered", 1)]


async def test_a_region_down_keeps_its_rows_waiting_then_delivers_them_in_order(
    pool: db.Pool, sender: HttpSender, egress: RecordingServer, clock: FakeClock
) -> None:
    down = {"de": True}
    egress.behaviour = lambda seen: Answer(503, b"no healthy upstream", ()) if down.get(seen.region or "") else Answer()
    for n in range(1, 6):
        await enqueue(pool, n, regions=("de", "us"))
    worker = make_worker(pool, sender, clock)
    for _ in range(4):  # four rounds of backoff: only the head is tried each time
        await worker.drain()
        clock.advance(3600)
    assert egress.ids("us") == [1, 2, 3, 4, 5]  # the other region never waited
    assert egress.ids("de") == [1, 1, 1, 1]
    down["de"] = False
    await worker.drain()
    assert egress.ids("de") == [1, 1, 1, 1, 1, 2, 3, 4, 5]
    assert {state for _, state, _ in await states(pool)} == {"delivered"}


async def test_retry_after_from_the_region_is_honoured(
    pool: db.Pool, worker: Worker, egress: RecordingServer, clock: FakeClock
) -> None:
    await enqueue(pool, 1)
    egress.script("de", Answer(429, b"", (("retry-after", "3000"),)))
    await worker.drain()
    [row] = await rows(pool)
    assert abs(row["schedule_for"].timestamp() - (clock() + 3000)) < 5
    clock.advance(2000)
    assert await worker.drain() == 0
    clock.advance(1001)
    assert await worker.drain() == 1


async def test_404_makes_a_dead_letter_and_the_queue_goes_on(
    pool: db.Pool, worker: Worker, egress: RecordingServer
) -> None:
    await enqueue(pool, 1)
    await enqueue(pool, 2)
    egress.script("de", 404)
    await worker.drain()
    first, second = await rows(pool)
    assert (first["state"], first["last_status"], first["last_error"]) == ("dead", 404, "dropped: http_404")
    assert second["state"] == "delivered"
    assert isinstance(worker.hooks, Hooks)
    assert ("dropped", "github", "de", "404") in worker.hooks.events


async def test_ten_failed_attempts_make_a_dead_letter_and_replay_delivers_it(
    pool: db.Pool, worker: Worker, egress: RecordingServer, clock: FakeClock
) -> None:
    await enqueue(pool, 1)
    egress.behaviour = lambda seen: Answer(500)
    for _ in range(12):
        await worker.drain()
        clock.advance(3601)
    [row] = await rows(pool)
    assert (row["state"], row["attempts"], row["last_status"]) == ("dead", 10, 500)
    assert row["last_error"] == "max_attempts: http_500"
    assert len(egress.received()) == 10

    egress.behaviour = None
    progress: list[tuple[int, int]] = []
    assert await admin.replay(pool, admin.Filters(region="de"), clock(), lambda d, t: progress.append((d, t))) == 1
    assert progress == [(1, 1)]
    await worker.drain()
    [row] = await rows(pool)
    assert (row["state"], row["attempts"], row["replays"]) == ("delivered", 1, 1)


async def test_a_row_older_than_the_maximum_age_becomes_a_dead_letter_unsent(
    pool: db.Pool, worker: Worker, egress: RecordingServer, clock: FakeClock
) -> None:
    await enqueue(pool, 1)
    clock.advance(3 * 86400 + 1)
    await worker.drain()
    [row] = await rows(pool)
    assert (row["state"], row["attempts"], row["last_error"]) == ("dead", 0, "expired")
    assert egress.received() == []


async def test_an_unreachable_egress_listener_costs_no_attempt(
    pool: db.Pool, clock: FakeClock, egress: RecordingServer
) -> None:
    await enqueue(pool, 1)
    closed = RecordingServer()
    port = closed.port
    closed.server_close()  # nothing listens there now
    sender = HttpSender(settings_for(port))
    try:
        worker = make_worker(pool, sender, clock)
        assert await worker.drain() == 0
    finally:
        await sender.aclose()
    [row] = await rows(pool)
    assert (row["state"], row["attempts"], row["claimed_by"], row["last_error"]) == ("pending", 0, None, None)


async def test_a_region_unknown_to_the_settings_is_retried_not_sent(
    pool: db.Pool, worker: Worker, egress: RecordingServer
) -> None:
    await enqueue(pool, 1, regions=("mars",))
    await worker.drain()
    [row] = await rows(pool)
    assert (row["state"], row["attempts"], row["last_error"]) == ("pending", 1, "unconfigured_region")
    assert egress.received() == []


async def test_envoys_unknown_region_answer_is_retried_not_dropped(
    pool: db.Pool, worker: Worker, egress: RecordingServer
) -> None:
    await enqueue(pool, 1)
    egress.script("de", Answer(404, b"unknown region", (("content-type", "text/plain"),)))
    await worker.drain()
    [row] = await rows(pool)
    assert (row["state"], row["last_error"]) == ("pending", "egress_unknown_region")


# -- retention -----------------------------------------------------------------------------------


async def test_delivered_rows_are_kept_for_the_retention_then_purged(
    pool: db.Pool, sender: HttpSender, clock: FakeClock
) -> None:
    await enqueue(pool, 1)
    worker = make_worker(pool, sender, clock, retention_s=600)
    await worker.drain()
    assert [state for _, state, _ in await states(pool)] == ["delivered"]
    clock.advance(601 + 60)
    await worker.step()
    assert await rows(pool) == []


async def test_retention_zero_deletes_on_delivery(pool: db.Pool, sender: HttpSender, clock: FakeClock) -> None:
    await enqueue(pool, 1)
    await enqueue(pool, 2)
    await make_worker(pool, sender, clock, retention_s=0).drain()
    assert await rows(pool) == []


# -- claims ----------------------------------------------------------------------------------------


async def test_racing_claims_give_a_queue_to_one_worker(pool: db.Pool, clock: FakeClock) -> None:
    for n in range(5):
        await enqueue(pool, n)
    store = PostgresDeliveries(pool)
    claims = await asyncio.gather(*(store.claim(f"w{i}", clock(), 30, 100, ("", "")) for i in range(8)))
    won = [claim for claim in claims if claim is not None]
    assert len(won) == 1
    assert [row.id for row in won[0].rows] == [1, 2, 3, 4, 5]


async def test_a_lapsed_claim_goes_to_another_worker_and_the_first_cannot_write(
    pool: db.Pool, clock: FakeClock
) -> None:
    from sidecar.outbox.base import Recorded
    from sidecar.outbox.policy import Delivered

    await enqueue(pool, 1)
    store = PostgresDeliveries(pool)
    first = await store.claim("a", clock(), 30, 100, ("", ""))
    assert first is not None
    assert await store.claim("b", clock(), 30, 100, ("", "")) is None  # held
    clock.advance(31)
    second = await store.claim("b", clock(), 30, 100, ("", ""))
    assert second is not None and second.rows[0].id == 1
    assert not await store.record("a", first.rows[0], Recorded(Delivered(), True, 200), clock())
    assert await store.record("b", second.rows[0], Recorded(Delivered(), True, 200), clock())


async def test_claims_walk_the_queues_from_a_cursor(pool: db.Pool, clock: FakeClock) -> None:
    for mailbox in ("a", "b", "c"):
        await enqueue(pool, 1, mailbox=mailbox)
    store = PostgresDeliveries(pool)
    claim = await store.claim("w", clock(), 30, 100, ("github:a", "de"))
    assert claim is not None and claim.queue == ("github:b", "de")
    claim = await store.claim("w", clock(), 30, 100, ("github:c", "de"))
    assert claim is not None and claim.queue == ("github:a", "de")  # wrapped around


# -- many workers ----------------------------------------------------------------------------------


async def test_1000_payloads_in_10_mailboxes_with_4_workers(clock: FakeClock, db_url: str) -> None:
    # Some trouble on the way: three 503s, each blocking its queue until the backoff has passed.
    failing = {17, 230, 561}
    blocked = {n for n in range(1000) for f in failing if n % 10 == f % 10 and n >= f}
    egress = EgressProcess(fail_first=failing)  # a process of its own, as Envoy is
    sender = HttpSender(settings_for(egress.port))
    try:
        async with await _bigger_pool(db_url) as big:
            await bulk_enqueue(big, 1000, mailboxes=10)
            stop = asyncio.Event()
            settings = settings_for(0, batch_size=50).delivery
            store = PostgresDeliveries(big, keep_delivered=True)
            workers = [Worker(store, sender, clock, settings, stop, name=f"w{i}") for i in range(4)]
            started = time.perf_counter()
            tasks = [asyncio.create_task(w.run()) for w in workers]
            try:
                await _until_async(lambda: _count(big, "delivered", 1000 - len(blocked)), 30)
                first_pass = time.perf_counter() - started
                clock.advance(BACKOFF_1 + 1)
                await _until_async(lambda: _count(big, "delivered", 1000), 30)
            finally:
                stop.set()
                await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - started
        ids = egress.ids()
    finally:
        egress.stop()
        await sender.aclose()
    rate = (1000 - len(blocked)) / first_pass
    print(f"\n1000 payloads, 10 mailboxes, 4 workers: {elapsed:.2f} s in all, {rate:.0f} deliveries/s")
    assert sorted(set(ids)) == list(range(1000))  # none lost
    assert len(ids) == 1000 + len(failing)  # each delivered once, plus the three 503s
    for mailbox in range(10):
        sent = [n for n in ids if n % 10 == mailbox]
        assert sent == sorted(sent), f"mailbox m{mailbox} out of order"


async def test_a_backlog_is_drained_in_parallel_windows(
    pool: db.Pool, sender: HttpSender, egress: RecordingServer, clock: FakeClock
) -> None:
    in_flight, peak = 0, 0
    lock = threading.Lock()

    def behaviour(seen: Seen) -> Answer:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.02)
        with lock:
            in_flight -= 1
        return Answer()

    egress.behaviour = behaviour
    for n in range(20):
        await enqueue(pool, n)
    worker = make_worker(pool, sender, clock, parallel_threshold=10, parallel_width=4)
    assert await worker.drain() == 20
    assert sorted(egress.ids()) == list(range(20))
    assert peak == 4


# -- a worker killed mid-batch -----------------------------------------------------------------------


async def test_rows_of_a_worker_killed_mid_batch_are_delivered_by_another(
    pool: db.Pool, sender: HttpSender, egress: RecordingServer, clock: FakeClock, db_url: str, tmp_path: Path
) -> None:
    for n in range(30):
        await enqueue(pool, n)
    egress.behaviour = lambda seen: Answer(delay_s=0.05)
    config_path = tmp_path / "silo-router.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "regions": {"de": {"address": "de.internal:8000"}},
                "envoy": {"egress": f"127.0.0.1:{egress.port}"},
                "sidecar": {"metrics": "127.0.0.1:0"},
                "delivery": {"poll_interval_s": 0.05, "lease_s": 20, "timeout_s": 2},
            }
        )
    )
    log_path = tmp_path / "deliver.log"
    child = start_deliver(config_path, db_url, log_path)
    try:
        await _until(lambda: len(egress.received()) >= 5 or child.poll() is not None, 30)
        assert child.poll() is None, log_path.read_text()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    killed_at = len(egress.received())
    before = await rows(pool)
    claimed = [row for row in before if row["state"] == "pending" and row["claimed_by"] is not None]
    assert claimed, "the killed worker held a claim on the rest of its batch"
    survivor = make_worker(pool, sender, clock)
    assert await survivor.drain() == 0  # the claim is still live: nobody else touches those rows
    clock.advance(21)  # the lease lapses
    await survivor.drain()
    ids = egress.ids()
    assert sorted(set(ids)) == list(range(30))
    assert ids == sorted(ids)  # in order; the row in flight at the kill may come twice, adjacently
    assert len(ids) - 30 <= 1
    assert killed_at < 30
    assert {row["state"] for row in await rows(pool)} == {"delivered"}


# -- helpers ------------------------------------------------------------------------------------------


def start_deliver(config_path: Path, db_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    """``silo-router deliver`` as a child process, as an operator (or Kubernetes) runs it."""
    env = {**os.environ, "DATABASE_URL": db_url}
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "sidecar", "deliver", "--config", str(config_path)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def _bigger_pool(url: str) -> db.Pool:
    return await db.open_pool(worker_dsn(url), max_size=8, timeout=5.0, check=False)


async def _count(pool: db.Pool, state: str, expected: int) -> bool:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM webhook_payload WHERE state = %s", (state,))
        found = await cur.fetchone()
    return found is not None and found[0] == expected


async def _until(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def _until_async(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
