"""The pure core: classify → parse → decide, with no I/O at all.

Theory of operation. A request passes through at most two phases (headers, then the body when
its view needs it). In each phase ``plan`` returns either a final ``Decision`` or an effect the
edge must perform: ``NeedBody`` (ask Envoy for the body) or ``Lookup`` (ask the directory, then
call ``lookup.then``). The edge performs a ``Store`` decision (outbox commit, then the reply).

Rules:
1. Nothing under ``sidecar/core`` imports grpc, psycopg, sockets, or reads the clock or the
   environment: the edge passes ``Context(now=…, secrets=…)``. (A test checks the imports.)
2. A parser never raises on input: malformed JSON, forms, JWTs or signatures are answers
   (400/401/404…), never exceptions. (Property tests feed arbitrary input.)
3. Every decision has a stable ``reason`` code: it is a metric label, so it is never built
   from request data.
4. A client never chooses its route: regions come only from the directory, event types in
   mailbox names only from fixed sets.
"""

from sidecar.core.context import Context, Secrets, ShedRule
from sidecar.core.decision import Control, Decision, FetchKey, Forward, Lookup, NeedBody, Reply, Step, Store
from sidecar.core.lookup import (
    ByExternalId,
    ByIntegrationId,
    ByOrganization,
    Integration,
    LookupKey,
    Organization,
    Resolution,
)
from sidecar.core.mailbox import Mailbox
from sidecar.core.plan import needs_body, plan
from sidecar.core.request import Request

__all__ = [
    "ByExternalId",
    "ByIntegrationId",
    "ByOrganization",
    "Context",
    "Control",
    "Decision",
    "FetchKey",
    "Forward",
    "Integration",
    "Lookup",
    "LookupKey",
    "Mailbox",
    "NeedBody",
    "Organization",
    "Reply",
    "Request",
    "Resolution",
    "Secrets",
    "ShedRule",
    "Step",
    "Store",
    "needs_body",
    "plan",
]
