"""``Deliveries`` in PostgreSQL: claims with a lease, outcomes, follow-ups, retention.

Theory of operation (the invariants every statement below keeps):

1. A queue is (mailbox_name, region_name); its head is its lowest pending id. Rows of a queue are
   sent in id order, and only while the head is due: a failing head blocks its queue (and only
   its queue) until its backoff has passed.
2. A claim is ``claimed_until``/``claimed_by`` on the head and the rows behind it. A queue whose
   head carries a live claim is skipped by every other worker; rows never hold a database lock
   while a request is in flight. A worker killed mid-batch leaves claims that lapse after the lease.
3. The head is locked ``FOR UPDATE SKIP LOCKED`` and re-checked (pending, due, free) under the lock,
   so two workers racing for one queue cannot both win, whatever their snapshots said.
4. Every write of an outcome is fenced on ``claimed_by``: a worker whose lease lapsed and whose
   rows another worker took over writes nothing (its send was at most a duplicate: delivery is
   at least once, never at most once).
5. A row's follow-up is moved along under the follow-up's row lock, in statements that run after
   the lock is held (READ COMMITTED gives each a fresh snapshot), so of two regions finishing at
   once, the second always sees the first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, LiteralString

from psycopg import sql
from psycopg.rows import dict_row

from sidecar.db import Pool
from sidecar.outbox.base import Backlog, Claim, Followup, Payload, Queue, Recorded
from sidecar.outbox.policy import Dead, Delivered, Retry

HEAD_PROBE = 16
"""Due, free heads looked at per claim: the first of them that is not locked right now wins."""

PAYLOAD_COLUMNS: LiteralString = """
    p.id, p.mailbox_name, p.provider, p.region_name, p.integration_id, p.date_added,
    coalesce(p.replayed_at, p.date_added) AS age_from, p.schedule_for, p.attempts,
    p.request_method, p.request_path, p.request_headers, p.request_body, p.followup_id
"""

# The walk over queues is a skip scan of webhook_payload_queue_head: one index probe per queue,
# starting after the worker's cursor, so workers spread over the queues instead of all starting
# at "a". PostgreSQL evaluates a recursive CTE only as far as its reader pulls, so the walk stops
# after HEAD_PROBE due, free heads.
_CLAIM: LiteralString = (
    """
WITH RECURSIVE queue AS (
    (SELECT p.mailbox_name, p.region_name, p.id, p.schedule_for, p.claimed_until
     FROM webhook_payload p
     WHERE p.state = 'pending' AND (p.mailbox_name, p.region_name) > (%(after_mailbox)s::text, %(after_region)s::text)
     ORDER BY p.mailbox_name, p.region_name, p.id
     LIMIT 1)
    UNION ALL
    SELECT nxt.* FROM queue q CROSS JOIN LATERAL (
        SELECT p.mailbox_name, p.region_name, p.id, p.schedule_for, p.claimed_until
        FROM webhook_payload p
        WHERE p.state = 'pending' AND (p.mailbox_name, p.region_name) > (q.mailbox_name, q.region_name)
        ORDER BY p.mailbox_name, p.region_name, p.id
        LIMIT 1
    ) nxt
),
candidate AS (
    SELECT id FROM queue
    WHERE schedule_for <= %(now)s AND (claimed_until IS NULL OR claimed_until <= %(now)s)
    LIMIT %(probe)s
),
head AS (
    SELECT p.id, p.mailbox_name, p.region_name
    FROM webhook_payload p
    WHERE p.id IN (SELECT id FROM candidate)
      AND p.state = 'pending' AND p.schedule_for <= %(now)s
      AND (p.claimed_until IS NULL OR p.claimed_until <= %(now)s)
    ORDER BY p.mailbox_name, p.region_name
    LIMIT 1
    FOR UPDATE SKIP LOCKED
),
batch AS (
    SELECT t.id FROM head h CROSS JOIN LATERAL (
        SELECT p.id FROM webhook_payload p
        WHERE p.mailbox_name = h.mailbox_name AND p.region_name = h.region_name
          AND p.state = 'pending' AND p.id >= h.id
        ORDER BY p.id
        LIMIT %(batch)s
    ) t
)
UPDATE webhook_payload p SET claimed_until = %(until)s, claimed_by = %(worker)s
FROM batch WHERE p.id = batch.id
RETURNING"""
    + PAYLOAD_COLUMNS
)

_RENEW: LiteralString = """
UPDATE webhook_payload SET claimed_until = %(until)s
WHERE id = ANY(%(ids)s) AND claimed_by = %(worker)s AND state = 'pending'
"""

_RELEASE: LiteralString = """
UPDATE webhook_payload SET claimed_until = NULL, claimed_by = NULL
WHERE id = ANY(%(ids)s) AND claimed_by = %(worker)s AND state = 'pending'
"""

# One outcome write for region rows and follow-ups alike, fenced on the claim: a worker whose
# lease lapsed (and was taken over) writes nothing.
_RECORD_TEMPLATE: LiteralString = """
UPDATE {table} SET
    state = %(state)s,
    attempts = attempts + %(increment)s,
    schedule_for = coalesce(%(at)s::timestamptz, schedule_for),
    delivered_at = %(delivered_at)s::timestamptz,
    last_attempt_at = CASE WHEN %(attempted)s THEN %(now)s::timestamptz ELSE last_attempt_at END,
    last_status = CASE WHEN %(attempted)s THEN %(status)s::integer ELSE last_status END,
    last_error = %(error)s::text,
    claimed_until = NULL,
    claimed_by = NULL
WHERE id = %(id)s AND claimed_by = %(worker)s AND state = 'pending'
RETURNING id
"""
_RECORD = sql.SQL(_RECORD_TEMPLATE).format(table=sql.Identifier("webhook_payload"))
_RECORD_FOLLOWUP = sql.SQL(_RECORD_TEMPLATE).format(table=sql.Identifier("webhook_followup"))

_DELETE_DELIVERED: LiteralString = """
DELETE FROM webhook_payload WHERE id = %(id)s AND claimed_by = %(worker)s AND state = 'pending' RETURNING id
"""

_LOCK_FOLLOWUP: LiteralString = "SELECT state FROM webhook_followup WHERE id = %(followup)s FOR UPDATE"

# "Last region answer" = the highest row id (ids follow region order) that answered 2xx so far.
_KEEP_ANSWER: LiteralString = """
UPDATE webhook_followup SET reply_body = %(body)s, reply_row_id = %(id)s
WHERE id = %(followup)s AND (reply_row_id IS NULL OR reply_row_id < %(id)s)
"""

# Arm the follow-up once every region has been tried and one answered (post that answer), or once
# no row is left pending without any answer (nothing to post). Runs after _LOCK_FOLLOWUP.
_ARM_FOLLOWUP: LiteralString = """
WITH grp AS (
    SELECT count(*) FILTER (WHERE state = 'pending' AND attempts = 0) AS untried,
           count(*) FILTER (WHERE state = 'pending') AS pending
    FROM webhook_payload WHERE followup_id = %(followup)s
)
UPDATE webhook_followup f SET
    state = CASE WHEN f.reply_body IS NOT NULL THEN 'pending' ELSE 'skipped' END,
    schedule_for = %(now)s,
    last_error = CASE WHEN f.reply_body IS NULL THEN 'no region answered 2xx' ELSE f.last_error END
FROM grp
WHERE f.id = %(followup)s AND f.state = 'waiting'
  AND ((f.reply_body IS NOT NULL AND grp.untried = 0) OR grp.pending = 0)
"""

_CLAIM_FOLLOWUPS: LiteralString = """
UPDATE webhook_followup SET claimed_until = %(until)s, claimed_by = %(worker)s
WHERE id IN (
    SELECT id FROM webhook_followup
    WHERE state = 'pending' AND schedule_for <= %(now)s AND (claimed_until IS NULL OR claimed_until <= %(now)s)
    ORDER BY schedule_for
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, kind, url, provider, integration_id, date_added, attempts, reply_body
"""

_PURGE_DELIVERED: LiteralString = """
DELETE FROM webhook_payload WHERE id IN (
    SELECT id FROM webhook_payload WHERE state = 'delivered' AND delivered_at < %(before)s LIMIT %(limit)s
)
"""

_PURGE_FOLLOWUPS: LiteralString = """
DELETE FROM webhook_followup WHERE id IN (
    SELECT id FROM webhook_followup WHERE date_added < %(before)s AND state <> 'pending' LIMIT %(limit)s
)
"""

_BACKLOG: LiteralString = """
SELECT region_name, count(*), min(date_added) FROM webhook_payload WHERE state = 'pending'
GROUP BY region_name ORDER BY region_name
"""


def at(epoch: float) -> datetime:
    """Epoch seconds (the worker's clock) as the timestamptz PostgreSQL compares with."""
    return datetime.fromtimestamp(epoch, UTC)


def epoch(value: datetime) -> float:
    return value.timestamp()


def payload_of(row: Mapping[str, Any]) -> Payload:
    return Payload(
        id=row["id"],
        mailbox_name=row["mailbox_name"],
        provider=row["provider"],
        region_name=row["region_name"],
        integration_id=row["integration_id"],
        date_added=epoch(row["date_added"]),
        age_from=epoch(row["age_from"]),
        schedule_for=epoch(row["schedule_for"]),
        attempts=row["attempts"],
        request_method=row["request_method"],
        request_path=row["request_path"],
        request_headers={str(k): str(v) for k, v in (row["request_headers"] or {}).items()},
        request_body=bytes(row["request_body"]),
        followup_id=row["followup_id"],
    )


def outcome_params(result: Recorded, now: float) -> dict[str, Any]:
    """The state columns for ``result`` (shared by rows and follow-ups)."""
    params: dict[str, Any] = {
        "increment": 1 if result.attempted else 0,
        "attempted": result.attempted,
        "status": result.status,
        "now": at(now),
        "at": None,
        "delivered_at": None,
    }
    match result.next:
        case Delivered():
            params |= {"state": "delivered", "delivered_at": at(now), "error": None}
        case Retry(at=when):
            params |= {"state": "pending", "at": at(when), "error": result.error}
        case Dead(reason=reason):
            params |= {"state": "dead", "error": reason + (f": {result.error}" if result.error else "")}
    return params


class PostgresDeliveries:
    """``Deliveries`` over ``webhook_payload`` and ``webhook_followup``. Takes a pool, never creates one.

    ``keep_delivered``: mark delivered rows (purged after the retention) rather than delete them.
    """

    def __init__(self, pool: Pool, keep_delivered: bool = True) -> None:
        self._pool = pool
        self.keep_delivered = keep_delivered

    async def claim(self, worker: str, now: float, lease_s: float, batch_size: int, after: Queue) -> Claim | None:
        claim = await self._claim_after(worker, now, lease_s, batch_size, after)
        if claim is None and after != ("", ""):
            claim = await self._claim_after(worker, now, lease_s, batch_size, ("", ""))  # wrap around
        return claim

    async def _claim_after(
        self, worker: str, now: float, lease_s: float, batch_size: int, after: Queue
    ) -> Claim | None:
        params = {
            "after_mailbox": after[0],
            "after_region": after[1],
            "now": at(now),
            "until": at(now + lease_s),
            "worker": worker,
            "probe": HEAD_PROBE,
            "batch": batch_size,
        }
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_CLAIM, params)
            rows = sorted((payload_of(row) for row in await cur.fetchall()), key=lambda row: row.id)
        if not rows:
            return None
        return Claim(worker, rows[0].queue, tuple(rows), now + lease_s)

    async def renew(self, worker: str, ids: Sequence[int], until: float) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_RENEW, {"ids": list(ids), "worker": worker, "until": at(until)})
            return cur.rowcount

    async def release(self, worker: str, ids: Sequence[int]) -> None:
        if not ids:
            return
        async with self._pool.connection() as conn:
            await conn.execute(_RELEASE, {"ids": list(ids), "worker": worker})

    async def record(self, worker: str, row: Payload, result: Recorded, now: float) -> bool:
        params = outcome_params(result, now) | {"id": row.id, "worker": worker}
        delete = isinstance(result.next, Delivered) and not self.keep_delivered
        async with self._pool.connection() as conn:
            if row.followup_id is None:
                cur = await conn.execute(_DELETE_DELIVERED if delete else _RECORD, params)
                return cur.rowcount == 1
            async with conn.transaction():
                cur = await conn.execute(_DELETE_DELIVERED if delete else _RECORD, params)
                if cur.rowcount != 1:
                    return False
                await self._advance_followup(conn, row, result, now)
            return True

    async def _advance_followup(self, conn: Any, row: Payload, result: Recorded, now: float) -> None:
        followup = {"followup": row.followup_id, "id": row.id, "now": at(now)}
        cur = await conn.execute(_LOCK_FOLLOWUP, followup)
        found = await cur.fetchone()
        if found is None or found[0] != "waiting":
            return  # purged, or already posted / given up: a late region changes nothing
        if isinstance(result.next, Delivered) and result.response_body is not None:
            await conn.execute(_KEEP_ANSWER, followup | {"body": result.response_body})
        await conn.execute(_ARM_FOLLOWUP, followup)

    async def claim_followups(self, worker: str, now: float, lease_s: float, limit: int) -> list[Followup]:
        params = {"now": at(now), "until": at(now + lease_s), "worker": worker, "limit": limit}
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_CLAIM_FOLLOWUPS, params)
            rows = await cur.fetchall()
        return [
            Followup(
                id=row["id"],
                kind=row["kind"],
                url=row["url"],
                provider=row["provider"],
                integration_id=row["integration_id"],
                date_added=epoch(row["date_added"]),
                attempts=row["attempts"],
                reply_body=bytes(row["reply_body"]) if row["reply_body"] is not None else None,
            )
            for row in sorted(rows, key=lambda row: row["id"])
        ]

    async def record_followup(self, worker: str, followup: Followup, result: Recorded, now: float) -> bool:
        params = outcome_params(result, now) | {"id": followup.id, "worker": worker}
        if isinstance(result.next, Dead) and result.next.reason == "nothing_to_post":
            params["state"] = "skipped"  # the regions had nothing to say: not a failed post
        async with self._pool.connection() as conn:
            cur = await conn.execute(_RECORD_FOLLOWUP, params)
            return cur.rowcount == 1

    async def purge_finished(self, delivered_before: float, followups_before: float, limit: int) -> int:
        async with self._pool.connection() as conn:
            rows = await conn.execute(_PURGE_DELIVERED, {"before": at(delivered_before), "limit": limit})
            followups = await conn.execute(_PURGE_FOLLOWUPS, {"before": at(followups_before), "limit": limit})
            return rows.rowcount + followups.rowcount

    async def backlog(self) -> list[Backlog]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_BACKLOG)
            return [
                Backlog(region, count, epoch(oldest) if oldest is not None else None)
                for region, count, oldest in await cur.fetchall()
            ]
