"""Legacy plugin webhooks (reference §4): GitHub and Bitbucket plugins, routed by the path's organization.

https://docs.github.com/en/webhooks/webhook-events-and-payloads#push
"""

from __future__ import annotations

import json

import pytest
from helpers_a import DE, US, decide, lookup_of, step_for

from sidecar.core import ByOrganization, Context, Control, Mailbox, NeedBody, Reply, Request, Resolution, Store, plan
from sidecar.core.classify import PluginRoute, classify

CTX = Context()
GITHUB_PUSH = {"ref": "refs/heads/main", "repository": {"id": 1296269, "full_name": "octocat/Hello-World"}}


def webhook(plugin: str, organization: str = "1") -> Request:
    headers = {"content-type": "application/json", "x-github-event": "push"}
    path = f"/plugins/{plugin}/organizations/{organization}/webhook/"
    return Request.from_target("POST", path, headers, json.dumps(GITHUB_PUSH).encode())


def test_plugin_paths_are_classified_as_plugins() -> None:
    assert isinstance(classify("/plugins/github/organizations/1/webhook/"), PluginRoute)


@pytest.mark.parametrize("plugin", ["github", "bitbucket"])
def test_webhook_asks_for_the_body(plugin: str) -> None:
    assert plan(Request.from_target("POST", f"/plugins/{plugin}/organizations/1/webhook/"), CTX) == NeedBody()


@pytest.mark.parametrize("plugin", ["github", "bitbucket"])
def test_webhook_is_stored_for_the_organizations_region(plugin: str) -> None:
    assert lookup_of(webhook(plugin, "1"), CTX).keys == (ByOrganization(1),)
    decision = decide(webhook(plugin, "2"), CTX, Resolution(None, (DE,)))
    assert decision == Store("plugins", ("de",), Mailbox("plugins", "2"), None, "stored")
    assert isinstance(decision, Store)
    assert decision.mailbox.name() == "plugins:2"


def test_deleted_organization_is_400() -> None:
    assert decide(webhook("github"), CTX, Resolution()) == Reply(400, "no_mapping")


def test_unknown_region_goes_to_control() -> None:
    assert decide(webhook("bitbucket"), Context(regions=frozenset({"de"})), Resolution(None, (US,))) == Control(
        "no_region"
    )


@pytest.mark.parametrize("organization", ["acme", "1.5", "-3", "9" * 30])
def test_non_numeric_organization_goes_to_control(organization: str) -> None:
    assert step_for(webhook("github", organization), CTX) == Control("invalid_organization_id")


@pytest.mark.parametrize(
    "path",
    [
        "/plugins/github/installations/webhook/",  # the GitHub plugin's installation webhook stays on control
        "/plugins/github/organizations//webhook/",  # no organization id
        "/plugins/github/organizations/1/webhook",
        "/plugins/github/organizations/1/webhook/extra/",
        "/plugins/gitlab/organizations/1/webhook/",
        "/plugins/jira/issue-updated/",
        "/plugins/",
    ],
)
def test_everything_else_under_plugins_falls_through_to_control(path: str) -> None:
    assert plan(Request.from_target("POST", path, body=b"{}"), CTX) == Control("not_a_plugin_webhook")


def test_paths_outside_plugins_are_not_plugin_routes() -> None:
    assert plan(Request.from_target("POST", "/pluginsx/github/organizations/1/webhook/"), CTX) == Control(
        "not_a_webhook_path"
    )
