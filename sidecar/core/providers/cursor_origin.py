"""Cursor Origin webhooks (reference §3.16): Standard Webhooks headers, async per installation.

https://www.standardwebhooks.com/ (spec: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md)
The signature is verified in the region, on the exact bytes we store; here a request must only
*look* signed (id, fresh timestamp, a ``v1,`` signature), so unsigned junk never reaches the
outbox. Sentry's name for the delivery-id header was not read; ``webhook-id`` is the Standard
Webhooks name, which the other three headers follow.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sidecar.core.context import Context
from sidecar.core.decision import Control, Decision, Reply, Step
from sidecar.core.lookup import ByExternalId, Integration, Resolution
from sidecar.core.mailbox import Mailbox
from sidecar.core.providers._spec import MISSING_INTEGRATION, ProviderSpec, View, identify, store_all
from sidecar.core.request import Request, dig

EVENT_HEADER = "webhook-event-type"
INSTALLATION_HEADER = "webhook-installation-id"
DELIVERY_ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SIGNATURE_VERSION = "v1,"
"""Standard Webhooks: space-separated ``<version>,<base64>`` tokens; ``v1`` is HMAC-SHA256."""
MAX_SKEW_S = 300
"""Standard Webhooks recommends refusing timestamps more than five minutes from now, either way."""

HANDLED_EVENT_FAMILIES = frozenset({"pull_request", "push"})
"""Events a region handles, by family (``pull_request`` covers ``pull_request.opened``…); others
are answered 202 and dropped. ASSUMED: the reference names no events; align with the region's
handler registry."""

UNSIGNED = Reply(401, "unsigned")


def is_handled(event: str) -> bool:
    return event.split(".", 1)[0] in HANDLED_EVENT_FAMILIES


def looks_signed(req: Request, now: float) -> bool:
    """Delivery id, a timestamp within ``MAX_SKEW_S`` of ``now`` and one well-formed ``v1`` token."""
    timestamp = req.header(TIMESTAMP_HEADER) or ""
    if not req.header(DELIVERY_ID_HEADER) or not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs(now - int(timestamp)) > MAX_SKEW_S:
        return False
    return any(_v1_token(token) for token in (req.header(SIGNATURE_HEADER) or "").split())


def _v1_token(token: str) -> bool:
    if not token.startswith(SIGNATURE_VERSION):
        return False
    try:
        return bool(base64.b64decode(token[len(SIGNATURE_VERSION) :], validate=True))
    except (binascii.Error, ValueError):
        return False


def hashed_bucket_key(value: Any) -> int | None:
    """A stable bucket key for an id of any shape (Python's ``hash`` is salted per process)."""
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        return None
    digest = hashlib.sha256(json.dumps(value).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


def _webhook(req: Request, params: Mapping[str, str], ctx: Context) -> Step:
    event = req.header(EVENT_HEADER)
    if not event:
        return Control("no_event_type")
    if event == "ping":
        return Control("ping_event")
    if event.startswith("installation."):
        return Control("installation_event")
    if not is_handled(event):
        return Reply(202, "unprocessed_event")
    if not looks_signed(req, ctx.now):
        return UNSIGNED
    installation = req.header(INSTALLATION_HEADER)
    if not installation:
        return MISSING_INTEGRATION

    def on_found(integration: Integration, resolution: Resolution) -> Decision:
        bucket = hashed_bucket_key(dig(req.json(), "payload", "repository", "id"))
        mailbox = Mailbox("cursor_origin", str(integration.id), bucket_key=bucket)
        return store_all("cursor_origin", integration, resolution, mailbox)

    return identify(ByExternalId("cursor_origin", installation), on_found, ctx)


SPEC = ProviderSpec(
    name="cursor_origin",
    views=(View("webhook", r"webhook/", _webhook, needs_body=True),),
    id_source="header `webhook-installation-id`",
    delivery="async: mailbox `cursor_origin:<integration>[:<hash(payload.repository.id) % 100>]`; unsigned → 401",
)
