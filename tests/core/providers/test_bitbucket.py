"""Bitbucket Cloud (reference §3.9), from Bitbucket's documented ``repo:push`` payload.

https://support.atlassian.com/bitbucket-cloud/docs/event-payloads/#Push
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers_a import DE, US, decide, lookup_of, step_for
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core import (
    ByOrganization,
    Context,
    Control,
    Lookup,
    Mailbox,
    NeedBody,
    Organization,
    Reply,
    Request,
    Resolution,
    ShedRule,
    Store,
    plan,
)

P = "/extensions/bitbucket/"
CTX = Context()
PUSH: dict[str, Any] = {
    "actor": {"display_name": "Emma", "uuid": "{d301aafa-d676-4ee0-88be-962be7417567}"},
    "repository": {"full_name": "acme/backend", "uuid": "{b9a3f8b6-2c5e-4d7e-9f3b-0e4a5b6c7d8e}"},
    "push": {"changes": [{"new": {"type": "branch", "name": "main", "target": {"hash": "709d658dc5b6d6afcd46"}}}]},
}


def push(organization: str = "1", query: str = "") -> Request:
    headers = {"content-type": "application/json", "x-event-key": "repo:push", "x-hook-uuid": "cb8e2a4c-8a8b-4a63"}
    target = f"{P}organizations/{organization}/webhook/" + (f"?{query}" if query else "")
    return Request.from_target("POST", target, headers, json.dumps(PUSH).encode())


def test_webhook_asks_for_the_body_so_the_stored_copy_is_exact() -> None:
    assert plan(Request.from_target("POST", P + "organizations/1/webhook/"), CTX) == NeedBody()


def test_organization_comes_from_the_path() -> None:
    assert lookup_of(push("1"), CTX).keys == (ByOrganization(1),)


def test_webhook_is_stored_for_the_organizations_region_without_integration() -> None:
    decision = decide(push("1"), CTX, Resolution(None, (US,)))
    assert decision == Store("bitbucket", ("us",), Mailbox("bitbucket", "1"), None, "stored")
    assert isinstance(decision, Store)
    assert decision.mailbox.name() == "bitbucket:1"
    assert decision.mailbox.name(over_volume=True) == "bitbucket:1"  # never bucketed


def test_leading_zeros_name_the_same_organization() -> None:
    decision = decide(push("0042"), CTX, Resolution(None, (Organization(42, "x", "de"),)))
    assert decision == Store("bitbucket", ("de",), Mailbox("bitbucket", "42"), None, "stored")


def test_body_is_not_read_for_routing() -> None:
    req = push("2").with_body(b"\xff not json at all")
    assert decide(req, CTX, Resolution(None, (DE,))) == Store(
        "bitbucket", ("de",), Mailbox("bitbucket", "2"), None, "stored"
    )


def test_unknown_organization_goes_to_control() -> None:
    assert decide(push("1"), CTX, Resolution()) == Control("no_mapping")


def test_a_mapping_for_another_organization_is_not_used() -> None:
    assert decide(push("1"), CTX, Resolution(None, (DE,))) == Control("no_mapping")


def test_unknown_region_goes_to_control() -> None:
    ctx = Context(regions=frozenset({"de"}))
    assert decide(push("1"), ctx, Resolution(None, (US,))) == Control("no_region")


@pytest.mark.parametrize(
    "organization", ["acme", "1.0", "-1", "1e3", "١", "0x10", "9223372036854775808", "9" * 5000, "%31", " 1"]
)
def test_an_organization_id_that_is_not_a_bigint_goes_to_control(organization: str) -> None:
    # Sentry's lookup raises ValueError here (→ 500); we guard it, as its Gitea parser does.
    assert step_for(push(organization), CTX) == Control("invalid_organization_id")


def test_largest_bigint_is_accepted() -> None:
    assert lookup_of(push("9223372036854775807"), CTX).keys == (ByOrganization(9223372036854775807),)


def test_shed_rule_answers_429_instead_of_storing() -> None:
    ctx = Context(shed=(ShedRule("bitbucket"),))
    assert decide(push("1"), ctx, Resolution(None, (US,))) == Reply(429, "shed", headers=(("retry-after", "60"),))


@pytest.mark.parametrize("path", [P + "descriptor/", P + "installed/", P + "uninstalled/", P + "search/acme/12/"])
def test_other_views_are_control_only(path: str) -> None:
    assert plan(Request.from_target("POST", path, body=b"{}"), CTX) == Control("control_only_view")


@pytest.mark.parametrize(
    "path",
    [
        P + "organizations/1/webhook",
        P + "organizations/1/webhook/5/",
        P + "organizations//webhook/",
        P + "organizations/1/",
        P + "webhook/",
        P + "search/acme/",
        P,
    ],
)
def test_paths_matching_no_view_are_404(path: str) -> None:
    assert plan(Request.from_target("POST", path, body=b"{}"), CTX) == Reply(404, "no_such_view")


@settings(max_examples=200, deadline=None)
@given(organization=st.text(alphabet=st.characters(blacklist_characters="/?"), min_size=1, max_size=40))
def test_arbitrary_organization_segments_never_raise(organization: str) -> None:
    step = step_for(push(organization), CTX)
    assert isinstance(step, (Lookup, Control)), step
    if isinstance(step, Lookup):
        for resolution in (Resolution(), Resolution(None, (US, DE))):
            step.then(resolution)
