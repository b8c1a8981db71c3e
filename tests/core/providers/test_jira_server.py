"""Jira Server (reference §3.8): the webhook URL carries a JWT minted at install, signed with the
integration's webhook secret. Payloads as Jira Server documents them.

https://developer.atlassian.com/server/jira/platform/webhooks/
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers_b import (
    DE,
    NOW,
    US,
    any_body,
    any_resolution,
    compact,
    decide,
    decide_any,
    found,
    hs256,
    json_request,
    run,
)
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core import ByExternalId, Context, Control, Integration, Mailbox, NeedBody, Reply, Request, Store

WEBHOOK_SECRET = "4c1e0f6a2b9d8e7c5a3f1b0d9e8c7a6b5f4e3d2c"
EXTERNAL_ID = "jira.example.org:0f3c8f1e"
KEY = ByExternalId("jira_server", EXTERNAL_ID)
INTEGRATION = Integration(40, "jira_server", EXTERNAL_ID, metadata={"webhook_secret": WEBHOOK_SECRET})
DIRECTORY = {KEY: found(INTEGRATION, US, DE)}
TOKEN = hs256({"id": EXTERNAL_ID}, WEBHOOK_SECRET)
UNVERIFIED = Reply(200, "unverified_token")


def issue_updated(changelog: Any = "default", issue_id: Any = "10002") -> dict[str, Any]:
    payload: dict[str, Any] = {
        "timestamp": 1525698237764,
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_generic",
        "user": {"name": "admin", "key": "admin"},
        "issue": {"id": issue_id, "key": "OPS-7", "fields": {"summary": "Disk full", "status": {"name": "Done"}}},
    }
    if changelog == "default":
        changelog = {"id": "10300", "items": [{"field": "status", "fromString": "Open", "toString": "Done"}]}
    if changelog is not None:
        payload["changelog"] = changelog
    return payload


def hook(token: str = TOKEN, payload: Any = None) -> Request:
    return json_request(
        "POST", f"/extensions/jira-server/issue-updated/{token}/", issue_updated() if payload is None else payload
    )


def test_an_issue_change_is_stored_per_region_in_the_integrations_mailbox() -> None:
    result = run(hook(), Context(now=NOW), DIRECTORY)
    assert result.header_phase == NeedBody()
    assert result.lookups == [(KEY,)]
    mailbox = Mailbox("jira_server", "40", bucket_key=10002)
    assert result.decision == Store("jira_server", ("de", "us"), mailbox, 40, "stored")
    assert (mailbox.name(), mailbox.name(over_volume=True)) == ("jira_server:40", "jira_server:40:2")


def test_a_numeric_id_claim_names_the_integration_too() -> None:
    integration = Integration(41, "jira_server", "123", metadata={"webhook_secret": WEBHOOK_SECRET})
    token = hs256({"id": 123}, WEBHOOK_SECRET)
    result = run(hook(token), Context(now=NOW), {ByExternalId("jira_server", "123"): found(integration, US)})
    assert isinstance(result.decision, Store)


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b.c",
        hs256({"sub": EXTERNAL_ID}, WEBHOOK_SECRET),
        hs256({"id": ""}, WEBHOOK_SECRET),
        hs256({"id": {"nested": 1}}, WEBHOOK_SECRET),
        hs256({"id": True}, WEBHOOK_SECRET),
    ],
)
def test_a_token_without_an_id_is_acknowledged_with_200_without_lookup(token: str) -> None:
    result = run(hook(token), Context(now=NOW), DIRECTORY)
    assert (result.decision, result.lookups) == (UNVERIFIED, [])


@pytest.mark.parametrize(
    "token",
    [
        hs256({"id": EXTERNAL_ID}, "some-other-webhook-secret-of-enough-bytes"),
        hs256({"id": EXTERNAL_ID, "exp": int(NOW) - 1}, WEBHOOK_SECRET),
        compact({"alg": "none"}, {"id": EXTERNAL_ID}),
        compact({"alg": "HS384"}, {"id": EXTERNAL_ID}, WEBHOOK_SECRET),
    ],
)
def test_a_token_that_does_not_verify_is_acknowledged_with_200(token: str) -> None:
    result = run(hook(token), Context(now=NOW), DIRECTORY)
    assert (result.decision, result.lookups) == (UNVERIFIED, [(KEY,)])


@pytest.mark.parametrize(
    "metadata", [{}, {"webhook_secret": None}, {"webhook_secret": ""}, {"shared_secret": WEBHOOK_SECRET}]
)
def test_an_integration_without_a_webhook_secret_verifies_nothing(metadata: dict[str, Any]) -> None:
    integration = Integration(40, "jira_server", EXTERNAL_ID, metadata=metadata)
    assert decide(hook(), None, {KEY: found(integration, US)}) == UNVERIFIED


def test_an_unknown_integration_is_acknowledged_with_200() -> None:
    assert decide(hook(), None, {}) == UNVERIFIED


def test_no_active_organization_is_400_once_verified() -> None:
    assert decide(hook(), None, {KEY: found(INTEGRATION)}) == Reply(400, "no_active_organization")
    forged = hs256({"id": EXTERNAL_ID}, "some-other-webhook-secret-of-enough-bytes")
    assert decide(hook(forged), None, {KEY: found(INTEGRATION)}) == UNVERIFIED


@pytest.mark.parametrize("changelog", [None, {}, [], ""])
def test_an_event_without_changelog_is_acknowledged_and_dropped(changelog: Any) -> None:
    assert decide(hook(payload=issue_updated(changelog)), None, DIRECTORY) == Reply(200, "missing_changelog")


@pytest.mark.parametrize("body", [b"", b"{oops", b"[1, 2]", b'"changelog"'])
def test_a_body_that_is_not_a_json_object_is_400(body: bytes) -> None:
    assert decide(hook(payload=body), None, DIRECTORY) == Reply(400, "invalid_json")


@pytest.mark.parametrize(("issue_id", "bucket"), [("10002", 10002), (10002, 10002), ("OPS-7", None), (None, None)])
def test_the_bucket_key_is_the_issue_id_as_an_integer(issue_id: Any, bucket: int | None) -> None:
    decision = decide(hook(payload=issue_updated(issue_id=issue_id)), None, DIRECTORY)
    assert isinstance(decision, Store)
    assert decision.mailbox.bucket_key == bucket


def test_an_organization_in_an_unconfigured_region_is_a_500() -> None:
    assert decide(hook(), Context(now=NOW, regions=frozenset({"us"})), DIRECTORY) == Reply(500, "unknown_region")


def test_the_search_view_goes_to_control_and_a_tokenless_path_is_404() -> None:
    assert decide(Request.from_target("GET", "/extensions/jira-server/search/acme/40/")) == Control("control_only_view")
    assert decide(Request.from_target("POST", "/extensions/jira-server/issue-updated/")) == Reply(404, "no_such_view")


@given(
    token=st.text(st.characters(blacklist_characters="/?#", blacklist_categories=["Cs"]), min_size=1, max_size=60),
    body=any_body(issue_updated()),
    resolution=any_resolution(),
)
def test_never_raises(token: str, body: bytes, resolution: Any) -> None:
    req = Request(
        "POST", f"/extensions/jira-server/issue-updated/{token}/", "", {"content-type": "application/json"}, body
    )
    decide_any(req, Context(now=NOW), resolution)


@given(body=any_body(issue_updated()), orgs=st.lists(st.sampled_from([US, DE]), max_size=2))
def test_never_raises_once_verified(body: bytes, orgs: list[Any]) -> None:
    req = Request("POST", f"/extensions/jira-server/issue-updated/{TOKEN}/", "", {}, body)
    decide_any(req, Context(now=NOW), found(INTEGRATION, *orgs))
