"""The in-memory directory: the Postgres directory's semantics over plain dicts (tests, offline explain)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
from sidecar.directory.loader import DirectoryData, parse_directory
from sidecar.errors import DirectoryUnavailable


class InMemoryDirectory:
    """``Directory`` over a parsed directory file. Set ``fail`` to simulate the database being down."""

    def __init__(self, data: DirectoryData | None = None) -> None:
        self.fail = False
        self.calls = 0
        self._mappings: dict[int, Organization] = {}
        self._integrations: dict[int, Integration] = {}
        self._by_external_id: dict[tuple[str, str], int] = {}
        self._links: dict[tuple[int, int], str] = {}
        self.load(data or DirectoryData())

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> InMemoryDirectory:
        """Build from the same mapping ``load_directory`` reads (validated the same way)."""
        return cls(parse_directory(data))

    def load(self, data: DirectoryData) -> None:
        """Upsert ``data`` like ``load_directory``: rows are replaced by key, never deleted."""
        for org in data.organizations:
            self._mappings[org.id] = Organization(org.id, org.slug, org.region)
        for row in data.integrations:
            old = self._integrations.get(row.id)
            if old is not None:
                self._by_external_id.pop((old.provider, old.external_id), None)
            self._integrations[row.id] = Integration(row.id, row.provider, row.external_id, row.status, row.metadata)
            self._by_external_id[(row.provider, row.external_id)] = row.id
        for link in data.links:
            self._links[(link.organization_id, link.integration_id)] = link.status

    async def resolve(self, keys: tuple[LookupKey, ...]) -> Resolution:
        """Like ``PostgresDirectory.resolve``: first key that finds something wins."""
        self.calls += 1
        if self.fail:
            raise DirectoryUnavailable("in-memory directory set to fail")
        for key in keys:
            found = self._resolve_one(key)
            if found is not None:
                return found
        return NOT_FOUND

    def _resolve_one(self, key: LookupKey) -> Resolution | None:
        match key:
            case ByExternalId(provider, external_id, active_only):
                integration_id = self._by_external_id.get((provider, external_id))
                found = self._integrations.get(integration_id) if integration_id is not None else None
                return self._integration(found, active_only)
            case ByIntegrationId(integration_id, provider, active_only):
                integration = self._integrations.get(integration_id)
                if integration is not None and provider is not None and integration.provider != provider:
                    integration = None
                return self._integration(integration, active_only)
            case ByOrganization(organization_id):
                mapping = self._mappings.get(organization_id)
                return Resolution(None, (mapping,)) if mapping is not None else None

    def _integration(self, integration: Integration | None, active_only: bool) -> Resolution | None:
        if integration is None or (active_only and integration.status != "active"):
            return None
        org_ids = sorted(
            org_id
            for (org_id, integration_id), status in self._links.items()
            if integration_id == integration.id and status == "active" and org_id in self._mappings
        )
        return Resolution(integration, tuple(self._mappings[org_id] for org_id in org_ids))
