from __future__ import annotations

import json

from sidecar.core import (
    ByExternalId,
    Context,
    Control,
    Integration,
    Lookup,
    NeedBody,
    Organization,
    Reply,
    Request,
    Resolution,
    ShedRule,
    Store,
    plan,
)
from sidecar.core.plan import needs_body

GITHUB_PUSH = json.dumps({"installation": {"id": 4711}, "repository": {"id": 7}, "ref": "refs/heads/main"}).encode()
JSON = {"content-type": "application/json", "x-github-event": "push"}
ACME = Organization(1, "acme", "us")


def push(body: bytes | None = GITHUB_PUSH) -> Request:
    return Request.from_target("POST", "/extensions/github/webhook/", JSON, body)


def test_header_phase_asks_for_the_body_on_body_views() -> None:
    assert plan(push(body=None), Context()) == NeedBody()
    assert needs_body(push(body=None))


def test_control_only_view_needs_no_body() -> None:
    req = Request.from_target("GET", "/extensions/github/installation/99/")
    assert plan(req, Context()) == Control("control_only_view")
    assert not needs_body(req)


def test_unknown_view_under_known_provider_is_404() -> None:
    assert plan(Request.from_target("POST", "/extensions/github/nope/"), Context()) == Reply(404, "no_such_view")


def test_unknown_provider_goes_to_control() -> None:
    assert plan(Request.from_target("POST", "/extensions/nonesuch/x/"), Context()) == Control("unknown_provider")


def test_not_a_webhook_path_goes_to_control() -> None:
    assert plan(Request.from_target("GET", "/api/0/"), Context()) == Control("not_a_webhook_path")


def test_shed_rule_turns_store_into_429_with_retry_after() -> None:
    step = plan(push(), Context(shed=(ShedRule("github"),)))
    assert isinstance(step, Lookup)
    decision = step.then(Resolution(Integration(10, "github", "4711"), (ACME,)))
    assert decision == Reply(429, "shed", headers=(("retry-after", "60"),))


def test_shed_rule_for_another_integration_does_not_shed() -> None:
    step = plan(push(), Context(shed=(ShedRule("github", integration_id=11),)))
    assert isinstance(step, Lookup)
    decision = step.then(Resolution(Integration(10, "github", "4711"), (ACME,)))
    assert isinstance(decision, Store)


def test_shed_rule_for_the_integration_sheds() -> None:
    step = plan(push(), Context(shed=(ShedRule("github", integration_id=10),)))
    assert isinstance(step, Lookup)
    assert step.keys == (ByExternalId("github", "4711"),)
    assert step.then(Resolution(Integration(10, "github", "4711"), (ACME,))).reason == "shed"  # type: ignore[union-attr]


def test_unknown_region_in_mapping_is_500_not_a_guess() -> None:
    step = plan(push(), Context(regions=frozenset({"de"})))
    assert isinstance(step, Lookup)
    assert step.then(Resolution(Integration(10, "github", "4711"), (ACME,))) == Reply(500, "unknown_region")
