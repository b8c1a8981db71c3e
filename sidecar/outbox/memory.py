"""The in-memory outbox: ``PostgresOutbox``'s semantics over a list, volume gate included."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.core.decision import Store
from sidecar.core.request import Request
from sidecar.errors import OutboxUnavailable
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
            )
            for n, region in enumerate(decision.regions)
        ]
        self.rows.extend(new_rows)
        return [row.id for row in new_rows]

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
