"""Which classification a request falls under (reference §1.3 and §4). Path only, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sidecar.core.providers import PROVIDERS, ProviderSpec

INTEGRATION_PREFIX = "/extensions/"
PLUGIN_PREFIX = "/plugins/"
_PROVIDER_SEGMENT = re.compile(r"/extensions/([^/]+)")


@dataclass(frozen=True, slots=True)
class IntegrationRoute:
    provider: str
    spec: ProviderSpec | None
    """None: a provider we do not know; the request falls through to control."""


@dataclass(frozen=True, slots=True)
class PluginRoute:
    spec: ProviderSpec


@dataclass(frozen=True, slots=True)
class PassThrough:
    reason: str


Classification = IntegrationRoute | PluginRoute | PassThrough


def classify(path: str) -> Classification:
    """Case-sensitive, on the path without query, exactly as Sentry's classifications."""
    if path.startswith(INTEGRATION_PREFIX):
        if path.endswith("/setup/") or path.endswith("/link/"):
            return PassThrough("setup_or_link_view")
        found = _PROVIDER_SEGMENT.match(path)
        if found is None:
            return PassThrough("no_provider_segment")
        provider = found.group(1).replace("-", "_")
        return IntegrationRoute(provider, PROVIDERS.get(provider))
    if path.startswith(PLUGIN_PREFIX) and "plugins" in PROVIDERS:
        return PluginRoute(PROVIDERS["plugins"])
    return PassThrough("not_a_webhook_path")


def provider_of(path: str) -> str | None:
    """The provider slug a path belongs to (``plugins`` for plugin paths), for metric labels."""
    match classify(path):
        case IntegrationRoute(provider=provider):
            return provider
        case PluginRoute():
            return "plugins"
    return None
