"""Microsoft Teams (reference §3.12), from Bot Framework activities as Teams sends them.

https://learn.microsoft.com/en-us/microsoftteams/platform/bots/how-to/conversations/conversation-messages
https://learn.microsoft.com/en-us/microsoftteams/platform/bots/how-to/conversations/subscribe-to-conversation-events
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers_b import DE, NOW, US, any_body, any_resolution, decide, decide_any, found, json_request, run
from hypothesis import given

from sidecar.core import (
    ByExternalId,
    ByIntegrationId,
    Context,
    Control,
    Integration,
    Mailbox,
    NeedBody,
    Reply,
    Request,
    Store,
)

TEAM = "19:8d60a1e3b4c74d9c8b3f5e2a1d0c9b8a@thread.skype"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
TEAM_KEY = ByExternalId("msteams", TEAM, active_only=True)
TENANT_KEY = ByExternalId("msteams", TENANT, active_only=True)
CARD_KEY = ByIntegrationId(60, provider="msteams", active_only=True)
INTEGRATION = Integration(60, "msteams", TEAM)
DIRECTORY = {TEAM_KEY: found(INTEGRATION, US, DE), CARD_KEY: found(INTEGRATION, US, DE)}
PATH = "/extensions/msteams/webhook/"


def activity(kind: Any = "message", team: bool = True, **extra: Any) -> dict[str, Any]:
    channel_data: dict[str, Any] = {"tenant": {"id": TENANT}}
    if team:
        channel_data.update(team={"id": TEAM, "name": "Engineering"}, channel={"id": TEAM}, teamsTeamId=TEAM)
    body: dict[str, Any] = {
        "id": "1485983408511",
        "timestamp": "2024-02-01T21:10:07.437Z",
        "serviceUrl": "https://smba.trafficmanager.net/amer/",
        "channelId": "msteams",
        "from": {"id": "29:1XJKJMvc5GBtc2JwZq0oj8tHZmzrQgFmB39ATiQWA85g", "name": "Megan Bowen"},
        "conversation": {"id": f"{TEAM};messageid=1485983408511", "tenantId": TENANT},
        "recipient": {"id": "28:c9e8c047-2a74-40a2-b28a-b162d5f5327c", "name": "Sentry"},
        "channelData": channel_data,
        **extra,
    }
    if kind is not None:
        body["type"] = kind
    return body


def card_action(integration_id: Any = 60, team: bool = True) -> dict[str, Any]:
    """An Adaptive Card ``Action.Submit`` on a Sentry issue card: Teams echoes the card's data in ``value``."""
    value = {"payload": {"actionType": 2, "groupId": "1234", "integrationId": integration_id}}
    return activity("message", team=team, value=value, replyToId="1485983408511")


def hook(payload: Any) -> Request:
    headers = {"Authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.e30.c2ln"}
    return json_request("POST", PATH, payload, headers)


def test_a_channel_message_is_identified_by_team_then_tenant_and_stored() -> None:
    result = run(hook(activity()), Context(now=NOW), DIRECTORY)
    assert result.header_phase == NeedBody()
    assert result.lookups == [(TEAM_KEY, TENANT_KEY)]
    assert result.decision == Store("msteams", ("de", "us"), Mailbox("msteams", "60"), 60, "stored")


@pytest.mark.parametrize("integration_id", [60, "60"])
def test_a_card_action_is_identified_by_its_integration_id_first(integration_id: Any) -> None:
    result = run(hook(card_action(integration_id)), Context(now=NOW), DIRECTORY)
    assert result.lookups == [(CARD_KEY, TEAM_KEY, TENANT_KEY)]
    assert isinstance(result.decision, Store)


def test_a_card_action_in_a_personal_chat_falls_back_to_the_tenant() -> None:
    tenant_integration = Integration(61, "msteams", TENANT)
    result = run(hook(card_action(999, team=False)), Context(now=NOW), {TENANT_KEY: found(tenant_integration, US)})
    assert result.lookups == [(ByIntegrationId(999, provider="msteams", active_only=True), TENANT_KEY)]
    assert result.decision == Store("msteams", ("us",), Mailbox("msteams", "61"), 61, "stored")


def test_an_unknown_team_falls_back_to_the_tenant() -> None:
    tenant_integration = Integration(61, "msteams", TENANT)
    decision = decide(hook(activity()), None, {TENANT_KEY: found(tenant_integration, DE)})
    assert decision == Store("msteams", ("de",), Mailbox("msteams", "61"), 61, "stored")


@pytest.mark.parametrize("payload", [activity(team=False), {}, b"not json", b"[1]", activity(channelData="x")])
def test_an_activity_naming_no_integration_goes_to_control_without_lookup(payload: Any) -> None:
    result = run(hook(payload), Context(now=NOW), DIRECTORY)
    assert (result.decision, result.lookups) == (Control("cannot_infer_integration"), [])


def test_a_new_installation_goes_to_control_without_lookup() -> None:
    result = run(hook(activity("installationUpdate", action="add")), Context(now=NOW), DIRECTORY)
    assert (result.decision, result.lookups) == (Control("installation_added"), [])


@pytest.mark.parametrize(
    "payload",
    [activity("installationUpdate", action="remove"), activity(None), activity(""), activity(None, action="add")],
)
def test_synchronous_activities_go_to_control_once_identified(payload: dict[str, Any]) -> None:
    result = run(hook(payload), Context(now=NOW), DIRECTORY)
    assert (result.decision, result.lookups) == (Control("sync_event"), [(TEAM_KEY, TENANT_KEY)])


def test_synchronous_activities_of_an_unknown_integration_are_400() -> None:
    assert decide(hook(activity(None)), None, {}) == Reply(400, "unknown_integration")


@pytest.mark.parametrize("kind", ["conversationUpdate", "messageReaction", "invoke", 7])
def test_other_activity_types_are_stored(kind: Any) -> None:
    assert isinstance(decide(hook(activity(kind, membersAdded=[{"id": "28:bot"}])), None, DIRECTORY), Store)


@pytest.mark.parametrize("integration_id", ["abc", 0, -1, 2**63, True, 1.5, {"id": 60}, ""])
def test_a_card_integration_id_that_cannot_be_a_key_is_skipped(integration_id: Any) -> None:
    with_team = run(hook(card_action(integration_id)), Context(now=NOW), DIRECTORY)
    assert with_team.lookups == [(TEAM_KEY, TENANT_KEY)]
    without_team = run(hook(card_action(integration_id, team=False)), Context(now=NOW), DIRECTORY)
    # Sentry can infer (the field is there) but has nothing to look up with but the tenant.
    assert without_team.lookups == [(TENANT_KEY,)]


def test_a_card_action_with_only_an_unusable_id_is_400_without_lookup() -> None:
    payload = card_action("abc", team=False)
    del payload["channelData"]
    result = run(hook(payload), Context(now=NOW), DIRECTORY)
    assert (result.decision, result.lookups) == (Reply(400, "unknown_integration"), [])


def test_unknown_integration_and_no_active_organization_are_400() -> None:
    assert decide(hook(activity()), None, {}) == Reply(400, "unknown_integration")
    assert decide(hook(activity()), None, {TEAM_KEY: found(INTEGRATION)}) == Reply(400, "no_active_organization")


def test_an_organization_in_an_unconfigured_region_is_a_500() -> None:
    assert decide(hook(activity()), Context(now=NOW, regions=frozenset({"us"})), DIRECTORY) == Reply(
        500, "unknown_region"
    )


@pytest.mark.parametrize("path", ["configure/", "link-identity/eyJzaWduZWQiOjF9/", "unlink-identity/eyJzaWduZWQiOjF9/"])
def test_every_other_view_goes_to_control(path: str) -> None:
    assert decide(Request.from_target("GET", f"/extensions/msteams/{path}")) == Control("control_only_view")


def test_an_unknown_view_is_404() -> None:
    assert decide(Request.from_target("POST", "/extensions/msteams/messages/")) == Reply(404, "no_such_view")


@given(body=any_body(card_action()), resolution=any_resolution())
def test_never_raises(body: bytes, resolution: Any) -> None:
    decide_any(Request("POST", PATH, "", {"content-type": "application/json"}, body), Context(now=NOW), resolution)
