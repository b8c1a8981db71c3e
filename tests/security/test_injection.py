"""Identifiers built to break SQL (or the driver) in every lookup key position: nothing breaks,
nothing is found, nothing is routed or stored, and the directory tables are unchanged afterwards.

Also the regression tests for two bugs this suite found in ``sidecar/directory/postgres.py``: an
external id with a NUL (JSON ``"\\u0000"``) was answered 503 "directory unavailable" (PostgreSQL
refuses NUL in text, which read as an outage), and one with a lone surrogate (JSON ``"\\ud800"``)
500 "internal error" (the driver cannot encode it). Neither can name an integration: both are now
"not found" without a query.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
from harness import Edge
from hostile import (
    JIRA_SECRET,
    JIRA_SERVER_SECRET,
    JSON,
    Call,
    cursor_push,
    directory_fingerprint,
    discord_headers,
    gitlab_push,
    hs256,
    jira_claims,
    mark,
    receipts,
    send,
    slack_headers,
    stored,
)

from sidecar import db
from sidecar.core import ByExternalId, ByIntegrationId, ByOrganization
from sidecar.core.lookup import NOT_FOUND
from sidecar.directory.postgres import PostgresDirectory

pytestmark = [pytest.mark.security, pytest.mark.db, pytest.mark.envoy]

HOSTILE_IDS = [
    "' OR '1'='1",
    "4711' OR '1'='1' --",
    "4711; DROP TABLE integration; --",
    "'; DELETE FROM organization_mapping; --",
    "1 UNION SELECT id, provider, external_id, status, metadata, 1, 'x', 'us' FROM integration",
    "%' OR external_id LIKE '%",
    "$1",
    "%(external_id)s",
    "%s%s%s%s",
    "\\x00",
    "4711\x00",
    "\ud800",
    "T0ACME\u202e",
    "x" * 10_000,
    "",
    " 4711",
    "4711\n",
    "\\",
    "'",
    '"',
]


def _body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def slack_event(team: str) -> Call:
    body = _body(type="event_callback", team_id=team, event={"type": "app_mention"})
    return Call("POST", "/extensions/slack/event/", {**JSON, **slack_headers(body)}, body)


def discord_command(guild: str) -> Call:
    body = _body(type=2, id="1", guild_id=guild, data={"name": "x"})
    return Call("POST", "/extensions/discord/interactions/", discord_headers(body), body)


def jira_issuer(issuer: str) -> Call:
    path = "/extensions/jira/issue-updated/"
    token = hs256({**jira_claims("POST", path), "iss": issuer}, JIRA_SECRET)
    return Call("POST", path, {**JSON, "authorization": f"JWT {token}"}, b'{"issue": {"id": "1"}}')


def jira_server_id(identifier: str) -> Call:
    token = hs256({"id": identifier}, JIRA_SERVER_SECRET)
    return Call("POST", f"/extensions/jira-server/issue-updated/{token}/", JSON, b'{"changelog": {"items": [1]}}')


def in_path(template: str) -> Callable[[str], Call]:
    def build(identifier: str) -> Call:
        return Call("POST", template.format(quote(identifier, safe="")), JSON, b"{}")

    return build


POSITIONS: dict[str, Callable[[str], Call]] = {
    "github-installation": lambda v: Call(
        "POST", "/extensions/github/webhook/", {**JSON, "x-github-event": "push"}, _body(installation={"id": v})
    ),
    "github-enterprise-host": lambda v: Call(
        "POST",
        "/extensions/github-enterprise/webhook/",
        {**JSON, "x-github-event": "push", "x-github-enterprise-host": quote(v)},
        _body(installation={"id": v}),
    ),
    "slack-team": slack_event,
    "slack-command-team": lambda v: (
        lambda body: Call(
            "POST",
            "/extensions/slack/commands/",
            {"content-type": "application/x-www-form-urlencoded", **slack_headers(body)},
            body,
        )
    )(f"team_id={quote(v)}&text=help".encode()),
    "discord-guild": discord_command,
    "jira-issuer": jira_issuer,
    "jira-server-id": jira_server_id,
    "gitlab-token": lambda v: gitlab_push(f"{quote(v)}:{quote(v)}:secret"),
    "msteams-team": lambda v: Call(
        "POST", "/extensions/msteams/webhook/", JSON, _body(type="message", channelData={"team": {"id": v}})
    ),
    "msteams-integration-id": lambda v: Call(
        "POST",
        "/extensions/msteams/webhook/",
        JSON,
        _body(type="message", value={"payload": {"integrationId": v}}, channelData={"tenant": {"id": v}}),
    ),
    "vsts-collection": lambda v: Call(
        "POST", "/extensions/vsts/issue-updated/", JSON, _body(resourceContainers={"collection": {"id": v}})
    ),
    "cursor-installation": lambda v: cursor_push().with_headers(**{"webhook-installation-id": quote(v) or "x"}),
    "gitea-organization": in_path("/extensions/gitea/organizations/{}/webhook/90/"),
    "gitea-integration": in_path("/extensions/gitea/organizations/1/webhook/{}/"),
    "bitbucket-organization": in_path("/extensions/bitbucket/organizations/{}/webhook/"),
    "bitbucket-server-organization": in_path("/extensions/bitbucket-server/organizations/{}/webhook/5/"),
    "plugin-organization": in_path("/plugins/github/organizations/{}/webhook/"),
    "jira-issue-key": lambda v: Call("GET", "/extensions/jira/issue/" + quote(v, safe="") + "/", {}),
}


@pytest.fixture(scope="module")
def fingerprint(hostile_edge: Edge, security_database: str) -> Iterator[dict[str, tuple[int, str]]]:
    """The directory before this module ran; compared after every position's test."""
    yield directory_fingerprint(security_database)


@pytest.mark.parametrize("position", sorted(POSITIONS))
def test_hostile_identifiers_find_nothing_and_break_nothing(
    position: str, hostile_edge: Edge, security_database: str, fingerprint: dict[str, tuple[int, str]]
) -> None:
    problems = {}
    for identifier in HOSTILE_IDS:
        try:
            call = POSITIONS[position](identifier)
        except UnicodeEncodeError:
            continue  # a lone surrogate has no spelling in a path, header or form: only JSON can carry it
        nonce = mark()
        outcome = send(hostile_edge.client, hostile_edge.url, call, nonce)
        found = []
        if outcome.status >= 500:
            found.append(f"answered {outcome.status}")
        regions = sorted(set(receipts(hostile_edge.upstreams, nonce)) - {"control"})
        if regions:
            found.append(f"reached {regions}")
        rows = stored(security_database, nonce)
        if rows:
            found.append(f"stored for {[r for r, _ in rows]}")
        if outcome.elapsed > 5:
            found.append(f"took {outcome.elapsed:.1f}s")
        if found:
            problems[repr(identifier[:40])] = found
    assert problems == {}
    assert directory_fingerprint(security_database) == fingerprint


# --- regression: the directory answers "not found" for ids PostgreSQL cannot hold ----------------------


@pytest.mark.parametrize("identifier", ["4711\x00", "\x00", "\ud800", "4711\udfff", "T0ACME\x00"])
def test_an_external_id_postgresql_cannot_store_is_not_found_not_an_outage(
    identifier: str, security_database: str
) -> None:
    async def resolve() -> object:
        pool = await db.open_pool(security_database, max_size=1)
        try:
            directory = PostgresDirectory(pool)
            return await directory.resolve((ByExternalId("github", identifier), ByExternalId(identifier, "4711")))
        finally:
            await pool.close()

    assert asyncio.run(resolve()) == NOT_FOUND


def test_ids_beyond_bigint_are_not_found_without_a_query(security_database: str) -> None:
    async def resolve() -> list[object]:
        pool = await db.open_pool(security_database, max_size=1)
        try:
            directory = PostgresDirectory(pool)
            return [
                await directory.resolve((ByIntegrationId(2**63),)),
                await directory.resolve((ByIntegrationId(-(2**63) - 1, provider="gitea"),)),
                await directory.resolve((ByOrganization(2**64),)),
            ]
        finally:
            await pool.close()

    assert asyncio.run(resolve()) == [NOT_FOUND] * 3


@pytest.mark.parametrize(("identifier", "status"), [("4711\x00", 400), ("\ud800", 400)])
def test_a_github_push_with_an_unstorable_installation_id_is_400_at_the_edge(
    identifier: str, status: int, hostile_edge: Edge, security_database: str
) -> None:
    """Before the fix: 503 with Retry-After (GitHub would retry a request that can never succeed)
    for the NUL, and 500 with a stack trace in the log for the surrogate."""
    nonce = mark()
    outcome = send(hostile_edge.client, hostile_edge.url, POSITIONS["github-installation"](identifier), nonce)
    assert outcome.status == status
    assert "retry-after" not in outcome.headers
    assert stored(security_database, nonce) == []
