"""Forged and replayed signatures: refused at the edge, before any lookup, and nothing reaches a
region or the outbox. Slack, Discord, Jira (Connect JWT) and Jira Server (JWT in the path)."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import Edge
from hostile import (
    GUILD,
    JIRA_SECRET,
    JIRA_SERVER_ID,
    JIRA_SERVER_SECRET,
    JSON,
    ROUTES,
    Call,
    b64url,
    check,
    discord_headers,
    hs256,
    jira_claims,
    jira_glance,
    jira_issue_updated,
    jira_server_issue_updated,
    mark,
    receipts,
    send,
    slack_headers,
    stored,
)

pytestmark = [pytest.mark.security, pytest.mark.db, pytest.mark.envoy]

SLACK_BODY = json.dumps({"type": "event_callback", "team_id": "T0ACME", "event": {"type": "app_mention"}}).encode()


def refused(edge: Edge, database_url: str, call: Call, statuses: tuple[int, ...]) -> list[str]:
    nonce = mark()
    outcome = send(edge.client, edge.url, call, nonce)
    problems = []
    if outcome.status not in statuses:
        problems.append(f"answered {outcome.status}, expected one of {statuses}")
    seen = receipts(edge.upstreams, nonce)
    if seen:
        problems.append(f"reached {sorted(seen)}")
    rows = stored(database_url, nonce)
    if rows:
        problems.append(f"stored for {[r for r, _ in rows]}")
    return problems


def slack(headers: dict[str, str], body: bytes = SLACK_BODY) -> Call:
    return Call("POST", "/extensions/slack/event/", {**JSON, **headers}, body)


SLACK_FORGERIES = {
    "replayed-after-five-minutes": lambda: slack(slack_headers(SLACK_BODY, at=time.time() - 301)),
    "replayed-an-hour-later": lambda: slack(slack_headers(SLACK_BODY, at=time.time() - 3600)),
    "timestamp-from-the-future": lambda: slack(slack_headers(SLACK_BODY, at=time.time() + 301)),
    "wrong-secret": lambda: slack(slack_headers(SLACK_BODY, secret="guess")),
    "body-swapped": lambda: slack(slack_headers(SLACK_BODY), SLACK_BODY.replace(b"T0ACME", b"T0GLOBEX")),
    "timestamp-swapped": lambda: slack(
        {**slack_headers(SLACK_BODY), "x-slack-request-timestamp": str(int(time.time()) - 1)}
    ),
    "no-signature": lambda: slack({"x-slack-request-timestamp": str(int(time.time()))}),
    "no-timestamp": lambda: slack({"x-slack-signature": slack_headers(SLACK_BODY)["x-slack-signature"]}),
    "v1-scheme": lambda: slack(
        {**slack_headers(SLACK_BODY), "x-slack-signature": "v1=" + slack_headers(SLACK_BODY)["x-slack-signature"][3:]}
    ),
    "signature-upper-case": lambda: slack(
        {**slack_headers(SLACK_BODY), "x-slack-signature": slack_headers(SLACK_BODY)["x-slack-signature"].upper()}
    ),
    "timestamp-not-digits": lambda: slack({**slack_headers(SLACK_BODY), "x-slack-request-timestamp": "1e9"}),
    "timestamp-huge": lambda: slack({**slack_headers(SLACK_BODY), "x-slack-request-timestamp": "9" * 200}),
    "signature-truncated": lambda: slack(
        {**slack_headers(SLACK_BODY), "x-slack-signature": slack_headers(SLACK_BODY)["x-slack-signature"][:-2]}
    ),
}


@pytest.mark.parametrize("forgery", sorted(SLACK_FORGERIES))
def test_slack_forged_and_replayed_requests_are_401(forgery: str, hostile_edge: Edge, security_database: str) -> None:
    call = SLACK_FORGERIES[forgery]()
    for path in ("/extensions/slack/event/", "/extensions/slack/commands/", "/extensions/slack/action/"):
        assert refused(hostile_edge, security_database, call.with_path(path), (401,)) == [], path


def test_a_slack_request_replayed_inside_the_window_is_routed_like_the_original(
    hostile_edge: Edge, security_database: str
) -> None:
    """Slack's scheme has no nonce: a replay within five minutes verifies (documented limit; the
    region de-duplicates on event_id). It still reaches only the owner's region."""
    call = slack(slack_headers(SLACK_BODY, at=time.time() - 200))
    for _ in range(2):
        nonce = mark()
        outcome = send(hostile_edge.client, hostile_edge.url, call, nonce)
        assert check(outcome, ROUTES["slack-event"][1], hostile_edge.upstreams, security_database, nonce) == []


def discord(payload: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    return body, discord_headers(body)


COMMAND = {"type": 2, "id": "1", "guild_id": GUILD, "data": {"name": "sentry"}}


def _discord_forgeries() -> dict[str, Call]:
    body, headers = discord(COMMAND)
    path = "/extensions/discord/interactions/"
    other_key = discord_headers(body, Ed25519PrivateKey.generate())
    return {
        "other-key": Call("POST", path, other_key, body),
        "body-swapped": Call("POST", path, headers, body.replace(b'"sentry"', b'"evil"')),
        "timestamp-swapped": Call("POST", path, {**headers, "x-signature-timestamp": "1"}, body),
        "no-signature": Call("POST", path, {k: v for k, v in headers.items() if k != "x-signature-ed25519"}, body),
        "no-timestamp": Call("POST", path, {k: v for k, v in headers.items() if k != "x-signature-timestamp"}, body),
        "signature-not-hex": Call("POST", path, {**headers, "x-signature-ed25519": "zz" * 64}, body),
        "signature-short": Call(
            "POST", path, {**headers, "x-signature-ed25519": headers["x-signature-ed25519"][:-2]}, body
        ),
        "signature-all-zero": Call("POST", path, {**headers, "x-signature-ed25519": "00" * 64}, body),
    }


@pytest.mark.parametrize("forgery", sorted(_discord_forgeries()))
def test_discord_forged_interactions_are_401(forgery: str, hostile_edge: Edge, security_database: str) -> None:
    assert refused(hostile_edge, security_database, _discord_forgeries()[forgery], (401,)) == []


def test_a_discord_ping_replayed_gets_pong_and_reaches_no_one(hostile_edge: Edge, security_database: str) -> None:
    """Discord signs no freshness window (neither Discord nor Sentry checks one): a replayed signed
    PING is answered PONG at the edge again, and nothing else happens."""
    body, headers = discord({"type": 1, "id": "1", "application_id": "2"})
    call = Call("POST", "/extensions/discord/interactions/", headers, body)
    for _ in range(2):
        nonce = mark()
        outcome = send(hostile_edge.client, hostile_edge.url, call, nonce)
        assert outcome.status == 200
        assert receipts(hostile_edge.upstreams, nonce) == {}


WEBHOOK = "/extensions/jira/issue-updated/"


def _jira_forgeries() -> dict[str, Call]:
    now = int(time.time())
    good = jira_claims("POST", WEBHOOK)
    none_header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    unsigned = f"{none_header}.{b64url(json.dumps(good).encode())}."
    return {
        "wrong-secret": jira_issue_updated(hs256(good, "not-the-secret")),
        "alg-none": jira_issue_updated(unsigned),
        "alg-hs512-header": jira_issue_updated(hs256(good, JIRA_SECRET, {"alg": "HS512", "typ": "JWT"})),
        "alg-rs256-no-audience": jira_issue_updated(hs256(good, JIRA_SECRET, {"alg": "RS256", "kid": "k1"})),
        "expired": jira_issue_updated(hs256({**good, "exp": now - 10}, JIRA_SECRET)),
        "not-yet-valid": jira_issue_updated(hs256({**good, "nbf": now + 600}, JIRA_SECRET)),
        "qsh-of-another-path": jira_issue_updated(
            hs256(jira_claims("POST", "/extensions/jira/installed/"), JIRA_SECRET)
        ),
        "qsh-of-another-method": jira_issue_updated(hs256(jira_claims("GET", WEBHOOK), JIRA_SECRET)),
        "qsh-context": jira_issue_updated(hs256({**good, "qsh": "context-qsh"}, JIRA_SECRET)),
        "no-qsh": jira_issue_updated(hs256({k: v for k, v in good.items() if k != "qsh"}, JIRA_SECRET)),
        "other-issuer": jira_issue_updated(hs256({**good, "iss": "jira:someone-else"}, JIRA_SECRET)),
        "issuer-not-a-string": jira_issue_updated(hs256({**good, "iss": 40}, JIRA_SECRET)),
        "two-segments": jira_issue_updated("a.b"),
        "garbage": jira_issue_updated("!!!.???.***"),
        "oversized": jira_issue_updated("a" * 20_000 + ".b.c"),
        "query-token-forged": Call("POST", WEBHOOK + "?jwt=" + hs256(good, "x"), JSON, b"{}"),
        "no-token": Call("POST", WEBHOOK, JSON, b"{}"),
    }


@pytest.mark.parametrize("forgery", sorted(_jira_forgeries()))
def test_jira_forged_tokens_are_404_and_store_nothing(forgery: str, hostile_edge: Edge, security_database: str) -> None:
    assert refused(hostile_edge, security_database, _jira_forgeries()[forgery], (404,)) == []


def test_a_jira_token_replayed_on_another_view_is_refused(hostile_edge: Edge, security_database: str) -> None:
    """A token captured from a webhook (qsh of issue-updated) opens nothing else: the glance view
    checks its own qsh."""
    token = hs256(jira_claims("POST", WEBHOOK), JIRA_SECRET)
    assert refused(hostile_edge, security_database, jira_glance(token), (404,)) == []


def _jira_server_forgeries() -> dict[str, Call]:
    none_header = b64url(json.dumps({"alg": "none"}).encode())
    return {
        "wrong-secret": jira_server_issue_updated(hs256({"id": JIRA_SERVER_ID}, "guess")),
        "alg-none": jira_server_issue_updated(f"{none_header}.{b64url(json.dumps({'id': JIRA_SERVER_ID}).encode())}."),
        "other-integration": jira_server_issue_updated(hs256({"id": "jira.example.org:other"}, JIRA_SERVER_SECRET)),
        "expired": jira_server_issue_updated(hs256({"id": JIRA_SERVER_ID, "exp": 1}, JIRA_SERVER_SECRET)),
        "id-not-a-string": jira_server_issue_updated(hs256({"id": {"$ne": None}}, JIRA_SERVER_SECRET)),
        "garbage": jira_server_issue_updated("not-a-token"),
    }


@pytest.mark.parametrize("forgery", sorted(_jira_server_forgeries()))
def test_jira_server_forged_tokens_are_acknowledged_and_dropped(
    forgery: str, hostile_edge: Edge, security_database: str
) -> None:
    """200 (Jira Server disables a webhook that keeps failing), nothing stored, no one reached."""
    assert refused(hostile_edge, security_database, _jira_server_forgeries()[forgery], (200,)) == []


def test_signature_checks_come_before_any_lookup(hostile_edge: Edge) -> None:
    """A flood of forged requests must not become directory traffic: the forged Slack request for an
    unknown workspace is refused as forged (401), not as unknown (400)."""
    body = json.dumps({"type": "event_callback", "team_id": "T0NOBODY", "event": {}}).encode()
    call = slack(slack_headers(body, secret="guess"), body)
    outcome = send(hostile_edge.client, hostile_edge.url, call, mark())
    assert outcome.status == 401
