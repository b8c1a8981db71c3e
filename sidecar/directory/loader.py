"""Load a directory file (YAML or JSON) into the directory tables, idempotently, in one transaction.

The file form::

    regions:                      # optional; when present, organizations must use these names
      - {name: us, address: 127.0.0.1:9001}
    organizations:
      - {id: 1, slug: acme, region: us}                  # status: active (default) | disabled | …
    integrations:
      - {id: 10, provider: github, external_id: "4711", status: active,
         organizations: [1],                             # or [{id: 1, status: disabled}]
         metadata: {}}

Rows are upserted by primary key and never deleted: a row missing from the file stays as it is.
``parse_directory`` is pure, so the in-memory directory is built from exactly what the loader reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, LiteralString, TypeAlias

import psycopg
import yaml
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from sidecar.core.lookup import Integration
from sidecar.db import Pool
from sidecar.errors import ConfigError, DirectoryUnavailable

STATUSES = ("active", "disabled", "pending_deletion")
# \Z, not $: "$" also matches before a trailing newline, so .match() would take "us\n".
REGION_NAME = re.compile(r"^[A-Za-z0-9_-]+\Z")


class DirectoryFileError(ConfigError):
    """A directory file the loader refuses; ``path`` points at the bad item, e.g. ``integrations[2].id``."""

    code = "directory_file_error"

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class RegionRow:
    name: str
    address: str | None = None


@dataclass(frozen=True, slots=True)
class OrganizationRow:
    id: int
    slug: str
    region: str
    status: str = "active"


@dataclass(frozen=True, slots=True)
class LinkRow:
    organization_id: int
    integration_id: int
    status: str = "active"


@dataclass(frozen=True, slots=True)
class DirectoryData:
    """A validated directory file."""

    regions: tuple[RegionRow, ...] = ()
    organizations: tuple[OrganizationRow, ...] = ()
    integrations: tuple[Integration, ...] = ()
    links: tuple[LinkRow, ...] = ()


@dataclass(frozen=True, slots=True)
class Counts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def __str__(self) -> str:
        return f"{self.inserted}/{self.updated}/{self.unchanged}"


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What a load changed, per table: inserted / updated / unchanged rows."""

    regions: Counts = Counts()
    organizations: Counts = Counts()
    integrations: Counts = Counts()
    links: Counts = Counts()

    def _all(self) -> list[Counts]:
        return [getattr(self, f.name) for f in fields(self)]

    @property
    def inserted(self) -> int:
        return sum(c.inserted for c in self._all())

    @property
    def updated(self) -> int:
        return sum(c.updated for c in self._all())

    @property
    def unchanged(self) -> int:
        return sum(c.unchanged for c in self._all())

    @property
    def changed(self) -> bool:
        return self.inserted + self.updated > 0

    def __str__(self) -> str:
        tables = ", ".join(f"{f.name} {getattr(self, f.name)}" for f in fields(self))
        return (
            f"{self.inserted} inserted, {self.updated} updated, {self.unchanged} unchanged"
            f" (inserted/updated/unchanged: {tables})"
        )


# -- reading and validating -------------------------------------------------------------------


def read_directory_file(path: str | Path) -> Mapping[str, Any]:
    """The mapping in a YAML or JSON file (JSON when the text starts with ``{``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DirectoryFileError(str(path), f"cannot read: {exc}") from None
    is_json = text.lstrip().startswith("{")
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise DirectoryFileError(str(path), f"not valid {'JSON' if is_json else 'YAML'}: {exc}") from None
    if not isinstance(data, Mapping):
        raise DirectoryFileError(str(path), "expected a mapping with regions, organizations and integrations")
    return data


def parse_directory(data: Mapping[str, Any]) -> DirectoryData:
    """Validate the file form; raises ``DirectoryFileError`` naming the first bad item."""
    if not isinstance(data, Mapping):
        raise DirectoryFileError("", "expected a mapping with regions, organizations and integrations")
    _check_keys(data, "", required=(), optional=("regions", "organizations", "integrations"))
    regions = tuple(_region(item, f"regions[{i}]") for i, item in enumerate(_list(data, "regions", "")))
    organizations = tuple(
        _organization(item, f"organizations[{i}]") for i, item in enumerate(_list(data, "organizations", ""))
    )
    integrations: list[Integration] = []
    links: list[LinkRow] = []
    for i, item in enumerate(_list(data, "integrations", "")):
        integration, item_links = _integration(item, f"integrations[{i}]")
        integrations.append(integration)
        links.extend(item_links)
    parsed = DirectoryData(regions, organizations, tuple(integrations), tuple(links))
    _check_unique(parsed)
    if "regions" in data:
        _check_regions_known(parsed)
    return parsed


def _region(item: Any, path: str) -> RegionRow:
    _check_keys(item, path, required=("name",), optional=("address",))
    name = _region_name(item["name"], f"{path}.name")
    address = item.get("address")
    if address is not None:
        address = _text(address, f"{path}.address")
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise DirectoryFileError(f"{path}.address", f"expected host:port, got {address!r}")
    return RegionRow(name, address)


def _organization(item: Any, path: str) -> OrganizationRow:
    _check_keys(item, path, required=("id", "slug", "region"), optional=("status",))
    return OrganizationRow(
        id=_id(item["id"], f"{path}.id"),
        slug=_text(item["slug"], f"{path}.slug"),
        region=_region_name(item["region"], f"{path}.region"),
        status=_status(item.get("status", "active"), f"{path}.status"),
    )


def _integration(item: Any, path: str) -> tuple[Integration, list[LinkRow]]:
    _check_keys(
        item, path, required=("id", "provider", "external_id"), optional=("status", "organizations", "metadata")
    )
    integration_id = _id(item["id"], f"{path}.id")
    metadata = item.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise DirectoryFileError(f"{path}.metadata", f"expected a mapping, got {type(metadata).__name__}")
    try:
        # Round-trip so the in-memory directory holds exactly what jsonb gives back (string keys, lists).
        metadata = json.loads(json.dumps(metadata, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise DirectoryFileError(f"{path}.metadata", f"not representable as JSON: {exc}") from None
    integration = Integration(
        id=integration_id,
        provider=_text(item["provider"], f"{path}.provider"),
        external_id=_external_id(item["external_id"], f"{path}.external_id"),
        status=_status(item.get("status", "active"), f"{path}.status"),
        metadata=metadata,
    )
    links = [
        _link(link, integration_id, f"{path}.organizations[{j}]")
        for j, link in enumerate(_list(item, "organizations", path))
    ]
    return integration, links


def _link(item: Any, integration_id: int, path: str) -> LinkRow:
    if isinstance(item, Mapping):
        _check_keys(item, path, required=("id",), optional=("status",))
        return LinkRow(
            _id(item["id"], f"{path}.id"), integration_id, _status(item.get("status", "active"), f"{path}.status")
        )
    return LinkRow(_id(item, path), integration_id)


def _check_keys(item: Any, path: str, required: Sequence[str], optional: Sequence[str]) -> None:
    if not isinstance(item, Mapping):
        raise DirectoryFileError(path, f"expected a mapping, got {type(item).__name__}")
    missing = [key for key in required if key not in item]
    if missing:
        raise DirectoryFileError(path, f"missing {', '.join(missing)}")
    unknown = sorted(str(key) for key in item if key not in required and key not in optional)
    if unknown:
        raise DirectoryFileError(
            path, f"unknown key {', '.join(unknown)} (allowed: {', '.join([*required, *optional])})"
        )


def _list(item: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = item.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DirectoryFileError(f"{path}.{key}" if path else key, f"expected a list, got {type(value).__name__}")
    return value


def _id(value: Any, path: str) -> int:
    # bool is an int in Python; `id: yes` is a typo, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise DirectoryFileError(path, f"expected a positive integer, got {value!r}")
    return value


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DirectoryFileError(path, f"expected a non-empty string, got {value!r}")
    return value


def _external_id(value: Any, path: str) -> str:
    # YAML reads an unquoted installation id as an int; Sentry stores external ids as text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value, path)


def _status(value: Any, path: str) -> str:
    if value not in STATUSES:
        raise DirectoryFileError(path, f"expected one of {', '.join(STATUSES)}, got {value!r}")
    return str(value)


def _region_name(value: Any, path: str) -> str:
    text = _text(value, path)
    if not REGION_NAME.match(text):
        raise DirectoryFileError(path, f"bad region name {text!r} (letters, digits, - and _ only)")
    return text


def _check_unique(data: DirectoryData) -> None:
    _first_duplicate((r.name for r in data.regions), "regions[{}].name", "region name")
    _first_duplicate((o.id for o in data.organizations), "organizations[{}].id", "organization id")
    _first_duplicate((o.slug for o in data.organizations), "organizations[{}].slug", "organization slug")
    _first_duplicate((i.id for i in data.integrations), "integrations[{}].id", "integration id")
    _first_duplicate(
        ((i.provider, i.external_id) for i in data.integrations), "integrations[{}].external_id", "provider/external_id"
    )
    for i, integration in enumerate(data.integrations):
        orgs = [link.organization_id for link in data.links if link.integration_id == integration.id]
        _first_duplicate(orgs, f"integrations[{i}].organizations[{{}}]", "organization")


def _first_duplicate(values: Iterable[object], path: str, what: str) -> None:
    seen: dict[object, int] = {}
    for index, value in enumerate(values):
        if value in seen:
            raise DirectoryFileError(path.format(index), f"duplicate {what} {value!r} (first at index {seen[value]})")
        seen[value] = index


def _check_regions_known(data: DirectoryData) -> None:
    names = {region.name for region in data.regions}
    for i, org in enumerate(data.organizations):
        if org.region not in names:
            raise DirectoryFileError(f"organizations[{i}].region", f"{org.region!r} is not one of the regions listed")


# -- writing ----------------------------------------------------------------------------------

# Each upsert is one statement over arrays. Rows whose values already match are not updated (the
# WHERE), so they neither fire the change notification nor come back in RETURNING; xmax = 0 tells
# a fresh insert from an update.
_UPSERT_REGIONS: LiteralString = """
INSERT INTO region AS t (name, address)
SELECT * FROM unnest(%s::text[], %s::text[])
ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address
WHERE t.address IS DISTINCT FROM EXCLUDED.address
RETURNING xmax = 0
"""
_UPSERT_ORGANIZATIONS: LiteralString = """
INSERT INTO organization_mapping AS t (organization_id, slug, region_name, status)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[])
ON CONFLICT (organization_id) DO UPDATE
SET slug = EXCLUDED.slug, region_name = EXCLUDED.region_name, status = EXCLUDED.status
WHERE (t.slug, t.region_name, t.status) IS DISTINCT FROM (EXCLUDED.slug, EXCLUDED.region_name, EXCLUDED.status)
RETURNING xmax = 0
"""
_UPSERT_INTEGRATIONS: LiteralString = """
INSERT INTO integration AS t (id, provider, external_id, status, metadata)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::jsonb[])
ON CONFLICT (id) DO UPDATE
SET provider = EXCLUDED.provider, external_id = EXCLUDED.external_id, status = EXCLUDED.status,
    metadata = EXCLUDED.metadata
WHERE (t.provider, t.external_id, t.status, t.metadata)
      IS DISTINCT FROM (EXCLUDED.provider, EXCLUDED.external_id, EXCLUDED.status, EXCLUDED.metadata)
RETURNING xmax = 0
"""
_UPSERT_LINKS: LiteralString = """
INSERT INTO organization_integration AS t (organization_id, integration_id, status)
SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[])
ON CONFLICT (organization_id, integration_id) DO UPDATE SET status = EXCLUDED.status
WHERE t.status IS DISTINCT FROM EXCLUDED.status
RETURNING xmax = 0
"""

Target: TypeAlias = Pool | psycopg.AsyncConnection[Any] | str


async def load_directory(target: Target, data: Mapping[str, Any] | DirectoryData) -> LoadReport:
    """Upsert ``data`` (the file form, or already parsed) in one transaction through a pool, a
    connection or a DSN. Loading the same data twice changes nothing the second time.

    Raises ``DirectoryFileError`` for invalid data or data the database refuses (e.g. an
    external id already used by another integration id), ``DirectoryUnavailable`` when the
    database cannot be reached.
    """
    parsed = data if isinstance(data, DirectoryData) else parse_directory(data)
    try:
        if isinstance(target, str):
            async with await psycopg.AsyncConnection.connect(target) as conn:
                return await _load(conn, parsed)
        if isinstance(target, AsyncConnectionPool):
            async with target.connection() as conn:
                return await _load(conn, parsed)
        return await _load(target, parsed)
    except psycopg.IntegrityError as exc:
        detail = exc.diag.message_detail or ""
        raise DirectoryFileError(
            _table_path(exc.diag.table_name), f"{exc.diag.message_primary} {detail}".strip()
        ) from exc
    except psycopg.Error as exc:
        raise DirectoryUnavailable(f"directory load failed: {exc.__class__.__name__}: {exc}") from exc


def _table_path(table: str | None) -> str:
    return {
        "region": "regions",
        "organization_mapping": "organizations",
        "integration": "integrations",
        "organization_integration": "integrations[].organizations",
    }.get(table or "", "")


async def _load(conn: psycopg.AsyncConnection[Any], data: DirectoryData) -> LoadReport:
    async with conn.transaction():
        regions = await _upsert(conn, _UPSERT_REGIONS, [(r.name, r.address) for r in data.regions])
        organizations = await _upsert(
            conn, _UPSERT_ORGANIZATIONS, [(o.id, o.slug, o.region, o.status) for o in data.organizations]
        )
        integrations = await _upsert(
            conn,
            _UPSERT_INTEGRATIONS,
            [(i.id, i.provider, i.external_id, i.status, Jsonb(dict(i.metadata))) for i in data.integrations],
        )
        links = await _upsert(
            conn, _UPSERT_LINKS, [(k.organization_id, k.integration_id, k.status) for k in data.links]
        )
    return LoadReport(regions, organizations, integrations, links)


async def _upsert(conn: psycopg.AsyncConnection[Any], query: LiteralString, rows: list[tuple[Any, ...]]) -> Counts:
    if not rows:
        return Counts()
    columns = [list(column) for column in zip(*rows, strict=True)]
    cur = await conn.execute(query, columns)
    flags = [row[0] for row in await cur.fetchall()]
    inserted = sum(1 for flag in flags if flag)
    return Counts(inserted, len(flags) - inserted, len(rows) - len(flags))
