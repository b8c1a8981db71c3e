"""Operator tools over the outbox: stats, list, show, replay and purge, with the same filters.

Replay puts dead letters back in their mailbox: they keep their ids, so the queue sends them in
their original order, before anything newer that is still waiting. Their attempts restart at 0
and their maximum age counts from the replay. A replayed row of an async reply does not post its
follow-up again (Slack and Discord stop listening within 30 minutes).

Long operations work in batches of ``BATCH`` rows, each its own transaction, and report progress
after each: an interrupted replay or purge has done what it reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, LiteralString

from psycopg import sql
from psycopg.rows import dict_row

from sidecar.db import Pool
from sidecar.outbox.claims import at, epoch

STATES = ("pending", "delivered", "dead")
BATCH = 1000
Progress = Callable[[int, int], None]
"""(done so far, total when the operation started)."""

SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-gitlab-token"})
"""Headers that carry a credential rather than a signature; ``show`` masks them unless asked not to."""

_DURATION = re.compile(r"(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhd]?)")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``6h``, ``3d`` → seconds."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 6h, 3d)")
    return float(found["amount"]) * _UNIT_S[found["unit"]]


@dataclass(frozen=True, slots=True)
class Filters:
    """Which rows: every field given must match. ``mailbox`` ending in ``*`` is a prefix."""

    provider: str | None = None
    region: str | None = None
    mailbox: str | None = None
    state: str | None = None
    older_than_s: float | None = None
    newer_than_s: float | None = None

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, not {self.state!r}")

    def where(self, now: float) -> tuple[sql.Composable, dict[str, Any]]:
        """A WHERE condition (never empty) and its parameters."""
        parts: list[sql.Composable] = [sql.SQL("true")]
        params: dict[str, Any] = {}
        simple: list[tuple[LiteralString, LiteralString, str | None]] = [
            ("provider", "provider", self.provider),
            ("region_name", "region", self.region),
            ("state", "state", self.state),
        ]
        for column, name, value in simple:
            if value is not None:
                parts.append(sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(name)))
                params[name] = value
        if self.mailbox is not None:
            if self.mailbox.endswith("*"):
                parts.append(sql.SQL("starts_with(mailbox_name, %(mailbox)s)"))
                params["mailbox"] = self.mailbox[:-1]
            else:
                parts.append(sql.SQL("mailbox_name = %(mailbox)s"))
                params["mailbox"] = self.mailbox
        if self.older_than_s is not None:
            parts.append(sql.SQL("date_added < %(older)s"))
            params["older"] = at(now - self.older_than_s)
        if self.newer_than_s is not None:
            parts.append(sql.SQL("date_added >= %(newer)s"))
            params["newer"] = at(now - self.newer_than_s)
        return sql.SQL(" AND ").join(parts), params


@dataclass(frozen=True, slots=True)
class StateCount:
    state: str
    region: str
    provider: str | None
    rows: int
    oldest_age_s: float


@dataclass(frozen=True, slots=True)
class RowSummary:
    id: int
    mailbox_name: str
    region_name: str
    provider: str | None
    state: str
    attempts: int
    age_s: float
    next_attempt_in_s: float | None
    last_status: int | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class RowDetail:
    summary: RowSummary
    integration_id: int | None
    request_method: str
    request_path: str
    request_headers: Mapping[str, str]
    request_body: bytes
    date_added: float
    delivered_at: float | None
    claimed_by: str | None
    claimed_until: float | None
    replays: int
    followup: Mapping[str, Any] | None


_SUMMARY_COLUMNS = sql.SQL(
    "id, mailbox_name, region_name, provider, state, attempts, date_added, schedule_for, last_status, last_error"
)


def _summary(row: Mapping[str, Any], now: float) -> RowSummary:
    waiting = row["state"] == "pending"
    return RowSummary(
        id=row["id"],
        mailbox_name=row["mailbox_name"],
        region_name=row["region_name"],
        provider=row["provider"],
        state=row["state"],
        attempts=row["attempts"],
        age_s=now - epoch(row["date_added"]),
        next_attempt_in_s=max(epoch(row["schedule_for"]) - now, 0.0) if waiting else None,
        last_status=row["last_status"],
        last_error=row["last_error"],
    )


async def count(pool: Pool, filters: Filters, now: float) -> int:
    condition, params = filters.where(now)
    query = sql.SQL("SELECT count(*) FROM webhook_payload WHERE {}").format(condition)
    async with pool.connection() as conn:
        cur = await conn.execute(query, params)
        found = await cur.fetchone()
    return int(found[0]) if found else 0


async def stats(pool: Pool, filters: Filters, now: float) -> list[StateCount]:
    """Rows per state, region and provider, with the age of the oldest."""
    condition, params = filters.where(now)
    query = sql.SQL(
        "SELECT state, region_name, provider, count(*) AS n, min(date_added) AS oldest FROM webhook_payload"
        " WHERE {} GROUP BY state, region_name, provider ORDER BY state, region_name, provider NULLS FIRST"
    ).format(condition)
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    return [
        StateCount(row["state"], row["region_name"], row["provider"], row["n"], now - epoch(row["oldest"]))
        for row in rows
    ]


async def followup_stats(pool: Pool) -> dict[str, int]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT state, count(*) FROM webhook_followup GROUP BY state ORDER BY state")
        return {state: n for state, n in await cur.fetchall()}


async def list_rows(pool: Pool, filters: Filters, now: float, limit: int = 50, after_id: int = 0) -> list[RowSummary]:
    """Matching rows in id order, ``limit`` at a time from ``after_id``."""
    condition, params = filters.where(now)
    query = sql.SQL("SELECT {} FROM webhook_payload WHERE {} AND id > %(after)s ORDER BY id LIMIT %(limit)s").format(
        _SUMMARY_COLUMNS, condition
    )
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params | {"after": after_id, "limit": limit})
        return [_summary(row, now) for row in await cur.fetchall()]


async def show(pool: Pool, row_id: int, now: float, reveal: bool = False) -> RowDetail | None:
    """One row in full: the stored request (credentials masked unless ``reveal``) and its follow-up."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM webhook_payload WHERE id = %s", (row_id,))
        row = await cur.fetchone()
        if row is None:
            return None
        followup = None
        if row["followup_id"] is not None:
            await cur.execute(
                "SELECT id, kind, url, state, attempts, last_status, last_error FROM webhook_followup WHERE id = %s",
                (row["followup_id"],),
            )
            followup = await cur.fetchone()
    headers = {str(k): str(v) for k, v in (row["request_headers"] or {}).items()}
    if not reveal:
        headers = {k: "[masked]" if k.lower() in SECRET_HEADERS else v for k, v in headers.items()}
        if followup is not None:
            followup = {**followup, "url": mask_url(str(followup["url"]))}
    return RowDetail(
        summary=_summary(row, now),
        integration_id=row["integration_id"],
        request_method=row["request_method"],
        request_path=row["request_path"],
        request_headers=headers,
        request_body=bytes(row["request_body"]),
        date_added=epoch(row["date_added"]),
        delivered_at=_epoch_or_none(row["delivered_at"]),
        claimed_by=row["claimed_by"],
        claimed_until=_epoch_or_none(row["claimed_until"]),
        replays=row["replays"],
        followup=followup,
    )


def mask_url(url: str) -> str:
    """A follow-up URL is a bearer capability (Slack's response_url, Discord's token): keep its start."""
    head, _, last = url.rstrip("/").rpartition("/")
    return f"{head}/{last[:4]}…" if head else url[:12] + "…"


async def replay(pool: Pool, filters: Filters, now: float, progress: Progress | None = None) -> int:
    """Dead letters matching ``filters`` back to pending, due now, in id order. How many."""
    if filters.state not in (None, "dead"):
        raise ValueError("replay takes dead letters only (drop the state filter or use --state dead)")
    dead = replace(filters, state="dead")
    condition, params = dead.where(now)
    statement = sql.SQL(
        "UPDATE webhook_payload SET state = 'pending', attempts = 0, schedule_for = %(now)s, replayed_at = %(now)s,"
        " replays = replays + 1, claimed_until = NULL, claimed_by = NULL, delivered_at = NULL"
        " WHERE id IN (SELECT id FROM webhook_payload WHERE {} AND id > %(after)s ORDER BY id LIMIT %(batch)s)"
        " RETURNING id"
    ).format(condition)
    return await _in_batches(pool, dead, now, statement, params | {"now": at(now)}, progress)


async def purge(
    pool: Pool, filters: Filters, now: float, progress: Progress | None = None, *, allow_pending: bool = False
) -> int:
    """Delete matching rows (delivered and dead ones; pending only with ``allow_pending``). How many."""
    if filters.state is None:
        raise ValueError("purge needs a state (delivered or dead): it never guesses what to delete")
    if filters.state == "pending" and not allow_pending:
        raise ValueError("purging pending rows loses webhooks not yet delivered: pass --force to mean it")
    condition, params = filters.where(now)
    statement = sql.SQL(
        "DELETE FROM webhook_payload"
        " WHERE id IN (SELECT id FROM webhook_payload WHERE {} AND id > %(after)s ORDER BY id LIMIT %(batch)s)"
        " RETURNING id"
    ).format(condition)
    return await _in_batches(pool, filters, now, statement, params, progress)


async def _in_batches(
    pool: Pool, filters: Filters, now: float, statement: sql.Composed, params: dict[str, Any], progress: Progress | None
) -> int:
    total = await count(pool, filters, now)
    done, after = 0, 0
    while True:
        async with pool.connection() as conn:
            cur = await conn.execute(statement, params | {"after": after, "batch": BATCH})
            ids = [row[0] for row in await cur.fetchall()]
        if not ids:
            return done
        done += len(ids)
        after = max(ids)
        if progress is not None:
            progress(done, max(total, done))


def _epoch_or_none(value: datetime | None) -> float | None:
    return epoch(value) if value is not None else None
