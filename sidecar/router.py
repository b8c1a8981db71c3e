"""Performs what the core asks for: directory lookups, key fetches, outbox commits.

The core says *what* (``Lookup``, ``FetchKey``, ``Store``); this module does it against the I/O
edges it is given (Protocols, so tests pass the in-memory twins) and turns every failure into an
answer: a lookup that cannot be made is a 503 with Retry-After, never a guess, and a webhook is
answered 202 only after its rows are committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sidecar.core import Context, Control, Decision, FetchKey, Forward, Lookup, NeedBody, Reply, Request, Store, plan
from sidecar.directory.base import Directory
from sidecar.errors import SiloError
from sidecar.keysource import KeySource
from sidecar.outbox.base import Outbox

log = logging.getLogger(__name__)

Outcome = Control | Forward | Reply
"""What is left once the effects are done: continue, route, or answer."""

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

    async def handle(self, req: Request) -> Outcome | NeedBody:
        try:
            async with asyncio.timeout(self.budget_s):
                decided = await self.decide(req)
                if isinstance(decided, NeedBody):
                    return decided
                return await self.perform(decided, req)
        except SiloError as exc:
            return failure(exc.status, exc.code, exc.retry_after)
        except TimeoutError:
            return failure(503, "budget_exceeded", 5)
        except Exception:
            # A bug must still produce an answer: a stream without one would hang the request.
            log.exception("unexpected error while routing %s", req.path)
            return failure(500, "internal_error", None)

    async def decide(self, req: Request) -> Decision | NeedBody:
        """Run the core and its effects (no outbox write): also what ``explain`` shows."""
        step = plan(req, self.context())
        for _ in range(MAX_EFFECTS):
            match step:
                case Lookup(keys=keys, then=then):
                    step = then(await self.directory.resolve(keys))
                case FetchKey(source=source, kid=kid, then=then_key):
                    key = await self.keys.public_key(source, kid) if self.keys is not None else None
                    step = then_key(key)
                case _:
                    return step
        raise RuntimeError("parser chained too many effects")

    async def perform(self, decision: Decision, req: Request) -> Outcome:
        if not isinstance(decision, Store):
            return decision
        if not decision.regions:
            return Reply(decision.reply_status, "nothing_to_store")
        await self.outbox.enqueue(decision, req)  # raises OutboxUnavailable: 503, never 202
        return Reply(decision.reply_status, decision.reason, decision.reply_body, decision.reply_headers)


def failure(status: int, code: str, retry_after: int | None) -> Reply:
    headers = (("retry-after", str(retry_after)),) if retry_after is not None else ()
    return Reply(status, code, headers=headers)
