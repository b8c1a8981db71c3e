"""Micro-benchmarks of the pure core: classify + plan + then(resolution), per provider, header-only
and with 2 KB bodies. No I/O: the resolution is built in advance, as a warm cache would answer.

Timed only on request (``BENCH=1 pytest tests/bench/test_core_bench.py`` or ``--benchmark-enable``);
the normal test run checks that every case still reaches its expected decision and skips the
timing. Nothing here asserts a duration: timed tests are flaky on a shared 2-core machine.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import jwt as pyjwt
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from sidecar.core import Context, Decision, Integration, Lookup, Organization, Request, Resolution, Secrets, jwt, plan

NOW = 1_700_000_000.0
SLACK_SECRET = "bench-slack-secret"
JIRA_SECRET = "bench-jira-shared-secret-0123456789abcdef"
CTX = Context(now=NOW, secrets=Secrets(slack_signing_secret=SLACK_SECRET), regions=frozenset({"us", "de"}))
US = Organization(1, "acme", "us")


def padded(payload: dict[str, object], size: int = 2048) -> bytes:
    base = json.dumps({**payload, "padding": ""}).encode()
    return json.dumps({**payload, "padding": "x" * (size - len(base))}).encode()


def github_push() -> Request:
    body = padded({"installation": {"id": 4711}, "repository": {"id": 7}, "ref": "refs/heads/main"})
    return Request.from_target(
        "POST", "/extensions/github/webhook/", {"content-type": "application/json", "x-github-event": "push"}, body
    )


def slack_event() -> Request:
    body = padded({"type": "event_callback", "team_id": "T0BENCH", "event": {"type": "app_mention"}})
    stamp = str(int(NOW))
    signature = "v0=" + hmac.new(SLACK_SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {"content-type": "application/json", "x-slack-request-timestamp": stamp, "x-slack-signature": signature}
    return Request.from_target("POST", "/extensions/slack/event/", headers, body)


def jira(method: str, path: str, body: bytes | None) -> Request:
    claims = {"iss": "jira:bench", "iat": int(NOW), "exp": int(NOW) + 600, "qsh": jwt.query_hash(method, path, [])}
    token = pyjwt.encode(claims, JIRA_SECRET, algorithm="HS256")
    headers = {"authorization": f"JWT {token}", "content-type": "application/json"}
    return Request.from_target(method, path, headers, body)


def gitlab_push() -> Request:
    body = padded({"object_kind": "push", "project": {"id": 15}})
    headers = {"content-type": "application/json", "x-gitlab-token": "gitlab.example:group:secret"}
    return Request.from_target("POST", "/extensions/gitlab/webhook/", headers, body)


def path_webhook(path: str) -> Request:
    body = padded({"repository": {"id": 9}})
    return Request.from_target("POST", path, {"content-type": "application/json"}, body)


def found(provider: str, external_id: str, metadata: dict[str, object] | None = None) -> Resolution:
    return Resolution(Integration(10, provider, external_id, "active", metadata or {}), (US,))


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], Request]
    resolution: Resolution
    expect: str
    """The decision's class name."""


CASES = (
    Case("github_push_2k", github_push, found("github", "4711"), "Store"),
    Case("github_control_view_headers", lambda: Request.from_target("GET", "/extensions/github/installation/1/"),
         Resolution(), "Control"),
    Case("slack_event_2k", slack_event, found("slack", "T0BENCH"), "Forward"),
    Case("jira_glance_headers", lambda: jira("GET", "/extensions/jira/issue/BENCH-1/", None),
         found("jira", "jira:bench", {"shared_secret": JIRA_SECRET}), "Forward"),
    Case("jira_issue_updated_2k",
         lambda: jira("POST", "/extensions/jira/issue-updated/", padded({"issue": {"id": "1"}})),
         found("jira", "jira:bench", {"shared_secret": JIRA_SECRET}), "Store"),
    Case("gitlab_push_2k", gitlab_push, found("gitlab", "gitlab.example:group"), "Store"),
    Case("gitea_webhook_2k", lambda: path_webhook("/extensions/gitea/organizations/1/webhook/10/"),
         found("gitea", "10"), "Store"),
    Case("bitbucket_webhook_2k", lambda: path_webhook("/extensions/bitbucket/organizations/1/webhook/"),
         Resolution(None, (US,)), "Store"),
    Case("unknown_provider_headers", lambda: Request.from_target("GET", "/extensions/nope/hook/"), Resolution(),
         "Control"),
)  # fmt: skip


def decide(req: Request, resolution: Resolution) -> Decision:
    """What the edge does with a warm cache: plan, then answer the lookup from memory."""
    step = plan(req, CTX)
    if isinstance(step, Lookup):
        return step.then(resolution)
    assert not callable(getattr(step, "then", None)), step
    return step  # type: ignore[return-value]


def timing_requested(config: pytest.Config) -> bool:
    return bool(os.environ.get("BENCH")) or bool(config.getoption("benchmark_enable", default=False))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_case_reaches_its_decision(case: Case) -> None:
    assert type(decide(case.build(), case.resolution)).__name__ == case.expect


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_core_decision_time(case: Case, benchmark: BenchmarkFixture, request: pytest.FixtureRequest) -> None:
    if not timing_requested(request.config):
        pytest.skip("timing only with BENCH=1 or --benchmark-enable")
    req = case.build()
    decision = benchmark(decide, req, case.resolution)
    assert type(decision).__name__ == case.expect
