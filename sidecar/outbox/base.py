"""The outbox contract for the request path."""

from __future__ import annotations

from typing import Protocol

from sidecar.core.decision import Store
from sidecar.core.request import Request


class Outbox(Protocol):
    async def enqueue(self, decision: Store, request: Request) -> list[int]:
        """Write one ``webhook_payload`` row per region of ``decision`` in ONE transaction and
        return their ids after the commit. Raises ``OutboxUnavailable`` when it cannot commit:
        the caller answers 503, never 202."""
        ...
