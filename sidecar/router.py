"""Performs what the core asks for: directory lookups, key fetches, outbox commits.

The core says *what* (``Lookup``, ``FetchKey``, ``Store``); this module does it against the I/O
edges it is given (Protocols, so tests pass the in-memory twins) and turns every failure into an
answer: a lookup that cannot be made is a 503 with Retry-After, never a guess, and a webhook is
answered 202 only after its rows are committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Literal

from sidecar import logs, metrics
from sidecar.budget import Deadlines
from sidecar.core import Context, Control, Decision, FetchKey, Forward, Lookup, NeedBody, Reply, Request, Store, plan
from sidecar.core.classify import Classification, classify, provider_named
from sidecar.directory.base import Directory
from sidecar.directory.cache import CachedDirectory
from sidecar.errors import SiloError
from sidecar.keysource import KeySource
from sidecar.outbox.base import Outbox

log = logging.getLogger(__name__)

Outcome = Control | Forward | Reply
"""What is left once the effects are done: continue, route, or answer."""

Phase = Literal["headers", "body"]

MAX_EFFECTS = 8
"""A parser chains at most a key fetch and a lookup; more means a bug, not a slow directory."""


class Router:
    def __init__(
        self,
        directory: Directory,
        outbox: Outbox,
        context: Callable[[], Context],
        keys: KeySource | None = None,
        budget_s: float = 1.5,
    ) -> None:
        self.directory = directory
        self.outbox = outbox
        self.context = context
        self.keys = keys
        self.budget_s = budget_s
        """Answer within this, so Envoy's per-message timeout (a 504) never fires first."""
        self._deadlines = Deadlines(budget_s)
        # The cache answers warm lookups without I/O; any other directory is always awaited.
        self._cached = directory.cached if isinstance(directory, CachedDirectory) else None

    async def handle(self, req: Request, phase: Phase = "headers") -> Outcome | NeedBody:
        """Decide and perform; always an answer, within the budget. Records the request metrics."""
        started = time.perf_counter()
        route = classify(req.path)  # once: the core, the metrics and the logs below share it
        provider = provider_named(route)
        stored = False
        try:
            decided = await self.decide(req, route, started)
            if isinstance(decided, NeedBody):
                metrics.observe_phase(phase, time.perf_counter() - started)
                return decided
            stored = isinstance(decided, Store) and bool(decided.regions)
            outcome = await self.perform(decided, req, started)
        except SiloError as exc:
            outcome = self._failed(req, provider, failure(exc.status, exc.code, exc.retry_after))
        except TimeoutError:
            outcome = self._failed(req, provider, failure(503, "budget_exceeded", 5))
        except Exception:
            # A bug must still produce an answer: a stream without one would hang the request.
            log.exception("unexpected error while routing", extra=logs.fields(**_ids(req, provider)))
            outcome = self._failed(req, provider, failure(500, "internal_error", None))
        _record(provider, outcome, stored, phase, time.perf_counter() - started)
        return outcome

    def _failed(self, req: Request, provider: str | None, answer: Reply) -> Reply:
        metrics.record_error(answer.reason)
        log.warning("answered %s", answer.status, extra=logs.fields(reason=answer.reason, **_ids(req, provider)))
        return answer

    def _budget(self, started: float) -> AbstractAsyncContextManager[object]:
        """What is left of this message's budget, for one wait: a message's effects share it."""
        return self._deadlines.budget(self.budget_s - (time.perf_counter() - started))

    async def decide(
        self, req: Request, route: Classification | None = None, started: float | None = None
    ) -> Decision | NeedBody:
        """Run the core and its effects (no outbox write): also what ``explain`` shows.

        Only an effect that has to wait (a cache miss, a key fetch) runs under the budget: a warm
        lookup is answered in place, without a timer scope or a coroutine per step.
        """
        started = time.perf_counter() if started is None else started
        step = plan(req, self.context(), route)
        for _ in range(MAX_EFFECTS):
            match step:
                case Lookup(keys=keys, then=then):
                    resolution = self._cached(keys) if self._cached is not None else None
                    if resolution is None:
                        async with self._budget(started):
                            resolution = await self.directory.resolve(keys)
                    step = then(resolution)
                case FetchKey(source=source, kid=kid, then=then_key):
                    key = None
                    if self.keys is not None:
                        async with self._budget(started):
                            key = await self.keys.public_key(source, kid)
                    step = then_key(key)
                case _:
                    return step
        raise RuntimeError("parser chained too many effects")

    async def perform(self, decision: Decision, req: Request, started: float | None = None) -> Outcome:
        if not isinstance(decision, Store):
            return decision
        if not decision.regions:
            return Reply(decision.reply_status, "nothing_to_store")
        started = time.perf_counter() if started is None else started
        async with self._budget(started):
            await self.outbox.enqueue(decision, req)  # raises OutboxUnavailable: 503, never 202
        metrics.record_stored(decision.provider, decision.regions)
        return Reply(decision.reply_status, decision.reason, decision.reply_body, decision.reply_headers)


def failure(status: int, code: str, retry_after: int | None) -> Reply:
    headers = (("retry-after", str(retry_after)),) if retry_after is not None else ()
    return Reply(status, code, headers=headers)


def _ids(req: Request, provider: str | None) -> dict[str, str | None]:
    return {"request_id": req.header("x-request-id"), "provider": provider}


def _record(provider: str | None, outcome: Outcome, stored: bool, phase: Phase, seconds: float) -> None:
    match outcome:
        case Control():
            metrics.record_request(provider, "control", None, seconds, phase)
        case Forward():
            metrics.record_request(provider, "forward", None, seconds, phase)
        case Reply(status=status, reason=reason):
            metrics.record_request(provider, "store" if stored else "reply", status, seconds, phase)
            if reason == "shed":
                metrics.record_shed(provider)
