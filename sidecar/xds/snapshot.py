"""A snapshot: the ``region`` table as the resources Envoy gets over ADS.

* CDS: one ``region_<name>`` cluster per region (``resources.regional_clusters``).
* RDS: the ``webhooks`` and ``egress`` route configurations (``bootstrap.webhooks_route_config`` /
  ``egress_route_config``, the very functions the static bootstrap inlines), with every region's
  header-match route.

betterproto2 needs ~0.1 s to serialise a route configuration, so ``SnapshotBuilder`` renders what
does not depend on the regions once, and a snapshot (one per change of the table, built off the
event loop) is kept as upb ``Any`` messages. Streams then only pick clusters and drop region routes
from a parsed copy (``route_config``), which costs microseconds.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from envoy.config.route.v3 import route_components_pb2, route_pb2
from google.protobuf import any_pb2

from sidecar.config import Address, Settings
from sidecar.core.providers import PROVIDERS, ProviderSpec
from sidecar.directory.loader import RegionRow
from sidecar.errors import ConfigError
from sidecar.xds.bootstrap import EGRESS_LISTENER, WEBHOOKS_LISTENER, egress_route_config, webhooks_route_config
from sidecar.xds.resources import REGION_ROUTE_PREFIX, TYPE_URLS, region_route, regional_clusters

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"envoy_data_plane\.")
    from envoy_data_plane.envoy.config.cluster.v3 import Cluster
    from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration

log = logging.getLogger(__name__)

CLUSTER_TYPE: Final = TYPE_URLS[Cluster]
ROUTE_TYPE: Final = TYPE_URLS[RouteConfiguration]


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    """Counts the changes of the region set this process has seen (1 = the first load)."""
    regions: Mapping[str, Address]
    clusters: Mapping[str, any_pb2.Any]
    """By region name."""
    route_configs: Mapping[str, bytes]
    """By route configuration name, with a route for every region."""

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.regions)

    def route_config(self, name: str, regions: frozenset[str]) -> any_pb2.Any | None:
        """Route configuration ``name`` with region routes for ``regions`` only (None: no such name)."""
        full = self.route_configs.get(name)
        if full is None:
            return None
        if regions >= self.names:
            return any_pb2.Any(type_url=ROUTE_TYPE, value=full)
        config = route_pb2.RouteConfiguration.FromString(full)
        for vhost in config.virtual_hosts:
            kept = [route for route in vhost.routes if _serves(route.name, regions)]
            del vhost.routes[:]
            vhost.routes.extend(kept)
        return any_pb2.Any(type_url=ROUTE_TYPE, value=config.SerializeToString(deterministic=True))


class SnapshotBuilder:
    """Renders the snapshots of one settings file, fast enough for the push path.

    A full render costs ~0.2 s of betterproto2 (more on a busy box), nearly all of it the routes
    that never change with the regions. So those are rendered once, with no region, and each
    snapshot splices its region routes in front of them, which is where ``webhook_routes`` and
    ``egress_route_config`` put them: the same bytes as a full render (a test checks), in
    milliseconds. Clusters and region routes are cached per region too.
    """

    def __init__(self, settings: Settings, providers: Mapping[str, ProviderSpec] = PROVIDERS) -> None:
        self._settings = replace(settings, regions={})
        self._providers = providers
        self._templates: dict[str, bytes] | None = None
        self._clusters: dict[tuple[str, Address], any_pb2.Any] = {}
        self._routes: dict[str, route_components_pb2.Route] = {}

    def build(self, version: int, regions: Mapping[str, Address]) -> Snapshot:
        """Blocking (betterproto2 for what is not cached yet): call it through ``asyncio.to_thread``."""
        clusters = {name: self._cluster(name, address) for name, address in sorted(regions.items())}
        routes = [self._route(name) for name in sorted(regions)]
        configs = {name: _splice(template, routes) for name, template in self._template().items()}
        return Snapshot(version, dict(regions), clusters, configs)

    def _template(self) -> dict[str, bytes]:
        if self._templates is None:
            self._templates = {
                WEBHOOKS_LISTENER: _canonical(webhooks_route_config(self._settings, self._providers)),
                EGRESS_LISTENER: _canonical(egress_route_config(self._settings)),
            }
        return self._templates

    def _cluster(self, name: str, address: Address) -> any_pb2.Any:
        key = (name, address)
        if key not in self._clusters:
            (cluster,) = regional_clusters({name: address})
            self._clusters[key] = any_pb2.Any(type_url=CLUSTER_TYPE, value=bytes(cluster))
        return self._clusters[key]

    def _route(self, name: str) -> route_components_pb2.Route:
        if name not in self._routes:
            self._routes[name] = route_components_pb2.Route.FromString(bytes(region_route(name, self._settings)))
        return self._routes[name]


def build_snapshot(
    settings: Settings, version: int, regions: Mapping[str, Address], providers: Mapping[str, ProviderSpec] = PROVIDERS
) -> Snapshot:
    """One snapshot, without the builder's caches."""
    return SnapshotBuilder(settings, providers).build(version, regions)


def usable_regions(rows: Iterable[RegionRow]) -> tuple[dict[str, Address], dict[str, str]]:
    """The rows Envoy can be given a cluster for, and the others with the reason.

    A row without an address is a region this edge does not route to (the table may hold every
    region of the platform). A row whose address is not ``host:port`` cannot become a cluster;
    skipping it keeps the other regions updatable. Anything subtler (a port above 65535) is left
    to Envoy, the validator of record: it rejects the update and keeps the last good one.
    """
    usable: dict[str, Address] = {}
    skipped: dict[str, str] = {}
    for row in rows:
        if row.address is None:
            skipped[row.name] = "no address"
            continue
        try:
            usable[row.name] = Address.parse(row.address, f"region {row.name}")
        except ConfigError as exc:
            skipped[row.name] = str(exc)
    return usable, skipped


def _splice(template: bytes, routes: list[route_components_pb2.Route]) -> bytes:
    config = route_pb2.RouteConfiguration.FromString(template)
    for vhost in config.virtual_hosts:
        rest = list(vhost.routes)
        del vhost.routes[:]
        vhost.routes.extend([*routes, *rest])
    encoded: bytes = config.SerializeToString(deterministic=True)
    return encoded


def _canonical(config: RouteConfiguration) -> bytes:
    """upb's deterministic encoding, the one ``route_config`` produces for a subset: the same routes
    give the same bytes, so a stream sees that nothing changed (betterproto2 encodes differently)."""
    encoded: bytes = route_pb2.RouteConfiguration.FromString(bytes(config)).SerializeToString(deterministic=True)
    return encoded


def _serves(route_name: str, regions: frozenset[str]) -> bool:
    """Keep every non-region route, and the region routes of ``regions``."""
    region = route_name.removeprefix(REGION_ROUTE_PREFIX)
    return region == route_name or region in regions
