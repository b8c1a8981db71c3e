"""Discord interactions (reference §3.3): verified here, PING answered here, commands deferred to the regions.

https://discord.com/developers/docs/interactions/receiving-and-responding
Every interaction is signed with the application's Ed25519 key; Discord probes the endpoint with
bad signatures and expects 401, and sends a PING (type 1) that must be answered with a PONG.
The integration is the ACTIVE ``discord`` integration of the interaction's ``guild_id``.

Choices that differ from Sentry, on purpose:

* A body that is not a JSON object is answered 400 (Sentry raises and answers 500).
* The deferred answer goes through the outbox. Where Sentry answers a deferred response (type 5)
  and replays the interaction from a task, we store it like any webhook (commands for the first
  region, components for all; mailbox ``discord:<integration id>``), answer
  ``{"type": 5, "data": {"flags": 64}}`` at once, and the delivery worker posts the region's
  ``data`` to the interaction webhook (``ReplyTarget``, under the configured Discord base URL).
* Without an application id and token (no follow-up URL) a component, which Sentry fans out
  synchronously, goes to the first region only (``all_regions_as_first``). The token must look like
  one (letters, digits, ``-``, ``_``, single dots): it becomes part of a URL path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sidecar.core import verify
from sidecar.core.context import Context
from sidecar.core.decision import Control, Decision, Forward, Reply, ReplyTarget, Step, Store
from sidecar.core.lookup import ByExternalId, Integration, Resolution
from sidecar.core.mailbox import Mailbox
from sidecar.core.providers._spec import ProviderSpec, View, identify
from sidecar.core.request import Request, id_text

# Interaction types: https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object
PING = 1
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3

JSON = (("content-type", "application/json"),)
PONG = Reply(200, "pong", b'{"type":1}', JSON)
DEFERRED = b'{"type":5,"data":{"flags":64}}'
"""DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE, ephemeral: "thinking…" until the follow-up arrives."""

MAX_TOKEN = 1024
_SNOWFLAKE = re.compile(r"[0-9]{1,20}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


def _interaction_type(value: object) -> int | None:
    # ``type(...) is int``: JSON ``true`` is a bool, and ``True == 1`` would pass for a PING.
    return value if type(value) is int else None


def _follow_up(payload: dict[str, object]) -> ReplyTarget | None:
    """Discord takes the answer later at ``/api/v10/webhooks/<application_id>/<token>``."""
    application_id = id_text(payload.get("application_id"))
    token = id_text(payload.get("token"))
    if application_id is None or token is None:
        return None
    if not _SNOWFLAKE.fullmatch(application_id) or len(token) > MAX_TOKEN or not _TOKEN.fullmatch(token):
        return None
    return ReplyTarget("discord", f"/api/v10/webhooks/{application_id}/{token}")


def _interactions(req: Request, params: Mapping[str, str], ctx: Context) -> Step:
    public_key = ctx.secrets.discord_public_key
    if not public_key:
        return Reply(401, "no_public_key")
    signed = verify.discord_ed25519(
        public_key, req.header("x-signature-timestamp"), req.body or b"", req.header("x-signature-ed25519")
    )
    if not signed:
        return Reply(401, "bad_signature")
    payload = req.json()
    if not isinstance(payload, dict):
        return Reply(400, "invalid_json")
    kind = _interaction_type(payload.get("type"))
    if kind == PING:
        return PONG
    guild_id = id_text(payload.get("guild_id"))
    if guild_id is None:  # a DM interaction: no guild, no integration
        return Reply(400, "unknown_integration")
    reply_to = _follow_up(payload)

    def on_found(integration: Integration, resolution: Resolution) -> Decision:
        regions = resolution.regions
        if kind not in (APPLICATION_COMMAND, MESSAGE_COMPONENT):
            return Control("other_interaction_type")  # modal submits, autocomplete: control's view
        if reply_to is None:
            if kind == APPLICATION_COMMAND:
                return Forward(regions[0], "first_region")
            return Forward(regions[0], "all_regions_as_first")
        targets = regions[:1] if kind == APPLICATION_COMMAND else regions
        return Store(
            "discord",
            targets,
            Mailbox("discord", str(integration.id)),
            integration.id,
            "deferred_first_region" if kind == APPLICATION_COMMAND else "deferred_all_regions",
            reply_status=200,
            reply_body=DEFERRED,
            reply_headers=JSON,
            reply_to=reply_to,
        )

    return identify(ByExternalId("discord", guild_id, active_only=True), on_found, ctx)


_SIGNED = r"(?P<signed_params>[^/]+)/"

SPEC = ProviderSpec(
    name="discord",
    views=(
        View("interactions", r"interactions/", _interactions, needs_body=True),
        View("configure", r"configure/"),
        View("link-identity", r"link-identity/" + _SIGNED),
        View("unlink-identity", r"unlink-identity/" + _SIGNED),
    ),
    id_source="JSON `guild_id`, after the Ed25519 signature",
    delivery="deferred (type 5): commands stored for the first region, components for all, the region's `data` "
    "posted to the interaction webhook; PING answered",
)
