"""Bitbucket Server / Data Center (reference §3.10), from its documented ``repo:refs_changed`` payload.

https://confluence.atlassian.com/bitbucketserver/event-payload-938025882.html
"""

from __future__ import annotations

import json

import pytest
from helpers_a import US, decide, lookup_of, step_for

from sidecar.core import ByOrganization, Context, Control, Mailbox, NeedBody, Reply, Request, Resolution, Store, plan

P = "/extensions/bitbucket-server/"
CTX = Context()
REFS_CHANGED = {
    "eventKey": "repo:refs_changed",
    "date": "2017-09-19T09:58:11+1000",
    "actor": {"name": "admin", "id": 1},
    "repository": {"slug": "repository", "id": 84, "project": {"key": "PROJ"}},
    "changes": [{"ref": {"id": "refs/heads/master"}, "fromHash": "ecddabb6", "toHash": "178864a7", "type": "UPDATE"}],
}


def refs_changed(organization: str = "1", integration: str = "77") -> Request:
    headers = {"content-type": "application/json; charset=utf-8", "x-event-key": "repo:refs_changed"}
    path = f"{P}organizations/{organization}/webhook/{integration}/"
    return Request.from_target("POST", path, headers, json.dumps(REFS_CHANGED).encode())


def test_webhook_asks_for_the_body() -> None:
    assert plan(Request.from_target("POST", P + "organizations/1/webhook/77/"), CTX) == NeedBody()


def test_webhook_is_stored_for_the_organizations_region_ignoring_the_integration_id() -> None:
    assert lookup_of(refs_changed("1", "77"), CTX).keys == (ByOrganization(1),)
    decision = decide(refs_changed("1", "not-even-a-number"), CTX, Resolution(None, (US,)))
    assert decision == Store("bitbucket_server", ("us",), Mailbox("bitbucket_server", "1"), None, "stored")
    assert isinstance(decision, Store)
    assert decision.mailbox.name() == "bitbucket_server:1"


def test_unknown_organization_and_region_go_to_control() -> None:
    assert decide(refs_changed(), CTX, Resolution()) == Control("no_mapping")
    assert decide(refs_changed(), Context(regions=frozenset({"de"})), Resolution(None, (US,))) == Control("no_region")


@pytest.mark.parametrize("organization", ["acme", "-1", "99999999999999999999"])
def test_non_numeric_organization_goes_to_control(organization: str) -> None:
    assert step_for(refs_changed(organization), CTX) == Control("invalid_organization_id")


def test_search_is_control_only() -> None:
    assert plan(Request.from_target("GET", P + "search/acme/77/"), CTX) == Control("control_only_view")


@pytest.mark.parametrize(
    "path",
    [
        P + "organizations/1/webhook/",  # Bitbucket Cloud's shape: the server URL carries the integration
        P + "organizations/1/webhook/77",
        P + "organizations/1/webhook//",
        P + "descriptor/",
        P + "installed/",
        P,
    ],
)
def test_paths_matching_no_view_are_404(path: str) -> None:
    assert plan(Request.from_target("POST", path, body=b"{}"), CTX) == Reply(404, "no_such_view")
