"""The outbox in PostgreSQL: ``enqueue`` writes one ``webhook_payload`` row per region.

The whole enqueue is ONE statement, and so one transaction even in autocommit: the volume-gate
counter (a CTE) and every region's row commit together or not at all, in one round trip. The
gate's row lock is therefore held only for that statement, which matters because every webhook
of one busy integration, from every replica, updates the same counter row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, LiteralString

import psycopg
from psycopg.types.json import Jsonb

from sidecar.core.decision import Store
from sidecar.core.request import Request
from sidecar.db import Pool
from sidecar.errors import OutboxUnavailable

VOLUME_THRESHOLD = 3000
"""More webhooks than this for one integration in one window turns its mailbox buckets on (reference §2.6)."""
VOLUME_WINDOW = timedelta(hours=1)
BUCKETED_FOR = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class VolumeGate:
    threshold: int = VOLUME_THRESHOLD
    window: timedelta = VOLUME_WINDOW
    bucketed_for: timedelta = BUCKETED_FOR


def payload_headers(request: Request) -> dict[str, str]:
    """The headers to store and replay: everything but HTTP/2 pseudo-headers (``:path``, ``:method``…)."""
    return {name: value for name, value in request.headers.items() if not name.startswith(":")}


def gated(decision: Store) -> bool:
    """Whether the volume gate decides the mailbox name (bucketing possible but not forced)."""
    mailbox = decision.mailbox
    return mailbox.bucket_key is not None and not mailbox.always_bucket and decision.integration_id is not None


# Rows are numbered by region order; ORDER BY in INSERT … SELECT makes ids follow it (the
# delivery worker's "last region answer" of an async reply is the highest id that answered).
_ROWS: LiteralString = """
INSERT INTO webhook_payload (mailbox_name, provider, region_name, integration_id,
                             request_method, request_path, request_headers, request_body, followup_id)
SELECT {mailbox}, %(provider)s::text, r.region_name, %(integration_id)s::bigint,
       %(method)s::text, %(path)s::text, %(headers)b::jsonb, %(body)b::bytea, {followup}
FROM {source} unnest(%(regions)s::text[]) WITH ORDINALITY AS r(region_name, n)
ORDER BY r.n
RETURNING id
"""

# An async reply (Store.reply_to): the follow-up row is written by the same statement as the
# region rows, so a committed webhook always has its follow-up and never the other way round.
_FOLLOWUP: LiteralString = """
followup AS (
    INSERT INTO webhook_followup (kind, url, provider, integration_id)
    VALUES (%(reply_kind)s, %(reply_url)s, %(provider)s, %(integration_id)s::bigint)
    RETURNING id
)
"""

# Counts the webhook in the current window (a new window restarts at 1) and, when the count goes
# over the threshold while the flag is off, sets the flag for `bucketed_for`. Like Sentry's cache
# flag, an active flag is not extended: it lapses after a day and is set again if volume stays high.
_GATE: LiteralString = """
gate AS (
    INSERT INTO webhook_volume AS v (provider, integration_id, window_start, hits, bucketed_until)
    VALUES (%(provider)s, %(integration_id)s, date_bin(%(window)s, now(), 'epoch'), 1,
            CASE WHEN 1 > %(threshold)s THEN now() + %(bucketed_for)s END)
    ON CONFLICT (provider, integration_id) DO UPDATE SET
        hits = CASE WHEN v.window_start = EXCLUDED.window_start THEN v.hits + 1 ELSE 1 END,
        window_start = EXCLUDED.window_start,
        bucketed_until = CASE
            WHEN v.bucketed_until > now() THEN v.bucketed_until
            WHEN (CASE WHEN v.window_start = EXCLUDED.window_start THEN v.hits + 1 ELSE 1 END) > %(threshold)s
                THEN now() + %(bucketed_for)s
            ELSE v.bucketed_until
        END
    RETURNING coalesce(v.bucketed_until > now(), false) AS over_volume
)
"""
_PLAIN_MAILBOX: LiteralString = "%(mailbox)s::text"
_GATED_MAILBOX: LiteralString = "CASE WHEN gate.over_volume THEN %(mailbox_over)s::text ELSE %(mailbox)s::text END"


def _insert(use_gate: bool, with_followup: bool) -> LiteralString:
    """The enqueue statement: the region rows, behind the gate and follow-up CTEs when needed."""
    ctes: list[LiteralString] = []
    if use_gate:
        ctes.append(_GATE)
    if with_followup:
        ctes.append(_FOLLOWUP)
    rows = _ROWS.format(
        mailbox=_GATED_MAILBOX if use_gate else _PLAIN_MAILBOX,
        followup="followup.id" if with_followup else "NULL::bigint",
        source=("gate, " if use_gate else "") + ("followup, " if with_followup else ""),
    )
    return ("WITH " + ",".join(ctes) if ctes else "") + rows


_STATEMENTS: dict[tuple[bool, bool], LiteralString] = {
    (gate, followup): _insert(gate, followup) for gate in (False, True) for followup in (False, True)
}


class PostgresOutbox:
    """``Outbox`` over ``webhook_payload``. Takes a pool, never creates one."""

    def __init__(self, pool: Pool, volume_threshold: int = VOLUME_THRESHOLD, gate: VolumeGate | None = None) -> None:
        self._pool = pool
        self.gate = gate or VolumeGate(threshold=volume_threshold)

    async def enqueue(self, decision: Store, request: Request) -> list[int]:
        """One row per region of ``decision``, committed together; their ids, in region order."""
        if not decision.regions:
            return []
        use_gate = gated(decision)
        params = self._params(decision, request, use_gate)
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(_STATEMENTS[use_gate, decision.reply_to is not None], params)
                ids = [row[0] for row in await cur.fetchall()]
        except psycopg.Error as exc:
            raise OutboxUnavailable(f"outbox write failed: {exc.__class__.__name__}: {exc}") from exc
        # Leaving the connection block committed (or, in autocommit, the statement did): ids are durable.
        return ids

    def _params(self, decision: Store, request: Request, use_gate: bool) -> dict[str, Any]:
        params: dict[str, Any] = {
            "mailbox": decision.mailbox.name(over_volume=False),
            "provider": decision.provider,
            "integration_id": decision.integration_id,
            "method": request.method,
            "path": request.full_path,
            "headers": Jsonb(payload_headers(request)),
            "body": request.body or b"",
            "regions": list(decision.regions),
        }
        if decision.reply_to is not None:
            params |= {"reply_kind": decision.reply_to.kind, "reply_url": decision.reply_to.url}
        if use_gate:
            params |= {
                "mailbox_over": decision.mailbox.name(over_volume=True),
                "threshold": self.gate.threshold,
                "window": self.gate.window,
                "bucketed_for": self.gate.bucketed_for,
            }
        return params
