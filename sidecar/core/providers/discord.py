"""Discord interactions (reference §3.3): verified here, PING answered here, commands to the first region.

https://discord.com/developers/docs/interactions/receiving-and-responding
Every interaction is signed with the application's Ed25519 key; Discord probes the endpoint with
bad signatures and expects 401, and sends a PING (type 1) that must be answered with a PONG.
The integration is the ACTIVE ``discord`` integration of the interaction's ``guild_id``.

Choices that differ from Sentry, on purpose:

* A body that is not a JSON object is answered 400 (Sentry raises and answers 500).
* No async replay yet: where Sentry answers a deferred response (type 5) and replays the
  interaction from a task, we forward synchronously to the first region; the reason codes
  ``sync_first_region`` (command with a response URL) and ``all_regions_as_first`` (components,
  which Sentry sends to every region) mark what will change.
"""

from __future__ import annotations

from collections.abc import Mapping

from sidecar.core import verify
from sidecar.core.context import Context
from sidecar.core.decision import Control, Decision, Forward, Reply, Step
from sidecar.core.lookup import ByExternalId, Integration, Resolution
from sidecar.core.providers._spec import ProviderSpec, View, identify
from sidecar.core.request import Request, id_text

# Interaction types: https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object
PING = 1
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3

PONG = Reply(200, "pong", b'{"type":1}', (("content-type", "application/json"),))


def _interaction_type(value: object) -> int | None:
    # ``type(...) is int``: JSON ``true`` is a bool, and ``True == 1`` would pass for a PING.
    return value if type(value) is int else None


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
    # Discord can take the answer later through https://discord.com/api/v10/webhooks/<application_id>/<token>.
    has_response_url = id_text(payload.get("application_id")) is not None and id_text(payload.get("token")) is not None

    def on_found(integration: Integration, resolution: Resolution) -> Decision:
        # TODO(async discord): with a response URL Sentry answers a deferred response and a task
        # replays the interaction; components go to every region. Synchronous to the first for now.
        first = resolution.regions[0]
        if kind == APPLICATION_COMMAND:
            return Forward(first, "sync_first_region" if has_response_url else "first_region")
        if kind == MESSAGE_COMPONENT:
            return Forward(first, "all_regions_as_first")
        return Control("other_interaction_type")  # modal submits, autocomplete: control's view

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
    delivery="sync: commands to the first region, components to all (the first for now); PING answered",
)
