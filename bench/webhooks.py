"""The webhooks the benchmark sends, and the directory they resolve against.

Each builder returns a fresh request: Slack signatures carry a timestamp (5 minutes of validity)
and Jira tokens an expiry, so every wrk run gets newly signed ones.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt as pyjwt

from sidecar.core import jwt

BODY_BYTES = 2048
SLACK_SECRET = "bench-slack-signing-secret"
JIRA_SECRET = "bench-jira-shared-secret-0123456789abcdef"
JIRA_CLIENT_KEY = "jira:bench-client-key"
GITHUB_INSTALLATION = 4711
SLACK_TEAM = "T0BENCH"

DIRECTORY: Mapping[str, Any] = {
    "organizations": [
        {"id": 1, "slug": "acme", "region": "us"},
        {"id": 2, "slug": "globex", "region": "de"},
    ],
    "integrations": [
        {"id": 10, "provider": "github", "external_id": str(GITHUB_INSTALLATION), "organizations": [1]},
        {"id": 20, "provider": "slack", "external_id": SLACK_TEAM, "organizations": [1]},
        {
            "id": 30,
            "provider": "jira",
            "external_id": JIRA_CLIENT_KEY,
            "organizations": [2],
            "metadata": {"shared_secret": JIRA_SECRET},
        },
    ],
}
"""GitHub and Slack belong to ``us``, Jira to ``de``: each routed scenario checks its region."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


def padded_json(payload: dict[str, Any], size: int = BODY_BYTES) -> bytes:
    """``payload`` as JSON with a ``padding`` string making it exactly ``size`` bytes."""
    base = json.dumps({**payload, "padding": ""}, separators=(",", ":")).encode()
    return json.dumps({**payload, "padding": "x" * max(0, size - len(base))}, separators=(",", ":")).encode()


def github_push() -> HttpRequest:
    """Body-decided, stored: GitHub push, 2 KB JSON → outbox row for ``us`` → 202."""
    body = padded_json({"ref": "refs/heads/main", "installation": {"id": GITHUB_INSTALLATION}, "repository": {"id": 7}})
    headers = {"content-type": "application/json", "x-github-event": "push", "x-hub-signature-256": "sha256=00"}
    return HttpRequest("POST", "/extensions/github/webhook/", headers, body)


def slack_event(now: float | None = None) -> HttpRequest:
    """Body-decided, routed: a signed Slack Events API callback, 2 KB → region ``us``."""
    body = padded_json({"type": "event_callback", "team_id": SLACK_TEAM, "event": {"type": "app_mention"}})
    timestamp = str(int(time.time() if now is None else now))
    digest = hmac.new(SLACK_SECRET.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/json",
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": "v0=" + digest,
    }
    return HttpRequest("POST", "/extensions/slack/event/", headers, body)


def jira_issue_glance(now: float | None = None) -> HttpRequest:
    """Header-decided with a directory lookup: Jira's issue glance, a shared-secret JWT → ``de``."""
    issued = int(time.time() if now is None else now)
    path = "/extensions/jira/issue/BENCH-1/"
    claims = {
        "iss": JIRA_CLIENT_KEY,
        "iat": issued,
        "exp": issued + 3600,
        "qsh": jwt.query_hash("GET", path, []),
    }
    token = pyjwt.encode(claims, JIRA_SECRET, algorithm="HS256")
    return HttpRequest("GET", path, {"authorization": f"JWT {token}"})


def github_installation_view() -> HttpRequest:
    """Header-decided, no lookup: a control-only view (continue to control)."""
    return HttpRequest("GET", "/extensions/github/installation/1/")


def bypass_get() -> HttpRequest:
    """No ext_proc at all: the catch-all route to control."""
    return HttpRequest("GET", "/bench/proxy")


def bypass_post() -> HttpRequest:
    return HttpRequest("POST", "/bench/proxy", {"content-type": "application/json"}, github_push().body)


def direct() -> HttpRequest:
    """Envoy answers itself (direct_response): Envoy's own limit."""
    return HttpRequest("GET", "/bench/direct")


Builder = Callable[[], HttpRequest]
