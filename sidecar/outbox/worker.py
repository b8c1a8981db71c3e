"""The delivery worker: claim a queue's head, send its rows in order, write what happened.

Rules:

1. A row is marked delivered only after a region answered it with 2xx/3xx; whatever happens in
   between (a crash, a SIGKILL, a lost database) leaves it pending, and its claim lapses.
2. Within a queue rows go in id order, one at a time; the first one that must be retried stops
   the drain (head-of-line blocking). A claim of ``parallel_threshold`` rows or more is a backlog:
   it is drained ``parallel_width`` rows at a time, order within a window not kept (Sentry's
   parallel drain), still stopping at the first failure.
3. No send starts unless the claim outlives its deadline: the lease is renewed before it could
   lapse mid-send, so no other worker takes over rows that are in flight.
4. When the local egress listener refuses connections, nothing reached a region: the claim is
   given back, no attempt is counted, and the worker pauses.
5. Follow-ups (async replies) go first in every round: a person is waiting for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from sidecar.config import DeliverySettings
from sidecar.outbox import policy
from sidecar.outbox.base import FIRST_QUEUE, Claim, Deliveries, Followup, Payload, Queue, Recorded
from sidecar.outbox.policy import Attempt, Dead, Delivered, Retry
from sidecar.outbox.sender import Sender, Sent, followup_url

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Epoch seconds. Tests pass one they advance; production passes ``time.time``."""

Step = Literal["continue", "stop", "lost", "egress_down"]
"""After one row: go on, stop the drain (it must wait), the claim is gone, the egress is down."""

FOLLOWUPS_PER_ROUND = 16
PURGE_EVERY_S = 60.0
PURGE_BATCH = 1000


class DeliveryHooks(Protocol):
    """Where the worker reports what happened (Prometheus in production, lists in tests)."""

    def delivered(self, provider: str | None, region: str, seconds_since_added: float) -> None: ...

    def retried(self, provider: str | None, region: str, reason: str) -> None: ...

    def dropped(self, provider: str | None, region: str, status: int) -> None: ...

    def dead(self, provider: str | None, region: str, reason: str) -> None: ...

    def followup(self, kind: str, outcome: str) -> None: ...


class NoHooks:
    def delivered(self, provider: str | None, region: str, seconds_since_added: float) -> None:
        pass

    def retried(self, provider: str | None, region: str, reason: str) -> None:
        pass

    def dropped(self, provider: str | None, region: str, status: int) -> None:
        pass

    def dead(self, provider: str | None, region: str, reason: str) -> None:
        pass

    def followup(self, kind: str, outcome: str) -> None:
        pass


def worker_name(index: int = 0) -> str:
    """Unique per worker and run: host, pid, index and a nonce (a restarted pid is another worker)."""
    return f"{socket.gethostname()}:{os.getpid()}:{index}:{uuid.uuid4().hex[:6]}"


def followup_body(kind: str, reply_body: bytes | None) -> bytes | None:
    """What to post: Slack gets the region's JSON answer as it is, Discord its ``data`` field."""
    if not reply_body:
        return None
    try:
        answer = json.loads(reply_body)
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    if kind == "slack":
        return reply_body
    data = answer.get("data")
    return json.dumps(data, separators=(",", ":")).encode() if isinstance(data, dict) else None


class Worker:
    def __init__(
        self,
        store: Deliveries,
        sender: Sender,
        clock: Clock,
        settings: DeliverySettings,
        stop: asyncio.Event,
        *,
        name: str | None = None,
        hooks: DeliveryHooks | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.clock = clock
        self.settings = settings
        self.stop = stop
        self.name = name or worker_name()
        self.hooks: DeliveryHooks = hooks or NoHooks()
        self._cursor: Queue = FIRST_QUEUE
        self._next_purge = 0.0
        self._egress_down = False

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Until ``stop``: work while there is work, wait ``poll_interval_s`` when there is none."""
        while not self.stop.is_set():
            try:
                handled = await self.step()
            except Exception:
                # The database or a bug: claims lapse on their own, so wait and start over.
                log.exception("delivery round failed", extra={"worker": self.name})
                await self._pause(max(self.settings.poll_interval_s, self.settings.egress_retry_s))
                continue
            if self._egress_down:
                self._egress_down = False
                await self._pause(self.settings.egress_retry_s)
            elif handled == 0:
                await self._pause(self.settings.poll_interval_s)

    async def step(self) -> int:
        """One round: due follow-ups, then one queue. How many rows and follow-ups were handled."""
        handled = await self.follow_ups()
        handled += await self.drain_one()
        await self._purge_if_due()
        return handled

    async def drain(self, max_rounds: int = 1_000_000) -> int:
        """Rounds until one finds nothing due (tests, ``deliver --once``). Rows handled in all."""
        total = 0
        for _ in range(max_rounds):
            handled = await self.step()
            if handled == 0 or self._egress_down or self.stop.is_set():
                break
            total += handled
        return total

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    # -- one queue -----------------------------------------------------------------------------

    async def drain_one(self) -> int:
        s = self.settings
        claim = await self.store.claim(self.name, self.clock(), s.lease_s, s.batch_size, self._cursor)
        if claim is None:
            return 0
        self._cursor = claim.queue  # the next claim starts after this queue: every queue gets its turn
        backlog = s.parallel_threshold > 0 and len(claim.rows) >= s.parallel_threshold
        width = s.parallel_width if backlog else 1
        finished: set[int] = set()
        try:
            await self._drain(claim, width, finished)
        finally:
            unsent = [row.id for row in claim.rows if row.id not in finished]
            # A failed release only delays those rows until the lease lapses.
            with contextlib.suppress(Exception):
                await self.store.release(self.name, unsent)
        return len(finished)

    async def _drain(self, claim: Claim, width: int, finished: set[int]) -> None:
        rows = list(claim.rows)
        until = claim.until
        start = 0
        while start < len(rows) and not self.stop.is_set():
            now = self.clock()
            window = _due_prefix(rows[start : start + width], now)
            if not window:
                return  # a retried or replayed row behind the head is not due yet: it heads the queue now
            kept = await self._keep_lease([row.id for row in rows[start:]], until, now)
            if kept is None:
                return
            until = kept
            outcomes = await asyncio.gather(*(self._deliver(row, finished) for row in window), return_exceptions=True)
            failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            if failures:
                raise failures[0]  # only now: every send of the window has finished and been recorded
            steps = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
            if "egress_down" in steps:
                self._egress_down = True
                log.warning("egress listener unreachable; pausing delivery", extra={"worker": self.name})
            if any(step != "continue" for step in steps):
                return
            start += len(window)

    async def _keep_lease(self, ids: Sequence[int], until: float, now: float) -> float | None:
        """The claim's expiry, renewed when it could lapse before the next send ends (rule 3)."""
        s = self.settings
        if until - now > max(s.lease_s / 2, s.send_deadline_s + 1):
            return until
        renewed = now + s.lease_s
        held = await self.store.renew(self.name, ids, renewed)
        if held < len(ids):
            log.warning("claim lost; stopping this drain", extra={"worker": self.name})
            return None
        return renewed

    async def _deliver(self, row: Payload, finished: set[int]) -> Step:
        s = self.settings
        now = self.clock()
        refused = policy.before_send(row.attempts, now - row.age_from, s)
        if refused is not None:
            return await self._record(row, Recorded(refused, attempted=False), now, finished)
        sent = await self.sender.deliver(row)
        if sent.egress_down:
            return "egress_down"
        now = self.clock()
        attempt = Attempt(sent.status, sent.error, policy.parse_retry_after(sent.retry_after, now))
        after = policy.after_attempt(row.attempts, now - row.age_from, attempt, now, s)
        keep_answer = row.followup_id is not None and isinstance(after, Delivered)
        result = Recorded(after, True, sent.status, _error_of(sent), sent.body if keep_answer else None)
        return await self._record(row, result, now, finished)

    async def _record(self, row: Payload, result: Recorded, now: float, finished: set[int]) -> Step:
        if not await self.store.record(self.name, row, result, now):
            log.warning("claim lost before recording row %s", row.id, extra={"worker": self.name})
            finished.add(row.id)  # not ours to release either
            return "lost"
        finished.add(row.id)
        self._report(row, result, now)
        return "stop" if isinstance(result.next, Retry) else "continue"

    def _report(self, row: Payload, result: Recorded, now: float) -> None:
        match result.next:
            case Delivered():
                self.hooks.delivered(row.provider, row.region_name, now - row.date_added)
            case Retry():
                self.hooks.retried(row.provider, row.region_name, result.error or f"http_{result.status}")
            case Dead(reason=reason):
                if reason == "dropped" and result.status is not None:
                    self.hooks.dropped(row.provider, row.region_name, result.status)
                self.hooks.dead(row.provider, row.region_name, reason)
                log.warning(
                    "row %s is a dead letter (%s, status %s)",
                    row.id,
                    reason,
                    result.status,
                    extra={"provider": row.provider, "region": row.region_name, "reason": reason},
                )

    # -- follow-ups ----------------------------------------------------------------------------

    async def follow_ups(self) -> int:
        s = self.settings
        claimed = await self.store.claim_followups(self.name, self.clock(), s.lease_s, FOLLOWUPS_PER_ROUND)
        await asyncio.gather(*(self._follow_up(followup) for followup in claimed))
        return len(claimed)

    async def _follow_up(self, followup: Followup) -> None:
        s = self.settings
        now = self.clock()
        refused = self._refuse_followup(followup, now)
        if refused is not None:
            await self._record_followup(followup, Recorded(refused, attempted=False), now)
            return
        url = followup_url(followup.kind, followup.url, s)
        body = followup_body(followup.kind, followup.reply_body)
        assert url is not None and body is not None  # _refuse_followup checked both
        sent = await self.sender.follow_up(url, body)
        now = self.clock()
        attempt = Attempt(sent.status, sent.error, policy.parse_retry_after(sent.retry_after, now))
        after = policy.followup_next(followup.kind, followup.attempts, now - followup.date_added, attempt, now, s)
        await self._record_followup(followup, Recorded(after, True, sent.status, _error_of(sent)), now)

    def _refuse_followup(self, followup: Followup, now: float) -> Dead | None:
        if now - followup.date_added >= self.settings.followup_max_age_s:
            return Dead("expired")
        if followup_body(followup.kind, followup.reply_body) is None:
            return Dead("nothing_to_post")
        if followup_url(followup.kind, followup.url, self.settings) is None:
            return Dead("not_allowed")
        return None

    async def _record_followup(self, followup: Followup, result: Recorded, now: float) -> None:
        await self.store.record_followup(self.name, followup, result, now)
        outcome = type(result.next).__name__.lower()
        if isinstance(result.next, Dead):
            outcome = "skipped" if result.next.reason == "nothing_to_post" else f"dead_{result.next.reason}"
            if result.next.reason != "nothing_to_post":
                log.warning("follow-up %s gave up (%s, status %s)", followup.id, outcome, result.status)
        self.hooks.followup(followup.kind, outcome)

    # -- retention -----------------------------------------------------------------------------

    async def _purge_if_due(self) -> None:
        s = self.settings
        now = self.clock()
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_EVERY_S
        purged = await self.store.purge_finished(
            now - s.retention_s, now - max(s.retention_s, s.followup_max_age_s), PURGE_BATCH
        )
        if purged == PURGE_BATCH:
            self._next_purge = now  # more to go: again next round


def _due_prefix(rows: Sequence[Payload], now: float) -> list[Payload]:
    due = []
    for row in rows:
        if row.schedule_for > now:
            break
        due.append(row)
    return due


def _error_of(sent: Sent) -> str | None:
    if sent.error is not None:
        return sent.error
    if sent.status is not None and not 200 <= sent.status < 400:
        return f"http_{sent.status}"
    return None
