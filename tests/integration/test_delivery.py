"""Delivery end to end: a webhook accepted by the real edge (Envoy + sidecar + PostgreSQL) is sent by
the delivery worker through Envoy's egress listener to the real region server; async replies reach
fake Slack and Discord servers."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlencode

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from delivery_fakes import RecordingServer
from harness import Edge, loaded_schema, running_edge

from sidecar.demo import Received, UpstreamServer
from sidecar.outbox.commands import deliver_once

pytestmark = [pytest.mark.db, pytest.mark.envoy]

SLACK_SECRET = "test-slack-secret"
DISCORD_KEY = Ed25519PrivateKey.generate()
DISCORD_PUBLIC_HEX = DISCORD_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
GUILD = "81384788765712384"
APPLICATION = "1063572232434495520"
TOKEN = "aW50ZXJhY3Rpb246MTA2MzU4MzUyNDQxMjk0MDM2MDpLYkR3Q2ZuZXhK"

DIRECTORY = {
    "organizations": [
        {"id": 1, "slug": "acme", "region": "us"},
        {"id": 2, "slug": "globex", "region": "de"},
        {"id": 3, "slug": "initech", "region": "eu"},
    ],
    "integrations": [
        {"id": 10, "provider": "github", "external_id": "4711", "status": "active", "organizations": [1]},
        {"id": 11, "provider": "github", "external_id": "4712", "status": "active", "organizations": [1, 2]},
        {"id": 20, "provider": "slack", "external_id": "T0ACME", "status": "active", "organizations": [1, 2]},
        {"id": 30, "provider": "discord", "external_id": GUILD, "status": "active", "organizations": [3]},
    ],
}


@pytest.fixture(scope="module")
def database(server_url: str) -> Iterator[str]:
    """A schema of its own, migrated and loaded with DIRECTORY."""
    with loaded_schema(server_url, "delivery", DIRECTORY) as url:
        yield url


@pytest.fixture(scope="module")
def provider() -> Iterator[RecordingServer]:
    """Slack's response_url host and Discord's API."""
    server = RecordingServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, database: str, provider: RecordingServer) -> Iterator[Edge]:
    delivery = {
        "poll_interval_s": 0.05,
        "timeout_s": 3,
        "lease_s": 30,
        "slack_response_hosts": [provider.origin],
        "discord_base_url": provider.origin,
    }
    secrets = {"discord_public_key": DISCORD_PUBLIC_HEX}
    tmp = tmp_path_factory.mktemp("delivery")
    with running_edge(tmp, database, ("de", "eu", "us"), delivery=delivery, secrets=secrets) as running:
        # "eu" serves the Discord guild only, and answers as Sentry's interaction endpoint does. Set
        # before any connection: a kept-alive connection keeps the handler it started with.
        running.upstreams["eu"].RequestHandlerClass = DiscordRegion
        yield running


@pytest.fixture(autouse=True)
def clean(edge: Edge, database: str, provider: RecordingServer) -> None:
    edge.clear()
    provider.seen.clear()
    provider.numbers.clear()
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DELETE FROM webhook_payload")
        conn.execute("DELETE FROM webhook_followup")


async def deliver(edge: Edge, database: str) -> int:
    return await deliver_once(edge.settings, database)


def states(database: str) -> list[tuple[str, str]]:
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT region_name, state FROM webhook_payload ORDER BY id").fetchall()
        return [(region, state) for region, state in rows]


async def test_a_github_webhook_reaches_its_region_through_envoy_byte_for_byte(edge: Edge, database: str) -> None:
    body = '{ "installation" :{"id":4711},\n\t"repository": {"id": 5}, "title": "\u00fcber 🔥" }  '.encode()
    headers = {
        "content-type": "application/json; charset=utf-8",
        "x-github-event": "issues",
        "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "x-hub-signature-256": "sha256=" + hmac.new(b"webhook-secret", body, hashlib.sha256).hexdigest(),
    }
    response = edge.post("/extensions/github/webhook/?src=test&x=%2F", body, headers)
    assert (response.status_code, response.content) == (202, b"")
    assert edge.receivers() == []  # stored, not forwarded

    assert await deliver(edge, database) == 1
    assert edge.receivers() == ["us"]
    [received] = edge.upstreams["us"].received
    assert (received.method, received.target) == ("POST", "/extensions/github/webhook/?src=test&x=%2F")
    assert received.body == body
    for name in ("x-hub-signature-256", "x-github-event", "x-github-delivery", "content-type"):
        assert received.headers[name] == headers[name]
    assert received.headers["content-length"] == str(len(body))
    assert states(database) == [("us", "delivered")]


async def test_a_failing_region_keeps_its_row_while_the_other_region_is_served(edge: Edge, database: str) -> None:
    body = json.dumps({"installation": {"id": 4712}, "repository": {"id": 7}}).encode()
    headers = {"content-type": "application/json", "x-github-event": "push", "x-hub-signature-256": "sha256=abc"}
    assert edge.post("/extensions/github/webhook/", body, headers).status_code == 202
    edge.upstreams["de"].status = 503
    try:
        await deliver(edge, database)
    finally:
        edge.upstreams["de"].status = 200
    assert [r.body for r in edge.upstreams["us"].received] == [body]
    assert states(database) == [("de", "pending"), ("us", "delivered")]
    with psycopg.connect(database) as conn:
        [(status, attempts)] = conn.execute(
            "SELECT last_status, attempts FROM webhook_payload WHERE region_name = 'de'"
        ).fetchall()
    assert (status, attempts) == (503, 1)  # retried after the backoff


async def test_slack_command_with_response_url_is_answered_at_once_and_replied_later(
    edge: Edge, database: str, provider: RecordingServer
) -> None:
    response_url = provider.origin + "/commands/T0ACME/1337/xyz"
    body, headers = slack_command("help", response_url=response_url)
    response = edge.post("/extensions/slack/commands/", body, headers)
    assert (response.status_code, response.content) == (200, b"")
    assert edge.receivers() == []

    await deliver(edge, database)
    assert edge.receivers() == ["de"]  # the workspace's first region
    [received] = edge.upstreams["de"].received
    assert received.body == body
    assert received.headers["x-slack-signature"] == headers["x-slack-signature"]
    [posted] = provider.received()
    assert (posted.method, posted.target) == ("POST", "/commands/T0ACME/1337/xyz")
    assert json.loads(posted.body)["upstream"] == "de"  # the region's own answer


async def test_slack_issue_action_goes_to_every_region_and_the_last_answer_is_posted(
    edge: Edge, database: str, provider: RecordingServer
) -> None:
    payload = {
        "type": "block_actions",
        "team": {"id": "T0ACME"},
        "user": {"id": "U1"},
        "response_url": provider.origin + "/actions/T0ACME/1/abc",
        "actions": [{"action_id": "status", "value": "resolved"}],
    }
    body, headers = signed_form({"payload": json.dumps(payload)})
    response = edge.post("/extensions/slack/action/", body, headers)
    assert (response.status_code, response.content) == (200, b"")
    await deliver(edge, database)
    assert edge.receivers() == ["de", "us"]
    [posted] = provider.received()
    assert json.loads(posted.body)["upstream"] == "us"  # the last region in region order


async def test_discord_command_gets_the_deferred_answer_and_the_regions_data_later(
    edge: Edge, database: str, provider: RecordingServer
) -> None:
    region = edge.upstreams["eu"]
    interaction = {
        "id": "1063583524412940360",
        "application_id": APPLICATION,
        "type": 2,
        "token": TOKEN,
        "guild_id": GUILD,
        "data": {"id": "1", "name": "sentry", "type": 1},
    }
    body = json.dumps(interaction).encode()
    timestamp = str(int(time.time()))
    signature = DISCORD_KEY.sign(timestamp.encode() + body).hex()
    headers = {
        "content-type": "application/json",
        "x-signature-ed25519": signature,
        "x-signature-timestamp": timestamp,
    }
    response = edge.post("/extensions/discord/interactions/", body, headers)
    assert response.status_code == 200
    assert response.json() == {"type": 5, "data": {"flags": 64}}
    assert response.headers["content-type"] == "application/json"

    await deliver(edge, database)
    [received] = region.received
    assert received.body == body
    [posted] = provider.received()
    assert (posted.method, posted.target) == ("POST", f"/api/v10/webhooks/{APPLICATION}/{TOKEN}")
    assert json.loads(posted.body) == {"content": "Resolved by eu", "flags": 64}


# -- helpers -------------------------------------------------------------------------------------------


def signed_form(fields: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    body = urlencode(fields).encode()
    timestamp = str(int(time.time()))
    digest = hmac.new(SLACK_SECRET.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return body, {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": "v0=" + digest,
    }


def slack_command(text: str, response_url: str | None) -> tuple[bytes, dict[str, str]]:
    fields = {"team_id": "T0ACME", "command": "/sentry", "text": text, "user_id": "U1", "channel_id": "C1"}
    if response_url is not None:
        fields["response_url"] = response_url
    return signed_form(fields)


class DiscordRegion(BaseHTTPRequestHandler):
    """A region answering an interaction as Sentry's Discord endpoint does: a message in ``data``."""

    server: UpstreamServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.record(Received(self.command, self.path, headers, body))
        answer = json.dumps({"type": 4, "data": {"content": f"Resolved by {self.server.name}", "flags": 64}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass
