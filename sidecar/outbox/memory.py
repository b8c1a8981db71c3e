"""The in-memory outbox: ``PostgresOutbox``'s semantics over a list, volume gate included, and
``InMemoryDeliveries``, the worker's side of it (``claims.PostgresDeliveries`` over the same list)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sidecar.core.decision import Store
from sidecar.core.request import Request
from sidecar.errors import OutboxUnavailable
from sidecar.outbox.base import Backlog, Claim, Followup, Payload, Queue, Recorded
from sidecar.outbox.policy import Dead, Delivered, Retry
from sidecar.outbox.store import VOLUME_THRESHOLD, VolumeGate, gated, payload_headers


@dataclass(slots=True)
class StoredPayload:
    """One ``webhook_payload`` row."""

    id: int
    mailbox_name: str
    provider: str | None
    region_name: str
    integration_id: int | None
    request_method: str
    request_path: str
    request_headers: dict[str, str]
    request_body: bytes
    date_added: float
    schedule_for: float
    attempts: int = 0
    state: str = "pending"
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: float | None = None
    followup_id: int | None = None
    claimed_until: float | None = None
    claimed_by: str | None = None
    replayed_at: float | None = None
    replays: int = 0
    last_attempt_at: float | None = None

    @property
    def queue(self) -> Queue:
        return (self.mailbox_name, self.region_name)


@dataclass(slots=True)
class StoredFollowup:
    """One ``webhook_followup`` row."""

    id: int
    kind: str
    url: str
    provider: str | None
    integration_id: int | None
    date_added: float
    state: str = "waiting"
    schedule_for: float | None = None
    attempts: int = 0
    reply_body: bytes | None = None
    reply_row_id: int | None = None
    claimed_until: float | None = None
    claimed_by: str | None = None
    last_attempt_at: float | None = None
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: float | None = None


@dataclass(slots=True)
class _Volume:
    window_start: float
    hits: int = 0
    bucketed_until: float | None = None


@dataclass
class InMemoryOutbox:
    """``Outbox`` for tests. Set ``fail`` to simulate the database being down (nothing is stored)."""

    volume_threshold: int = VOLUME_THRESHOLD
    gate: VolumeGate | None = None
    clock: Callable[[], float] = time.time
    fail: bool = False
    rows: list[StoredPayload] = field(default_factory=list)
    followups: list[StoredFollowup] = field(default_factory=list)
    _volume: dict[tuple[str, int], _Volume] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.gate is None:
            self.gate = VolumeGate(threshold=self.volume_threshold)

    async def enqueue(self, decision: Store, request: Request) -> list[int]:
        """One row per region of ``decision``, all or nothing; their ids, in region order."""
        if not decision.regions:
            return []
        if self.fail:
            raise OutboxUnavailable("in-memory outbox set to fail")
        now = self.clock()
        over_volume = self._count(decision, now) if gated(decision) else False
        mailbox_name = decision.mailbox.name(over_volume=over_volume)
        first_id = self.rows[-1].id + 1 if self.rows else 1
        followup_id = self._add_followup(decision, now)
        new_rows = [
            StoredPayload(
                id=first_id + n,
                mailbox_name=mailbox_name,
                provider=decision.provider,
                region_name=region,
                integration_id=decision.integration_id,
                request_method=request.method,
                request_path=request.full_path,
                request_headers=payload_headers(request),
                request_body=request.body or b"",
                date_added=now,
                schedule_for=now,
                followup_id=followup_id,
            )
            for n, region in enumerate(decision.regions)
        ]
        self.rows.extend(new_rows)
        return [row.id for row in new_rows]

    def _add_followup(self, decision: Store, now: float) -> int | None:
        if decision.reply_to is None:
            return None
        followup_id = self.followups[-1].id + 1 if self.followups else 1
        target = decision.reply_to
        self.followups.append(
            StoredFollowup(followup_id, target.kind, target.url, decision.provider, decision.integration_id, now)
        )
        return followup_id

    def pending(self, mailbox_name: str | None = None) -> list[StoredPayload]:
        """Pending rows in id order, of one mailbox or all."""
        return [r for r in self.rows if r.state == "pending" and mailbox_name in (None, r.mailbox_name)]

    def _count(self, decision: Store, now: float) -> bool:
        gate = self.gate or VolumeGate()
        assert decision.integration_id is not None  # gated() checked it
        window_s = gate.window.total_seconds()
        window_start = now - now % window_s
        volume = self._volume.setdefault((decision.provider, decision.integration_id), _Volume(window_start))
        volume.hits = volume.hits + 1 if volume.window_start == window_start else 1
        volume.window_start = window_start
        active = volume.bucketed_until is not None and volume.bucketed_until > now
        if not active and volume.hits > gate.threshold:
            volume.bucketed_until = now + gate.bucketed_for.total_seconds()
            active = True
        return active


class InMemoryDeliveries:
    """``Deliveries`` over an ``InMemoryOutbox``: the claim, outcome and follow-up rules of
    ``claims.py`` (its theory of operation holds here too), without a database."""

    def __init__(self, outbox: InMemoryOutbox, keep_delivered: bool = True) -> None:
        self.outbox = outbox
        self.keep_delivered = keep_delivered

    async def claim(self, worker: str, now: float, lease_s: float, batch_size: int, after: Queue) -> Claim | None:
        heads = self._heads()
        ordered = [q for q in sorted(heads) if q > after] + [q for q in sorted(heads) if q <= after]
        for queue in ordered:
            head = heads[queue]
            if head.schedule_for > now or not _free(head, now):
                continue
            batch = sorted((r for r in self._pending() if r.queue == queue), key=lambda r: r.id)[:batch_size]
            for row in batch:
                row.claimed_until, row.claimed_by = now + lease_s, worker
            return Claim(worker, queue, tuple(_payload(row) for row in batch), now + lease_s)
        return None

    async def renew(self, worker: str, ids: Sequence[int], until: float) -> int:
        held = [row for row in self._pending() if row.id in set(ids) and row.claimed_by == worker]
        for row in held:
            row.claimed_until = until
        return len(held)

    async def release(self, worker: str, ids: Sequence[int]) -> None:
        for row in self._pending():
            if row.id in set(ids) and row.claimed_by == worker:
                row.claimed_until = row.claimed_by = None

    async def record(self, worker: str, row: Payload, result: Recorded, now: float) -> bool:
        stored = next((r for r in self._pending() if r.id == row.id and r.claimed_by == worker), None)
        if stored is None:
            return False
        _apply(stored, result, now)
        if isinstance(result.next, Delivered) and not self.keep_delivered:
            self.outbox.rows.remove(stored)
        if stored.followup_id is not None:
            self._advance_followup(stored, result, now)
        return True

    def _advance_followup(self, row: StoredPayload, result: Recorded, now: float) -> None:
        followup = next((f for f in self.outbox.followups if f.id == row.followup_id), None)
        if followup is None or followup.state != "waiting":
            return
        answered = isinstance(result.next, Delivered) and result.response_body is not None
        if answered and (followup.reply_row_id is None or followup.reply_row_id < row.id):
            followup.reply_body, followup.reply_row_id = result.response_body, row.id
        group = [r for r in self.outbox.rows if r.followup_id == followup.id and r.state == "pending"]
        untried = [r for r in group if r.attempts == 0]
        if (followup.reply_body is not None and not untried) or not group:
            followup.state = "pending" if followup.reply_body is not None else "skipped"
            followup.schedule_for = now
            if followup.reply_body is None:
                followup.last_error = "no region answered 2xx"

    async def claim_followups(self, worker: str, now: float, lease_s: float, limit: int) -> list[Followup]:
        due = [
            f
            for f in self.outbox.followups
            if f.state == "pending" and (f.schedule_for or 0.0) <= now and _free(f, now)
        ]
        due.sort(key=lambda f: (f.schedule_for or 0.0, f.id))
        claimed = due[:limit]
        for f in claimed:
            f.claimed_until, f.claimed_by = now + lease_s, worker
        return [
            Followup(f.id, f.kind, f.url, f.provider, f.integration_id, f.date_added, f.attempts, f.reply_body)
            for f in sorted(claimed, key=lambda f: f.id)
        ]

    async def record_followup(self, worker: str, followup: Followup, result: Recorded, now: float) -> bool:
        stored = next(
            (
                f
                for f in self.outbox.followups
                if f.id == followup.id and f.claimed_by == worker and f.state == "pending"
            ),
            None,
        )
        if stored is None:
            return False
        _apply(stored, result, now)
        if isinstance(result.next, Dead) and result.next.reason == "nothing_to_post":
            stored.state = "skipped"
        return True

    async def purge_finished(self, delivered_before: float, followups_before: float, limit: int) -> int:
        rows = [r for r in self.outbox.rows if r.state == "delivered" and (r.delivered_at or 0.0) < delivered_before]
        followups = [f for f in self.outbox.followups if f.date_added < followups_before and f.state != "pending"]
        rows, followups = rows[:limit], followups[:limit]
        self.outbox.rows = [r for r in self.outbox.rows if r not in rows]
        self.outbox.followups = [f for f in self.outbox.followups if f not in followups]
        return len(rows) + len(followups)

    async def backlog(self) -> list[Backlog]:
        regions: dict[str, list[StoredPayload]] = {}
        for row in self._pending():
            regions.setdefault(row.region_name, []).append(row)
        return [Backlog(r, len(rows), min(x.date_added for x in rows)) for r, rows in sorted(regions.items())]

    def _pending(self) -> list[StoredPayload]:
        return [row for row in self.outbox.rows if row.state == "pending"]

    def _heads(self) -> dict[Queue, StoredPayload]:
        heads: dict[Queue, StoredPayload] = {}
        for row in self._pending():
            if row.queue not in heads or row.id < heads[row.queue].id:
                heads[row.queue] = row
        return heads


def _free(row: StoredPayload | StoredFollowup, now: float) -> bool:
    return row.claimed_until is None or row.claimed_until <= now


def _payload(row: StoredPayload) -> Payload:
    return Payload(
        id=row.id,
        mailbox_name=row.mailbox_name,
        provider=row.provider,
        region_name=row.region_name,
        integration_id=row.integration_id,
        date_added=row.date_added,
        age_from=row.replayed_at if row.replayed_at is not None else row.date_added,
        schedule_for=row.schedule_for,
        attempts=row.attempts,
        request_method=row.request_method,
        request_path=row.request_path,
        request_headers=dict(row.request_headers),
        request_body=row.request_body,
        followup_id=row.followup_id,
    )


def _apply(row: StoredPayload | StoredFollowup, result: Recorded, now: float) -> None:
    """``claims.outcome_params`` applied to a row in memory."""
    if result.attempted:
        row.attempts += 1
        row.last_attempt_at, row.last_status = now, result.status
    row.claimed_until = row.claimed_by = None
    match result.next:
        case Delivered():
            row.state, row.delivered_at, row.last_error = "delivered", now, None
        case Retry(at=when):
            row.state, row.schedule_for, row.last_error = "pending", when, result.error
        case Dead(reason=reason):
            row.state, row.last_error = "dead", reason + (f": {result.error}" if result.error else "")
