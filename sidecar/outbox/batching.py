"""Group commit: concurrent ``enqueue`` calls share one transaction, one round trip and one WAL flush.

Under load most of a stored webhook's cost is the commit, not the row: a round trip, a
transaction and a WAL flush (fsync) per webhook. ``BatchingOutbox`` gathers the calls that arrive
together and writes them as one multi-row INSERT in one transaction.

Rules:
1. A caller is answered only after the transaction holding its rows has committed; until then
   it waits. No ids, no 202, before the commit.
2. A batch commits or fails as a whole: when the write fails, every caller of that batch gets
   ``OutboxUnavailable`` (its own instance) and answers 503, so the provider retries.
3. Gathering is bounded: a batch closes after ``max_wait_s`` or at ``max_batch`` webhooks,
   whichever comes first, and only after the event loop ran once (callers already runnable join
   without any wait). At most ``max_inflight`` batches are written at a time; while they are,
   new calls gather into the next one, so batches grow exactly when the database is the queue.
4. A caller that gives up (cancelled, e.g. its request budget ran out) before its batch closed
   is left out of the batch. Once the batch closed, its rows may still commit: as with a single
   INSERT cancelled mid-flight, the provider's retry may then store it twice.
5. Rows follow ``PostgresOutbox``: one per target region, in region order. Plain webhooks of a
   batch go in one multi-row INSERT; those behind the volume gate or with an async reply run the
   store's own statement (gate and follow-up CTEs), inside the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg
from psycopg.types.json import Jsonb

from sidecar.core.decision import Store
from sidecar.core.request import Request
from sidecar.db import Pool
from sidecar.errors import OutboxUnavailable
from sidecar.outbox import store as single
from sidecar.outbox.store import PostgresOutbox, gated, payload_headers

MAX_BATCH = 64
MAX_WAIT_S = 0.0005
MAX_INFLIGHT = 1

# ids come from the bigserial in the order rows are inserted, which ORDER BY r.n fixes; sorting
# the returned ids therefore gives them in input order, whatever order RETURNING lists them in
# (the same property PostgresOutbox relies on for one webhook's regions).
_INSERT_MANY: LiteralString = """
INSERT INTO webhook_payload (mailbox_name, provider, region_name, integration_id,
                             request_method, request_path, request_headers, request_body)
SELECT r.mailbox_name, r.provider, r.region_name, r.integration_id,
       r.request_method, r.request_path, r.request_headers, r.request_body
FROM unnest(%(mailbox)b::text[], %(provider)b::text[], %(region)b::text[], %(integration_id)b::bigint[],
            %(method)b::text[], %(path)b::text[], %(headers)b::jsonb[], %(body)b::bytea[])
     WITH ORDINALITY AS r(mailbox_name, provider, region_name, integration_id,
                          request_method, request_path, request_headers, request_body, n)
ORDER BY r.n
RETURNING id
"""


@dataclass(slots=True)
class _Waiting:
    decision: Store
    request: Request
    future: asyncio.Future[list[int]]


class BatchingOutbox:
    """``Outbox`` over ``PostgresOutbox``'s table that commits concurrent enqueues together."""

    def __init__(
        self,
        pool: Pool,
        store: PostgresOutbox | None = None,
        *,
        max_batch: int = MAX_BATCH,
        max_wait_s: float = MAX_WAIT_S,
        max_inflight: int = MAX_INFLIGHT,
    ) -> None:
        if max_batch < 1 or max_inflight < 1:
            raise ValueError("max_batch and max_inflight must be at least 1")
        self._pool = pool
        self._store = store or PostgresOutbox(pool)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_inflight = max_inflight
        self._pending: list[_Waiting] = []
        self._gathering = False
        self._full: asyncio.Event | None = None
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        """Transactions written (committed or not), for tests and benchmarks."""
        self.batched = 0
        """Webhooks in those transactions."""

    async def enqueue(self, decision: Store, request: Request) -> list[int]:
        """One row per region of ``decision``, committed with whatever else was waiting; their ids."""
        if not decision.regions:
            return []
        waiting = _Waiting(decision, request, asyncio.get_running_loop().create_future())
        self._pending.append(waiting)
        if self._full is not None and len(self._pending) >= self.max_batch:
            self._full.set()
        self._start_gathering()
        return await waiting.future

    async def aclose(self) -> None:
        """Wait for the batches already gathering or being written."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start_gathering(self) -> None:
        if self._pending and not self._gathering and self._inflight < self.max_inflight:
            self._gathering = True
            task = asyncio.ensure_future(self._gather_and_write())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _gather_and_write(self) -> None:
        try:
            batch = await self._gather()
        finally:
            self._gathering = False
        if not batch:
            self._start_gathering()
            return
        self._inflight += 1
        try:
            self._start_gathering()  # more than one batch waiting: the next one gathers meanwhile
            await self._write(batch)
        finally:
            self._inflight -= 1
            self._start_gathering()

    async def _gather(self) -> list[_Waiting]:
        await asyncio.sleep(0)  # callers already runnable in this loop iteration join for free
        if self.max_wait_s > 0 and len(self._pending) < self.max_batch:
            self._full = asyncio.Event()
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.max_wait_s):
                        await self._full.wait()
            finally:
                self._full = None
        taken, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        return [waiting for waiting in taken if not waiting.future.done()]  # rule 4: gave up before

    async def _write(self, batch: list[_Waiting]) -> None:
        self.batches += 1
        self.batched += len(batch)
        try:
            ids = await self._insert(batch)
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, OutboxUnavailable) else f"outbox write failed: {exc!r}"
            for waiting in batch:
                if not waiting.future.done():
                    error = OutboxUnavailable(reason)
                    error.__cause__ = exc
                    waiting.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise  # cancelled (shutdown): the callers were answered, let the task end
            return
        for waiting, own in zip(batch, ids, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(own)

    async def _insert(self, batch: list[_Waiting]) -> list[list[int]]:
        """All rows of ``batch`` in one transaction; each webhook's ids in region order."""
        plain = [waiting for waiting in batch if _plain(waiting.decision)]
        ids: dict[int, list[int]] = {}
        try:
            async with self._pool.connection() as conn, _transaction(conn, len(plain) < len(batch)):
                if plain:
                    cur = await conn.execute(_INSERT_MANY, _rows(plain))
                    returned = sorted(row[0] for row in await cur.fetchall())
                    for waiting in plain:
                        count = len(waiting.decision.regions)
                        ids[id(waiting)], returned = returned[:count], returned[count:]
                for waiting in batch:
                    if id(waiting) not in ids:
                        decision = waiting.decision
                        params = self._store._params(decision, waiting.request, gated(decision))
                        cur = await conn.execute(_statement(decision), params)
                        ids[id(waiting)] = [row[0] for row in await cur.fetchall()]
        except psycopg.Error as exc:
            raise OutboxUnavailable(f"outbox write failed: {exc.__class__.__name__}: {exc}") from exc
        # The statement (autocommit) or the transaction block committed: every id below is durable.
        return [ids[id(waiting)] for waiting in batch]


def _transaction(conn: psycopg.AsyncConnection[Any], needed: bool) -> AbstractAsyncContextManager[object]:
    """An explicit transaction only when the batch takes more than one statement: a single
    statement in autocommit is its own transaction, one round trip instead of three."""
    return conn.transaction() if needed else contextlib.nullcontext()


def _plain(decision: Store) -> bool:
    return not gated(decision) and decision.reply_to is None


def _statement(decision: Store) -> LiteralString:
    """``PostgresOutbox``'s own statement for one webhook (volume gate, follow-up row)."""
    return single._STATEMENTS[gated(decision), decision.reply_to is not None]


def _rows(batch: list[_Waiting]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {
        name: [] for name in ("mailbox", "provider", "region", "integration_id", "method", "path", "headers", "body")
    }
    for waiting in batch:
        decision, request = waiting.decision, waiting.request
        mailbox = decision.mailbox.name(over_volume=False)
        headers = Jsonb(payload_headers(request))
        for region in decision.regions:
            columns["mailbox"].append(mailbox)
            columns["provider"].append(decision.provider)
            columns["region"].append(region)
            columns["integration_id"].append(decision.integration_id)
            columns["method"].append(request.method)
            columns["path"].append(request.full_path)
            columns["headers"].append(headers)
            columns["body"].append(request.body or b"")
    return columns
