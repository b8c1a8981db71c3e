"""The directory loader: validation (pure) and idempotent upserts (real PostgreSQL)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sidecar import db
from sidecar.core.lookup import ByExternalId, ByIntegrationId, Organization
from sidecar.directory.loader import (
    Counts,
    DirectoryData,
    DirectoryFileError,
    load_directory,
    parse_directory,
    read_directory_file,
)
from sidecar.directory.postgres import PostgresDirectory
from sidecar.errors import ConfigError, DirectoryUnavailable

DATA: dict[str, Any] = {
    "regions": [{"name": "us", "address": "127.0.0.1:9001"}, {"name": "de"}],
    "organizations": [{"id": 1, "slug": "acme", "region": "us"}, {"id": 2, "slug": "globex", "region": "de"}],
    "integrations": [
        {"id": 10, "provider": "github", "external_id": 4711, "organizations": [1, {"id": 2, "status": "disabled"}]},
        {"id": 11, "provider": "slack", "external_id": "T1", "status": "disabled", "metadata": {"team": "x"}},
    ],
}

YAML = """
regions:
  - {name: us, address: 127.0.0.1:9001}
organizations:
  - {id: 1, slug: acme, region: us}
integrations:
  - {id: 10, provider: github, external_id: "4711", status: active,
     organizations: [1],
     metadata: {}}
"""


# -- validation --------------------------------------------------------------------------------


def test_parse_normalises_ids_statuses_and_links() -> None:
    parsed = parse_directory(DATA)
    assert parsed.integrations[0].external_id == "4711"  # unquoted YAML ints become text
    assert [(k.organization_id, k.integration_id, k.status) for k in parsed.links] == [
        (1, 10, "active"),
        (2, 10, "disabled"),
    ]
    assert parsed.organizations[0].status == "active"
    assert parsed.integrations[1].metadata == {"team": "x"}


def with_change(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(DATA)
    target: Any = data
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        ([], "", "expected a mapping"),
        ({"integration": []}, "", "unknown key integration"),
        ({"organizations": {"id": 1}}, "organizations", "expected a list"),
        (with_change(("organizations", 1, "id"), "2"), "organizations[1].id", "positive integer"),
        (with_change(("organizations", 1, "id"), True), "organizations[1].id", "positive integer"),
        (with_change(("organizations", 0, "id"), 0), "organizations[0].id", "positive integer"),
        (with_change(("organizations", 0, "slug"), KeyError), "organizations[0]", "missing slug"),
        (with_change(("organizations", 0, "slug"), ""), "organizations[0].slug", "non-empty string"),
        (with_change(("organizations", 0, "region"), "eu west"), "organizations[0].region", "bad region name"),
        (with_change(("organizations", 0, "region"), "eu"), "organizations[0].region", "not one of the regions"),
        (with_change(("organizations", 1, "id"), 1), "organizations[1].id", "duplicate organization id"),
        (with_change(("organizations", 1, "slug"), "acme"), "organizations[1].slug", "duplicate organization slug"),
        (with_change(("regions", 0, "address"), "nowhere"), "regions[0].address", "host:port"),
        (with_change(("regions", 1, "name"), "us"), "regions[1].name", "duplicate region name"),
        (with_change(("integrations", 1, "status"), "deleted"), "integrations[1].status", "one of active"),
        (with_change(("integrations", 1, "provider"), 3), "integrations[1].provider", "non-empty string"),
        (with_change(("integrations", 1, "external_id"), None), "integrations[1].external_id", "non-empty"),
        (with_change(("integrations", 1, "id"), 10), "integrations[1].id", "duplicate integration id"),
        (
            with_change(("integrations", 1), {"id": 12, "provider": "github", "external_id": "4711"}),
            "integrations[1].external_id",
            "duplicate provider/external_id",
        ),
        (with_change(("integrations", 1, "metadata"), [1]), "integrations[1].metadata", "expected a mapping"),
        (with_change(("integrations", 1, "metadata"), {"x": {1, 2}}), "integrations[1].metadata", "JSON"),
        (
            with_change(("integrations", 0, "organizations", 1), {"id": 2, "x": 1}),
            "integrations[0].organizations[1]",
            "unknown key x",
        ),
        (with_change(("integrations", 0, "organizations", 1), "acme"), "integrations[0].organizations[1]", "integer"),
        (with_change(("integrations", 0, "organizations", 1), 1), "integrations[0].organizations[1]", "duplicate"),
        (with_change(("integrations", 0, "extenal_id"), "1"), "integrations[0]", "unknown key extenal_id"),
    ],
)
def test_invalid_data_names_the_bad_item(data: Any, path: str, words: str) -> None:
    with pytest.raises(DirectoryFileError) as caught:
        parse_directory(data)
    assert caught.value.path == path
    assert words in str(caught.value)
    assert isinstance(caught.value, ConfigError)


def test_regions_are_optional_and_then_any_region_name_goes() -> None:
    data = {"organizations": [{"id": 1, "slug": "acme", "region": "mars"}]}
    assert parse_directory(data).organizations[0].region == "mars"


def test_read_yaml_and_json_files(tmp_path: Path) -> None:
    yaml_file, json_file = tmp_path / "d.yaml", tmp_path / "d.json"
    yaml_file.write_text(YAML)
    json_file.write_text(json.dumps(read_directory_file(yaml_file)))
    assert read_directory_file(yaml_file) == read_directory_file(json_file)
    assert parse_directory(read_directory_file(yaml_file)).integrations[0].external_id == "4711"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{not json", "not valid JSON"),
        ("a: [b", "not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("", "mapping"),
    ],
)
def test_unreadable_files_are_refused_with_the_file_name(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text(text)
    with pytest.raises(DirectoryFileError) as caught:
        read_directory_file(path)
    assert caught.value.path == str(path)
    assert words in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DirectoryFileError, match="cannot read"):
        read_directory_file(tmp_path / "absent.yaml")


# -- loading -----------------------------------------------------------------------------------


@pytest.mark.db
async def test_load_then_reload_changes_nothing(pool: db.Pool) -> None:
    first = await load_directory(pool, DATA)
    assert first.regions == Counts(inserted=2)
    assert first.organizations == Counts(inserted=2)
    assert first.integrations == Counts(inserted=2)
    assert first.links == Counts(inserted=2)
    assert first.changed
    second = await load_directory(pool, DATA)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 8)
    assert not second.changed
    assert "0 inserted, 0 updated, 8 unchanged" in str(second)


@pytest.mark.db
async def test_changed_items_are_updated_and_the_rest_left_alone(pool: db.Pool) -> None:
    await load_directory(pool, DATA)
    changed = with_change(("integrations", 1, "metadata"), {"team": "y"})
    changed["organizations"][0]["region"] = "de"
    changed["integrations"][0]["organizations"] = [1, 2]  # link to 2 becomes active
    changed["integrations"].append({"id": 12, "provider": "jira", "external_id": "j", "organizations": [1]})
    report = await load_directory(pool, changed)
    assert report.organizations == Counts(updated=1, unchanged=1)
    assert report.integrations == Counts(inserted=1, updated=1, unchanged=1)
    assert report.links == Counts(inserted=1, updated=1, unchanged=1)
    found = await PostgresDirectory(pool).resolve((ByIntegrationId(10),))
    assert found.organizations == (Organization(1, "acme", "de"), Organization(2, "globex", "de"))


@pytest.mark.db
async def test_loaded_rows_resolve(pool: db.Pool) -> None:
    await load_directory(pool, DATA)
    found = await PostgresDirectory(pool).resolve((ByExternalId("github", "4711"),))
    assert found.integration is not None and found.integration.id == 10
    assert found.organizations == (Organization(1, "acme", "us"),)


@pytest.mark.db
async def test_loads_through_a_dsn_and_through_a_connection(db_url: str) -> None:
    assert (await load_directory(db_url, DATA)).inserted == 8
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        assert (await load_directory(conn, DATA)).unchanged == 8


@pytest.mark.db
async def test_accepts_parsed_data(db_url: str) -> None:
    assert (await load_directory(db_url, DirectoryData())).inserted == 0


@pytest.mark.db
async def test_a_conflict_with_the_database_rolls_back_everything(pool: db.Pool) -> None:
    await load_directory(pool, {"integrations": [{"id": 99, "provider": "github", "external_id": "4711"}]})
    with pytest.raises(DirectoryFileError) as caught:
        await load_directory(pool, DATA)  # id 10 wants github/4711, which id 99 holds
    assert caught.value.path == "integrations"
    assert "duplicate key" in str(caught.value)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT (SELECT count(*) FROM region), (SELECT count(*) FROM organization_mapping)")
        assert await cur.fetchone() == (0, 0)


@pytest.mark.db
async def test_unreachable_database_is_directory_unavailable() -> None:
    with pytest.raises(DirectoryUnavailable):
        await load_directory("host=/nonexistent port=1", DATA)
