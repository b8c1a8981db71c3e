"""What a parser asks the directory, and what the directory answers. Pure data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ByExternalId:
    """``integration`` row by (provider, external_id), e.g. a GitHub installation id."""

    provider: str
    external_id: str
    active_only: bool = False


@dataclass(frozen=True, slots=True)
class ByIntegrationId:
    """``integration`` row by primary key, optionally of one provider only."""

    integration_id: int
    provider: str | None = None
    active_only: bool = False


@dataclass(frozen=True, slots=True)
class ByOrganization:
    """``organization_mapping`` row by organization id (Bitbucket, plugins: no integration)."""

    organization_id: int


LookupKey = ByExternalId | ByIntegrationId | ByOrganization


@dataclass(frozen=True, slots=True)
class Integration:
    id: int
    provider: str
    external_id: str
    status: str = "active"
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Organization:
    id: int
    slug: str
    region: str


@dataclass(frozen=True, slots=True)
class Resolution:
    """The directory's answer.

    For integration keys: the integration (None when unknown) and the organizations whose
    organization_integration is ACTIVE. For ``ByOrganization``: no integration and the
    organization's mapping, if any.
    """

    integration: Integration | None = None
    organizations: tuple[Organization, ...] = ()
    regions: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """Region names, de-duplicated and sorted: "first region" means alphabetically first.
    Computed once here: parsers read it several times per request."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", tuple(sorted({org.region for org in self.organizations})))


NOT_FOUND = Resolution()
