"""Slack staging (reference §3.2): Slack's flow under ``/extensions/slack-staging/`` and its own slug."""

from __future__ import annotations

import pytest
from helpers_a import (
    DE,
    EU,
    US,
    block_actions,
    block_suggestion,
    button,
    decide,
    event_callback,
    lookup_of,
    slack_ctx,
    slack_event,
    slack_form,
    slack_payload,
    slash_command,
    step_for,
)

from sidecar.core import (
    ByExternalId,
    Control,
    Forward,
    Integration,
    Lookup,
    NeedBody,
    Reply,
    Request,
    Resolution,
    Store,
    plan,
)
from sidecar.core.classify import IntegrationRoute, classify
from sidecar.core.decision import ReplyTarget
from sidecar.core.providers import PROVIDERS

P = "/extensions/slack-staging/"
STAGING = Integration(8, "slack_staging", "T0001")
ALL = Resolution(STAGING, (US, DE, EU))
CTX = slack_ctx()


def test_the_hyphenated_segment_selects_the_staging_spec() -> None:
    route = classify(P + "event/")
    assert isinstance(route, IntegrationRoute)
    assert route.provider == "slack_staging"
    assert route.spec is PROVIDERS["slack_staging"]
    assert PROVIDERS["slack_staging"].prefix == P


@pytest.mark.parametrize("view", ["action/", "commands/", "event/", "options-load/"])
def test_signed_views_ask_for_the_body(view: str) -> None:
    assert plan(Request.from_target("POST", P + view), CTX) == NeedBody()


@pytest.mark.parametrize(
    "req",
    [
        slack_event(P, event_callback()),
        slack_form(P + "commands/", slash_command()),
        slack_payload(P + "action/", block_actions(button("unfurl", "link"))),
        slack_payload(P + "options-load/", block_suggestion("assign")),
    ],
)
def test_installations_of_the_staging_app_are_slack_staging_integrations(req: Request) -> None:
    assert lookup_of(req, CTX).keys == (ByExternalId("slack_staging", "T0001", True),)


def test_routing_is_slacks() -> None:
    assert decide(slack_event(P, event_callback()), CTX, ALL) == Forward("de", "first_region")
    command = slack_form(P + "commands/", slash_command("link team acme", response_url="https://hooks.slack.com/c/1"))
    command_decision = decide(command, CTX, ALL)
    assert isinstance(command_decision, Store)
    assert (command_decision.regions, command_decision.reason) == (("us",), "async_first_region")
    assert command_decision.mailbox.name() == f"slack_staging:{command_decision.integration_id}"
    assert command_decision.reply_to == ReplyTarget("slack", "https://hooks.slack.com/c/1")
    action = slack_payload(P + "action/", block_actions(button("resolve::3", "resolved")))
    action_decision = decide(action, CTX, ALL)
    assert isinstance(action_decision, Store)
    assert (action_decision.provider, action_decision.regions) == ("slack_staging", ("eu",))
    assert action_decision.reason == "async_all_regions"
    without_url = slack_payload(P + "action/", block_actions(button("resolve::3", "resolved"), response_url=None))
    assert decide(without_url, CTX, ALL) == Forward("eu", "all_regions_as_first")


def test_unknown_workspace_400_and_no_organization_202() -> None:
    req = slack_event(P, event_callback())
    assert decide(req, CTX, Resolution()) == Reply(400, "unknown_integration")
    assert decide(req, CTX, Resolution(STAGING, ())) == Reply(202, "no_active_organization")


def test_url_verification_goes_to_control() -> None:
    req = slack_event(P, {"type": "url_verification", "challenge": "abc", "token": "t"}, secret=None)
    assert step_for(req, CTX) == Control("url_verification")


def test_signatures_are_checked_as_for_slack() -> None:
    assert step_for(slack_event(P, event_callback(), secret="forged"), CTX) == Reply(401, "bad_signature")
    assert step_for(slack_event(P, event_callback(), timestamp="1"), CTX) == Reply(401, "stale_signature")
    assert step_for(slack_event(P, event_callback()), slack_ctx(None)) == Reply(401, "no_signing_secret")
    assert isinstance(step_for(slack_event(P, event_callback()), CTX), Lookup)


@pytest.mark.parametrize(
    "path",
    [P + "link-identity/abc/", P + "unlink-identity/abc/", P + "link-team/abc/", P + "unlink-team/abc/", P + "x/"],
)
def test_staging_has_no_identity_or_team_views(path: str) -> None:
    assert plan(Request.from_target("GET", path), CTX) == Reply(404, "no_such_view")


def test_setup_and_link_pages_are_not_classified() -> None:
    assert plan(Request.from_target("GET", P + "setup/"), CTX) == Control("setup_or_link_view")


def test_staging_is_verified_with_its_own_secret_not_production_s() -> None:
    from sidecar.core import Context, Secrets

    production_only = Context(now=CTX.now, secrets=Secrets(slack_signing_secret=CTX.secrets.slack_signing_secret))
    assert step_for(slack_event(P, event_callback()), production_only) == Reply(401, "no_signing_secret")
