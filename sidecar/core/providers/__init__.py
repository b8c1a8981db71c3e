"""The provider registry: one line per provider module (a test checks that none is missing)."""

from __future__ import annotations

from sidecar.core.providers import github, github_enterprise
from sidecar.core.providers._spec import ProviderSpec

PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        github.SPEC,
        github_enterprise.SPEC,
    )
}

__all__ = ["PROVIDERS", "ProviderSpec"]
