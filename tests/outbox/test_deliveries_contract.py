"""One contract, two implementations: the worker over ``InMemoryDeliveries`` and over
``PostgresDeliveries`` must behave alike. The sender is scripted in-process (no HTTP), so these
tests are about claims, order, outcomes and follow-ups only."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from delivery_fakes import FakeClock
from psycopg.rows import dict_row

from sidecar.config import DeliverySettings
from sidecar.core.decision import ReplyTarget, Store
from sidecar.core.mailbox import Mailbox
from sidecar.core.request import Request
from sidecar.outbox.base import Deliveries, Outbox, Payload, Recorded
from sidecar.outbox.claims import PostgresDeliveries
from sidecar.outbox.memory import InMemoryDeliveries, InMemoryOutbox
from sidecar.outbox.policy import Delivered
from sidecar.outbox.sender import Sent
from sidecar.outbox.store import PostgresOutbox
from sidecar.outbox.worker import Worker

SETTINGS = DeliverySettings(poll_interval_s=0.01, lease_s=30, timeout_s=2, parallel_threshold=0)
BACKOFF_1 = 3 * 60 * 1.4


@dataclass
class ScriptedSender:
    """``Sender`` without a network: per-region scripts of answers, then 200 with a JSON body."""

    scripts: dict[str, deque[Sent]] = field(default_factory=lambda: defaultdict(deque))
    sent: list[tuple[str, int]] = field(default_factory=list)
    posted: list[tuple[str, bytes]] = field(default_factory=list)

    async def deliver(self, payload: Payload) -> Sent:
        self.sent.append((payload.region_name, json.loads(payload.request_body)["n"]))
        script = self.scripts[payload.region_name]
        return script.popleft() if script else Sent(200, body=json.dumps({"from": payload.region_name}).encode())

    async def follow_up(self, url: str, body: bytes) -> Sent:
        self.posted.append((url, body))
        return Sent(200)

    async def aclose(self) -> None:
        pass

    def numbers(self, region: str) -> list[int]:
        return [n for r, n in self.sent if r == region]


@dataclass
class Backend:
    outbox: Outbox
    store: Deliveries
    rows: Any  # async () -> list[dict]


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.db)])
def backend(request: pytest.FixtureRequest, clock: FakeClock) -> Backend:
    if request.param == "memory":
        outbox = InMemoryOutbox(clock=clock)

        async def memory_rows() -> list[dict[str, Any]]:
            return [
                {"id": r.id, "state": r.state, "attempts": r.attempts, "last_status": r.last_status}
                for r in outbox.rows
            ]

        return Backend(outbox, InMemoryDeliveries(outbox), memory_rows)
    pool = request.getfixturevalue("pool")

    async def postgres_rows() -> list[dict[str, Any]]:
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT id, state, attempts, last_status FROM webhook_payload ORDER BY id")
            return await cur.fetchall()

    return Backend(PostgresOutbox(pool), PostgresDeliveries(pool), postgres_rows)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sender() -> ScriptedSender:
    return ScriptedSender()


def worker(backend: Backend, sender: ScriptedSender, clock: FakeClock, name: str = "w") -> Worker:
    return Worker(backend.store, sender, clock, SETTINGS, asyncio.Event(), name=name)


async def enqueue(
    backend: Backend, n: int, regions: tuple[str, ...] = ("de",), reply_to: ReplyTarget | None = None
) -> None:
    decision = Store("slack", regions, Mailbox("slack", "7"), 7, "t", reply_to=reply_to)
    await backend.outbox.enqueue(decision, Request.from_target("POST", "/x", {}, json.dumps({"n": n}).encode()))


async def test_head_of_line_blocking_per_queue_and_backoff(
    backend: Backend, sender: ScriptedSender, clock: FakeClock
) -> None:
    for n in range(3):
        await enqueue(backend, n, ("de", "us"))
    sender.scripts["de"].append(Sent(500))
    w = worker(backend, sender, clock)
    await w.drain()
    assert (sender.numbers("de"), sender.numbers("us")) == ([0], [0, 1, 2])
    clock.advance(BACKOFF_1 + 1)
    await w.drain()
    assert sender.numbers("de") == [0, 0, 1, 2]
    assert [row["state"] for row in await backend.rows()] == ["delivered"] * 6


async def test_dropped_rows_are_dead_letters_and_exhausted_ones_too(
    backend: Backend, sender: ScriptedSender, clock: FakeClock
) -> None:
    await enqueue(backend, 0)
    await enqueue(backend, 1)
    sender.scripts["de"].append(Sent(409))
    sender.scripts["de"].extend(Sent(None, "timeout") for _ in range(10))
    w = worker(backend, sender, clock)
    for _ in range(11):
        await w.drain()
        clock.advance(3601)
    rows = await backend.rows()
    assert [(r["state"], r["attempts"], r["last_status"]) for r in rows] == [("dead", 1, 409), ("dead", 10, None)]


async def test_an_egress_outage_counts_no_attempt(backend: Backend, sender: ScriptedSender, clock: FakeClock) -> None:
    await enqueue(backend, 0)
    sender.scripts["de"].append(Sent(None, "egress_unreachable", egress_down=True))
    w = worker(backend, sender, clock)
    await w.drain()
    assert [(r["state"], r["attempts"]) for r in await backend.rows()] == [("pending", 0)]
    await w.drain()  # the claim was given back: the row is due again at once
    assert [(r["state"], r["attempts"]) for r in await backend.rows()] == [("delivered", 1)]


async def test_one_claim_per_queue_and_a_lapsed_claim_is_fenced(backend: Backend, clock: FakeClock) -> None:
    for n in range(3):
        await enqueue(backend, n)
    first = await backend.store.claim("a", clock(), 30, 2, ("", ""))
    assert first is not None and [r.id for r in first.rows] == [1, 2]
    assert await backend.store.claim("b", clock(), 30, 10, ("", "")) is None
    clock.advance(31)
    second = await backend.store.claim("b", clock(), 30, 10, ("", ""))
    assert second is not None and [r.id for r in second.rows] == [1, 2, 3]
    assert not await backend.store.record("a", first.rows[0], Recorded(Delivered(), True, 200), clock())
    assert await backend.store.renew("a", [1, 2], clock() + 30) == 0
    assert await backend.store.renew("b", [1, 2, 3], clock() + 30) == 3


async def test_the_last_regions_answer_is_posted_once_all_were_tried(
    backend: Backend, sender: ScriptedSender, clock: FakeClock
) -> None:
    await enqueue(backend, 0, ("de", "eu", "us"), ReplyTarget("slack", "https://hooks.slack.com/a/b"))
    sender.scripts["us"].append(Sent(503))
    await worker(backend, sender, clock).drain()
    assert sender.posted == [("https://hooks.slack.com/a/b", b'{"from": "eu"}')]


async def test_nothing_is_posted_when_no_region_answered(
    backend: Backend, sender: ScriptedSender, clock: FakeClock
) -> None:
    await enqueue(backend, 0, ("de",), ReplyTarget("slack", "https://hooks.slack.com/a/b"))
    sender.scripts["de"].append(Sent(404))
    await worker(backend, sender, clock).drain()
    assert sender.posted == []


async def test_concurrent_workers_keep_each_queue_in_order(
    backend: Backend, sender: ScriptedSender, clock: FakeClock
) -> None:
    for n in range(60):
        await enqueue(backend, n, ("de", "eu", "us"))
    workers = [worker(backend, sender, clock, f"w{i}") for i in range(4)]
    await asyncio.gather(*(w.drain() for w in workers))
    for region in ("de", "eu", "us"):
        assert sender.numbers(region) == list(range(60))


@dataclass
class SlowSender(ScriptedSender):
    """Each send takes ``seconds`` of the test's clock."""

    clock: FakeClock = field(default_factory=FakeClock)
    seconds: float = 0.0

    async def deliver(self, payload: Payload) -> Sent:
        self.clock.advance(self.seconds)
        return await super().deliver(payload)


async def test_a_long_drain_renews_its_lease_and_keeps_its_rows(backend: Backend, clock: FakeClock) -> None:
    for n in range(6):
        await enqueue(backend, n)
    sender = SlowSender(clock=clock, seconds=20)  # the 30 s lease would lapse after the second send
    w = worker(backend, sender, clock)
    other = worker(backend, ScriptedSender(), clock, "other")
    assert await w.drain_one() == 6  # one claim, renewed on the way
    assert sender.numbers("de") == list(range(6))
    assert await other.drain_one() == 0


async def test_a_worker_that_lost_its_claim_stops_and_writes_nothing(backend: Backend, clock: FakeClock) -> None:
    for n in range(4):
        await enqueue(backend, n)
    thief = worker(backend, ScriptedSender(), clock, "thief")

    class Stalling(ScriptedSender):
        async def deliver(self, payload: Payload) -> Sent:
            clock.advance(31)  # stalls past the lease (a paused VM, say); the thief takes over
            await thief.drain_one()
            return await super().deliver(payload)

    stalled = worker(backend, Stalling(), clock, "stalled")
    assert await stalled.drain_one() == 1  # its row counts as finished (by the thief), and it stops
    assert [row["state"] for row in await backend.rows()] == ["delivered"] * 4
