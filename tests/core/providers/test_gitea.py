"""Gitea (reference §3.15), from Gitea's documented push webhook.

https://docs.gitea.com/usage/webhooks#example
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers_b import DE, NOW, US, any_body, any_resolution, decide, decide_any, found, json_request, run
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core import (
    ByIntegrationId,
    ByOrganization,
    Context,
    Control,
    Integration,
    Mailbox,
    NeedBody,
    Reply,
    Request,
    Resolution,
    ShedRule,
    Store,
)

KEY = ByIntegrationId(70, provider="gitea")
INTEGRATION = Integration(70, "gitea", "gitea.example.com")
DIRECTORY = {KEY: found(INTEGRATION, US, DE), ByOrganization(1): Resolution(None, (US,))}


def push(repo_id: Any = 140) -> dict[str, Any]:
    return {
        "ref": "refs/heads/develop",
        "before": "28e1879d029cb852e4844d9c718537df08844e03",
        "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
        "compare_url": "http://localhost:3000/gitea/webhooks/compare/28e1879d...bffeb742",
        "commits": [{"id": "bffeb74224043ba2feb48d137756c8a9331c449a", "message": "Webhooks Yay!"}],
        "repository": {"id": repo_id, "name": "webhooks", "full_name": "gitea/webhooks", "private": False},
        "pusher": {"id": 1, "login": "gitea"},
        "sender": {"id": 1, "login": "gitea"},
    }


def hook(
    org: str = "1", integration: str = "70", payload: Any = None, content_type: str = "application/json"
) -> Request:
    headers = {
        "X-Gitea-Event": "push",
        "X-Gitea-Delivery": "f6266f16-1bf3-46a5-9ea4-602e06ead473",
        "X-Gitea-Signature": "9d2a1c1e1b6e0c4d8b7f2e8d5f1c3a9b",
    }
    target = f"/extensions/gitea/organizations/{org}/webhook/{integration}/"
    return json_request("POST", target, push() if payload is None else payload, headers, content_type)


def test_a_push_is_stored_for_the_path_organizations_region_only() -> None:
    result = run(hook(), Context(now=NOW), DIRECTORY)
    assert result.header_phase == NeedBody()
    assert result.lookups == [(KEY,)]
    mailbox = Mailbox("gitea", "70", bucket_key=140)
    assert result.decision == Store("gitea", ("us",), mailbox, 70, "stored")
    assert (mailbox.name(), mailbox.name(over_volume=True)) == ("gitea:70", "gitea:70:40")
    assert decide(hook(org="2"), None, DIRECTORY) == Store("gitea", ("de",), mailbox, 70, "stored")


@pytest.mark.parametrize("org", ["acme", "-1", "１", "1e3", "9" * 19])
def test_an_organization_id_that_is_not_a_number_goes_to_control(org: str) -> None:
    result = run(hook(org=org), Context(now=NOW), DIRECTORY)
    assert (result.decision, result.lookups) == (Control("invalid_organization_id"), [])


def test_an_unknown_integration_is_400() -> None:
    assert decide(hook(), None, {}) == Reply(400, "unknown_integration")


def test_an_organization_the_integration_is_not_installed_in_goes_to_control() -> None:
    assert decide(hook(org="3"), None, DIRECTORY) == Control("no_mapping")
    assert decide(hook(), None, {KEY: found(INTEGRATION)}) == Control("no_mapping")


def test_an_organization_in_an_unconfigured_region_goes_to_control() -> None:
    assert decide(hook(), Context(now=NOW, regions=frozenset({"de"})), DIRECTORY) == Control("no_region")


@pytest.mark.parametrize("request_", [hook(integration="abc"), hook(content_type="text/plain")])
def test_without_an_integration_to_identify_the_organization_decides_control_or_400(request_: Request) -> None:
    result = run(request_, Context(now=NOW), DIRECTORY)
    assert (result.decision, result.lookups) == (Reply(400, "unknown_integration"), [(ByOrganization(1),)])
    assert decide(request_, None, {}) == Control("no_mapping")
    assert decide(request_, Context(now=NOW, regions=frozenset({"de"})), DIRECTORY) == Control("no_region")


@pytest.mark.parametrize("repo_id", [None, "140", False, 1.5])
def test_only_an_integer_repository_id_is_a_bucket_key(repo_id: Any) -> None:
    decision = decide(hook(payload=push(repo_id)), None, DIRECTORY)
    assert isinstance(decision, Store)
    assert decision.mailbox.bucket_key is None


def test_shed_gitea_is_429() -> None:
    ctx = Context(now=NOW, shed=(ShedRule("gitea", 70),))
    assert decide(hook(), ctx, DIRECTORY) == Reply(429, "shed", headers=(("retry-after", "60"),))


def test_the_search_view_goes_to_control_and_unknown_views_are_404() -> None:
    assert decide(Request.from_target("GET", "/extensions/gitea/search/acme/70/")) == Control("control_only_view")
    assert decide(Request.from_target("POST", "/extensions/gitea/organizations/1/webhook/")) == Reply(
        404, "no_such_view"
    )


segment = st.text(st.characters(blacklist_characters="/?#", blacklist_categories=["Cs"]), min_size=1, max_size=20)


@given(
    org=segment | st.integers(0, 10**20).map(str),
    integration=segment | st.integers(0, 10**20).map(str),
    body=any_body(push()),
    resolution=any_resolution(),
)
def test_never_raises(org: str, integration: str, body: bytes, resolution: Any) -> None:
    req = Request(
        "POST",
        f"/extensions/gitea/organizations/{org}/webhook/{integration}/",
        "",
        {"content-type": "application/json"},
        body,
    )
    decide_any(req, Context(now=NOW), resolution)
