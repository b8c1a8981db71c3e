"""Forged Slack, Discord and Jira requests are refused at the edge: no region ever sees them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import Edge, running_edge
from test_routing import slack_event

pytestmark = [pytest.mark.db, pytest.mark.envoy]

DISCORD_KEY = Ed25519PrivateKey.generate()
DISCORD_PUBLIC_HEX = DISCORD_KEY.public_key().public_bytes_raw().hex()
GUILD = "81384788765712384"
JIRA_SECRET = "jira-shared-secret-for-tests"
JIRA_CLIENT_KEY = "jira:acme-client-key"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, edge_database: str) -> Iterator[Edge]:
    secrets = {"slack_signing_secret": "test-slack-secret", "discord_public_key": DISCORD_PUBLIC_HEX}
    with running_edge(tmp_path_factory.mktemp("verify"), edge_database, secrets=secrets) as running:
        yield running


@pytest.fixture(autouse=True)
def clean(edge: Edge, edge_database: str) -> None:
    edge.clear()
    with psycopg.connect(edge_database, autocommit=True) as conn:
        conn.execute("DELETE FROM webhook_payload")


def discord(payload: dict[str, object], key: Ed25519PrivateKey = DISCORD_KEY) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    timestamp = str(int(time.time()))
    signature = key.sign(timestamp.encode() + body).hex()
    return body, {
        "content-type": "application/json",
        "x-signature-ed25519": signature,
        "x-signature-timestamp": timestamp,
    }


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jira_token(secret: str, method: str = "POST", path: str = "/extensions/jira/issue-updated") -> str:
    # qsh per Atlassian Connect: sha256("METHOD&<path without trailing slash>&<canonical query>")
    qsh = hashlib.sha256(f"{method}&{path}&".encode()).hexdigest()
    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"iss": JIRA_CLIENT_KEY, "iat": now, "exp": now + 180, "qsh": qsh}).encode())
    signature = b64(hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest())
    return f"{header}.{claims}.{signature}"


JIRA_ISSUE = json.dumps(
    {"webhookEvent": "jira:issue_updated", "issue": {"id": "10002", "key": "ACME-2"}, "changelog": {"items": []}}
).encode()


def test_slack_forged_stale_and_valid(edge: Edge) -> None:
    assert edge.post("/extensions/slack/event/", *slack_event("T0ACME", secret="forged")).status_code == 401
    stale = slack_event("T0ACME", at=time.time() - 600)
    assert edge.post("/extensions/slack/event/", *stale).status_code == 401
    assert edge.receivers() == []
    assert edge.post("/extensions/slack/event/", *slack_event("T0ACME")).json()["upstream"] == "us"


def test_discord_ping_is_answered_at_the_edge_with_pong(edge: Edge) -> None:
    response = edge.post("/extensions/discord/interactions/", *discord({"type": 1, "id": "1", "application_id": "2"}))
    assert response.status_code == 200
    assert response.json() == {"type": 1}
    assert edge.receivers() == []


def test_discord_forged_signature_is_401(edge: Edge) -> None:
    forged = discord({"type": 1}, key=Ed25519PrivateKey.generate())
    assert edge.post("/extensions/discord/interactions/", *forged).status_code == 401
    body, headers = discord({"type": 2, "guild_id": GUILD})
    del headers["x-signature-ed25519"]
    assert edge.post("/extensions/discord/interactions/", body, headers).status_code == 401
    assert edge.receivers() == []


def test_jira_forged_token_is_404_and_a_valid_one_is_stored(edge: Edge, edge_database: str) -> None:
    forged = {"authorization": "JWT " + jira_token("not-the-secret"), "content-type": "application/json"}
    assert edge.post("/extensions/jira/issue-updated/", JIRA_ISSUE, forged).status_code == 404
    assert edge.post("/extensions/jira/issue-updated/", JIRA_ISSUE, {"authorization": "JWT x.y"}).status_code == 404
    valid = {"authorization": "JWT " + jira_token(JIRA_SECRET), "content-type": "application/json"}
    assert edge.post("/extensions/jira/issue-updated/", JIRA_ISSUE, valid).status_code == 202
    with psycopg.connect(edge_database) as conn:
        stored = conn.execute("SELECT region_name, mailbox_name FROM webhook_payload").fetchall()
    assert stored == [("us", "jira:40")]
    assert edge.receivers() == []
