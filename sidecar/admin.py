"""The admin gRPC service (``silo_router.admin.v1.Admin``), served beside ext_proc on the sidecar's port.

Like the ext_proc servicer, a pump: each method converts its message, calls ``sidecar.explain``
(against the live router's directory and key source, so the answer is what the sidecar would do
now) or ``sidecar.outbox.admin`` (the same functions as ``silo-router outbox …``), and converts back.
The port is the sidecar's own: whoever reaches it may replay dead letters (and, through ext_proc,
already submit webhooks). The manifests bind it to the pod IP for the kubelet's gRPC probes, so
only a NetworkPolicy keeps the rest of the cluster out.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Literal

import grpc
import psycopg

from sidecar.core import Request
from sidecar.db import Pool
from sidecar.explain import Explanation, explain
from sidecar.outbox import admin as outbox_admin
from sidecar.protos.silo_router.admin.v1 import admin_pb2 as pb
from sidecar.protos.silo_router.admin.v1 import admin_pb2_grpc as pb_grpc
from sidecar.router import Router

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

KINDS = {
    "control": pb.DECISION_KIND_CONTROL,
    "forward": pb.DECISION_KIND_FORWARD,
    "store": pb.DECISION_KIND_STORE,
    "reply": pb.DECISION_KIND_REPLY,
}


class AdminService(pb_grpc.AdminServicer):
    def __init__(self, router: Router, pool: Pool, clock: Callable[[], float] = time.time) -> None:
        self.router = router
        self.pool = pool
        self.clock = clock

    async def Explain(self, request: pb.ExplainRequest, context: grpc.aio.ServicerContext) -> pb.ExplainResponse:
        async with _answering(context, "explain"):
            req = to_request(request)
        return to_response(await explain(self.router, req))

    async def OutboxStats(
        self, request: pb.OutboxStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.OutboxStatsResponse:
        async with _answering(context, "outbox query"):
            counts = await outbox_admin.stats(self.pool, to_filters(request.filter), self.clock())
            followups = await outbox_admin.followup_stats(self.pool)
        response = pb.OutboxStatsResponse(followups=followups)
        for item in counts:
            response.counts.add(
                state=item.state,
                region=item.region,
                provider=item.provider or "",
                rows=item.rows,
                oldest_age_s=item.oldest_age_s,
            )
            response.totals[item.state] += item.rows
        return response

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeadLettersResponse:
        limit = min(request.limit or DEFAULT_LIMIT, MAX_LIMIT)
        async with _answering(context, "outbox query"):
            filters = to_filters(request.filter, state="dead")
            rows = await outbox_admin.list_rows(self.pool, filters, self.clock(), limit, request.after_id)
        return pb.ListDeadLettersResponse(dead_letters=_dead_letters(rows))

    async def ReplayDeadLetters(
        self, request: pb.ReplayDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplayDeadLettersResponse:
        async with _answering(context, "replay"):
            if not request.all and not _filters_set(request.filter):
                raise ValueError("an empty filter would replay every dead letter: set all to mean it")
            replayed = await outbox_admin.replay(self.pool, to_filters(request.filter, state="dead"), self.clock())
        return pb.ReplayDeadLettersResponse(replayed=replayed)


@contextlib.asynccontextmanager
async def _answering(context: grpc.aio.ServicerContext, what: str) -> AsyncIterator[None]:
    """The one place errors become gRPC statuses: bad input INVALID_ARGUMENT, a database error
    UNAVAILABLE (its text stays in the sidecar: it may name tables or hosts)."""
    try:
        yield
    except ValueError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except psycopg.Error as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"{what} failed: {type(exc).__name__}")


def register(server: grpc.aio.Server, router: Router, pool: Pool) -> None:
    """Serve the admin API on ``server`` (``app.sidecar_server`` calls this)."""
    pb_grpc.add_AdminServicer_to_server(AdminService(router, pool), server)


# --- conversions -----------------------------------------------------------------------------


def to_request(message: pb.ExplainRequest) -> Request:
    """The request as the sidecar sees it: header names lower case, the last value of a name wins."""
    if not message.method or not message.target.startswith("/"):
        raise ValueError("an explain request needs a method and a target starting with /")
    headers = {header.name.lower(): header.value for header in message.headers}
    return Request.from_target(message.method, message.target, headers, message.body)


def to_response(explanation: Explanation) -> pb.ExplainResponse:
    return pb.ExplainResponse(
        kind=KINDS[explanation.kind],
        reason=explanation.reason,
        status=explanation.status or 0,
        regions=explanation.regions,
        mailbox=explanation.mailbox or "",
        steps=[pb.ExplainStep(stage=step.stage, text=step.text) for step in explanation.steps],
    )


FilterField = Literal["provider", "region", "mailbox", "older_than_s", "newer_than_s"]
_FILTER_FIELDS: tuple[FilterField, ...] = ("provider", "region", "mailbox", "older_than_s", "newer_than_s")


def _filters_set(message: pb.OutboxFilter) -> bool:
    return any(message.HasField(name) for name in _FILTER_FIELDS)


def to_filters(message: pb.OutboxFilter, state: str | None = None) -> outbox_admin.Filters:
    """The proto filter as ``outbox.admin.Filters``: an unset field does not filter."""
    return outbox_admin.Filters(
        provider=message.provider if message.HasField("provider") else None,
        region=message.region if message.HasField("region") else None,
        mailbox=message.mailbox if message.HasField("mailbox") else None,
        state=state,
        older_than_s=message.older_than_s if message.HasField("older_than_s") else None,
        newer_than_s=message.newer_than_s if message.HasField("newer_than_s") else None,
    )


def _dead_letters(rows: Iterable[outbox_admin.RowSummary]) -> list[pb.DeadLetter]:
    return [
        pb.DeadLetter(
            id=row.id,
            mailbox=row.mailbox_name,
            region=row.region_name,
            provider=row.provider or "",
            attempts=row.attempts,
            age_s=row.age_s,
            last_status=row.last_status or 0,
            last_error=row.last_error or "",
        )
        for row in rows
    ]
