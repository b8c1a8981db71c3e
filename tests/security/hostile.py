"""Hostile-input kit: a directory with one integration per routed provider, a valid request for
every route (so a test can change one thing and see it refused), and the outcome checks.

Every request carries ``x-hostile-id: <nonce>``; upstream servers record it and the outbox stores
it with the webhook's headers, so each check finds exactly the traces of the request it sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

MARK = "x-hostile-id"
SLACK_SECRET = "test-slack-secret"
DISCORD_KEY = Ed25519PrivateKey.generate()
DISCORD_PUBLIC_HEX = DISCORD_KEY.public_key().public_bytes_raw().hex()
GUILD = "81384788765712384"
JIRA_CLIENT_KEY = "jira:acme-client-key"
JIRA_SECRET = "jira-shared-secret-for-tests"
JIRA_SERVER_ID = "jira.example.org:0f3c8f1e"
JIRA_SERVER_SECRET = "jira-server-webhook-secret"
GITEA_INTEGRATION = 90

SECRETS = {"slack_signing_secret": SLACK_SECRET, "discord_public_key": DISCORD_PUBLIC_HEX}
"""The edge's ``secrets`` settings: every signature these tests make verifies against them."""

SECURITY_DIRECTORY: dict[str, Any] = {
    "organizations": [
        {"id": 1, "slug": "acme", "region": "us"},
        {"id": 2, "slug": "globex", "region": "de"},
        {"id": 3, "slug": "initech", "region": "us"},
    ],
    "integrations": [
        {"id": 10, "provider": "github", "external_id": "4711", "organizations": [1]},
        {"id": 11, "provider": "github", "external_id": "4712", "organizations": [2, 3]},
        {"id": 12, "provider": "github_enterprise", "external_id": "ghe.example.com:77", "organizations": [2]},
        {"id": 20, "provider": "slack", "external_id": "T0ACME", "organizations": [1]},
        {"id": 21, "provider": "slack", "external_id": "T0GLOBEX", "organizations": [2]},
        {"id": 30, "provider": "discord", "external_id": GUILD, "organizations": [2]},
        {"id": 40, "provider": "jira", "external_id": JIRA_CLIENT_KEY, "organizations": [1],
         "metadata": {"shared_secret": JIRA_SECRET}},
        {"id": 41, "provider": "jira_server", "external_id": JIRA_SERVER_ID, "organizations": [2],
         "metadata": {"webhook_secret": JIRA_SERVER_SECRET}},
        {"id": 50, "provider": "gitlab", "external_id": "gitlab.example.com:acme", "organizations": [1]},
        {"id": 60, "provider": "msteams", "external_id": "19:team@thread.skype", "organizations": [2]},
        {"id": 70, "provider": "vsts", "external_id": "c0ffee00-collection", "organizations": [1]},
        {"id": 80, "provider": "cursor_origin", "external_id": "inst-1", "organizations": [2]},
        {"id": GITEA_INTEGRATION, "provider": "gitea", "external_id": "gitea.example.com:acme", "organizations": [1]},
    ],
}  # fmt: skip


# --- request builders ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = b""

    def with_headers(self, **extra: str) -> Call:
        return Call(self.method, self.path, {**self.headers, **extra}, self.body)

    def with_path(self, path: str) -> Call:
        return Call(self.method, path, self.headers, self.body)

    def with_body(self, body: bytes) -> Call:
        return Call(self.method, self.path, self.headers, body)


@dataclass(frozen=True)
class Expect:
    """What must happen: routed to ``region``, stored for ``regions`` (answered ``status``), or control."""

    kind: str  # "region" | "stored" | "control"
    region: str | None = None
    regions: tuple[str, ...] = ()
    status: int = 202


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: Mapping[str, Any], secret: str, header: Mapping[str, Any] | None = None) -> str:
    head = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = b64url(hmac.new(secret.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest())
    return f"{head}.{payload}.{signature}"


def jira_claims(method: str, path: str, query: str = "", **extra: Any) -> dict[str, Any]:
    canonical = path.rstrip("/") if len(path) > 1 else path
    qsh = hashlib.sha256(f"{method}&{canonical}&{query}".encode()).hexdigest()
    now = int(time.time())
    return {"iss": JIRA_CLIENT_KEY, "iat": now, "exp": now + 180, "qsh": qsh, **extra}


def slack_headers(body: bytes, secret: str = SLACK_SECRET, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"x-slack-request-timestamp": timestamp, "x-slack-signature": "v0=" + digest}


def discord_headers(body: bytes, key: Ed25519PrivateKey = DISCORD_KEY) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {
        "content-type": "application/json",
        "x-signature-ed25519": key.sign(timestamp.encode() + body).hex(),
        "x-signature-timestamp": timestamp,
    }


JSON = {"content-type": "application/json"}


def slack_event(team: str = "T0ACME") -> Call:
    body = json.dumps({"type": "event_callback", "team_id": team, "event": {"type": "app_mention"}}).encode()
    return Call("POST", "/extensions/slack/event/", {**JSON, **slack_headers(body)}, body)


def slack_command(team: str = "T0GLOBEX") -> Call:
    body = f"team_id={team}&command=%2Fsentry&text=help".encode()
    headers = {"content-type": "application/x-www-form-urlencoded", **slack_headers(body)}
    return Call("POST", "/extensions/slack/commands/", headers, body)


def github_push(installation: Any = 4711, provider_path: str = "github", **headers: str) -> Call:
    body = json.dumps({"installation": {"id": installation}, "repository": {"id": 7}, "ref": "main"}).encode()
    return Call("POST", f"/extensions/{provider_path}/webhook/", {**JSON, "x-github-event": "push", **headers}, body)


def discord_command(guild: Any = GUILD) -> Call:
    body = json.dumps({"type": 2, "id": "1", "guild_id": guild, "data": {"name": "sentry"}}).encode()
    return Call("POST", "/extensions/discord/interactions/", discord_headers(body), body)


JIRA_ISSUE = json.dumps(
    {"webhookEvent": "jira:issue_updated", "issue": {"id": "10002", "key": "ACME-2"}, "changelog": {"items": []}}
).encode()


def jira_issue_updated(token: str | None = None) -> Call:
    path = "/extensions/jira/issue-updated/"
    token = token or hs256(jira_claims("POST", path), JIRA_SECRET)
    return Call("POST", path, {**JSON, "authorization": f"JWT {token}"}, JIRA_ISSUE)


def jira_glance(token: str | None = None) -> Call:
    path = "/extensions/jira/issue/ACME-2/"
    token = token or hs256(jira_claims("GET", path), JIRA_SECRET)
    return Call("GET", path, {"authorization": f"JWT {token}"})


def jira_server_issue_updated(token: str | None = None) -> Call:
    token = token or hs256({"id": JIRA_SERVER_ID}, JIRA_SERVER_SECRET)
    body = json.dumps({"issue": {"id": "10002"}, "changelog": {"items": [{"field": "status"}]}}).encode()
    return Call("POST", f"/extensions/jira-server/issue-updated/{token}/", JSON, body)


def gitlab_push(token: str = "gitlab.example.com:acme:secret") -> Call:
    body = json.dumps({"object_kind": "push", "project": {"id": 3}}).encode()
    return Call("POST", "/extensions/gitlab/webhook/", {**JSON, "x-gitlab-token": token}, body)


def msteams_message(team: Any = "19:team@thread.skype") -> Call:
    body = json.dumps({"type": "message", "channelData": {"team": {"id": team}}}).encode()
    return Call("POST", "/extensions/msteams/webhook/", JSON, body)


def vsts_updated(collection: Any = "c0ffee00-collection") -> Call:
    body = json.dumps(
        {"resourceContainers": {"collection": {"id": collection}}, "resource": {"workItemId": 5}}
    ).encode()
    return Call("POST", "/extensions/vsts/issue-updated/", JSON, body)


def cursor_push(installation: str = "inst-1") -> Call:
    body = json.dumps({"payload": {"repository": {"id": 9}}}).encode()
    headers = {
        **JSON,
        "webhook-event-type": "push",
        "webhook-installation-id": installation,
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode(),
    }
    return Call("POST", "/extensions/cursor-origin/webhook/", headers, body)


def gitea_push(organization: str = "1", integration: str = str(GITEA_INTEGRATION)) -> Call:
    body = json.dumps({"repository": {"id": 4}}).encode()
    return Call("POST", f"/extensions/gitea/organizations/{organization}/webhook/{integration}/", JSON, body)


def bitbucket_push(organization: str = "2") -> Call:
    return Call("POST", f"/extensions/bitbucket/organizations/{organization}/webhook/", JSON, b'{"push": {}}')


def bitbucket_server_push(organization: str = "1") -> Call:
    return Call("POST", f"/extensions/bitbucket-server/organizations/{organization}/webhook/5/", JSON, b'{"e": 1}')


def plugin_push(organization: str = "2", plugin: str = "github") -> Call:
    return Call("POST", f"/plugins/{plugin}/organizations/{organization}/webhook/", JSON, b'{"zen": "x"}')


def get(path: str) -> Call:
    return Call("GET", path, {})


ROUTES: dict[str, tuple[Callable[[], Call], Expect]] = {
    # region views, synchronous
    "slack-event": (slack_event, Expect("region", "us")),
    "slack-commands": (slack_command, Expect("region", "de")),
    "discord-command": (discord_command, Expect("region", "de")),
    "jira-issue-glance": (jira_glance, Expect("region", "us")),
    # region views, stored (202 after the rows)
    "github-push": (github_push, Expect("stored", regions=("us",))),
    "github-push-two-regions": (lambda: github_push(4712), Expect("stored", regions=("de", "us"))),
    "github-enterprise": (
        lambda: github_push(77, "github-enterprise", **{"x-github-enterprise-host": "ghe.example.com"}),
        Expect("stored", regions=("de",)),
    ),
    "jira-issue-updated": (jira_issue_updated, Expect("stored", regions=("us",))),
    "jira-server-issue-updated": (jira_server_issue_updated, Expect("stored", regions=("de",))),
    "gitlab": (gitlab_push, Expect("stored", regions=("us",))),
    "msteams": (msteams_message, Expect("stored", regions=("de",))),
    "vsts": (vsts_updated, Expect("stored", regions=("us",))),
    "cursor-origin": (cursor_push, Expect("stored", regions=("de",))),
    "gitea": (gitea_push, Expect("stored", regions=("us",))),
    "bitbucket": (bitbucket_push, Expect("stored", regions=("de",))),
    "bitbucket-server": (bitbucket_server_push, Expect("stored", regions=("us",))),
    "plugin-github": (plugin_push, Expect("stored", regions=("de",))),
    "plugin-bitbucket": (lambda: plugin_push("1", "bitbucket"), Expect("stored", regions=("us",))),
    # control: decided by the sidecar, or never seen by it
    "github-installation-view": (lambda: get("/extensions/github/installation/5/"), Expect("control")),
    "github-installation-event": (lambda: github_push(4711, **{"x-github-event": "installation"}), Expect("control")),
    "slack-link-identity": (lambda: get("/extensions/slack/link-identity/signed/"), Expect("control")),
    "jira-descriptor": (lambda: get("/extensions/jira/descriptor/"), Expect("control")),
    "vercel": (lambda: Call("POST", "/extensions/vercel/webhook/", JSON, b"{}"), Expect("control")),
    "google": (lambda: get("/extensions/google/anything/"), Expect("control")),
    "unknown-provider": (lambda: Call("POST", "/extensions/nonesuch/webhook/", JSON, b"{}"), Expect("control")),
    "setup-view": (lambda: get("/extensions/github/setup/"), Expect("control")),
    "plugin-other": (lambda: get("/plugins/sentry-plugins/whatever/"), Expect("control")),
    "api": (lambda: get("/api/0/organizations/"), Expect("control")),
}
SIDECAR_BYPASS = frozenset({"api"})
"""Routes Envoy sends to control without asking the sidecar."""


# --- sending and checking ------------------------------------------------------------------------


def mark() -> str:
    return uuid.uuid4().hex


@dataclass
class Outcome:
    status: int
    upstream: str | None
    elapsed: float
    headers: Mapping[str, str] = field(default_factory=dict)


SENT = {"requests": 0}
"""Hostile requests sent in this process (the security summary reports it)."""


def send(client: httpx.Client, base_url: str, call: Call, nonce: str, extra: Sequence[tuple[str, str]] = ()) -> Outcome:
    SENT["requests"] += 1
    headers = [(k, v) for k, v in call.headers.items()] + [(MARK, nonce), *extra]
    started = time.monotonic()
    response = client.request(call.method, base_url + call.path, content=call.body, headers=headers)
    upstream = None
    if response.headers.get("content-type") == "application/json":
        try:
            upstream = response.json().get("upstream")
        except ValueError:
            upstream = None
    return Outcome(response.status_code, upstream, time.monotonic() - started, dict(response.headers))


def receipts(upstreams: Mapping[str, Any], nonce: str) -> dict[str, list[Mapping[str, str]]]:
    """upstream name → the headers of each request it received carrying ``nonce``."""
    found: dict[str, list[Mapping[str, str]]] = {}
    for name, server in upstreams.items():
        for received in list(server.received):
            if received.headers.get(MARK) == nonce:
                found.setdefault(name, []).append(received.headers)
    return found


def stored(database_url: str, nonce: str) -> list[tuple[str, dict[str, str]]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT region_name, request_headers FROM webhook_payload WHERE request_headers->>%s = %s ORDER BY id",
            (MARK, nonce),
        ).fetchall()
    return [(region, headers) for region, headers in rows]


def internal_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers a region would read as ours: ``x-silo-*`` in any spelling a server may fold to it."""
    return {k: v for k, v in headers.items() if k.lower().replace("_", "-").startswith("x-silo-")}


def check(
    outcome: Outcome,
    expect: Expect,
    upstreams: Mapping[str, Any],
    database_url: str,
    nonce: str,
    *,
    strict_underscores: bool = False,
) -> list[str]:
    """What went wrong (empty when the request had exactly its expected effect, and carried no
    client-chosen ``x-silo-*`` header to any upstream or into the outbox)."""
    problems = []
    seen = receipts(upstreams, nonce)
    rows = stored(database_url, nonce)

    def leaked(headers: Mapping[str, str], allowed: Mapping[str, str]) -> dict[str, str]:
        found = (
            internal_headers(headers)
            if strict_underscores
            else {k: v for k, v in headers.items() if k.lower().startswith("x-silo-")}
        )
        return {k: v for k, v in found.items() if allowed.get(k) != v}

    if expect.kind == "region":
        if outcome.status != 200 or outcome.upstream != expect.region:
            problems.append(f"answered {outcome.status} by {outcome.upstream}, expected 200 from {expect.region}")
        if set(seen) != {expect.region} or len(seen.get(expect.region or "", [])) != 1:
            problems.append(f"received by {sorted(seen)}, expected {expect.region} once")
        for headers in seen.get(expect.region or "", []):
            bad = leaked(headers, {"x-silo-route": expect.region or ""})
            if bad:
                problems.append(f"{expect.region} received internal headers {bad}")
        if rows:
            problems.append(f"routed but also stored: {rows}")
    elif expect.kind == "stored":
        if outcome.status != expect.status:
            problems.append(f"answered {outcome.status}, expected {expect.status}")
        if sorted(region for region, _ in rows) != sorted(expect.regions):
            problems.append(f"rows for {[r for r, _ in rows]}, expected {list(expect.regions)}")
        for region, headers in rows:
            bad = leaked(headers, {})
            if bad:
                problems.append(f"row for {region} stored internal headers {bad}")
        if seen:
            problems.append(f"stored webhook also reached {sorted(seen)}")
    else:
        if outcome.status != 200 or outcome.upstream != "control":
            problems.append(f"answered {outcome.status} by {outcome.upstream}, expected control")
        if set(seen) != {"control"}:
            problems.append(f"received by {sorted(seen)}, expected control")
        for headers in seen.get("control", []):
            bad = leaked(headers, {})
            if bad:
                problems.append(f"control received internal headers {bad}")
        if rows:
            problems.append(f"control request stored: {rows}")
    return problems


def nothing_reached_a_region(upstreams: Mapping[str, Any], nonce: str) -> list[str]:
    return sorted(name for name in receipts(upstreams, nonce) if name != "control")


# --- raw HTTP/1.1, for what httpx refuses to send ----------------------------------------------------


def raw_request(address: str, data: bytes, timeout_s: float = 10.0, pace_s: float = 0.0) -> tuple[bytes, float]:
    """Send ``data`` (all at once, or one byte every ``pace_s``) and read the status line.

    Returns (status line, seconds until it came), or (b"", seconds) when the server closed the
    connection without answering, or (b"TIMEOUT", …) when nothing came within ``timeout_s``.
    """
    SENT["requests"] += 1
    host, _, port = address.rpartition(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        try:
            if pace_s:
                for i in range(len(data)):
                    sock.sendall(data[i : i + 1])
                    time.sleep(pace_s)
                    if time.monotonic() - started > timeout_s:
                        break
            else:
                sock.sendall(data)
        except OSError:
            pass  # the server may close early (e.g. 413 or 431 before we finished sending)
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            return b"TIMEOUT", time.monotonic() - started
        except OSError:
            pass
    return answer.split(b"\r\n", 1)[0], time.monotonic() - started


def status_of(line: bytes) -> int | None:
    parts = line.split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def directory_fingerprint(database_url: str) -> dict[str, tuple[int, str]]:
    """(row count, md5 of the rows in key order) of every directory table."""
    tables = {
        "region": "name",
        "organization_mapping": "organization_id",
        "integration": "id",
        "organization_integration": "organization_id, integration_id",
    }
    out = {}
    with psycopg.connect(database_url) as conn:
        for table, key in tables.items():
            row = conn.execute(
                f"SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY {key})), '') FROM {table} t"
            ).fetchone()
            assert row is not None
            out[table] = (int(row[0]), str(row[1]))
    return out


def rebuilt(route: str, body: bytes) -> Call:
    """``route``'s request with another body, signed again where the provider signs the body (so the
    body, not the signature, is what gets tested)."""
    call = ROUTES[route][0]()
    if route.startswith("slack-"):
        return Call(call.method, call.path, {**call.headers, **slack_headers(body)}, body)
    if route.startswith("discord-"):
        return Call(call.method, call.path, {**call.headers, **discord_headers(body)}, body)
    return call.with_body(body)


BODY_ROUTES = sorted(
    name for name, (_, expect) in ROUTES.items() if expect.kind != "control" and name != "jira-issue-glance"
)
"""Routes whose view reads the body."""


def traces_outside(expect: Expect, upstreams: Mapping[str, Any], database_url: str, nonce: str) -> list[str]:
    """Traces of the request anywhere but where its route may put it (a malformed body may still
    be stored or routed for the owner: providers routed by path store whatever they are sent)."""
    problems = []
    allowed_receivers = (
        {expect.region} if expect.kind == "region" else {"control"} if expect.kind == "control" else set()
    )
    seen = receipts(upstreams, nonce)
    if set(seen) - allowed_receivers - {"control"}:
        problems.append(f"reached {sorted(seen)}")
    rows = stored(database_url, nonce)
    if rows and (expect.kind != "stored" or sorted(r for r, _ in rows) != sorted(expect.regions)):
        problems.append(f"stored for {[r for r, _ in rows]}")
    return problems


def sidecar_decision(method: str, target: str, headers: Mapping[str, str], body: bytes) -> Any:
    """What the sidecar decides for this request, against an in-memory copy of the security
    directory: the reference a request that reached control is checked against."""
    import asyncio

    from sidecar.core import Context, Secrets
    from sidecar.directory.memory import InMemoryDirectory
    from sidecar.outbox.memory import InMemoryOutbox
    from sidecar.router import Router

    context = Context(
        now=time.time(),
        secrets=Secrets(slack_signing_secret=SLACK_SECRET, discord_public_key=DISCORD_PUBLIC_HEX),
        regions=frozenset({"us", "de"}),
    )
    router = Router(InMemoryDirectory.from_data(SECURITY_DIRECTORY), InMemoryOutbox(), lambda: context)
    from sidecar.core import Request

    return asyncio.run(router.decide(Request.from_target(method, target, dict(headers), body)))


def control_receipts_the_sidecar_disagrees_with(upstreams: Mapping[str, Any], nonce: str) -> list[str]:
    """Requests control received that the sidecar would not have passed to control: Envoy's route
    table (buffered views, control-only bypasses) and the sidecar's URL tables disagreed."""
    from sidecar.core import Control

    problems = []
    for received in list(upstreams["control"].received):
        if received.headers.get(MARK) != nonce:
            continue
        decided = sidecar_decision(received.method, received.target, received.headers, received.body)
        if not isinstance(decided, Control):
            problems.append(f"control received {received.method} {received.target}; the sidecar says {decided}")
    return problems
