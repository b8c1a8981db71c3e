"""GitLab (reference §3.6), from GitLab's documented webhook requests.

https://docs.gitlab.com/user/project/integrations/webhook_events/#push-events
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers_b import DE, NOW, US, any_body, any_resolution, decide, decide_any, found, header_values, json_request, run
from hypothesis import given

from sidecar.core import ByExternalId, Context, Control, Integration, Mailbox, NeedBody, Reply, Request, ShedRule, Store
from sidecar.core.providers.gitlab import EVENT_KINDS, TOKEN_INVALID, TOKEN_MALFORMED, TOKEN_MISSING

PATH = "/extensions/gitlab/webhook/"
TOKEN = "gitlab.example.com:cool-group:6c3b5a1e9f"
KEY = ByExternalId("gitlab", "gitlab.example.com:cool-group")
INTEGRATION = Integration(12, "gitlab", "gitlab.example.com:cool-group")
DIRECTORY = {KEY: found(INTEGRATION, US, DE)}


def push_event(project_id: Any = 15, object_kind: Any = "push") -> dict[str, Any]:
    return {
        "object_kind": object_kind,
        "event_name": "push",
        "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
        "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        "ref": "refs/heads/master",
        "user_id": 4,
        "user_username": "jsmith",
        "project_id": 15,
        "project": {"id": project_id, "name": "Diaspora", "path_with_namespace": "mike/diaspora"},
        "commits": [{"id": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327", "message": "Update Catalan translation"}],
        "total_commits_count": 1,
    }


def hook(payload: Any = None, token: str | None = TOKEN, content_type: str = "application/json") -> Request:
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Instance": "https://gitlab.example.com"}
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return json_request("POST", PATH, push_event() if payload is None else payload, headers, content_type)


def test_push_is_stored_for_every_region_in_a_project_and_event_mailbox() -> None:
    result = run(hook(), Context(now=NOW), DIRECTORY)
    assert result.header_phase == NeedBody()
    assert result.lookups == [(KEY,)]
    assert result.decision == Store(
        "gitlab", ("de", "us"), Mailbox("gitlab", "12", bucket_key=15, event_type="push"), 12, "stored"
    )
    assert isinstance(result.decision, Store)
    assert result.decision.mailbox.name() == "gitlab:12:push"
    assert result.decision.mailbox.name(over_volume=True) == "gitlab:12:15:push"


@pytest.mark.parametrize(
    ("token", "answer"),
    [
        (None, TOKEN_MISSING),
        ("", TOKEN_MALFORMED),
        ("just-a-secret", TOKEN_MALFORMED),
        ("gitlab.example.com:cool-group", TOKEN_MALFORMED),
        ("gitlab.example.com:8443:cool-group:secret", TOKEN_MALFORMED),
        (":cool-group:secret", TOKEN_INVALID),
        ("gitlab.example.com::secret", TOKEN_INVALID),
    ],
)
def test_token_errors_are_answered_before_any_lookup(token: str | None, answer: Reply) -> None:
    result = run(hook(token=token), Context(now=NOW), DIRECTORY)
    assert result.decision == answer
    assert result.lookups == []


def test_the_three_token_answers_are_distinct_400s_with_the_reference_texts() -> None:
    answers = (TOKEN_MISSING, TOKEN_MALFORMED, TOKEN_INVALID)
    assert {a.status for a in answers} == {400}
    assert len({a.reason for a in answers}) == 3
    assert [a.body for a in answers] == [
        b"The customer needs to set a Secret Token in their webhook.",
        b"The customer's Secret Token is malformed.",
        b"Generic catch-all error.",
    ]


def test_an_empty_secret_still_names_the_integration() -> None:
    # The secret is compared in the region, not here.
    assert isinstance(decide(hook(token="gitlab.example.com:cool-group:"), None, DIRECTORY), Store)


def test_a_non_json_content_type_is_400_without_lookup() -> None:
    result = run(hook(content_type="application/x-www-form-urlencoded"), Context(now=NOW), DIRECTORY)
    assert result.decision == Reply(400, "not_json")
    assert result.lookups == []


def test_unknown_integration_and_no_active_organization_are_400() -> None:
    assert decide(hook(), None, {}) == Reply(400, "unknown_integration")
    assert decide(hook(), None, {KEY: found(INTEGRATION)}) == Reply(400, "no_active_organization")


def test_an_organization_in_an_unconfigured_region_is_a_500() -> None:
    assert decide(hook(), Context(now=NOW, regions=frozenset({"us"})), DIRECTORY) == Reply(500, "unknown_region")


@pytest.mark.parametrize("kind", sorted(EVENT_KINDS))
def test_every_known_object_kind_names_its_mailbox(kind: str) -> None:
    decision = decide(hook(push_event(object_kind=kind)), None, DIRECTORY)
    assert isinstance(decision, Store)
    assert decision.mailbox.event_type == kind


@pytest.mark.parametrize("kind", ["Push Hook", "merge_requests", "../../x", ["push"], {"a": 1}, 7, None])
def test_other_object_kinds_never_reach_a_mailbox_name(kind: Any) -> None:
    decision = decide(hook(push_event(object_kind=kind)), None, DIRECTORY)
    assert isinstance(decision, Store)
    assert decision.mailbox.event_type is None
    assert decision.mailbox.name() == "gitlab:12"


@pytest.mark.parametrize("project_id", [None, "15", True, 1.5, {"id": 1}])
def test_only_an_integer_project_id_is_a_bucket_key(project_id: Any) -> None:
    decision = decide(hook(push_event(project_id=project_id)), None, DIRECTORY)
    assert isinstance(decision, Store)
    assert decision.mailbox.bucket_key is None


def test_a_json_content_type_with_a_broken_body_is_stored_for_the_region_to_answer() -> None:
    decision = decide(hook(b"{not json"), None, DIRECTORY)
    assert decision == Store("gitlab", ("de", "us"), Mailbox("gitlab", "12"), 12, "stored")


def test_shed_gitlab_is_429_instead_of_stored() -> None:
    ctx = Context(now=NOW, shed=(ShedRule("gitlab"),))
    assert decide(hook(), ctx, DIRECTORY) == Reply(429, "shed", headers=(("retry-after", "60"),))


def test_non_webhook_views_go_to_control_and_unknown_views_are_404() -> None:
    search = Request.from_target("GET", "/extensions/gitlab/search/acme/12/?field=project&query=dia")
    assert decide(search) == Control("control_only_view")
    assert decide(Request.from_target("POST", "/extensions/gitlab/hook/")) == Reply(404, "no_such_view")


@given(token=header_values, body=any_body(push_event()), resolution=any_resolution())
def test_never_raises(token: str, body: bytes, resolution: Any) -> None:
    req = Request.from_target("POST", PATH, {"X-Gitlab-Token": token, "Content-Type": "application/json"}, body)
    decide_any(req, Context(now=NOW), resolution)
