"""The outbox contracts: ``Outbox`` for the request path, ``Deliveries`` for the delivery worker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from sidecar.core.decision import Store
from sidecar.core.request import Request
from sidecar.outbox.policy import Next


class Outbox(Protocol):
    async def enqueue(self, decision: Store, request: Request) -> list[int]:
        """Write one ``webhook_payload`` row per region of ``decision`` in ONE transaction and
        return their ids after the commit. Raises ``OutboxUnavailable`` when it cannot commit:
        the caller answers 503, never 202."""
        ...


# -- the delivery side -----------------------------------------------------------------------

Queue = tuple[str, str]
"""(mailbox_name, region_name): the unit of ordering. Every region has its own copy of a webhook
under the same mailbox name, and one slow region must not hold up another."""

FIRST_QUEUE: Queue = ("", "")
"""Sorts before every queue: a claim's walk starts after it."""


@dataclass(frozen=True, slots=True)
class Payload:
    """A claimed ``webhook_payload`` row, with what sending it takes. Times are epoch seconds."""

    id: int
    mailbox_name: str
    provider: str | None
    region_name: str
    integration_id: int | None
    date_added: float
    age_from: float
    """``date_added``, or the last replay: the maximum age counts from here."""
    schedule_for: float
    attempts: int
    request_method: str
    request_path: str
    request_headers: Mapping[str, str]
    request_body: bytes
    followup_id: int | None = None

    @property
    def queue(self) -> Queue:
        return (self.mailbox_name, self.region_name)


@dataclass(frozen=True, slots=True)
class Claim:
    """The head of one queue and the rows behind it, in id order, held by ``worker`` until ``until``."""

    worker: str
    queue: Queue
    rows: tuple[Payload, ...]
    until: float


@dataclass(frozen=True, slots=True)
class Followup:
    """A claimed ``webhook_followup``: where to post the regions' answer, and that answer."""

    id: int
    kind: str
    url: str
    provider: str | None
    integration_id: int | None
    date_added: float
    attempts: int
    reply_body: bytes | None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a worker writes for one row (or follow-up) after deciding its fate.

    ``attempted`` is False for a row that was not sent (too old, out of attempts): its attempt count
    and last status stay as they were.
    """

    next: Next
    attempted: bool
    status: int | None = None
    error: str | None = None
    response_body: bytes | None = None
    """A region's 2xx answer, kept only for rows whose webhook waits for a follow-up."""


@dataclass(frozen=True, slots=True)
class Backlog:
    region: str
    pending: int
    oldest_date_added: float | None


class Deliveries(Protocol):
    """The delivery worker's view of the outbox. Every method is one short transaction; nothing is
    held open while a request is in flight."""

    async def claim(self, worker: str, now: float, lease_s: float, batch_size: int, after: Queue) -> Claim | None:
        """Claim the first free, due queue head after ``after`` (in key order, wrapping around) and
        up to ``batch_size`` rows of its queue. None when no queue is both due and free."""
        ...

    async def renew(self, worker: str, ids: Sequence[int], until: float) -> int:
        """Extend the claim on ``ids``; how many rows ``worker`` still held."""
        ...

    async def release(self, worker: str, ids: Sequence[int]) -> None:
        """Give back claimed rows that were not sent (they stay due)."""
        ...

    async def record(self, worker: str, row: Payload, result: Recorded, now: float) -> bool:
        """Write a row's fate; False when ``worker`` no longer held it (its lease lapsed and another
        worker took it over). Also moves the row's follow-up along when it has one."""
        ...

    async def claim_followups(self, worker: str, now: float, lease_s: float, limit: int) -> list[Followup]: ...

    async def record_followup(self, worker: str, followup: Followup, result: Recorded, now: float) -> bool: ...

    async def purge_finished(self, delivered_before: float, followups_before: float, limit: int) -> int:
        """Delete up to ``limit`` delivered rows and old follow-ups; how many went."""
        ...

    async def backlog(self) -> list[Backlog]: ...
