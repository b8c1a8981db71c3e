"""GitHub (reference §3.4), from GitHub's documented webhook payloads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.core import (
    ByExternalId,
    Context,
    Control,
    Integration,
    Lookup,
    Mailbox,
    NeedBody,
    Organization,
    Reply,
    Request,
    Resolution,
    Store,
    plan,
)

INTEGRATION = Integration(10, "github", "4711")
US = Organization(1, "acme", "us")
DE = Organization(2, "globex", "de")


def webhook(event: str | None, payload: Any, content_type: str = "application/json") -> Request:
    headers = {"content-type": content_type, "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    if event is not None:
        headers["x-github-event"] = event
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Request.from_target("POST", "/extensions/github/webhook/", headers, body)


def push_payload(installation: Any = 4711, repo_id: Any = 1296269) -> dict[str, Any]:
    return {
        "ref": "refs/heads/main",
        "repository": {"id": repo_id, "full_name": "octocat/Hello-World"},
        "installation": {"id": installation, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="},
        "sender": {"login": "octocat"},
    }


def resolve(req: Request, resolution: Resolution) -> object:
    step = plan(req, Context())
    assert isinstance(step, Lookup), step
    return step.then(resolution)


def test_push_is_stored_for_every_region_in_a_bucketed_event_mailbox() -> None:
    decision = resolve(webhook("push", push_payload()), Resolution(INTEGRATION, (US, DE)))
    assert decision == Store(
        "github",
        ("de", "us"),
        Mailbox("github", "10", bucket_key=1296269, event_type="push", always_bucket=True),
        10,
        "stored",
    )
    assert isinstance(decision, Store)
    assert decision.mailbox.name() == "github:10:69:push"


def test_lookup_is_by_installation_id_without_status_filter() -> None:
    step = plan(webhook("push", push_payload()), Context())
    assert isinstance(step, Lookup)
    assert step.keys == (ByExternalId("github", "4711", active_only=False),)


def test_header_phase_needs_the_body() -> None:
    req = Request.from_target("POST", "/extensions/github/webhook/", {"x-github-event": "push"})
    assert plan(req, Context()) == NeedBody()


@pytest.mark.parametrize("path", ["/extensions/github/installation/123/", "/extensions/github/search/acme/10/"])
def test_other_views_are_control_only(path: str) -> None:
    assert plan(Request.from_target("GET", path), Context()) == Control("control_only_view")


@pytest.mark.parametrize("event", ["installation", "installation_repositories"])
def test_installation_events_go_to_control(event: str) -> None:
    assert plan(webhook(event, push_payload()), Context()) == Control("installation_event")


@pytest.mark.parametrize("body", [b"not json", b"", b"[1, 2]", b"\xff"])
def test_body_that_is_not_a_json_object_is_400(body: bytes) -> None:
    assert plan(webhook("push", body), Context()) == Reply(400, "invalid_json")


def test_non_json_content_type_cannot_identify() -> None:
    assert plan(webhook("push", push_payload(), "application/x-www-form-urlencoded"), Context()) == Reply(
        400, "unknown_integration"
    )


@pytest.mark.parametrize("installation", [None, "", True, 1.5, {"id": 1}])
def test_missing_installation_is_400(installation: Any) -> None:
    assert plan(webhook("push", push_payload(installation)), Context()) == Reply(400, "unknown_integration")


def test_unknown_integration_is_400() -> None:
    assert resolve(webhook("push", push_payload()), Resolution()) == Reply(400, "unknown_integration")


def test_no_active_organization_is_400() -> None:
    assert resolve(webhook("push", push_payload()), Resolution(INTEGRATION, ())) == Reply(400, "no_active_organization")


def test_unprocessed_event_is_202_and_dropped_after_identification() -> None:
    assert resolve(webhook("star", push_payload()), Resolution(INTEGRATION, (US,))) == Reply(202, "unprocessed_event")
    # identification comes first: an unknown integration is still a 400
    assert resolve(webhook("star", push_payload()), Resolution()) == Reply(400, "unknown_integration")


def test_missing_event_header_is_forwarded_without_event_suffix() -> None:
    decision = resolve(webhook(None, push_payload()), Resolution(INTEGRATION, (US,)))
    assert isinstance(decision, Store)
    assert decision.mailbox.name() == "github:10:69"


def test_repository_id_that_is_not_an_int_is_not_a_bucket() -> None:
    decision = resolve(webhook("push", push_payload(repo_id="x")), Resolution(INTEGRATION, (US,)))
    assert isinstance(decision, Store)
    assert decision.mailbox.name() == "github:10:push"


@pytest.mark.parametrize(
    ("event", "action", "expected"),
    [
        ("check_run", "completed", None),
        ("check_run", "rerequested", None),
        ("check_run", "requested_action", None),
        ("check_run", "created", "unconsumed_action"),
        ("check_suite", "completed", None),
        ("check_suite", "requested", "unconsumed_action"),
        ("pull_request", "opened", None),
    ],
)
def test_check_actions_filter(event: str, action: str, expected: str | None) -> None:
    payload = {**push_payload(), "action": action}
    decision = resolve(webhook(event, payload), Resolution(INTEGRATION, (US,)))
    if expected is None:
        assert isinstance(decision, Store)
    else:
        assert decision == Reply(202, expected)


def test_check_run_whose_pull_requests_are_all_in_other_repos_is_dropped() -> None:
    foreign = {"base": {"repo": {"id": 999}}}
    payload = {**push_payload(), "action": "completed", "check_run": {"pull_requests": [foreign]}}
    assert resolve(webhook("check_run", payload), Resolution(INTEGRATION, (US,))) == Reply(202, "no_own_repo_pr")
    own = {"base": {"repo": {"id": 1296269}}}
    payload["check_run"] = {"pull_requests": [foreign, own]}
    assert isinstance(resolve(webhook("check_run", payload), Resolution(INTEGRATION, (US,))), Store)
