"""Microsoft Teams bot activities (reference §3.12): identified from the activity, async per integration.

https://learn.microsoft.com/en-us/azure/bot-service/rest-api/bot-framework-rest-connector-api-reference#activity-object
The Bot Framework JWT in ``Authorization`` is verified in the region, not here. Control keeps
what it must answer itself: installs, and activities that expect a synchronous reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.core.context import Context
from sidecar.core.decision import Control, Decision, Step
from sidecar.core.lookup import ByExternalId, ByIntegrationId, Integration, LookupKey, Resolution
from sidecar.core.mailbox import Mailbox
from sidecar.core.providers._spec import MISSING_INTEGRATION, ProviderSpec, View, identify, store_all
from sidecar.core.request import Request, dig, id_text

SYNC_TYPE = "installationUpdate"
"""The activity type control answers itself (as it does an activity without ``type``)."""


def _card_integration_id(value: Any) -> int | None:
    """``value.payload.integrationId``: Sentry puts its integration's primary key in the cards it
    sends, and Teams echoes it back on a card action. Only a positive bigint is a possible key."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    return None


def lookup_keys(activity: Any) -> tuple[LookupKey, ...]:
    """Card action's integration id, then the team, then the tenant: the first that names an
    ACTIVE integration wins (the directory tries them in order)."""
    keys: list[LookupKey] = []
    integration_id = _card_integration_id(dig(activity, "value", "payload", "integrationId"))
    if integration_id is not None:
        keys.append(ByIntegrationId(integration_id, provider="msteams", active_only=True))
    for external_id in (dig(activity, "channelData", "team", "id"), dig(activity, "channelData", "tenant", "id")):
        text = id_text(external_id)
        if text is not None:
            keys.append(ByExternalId("msteams", text, active_only=True))
    return tuple(keys)


def _webhook(req: Request, params: Mapping[str, str], ctx: Context) -> Step:
    activity = req.json()
    if not isinstance(activity, dict):
        activity = {}
    can_infer = (
        dig(activity, "value", "payload", "integrationId") is not None
        or dig(activity, "channelData", "team", "id") is not None
    )
    if not can_infer:
        # Personal chats carry only a tenant: control answers them (e.g. "link your identity").
        return Control("cannot_infer_integration")
    if activity.get("type") == SYNC_TYPE and activity.get("action") == "add":
        return Control("installation_added")
    keys = lookup_keys(activity)
    if not keys:
        return MISSING_INTEGRATION

    def on_found(integration: Integration, resolution: Resolution) -> Decision:
        kind = activity.get("type")
        if not kind or kind == SYNC_TYPE:
            return Control("sync_event")
        return store_all("msteams", integration, resolution, Mailbox("msteams", str(integration.id)))

    return identify(keys, on_found, ctx)


SPEC = ProviderSpec(
    name="msteams",
    views=(
        View("webhook", r"webhook/", _webhook, needs_body=True),
        View("configure", r"configure/"),
        View("link-identity", r"link-identity/(?P<signed_params>[^/]+)/"),
        View("unlink-identity", r"unlink-identity/(?P<signed_params>[^/]+)/"),
    ),
    id_source="JSON `value.payload.integrationId`, else `channelData.team.id`, else `channelData.tenant.id`",
    delivery="async: mailbox `msteams:<integration>`; installs and untyped/installationUpdate activities → control",
)
