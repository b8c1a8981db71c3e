"""A provider is a table first and code second.

``ProviderSpec`` lists a provider's URL views (Sentry resolves the exact Django URL pattern and
decides on the view, reference §2.1); each view is control-only or has a small handler that
finds what to look up. The helpers below are the base decision tree of reference §2.4, so a
handler only says what is special about its provider.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sidecar.core.context import Context
from sidecar.core.decision import Control, Decision, Forward, Lookup, Reply, Step, Store
from sidecar.core.lookup import Integration, LookupKey, Resolution
from sidecar.core.mailbox import Mailbox
from sidecar.core.request import Request

Handler = Callable[[Request, Mapping[str, str], Context], Step]
"""(request, the view's path parameters, context) → the next step."""


@dataclass(frozen=True, slots=True)
class View:
    name: str
    pattern: str
    """Regex for the path after the provider prefix, e.g. ``r"webhook/"``. RE2-compatible: Envoy
    matches the same text when it decides which routes to buffer."""
    handler: Handler | None = None
    """None means control-only: always passed to control."""
    needs_body: bool = False
    """Envoy buffers the body on this view's route (parsers that read it, and every view that
    may store the webhook: the stored copy needs the exact bytes)."""

    @property
    def control_only(self) -> bool:
        return self.handler is None


SEARCH = View("search", r"search/(?P<organization>[^/]+)/(?P<integration_id>[^/]+)/")
"""The control-only search view most providers mount (``search/<organization>/<integration_id>/``)."""


MATCH_CACHE = 4096
"""Paths remembered per provider; ids in paths (Jira issue keys) make the set unbounded."""
MATCH_CACHE_PATH = 256
"""Longer paths are matched every time: the cache must stay small whatever clients send."""


@dataclass(frozen=True, slots=True)
class ViewMatch:
    view: View
    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    """Provider slug: the module name and the first path segment with ``-`` → ``_``."""
    views: tuple[View, ...]
    id_source: str
    """How the integration or organization is identified (for ``silo-router providers``)."""
    delivery: str
    """What happens to identified webhooks (for ``silo-router providers``)."""
    prefix: str = ""
    """URL prefix; default ``/extensions/<name with - >/``."""
    unmatched: Decision = field(default_factory=lambda: Reply(404, "no_such_view"))
    """Answer for a path under the prefix that matches no view (Django's Resolver404)."""
    _compiled: tuple[tuple[re.Pattern[str], View], ...] = field(init=False, repr=False, compare=False)
    _by_segment: Mapping[str, tuple[tuple[re.Pattern[str], View], ...]] = field(init=False, repr=False, compare=False)
    """First path segment after the prefix → the views that can match it, in view order."""
    _generic: tuple[tuple[re.Pattern[str], View], ...] = field(init=False, repr=False, compare=False)
    """The views whose pattern does not start with a literal segment, in view order."""
    _matches: dict[str, ViewMatch | None] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not self.prefix:
            object.__setattr__(self, "prefix", f"/extensions/{self.name.replace('_', '-')}/")
        compiled = tuple((re.compile(re.escape(self.prefix) + v.pattern + r"\Z"), v) for v in self.views)
        object.__setattr__(self, "_compiled", compiled)
        # A view whose pattern starts with a literal segment can only match paths with that
        # segment: a request tries those views (and the ones without a literal start, in their
        # order) instead of every view. Same first match as trying them all.
        literal = [(_literal_segment(view.pattern), pair) for view, pair in zip(self.views, compiled, strict=True)]
        by_segment = {
            segment: tuple(pair for first, pair in literal if first in (segment, None))
            for segment in {first for first, _ in literal if first is not None}
        }
        object.__setattr__(self, "_by_segment", by_segment)
        object.__setattr__(self, "_generic", tuple(pair for first, pair in literal if first is None))

    def match(self, path: str) -> ViewMatch | None:
        """The first view whose pattern matches ``path``; remembered per path, as most webhooks of
        a provider arrive on a handful of paths (bounded: cleared when full)."""
        try:
            return self._matches[path]
        except KeyError:
            pass
        found = self._match(path)
        if len(path) <= MATCH_CACHE_PATH:
            if len(self._matches) >= MATCH_CACHE:
                self._matches.clear()
            self._matches[path] = found
        return found

    def _match(self, path: str) -> ViewMatch | None:
        if not path.startswith(self.prefix):
            return None
        segment = path[len(self.prefix) :].partition("/")[0]
        for regex, view in self._by_segment.get(segment, self._generic):
            found = regex.match(path)
            if found:
                return ViewMatch(view, found.groupdict())
        return None

    def path_regex(self, view: View) -> str:
        """The full-path regex of ``view``, for Envoy's ``safe_regex`` route match."""
        return "^" + re.escape(self.prefix) + view.pattern + "$"


_LITERAL_START = re.compile(r"([A-Za-z0-9_-]+)(?:/|\Z)")


def _literal_segment(pattern: str) -> str | None:
    """``"issue"`` for ``r"issue/(?P<key>[^/]+)/"``; None when the first segment is a regex."""
    found = _LITERAL_START.match(pattern)
    return found.group(1) if found else None


# --- the base decision tree (reference §2.4) ------------------------------------------------

MISSING_INTEGRATION = Reply(400, "unknown_integration")
NO_REGIONS = Reply(400, "no_active_organization")

OnFound = Callable[[Integration, Resolution], Decision]


def identify(
    keys: LookupKey | tuple[LookupKey, ...],
    on_found: OnFound,
    ctx: Context,
    *,
    missing: Decision = MISSING_INTEGRATION,
    no_regions: Decision = NO_REGIONS,
) -> Lookup:
    """Look the integration up; unknown → ``missing``, no ACTIVE organization → ``no_regions``."""

    def then(resolution: Resolution) -> Decision:
        integration = resolution.integration
        if integration is None:
            return missing
        if not resolution.regions:
            return no_regions
        unknown = unknown_region(resolution, ctx)
        if unknown is not None:
            return unknown
        return on_found(integration, resolution)

    return Lookup(keys if isinstance(keys, tuple) else (keys,), then)


def unknown_region(resolution: Resolution, ctx: Context) -> Reply | None:
    """A mapping naming a region we do not know is a directory error: 500, as Sentry's
    CellResolutionError (reference §2.3). Routing it to a guess would be a misroute."""
    if all(ctx.knows_region(region) for region in resolution.regions):
        return None
    return Reply(500, "unknown_region")


def store_all(provider: str, integration: Integration, resolution: Resolution, mailbox: Mailbox) -> Store:
    """The async path: one row per region, 202 after the commit."""
    return Store(provider, resolution.regions, mailbox, integration.id, "stored")


def first_region(resolution: Resolution, reason: str = "first_region") -> Forward:
    return Forward(resolution.regions[0], reason)


def control(reason: str) -> Control:
    return Control(reason)
