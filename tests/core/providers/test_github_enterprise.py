"""GitHub Enterprise (reference §3.5): GitHub's flow keyed by ``host:installation``."""

from __future__ import annotations

import json

from sidecar.core import (
    ByExternalId,
    Context,
    Control,
    Integration,
    Lookup,
    Organization,
    Reply,
    Request,
    Resolution,
    Store,
    plan,
)

PAYLOAD = json.dumps({"installation": {"id": 31}, "repository": {"id": 205}}).encode()


def webhook(path: str = "/extensions/github-enterprise/webhook/", host: str | None = "ghe.acme.example") -> Request:
    headers = {"content-type": "application/json", "x-github-event": "pull_request"}
    if host:
        headers["x-github-enterprise-host"] = host
    return Request.from_target("POST", path, headers, PAYLOAD)


def test_external_id_is_host_and_installation() -> None:
    step = plan(webhook(), Context())
    assert isinstance(step, Lookup)
    assert step.keys == (ByExternalId("github_enterprise", "ghe.acme.example:31"),)
    decision = step.then(
        Resolution(Integration(5, "github_enterprise", "ghe.acme.example:31"), (Organization(1, "a", "de"),))
    )
    assert isinstance(decision, Store)
    assert decision.mailbox.name() == "github_enterprise:5:5:pull_request"
    assert decision.regions == ("de",)


def test_missing_host_header_is_400() -> None:
    assert plan(webhook(host=None), Context()) == Reply(400, "unknown_integration")


def test_github_com_endpoint_uses_the_literal_host() -> None:
    step = plan(webhook("/extensions/github-enterprise/webhook/github-com/", host=None), Context())
    assert isinstance(step, Lookup)
    assert step.keys == (ByExternalId("github_enterprise", "github.com:31"),)


def test_installation_event_is_control() -> None:
    headers = {"content-type": "application/json", "x-github-event": "installation", "x-github-enterprise-host": "h"}
    req = Request.from_target("POST", "/extensions/github-enterprise/webhook/", headers, PAYLOAD)
    assert plan(req, Context()) == Control("installation_event")


def test_unknown_view_is_404() -> None:
    assert plan(Request.from_target("POST", "/extensions/github-enterprise/hook/"), Context()) == Reply(
        404, "no_such_view"
    )
