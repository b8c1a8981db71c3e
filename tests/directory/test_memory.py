"""The in-memory twin and the Postgres directory answer the same cases the same way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sidecar import db
from sidecar.core.lookup import (
    NOT_FOUND,
    ByExternalId,
    ByIntegrationId,
    ByOrganization,
    Integration,
    LookupKey,
    Organization,
    Resolution,
)
from sidecar.directory.base import Directory
from sidecar.directory.loader import load_directory, parse_directory
from sidecar.directory.memory import InMemoryDirectory
from sidecar.directory.postgres import PostgresDirectory
from sidecar.errors import DirectoryUnavailable

DATA: dict[str, Any] = {
    "regions": [{"name": "de", "address": "127.0.0.1:9002"}, {"name": "us", "address": "127.0.0.1:9001"}],
    "organizations": [
        {"id": 1, "slug": "acme", "region": "us"},
        {"id": 2, "slug": "globex", "region": "de"},
        {"id": 3, "slug": "initech", "region": "us", "status": "disabled"},
    ],
    "integrations": [
        {
            "id": 10,
            "provider": "github",
            "external_id": "4711",
            "organizations": [2, 1, {"id": 3, "status": "disabled"}, 99],  # 99: linked, no mapping
            "metadata": {"domain_name": "github.com/acme", "nested": {"k": [1, 2]}},
        },
        {"id": 11, "provider": "github", "external_id": "4712", "status": "disabled", "organizations": [3]},
        {"id": 12, "provider": "slack", "external_id": "T123", "organizations": [{"id": 1, "status": "disabled"}]},
        {"id": 13, "provider": "jira", "external_id": "https://acme.atlassian.net", "organizations": [3]},
    ],
}

GH = Integration(10, "github", "4711", "active", {"domain_name": "github.com/acme", "nested": {"k": [1, 2]}})
GH_DISABLED = Integration(11, "github", "4712", "disabled", {})
SLACK = Integration(12, "slack", "T123", "active", {})
JIRA = Integration(13, "jira", "https://acme.atlassian.net", "active", {})
ACME = Organization(1, "acme", "us")
GLOBEX = Organization(2, "globex", "de")
INITECH = Organization(3, "initech", "us")

CASES: list[tuple[str, tuple[LookupKey, ...], Resolution]] = [
    (
        "external id: active links with a mapping, by org id",
        (ByExternalId("github", "4711"),),
        Resolution(GH, (ACME, GLOBEX)),
    ),
    ("external id of another provider", (ByExternalId("slack", "4711"),), NOT_FOUND),
    ("unknown external id", (ByExternalId("github", "0"),), NOT_FOUND),
    ("disabled integration still found", (ByExternalId("github", "4712"),), Resolution(GH_DISABLED, (INITECH,))),
    ("disabled integration, active only", (ByExternalId("github", "4712", active_only=True),), NOT_FOUND),
    ("active integration, active only", (ByIntegrationId(10, active_only=True),), Resolution(GH, (ACME, GLOBEX))),
    ("only a disabled link: integration, no orgs", (ByExternalId("slack", "T123"),), Resolution(SLACK, ())),
    ("disabled org mapping still routes", (ByIntegrationId(13),), Resolution(JIRA, (INITECH,))),
    ("integration id, any provider", (ByIntegrationId(12),), Resolution(SLACK, ())),
    ("integration id, right provider", (ByIntegrationId(12, "slack"),), Resolution(SLACK, ())),
    ("integration id, wrong provider", (ByIntegrationId(12, "github"),), NOT_FOUND),
    ("unknown integration id", (ByIntegrationId(404),), NOT_FOUND),
    ("organization", (ByOrganization(2),), Resolution(None, (GLOBEX,))),
    ("disabled organization", (ByOrganization(3),), Resolution(None, (INITECH,))),
    ("unknown organization", (ByOrganization(99),), NOT_FOUND),
    ("no keys", (), NOT_FOUND),
    (
        "first miss, then hit",
        (ByIntegrationId(404), ByExternalId("slack", "T123"), ByIntegrationId(10)),
        Resolution(SLACK, ()),
    ),
    ("first hit wins", (ByIntegrationId(10), ByIntegrationId(12)), Resolution(GH, (ACME, GLOBEX))),
    ("integration found without orgs still wins", (ByIntegrationId(12), ByOrganization(1)), Resolution(SLACK, ())),
    ("all miss", (ByIntegrationId(404), ByOrganization(404), ByExternalId("x", "y")), NOT_FOUND),
]


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.db)])
def make_directory(request: pytest.FixtureRequest) -> Callable[[], Awaitable[Directory]]:
    """Both backends, loaded with DATA (a sync fixture: it may pull the async ``pool`` fixture in)."""
    if request.param == "memory":

        async def memory() -> Directory:
            return InMemoryDirectory.from_data(DATA)

        return memory
    pool: db.Pool = request.getfixturevalue("pool")

    async def postgres() -> Directory:
        await load_directory(pool, DATA)
        return PostgresDirectory(pool)

    return postgres


@pytest.mark.parametrize(("case", "keys", "expected"), CASES, ids=[case for case, _, _ in CASES])
async def test_resolve(
    make_directory: Callable[[], Awaitable[Directory]], case: str, keys: tuple[LookupKey, ...], expected: Resolution
) -> None:
    directory = await make_directory()
    assert await directory.resolve(keys) == expected


async def test_regions_are_sorted_and_unique(make_directory: Callable[[], Awaitable[Directory]]) -> None:
    directory = await make_directory()
    assert (await directory.resolve((ByIntegrationId(10),))).regions == ("de", "us")


async def test_memory_fail_switch_raises_directory_unavailable() -> None:
    directory = InMemoryDirectory.from_data(DATA)
    directory.fail = True
    with pytest.raises(DirectoryUnavailable):
        await directory.resolve((ByIntegrationId(10),))


async def test_memory_load_upserts_like_the_loader() -> None:
    directory = InMemoryDirectory.from_data(DATA)
    slack = {"id": 12, "provider": "slack", "external_id": "T123", "organizations": [1]}
    directory.load(parse_directory({"integrations": [slack]}))
    assert await directory.resolve((ByIntegrationId(12),)) == Resolution(SLACK, (ACME,))
