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


_SETUP_OR_LINK = PassThrough("setup_or_link_view")
_NO_PROVIDER_SEGMENT = PassThrough("no_provider_segment")
_NOT_A_WEBHOOK_PATH = PassThrough("not_a_webhook_path")
_KNOWN: dict[str, IntegrationRoute] = {slug: IntegrationRoute(slug, spec) for slug, spec in PROVIDERS.items()}
"""Every request of a known provider shares one classification: built once, not per request."""
_PLUGINS = PluginRoute(PROVIDERS["plugins"]) if "plugins" in PROVIDERS else None


def classify(path: str) -> Classification:
    """Case-sensitive, on the path without query, exactly as Sentry's classifications."""
    if path.startswith(INTEGRATION_PREFIX):
        if path.endswith(("/setup/", "/link/")):
            return _SETUP_OR_LINK
        found = _PROVIDER_SEGMENT.match(path)
        if found is None:
            return _NO_PROVIDER_SEGMENT
        provider = found.group(1).replace("-", "_")
        return _KNOWN.get(provider) or IntegrationRoute(provider, None)
    if _PLUGINS is not None and path.startswith(PLUGIN_PREFIX):
        return _PLUGINS
    return _NOT_A_WEBHOOK_PATH


def provider_of(path: str) -> str | None:
    """The provider slug a path belongs to (``plugins`` for plugin paths), for metric labels."""
    return provider_named(classify(path))


def provider_named(route: Classification) -> str | None:
    """The provider slug of a classification (``plugins`` for plugin routes), else None."""
    match route:
        case IntegrationRoute(provider=provider):
            return provider
        case PluginRoute():
            return "plugins"
    return None
