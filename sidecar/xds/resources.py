"""Region clusters and routes as typed envoy-data-plane (betterproto2) messages.

Off the hot path: these are built once to render the static bootstrap, or once per change of the
``region`` table to serve over ADS (``envoy.mode: xds``). The sidecar's per-request protos use
xds-protos (upb) instead, which is ~400× faster (envoy-notes §5, "In-process codec cost").

Serialisation (checked against betterproto2 0.9.1):

* ``to_dict`` below uses proto-JSON with proto (snake_case) field names, which is what Envoy's
  YAML/JSON loader reads. Durations become ``"0.250s"``, enums their names, wrapper types
  (``UInt32Value``, ``BoolValue``) plain values.
* Scalars equal to their proto3 default (``false``, ``0``, enum value 0 such as ``NONE`` or
  ``DEFAULT``) are omitted, as in any proto-JSON; fields in a oneof or marked ``optional`` are kept.
* ``Any`` is packed to bytes by ``pack`` and unpacked again by ``to_dict`` into
  ``{"@type": url, ...fields}``, so every packed type must be registered in betterproto2's message
  pool. Importing its module registers it; ``TYPE_URLS`` lists exactly the ones we use.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Final

from sidecar.config import Address, Settings

# envoy-data-plane 2.2's generated classes use a pattern pydantic 2.12 deprecated (a classmethod
# model_validator(mode="after")) and warn once per class at import. Nothing for us to act on, but
# under `-W error` (the test settings) the import itself would fail.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"envoy_data_plane\.")
    import betterproto2
    from envoy_data_plane.envoy.config.cluster.v3 import (
        Cluster,
        ClusterDiscoveryType,
        ClusterDnsLookupFamily,
        ClusterLbPolicy,
        OutlierDetection,
    )
    from envoy_data_plane.envoy.config.core.v3 import Address as SocketAddressWrapper
    from envoy_data_plane.envoy.config.core.v3 import (
        HealthCheck,
        HealthCheckGrpcHealthCheck,
        Http2ProtocolOptions,
        SocketAddress,
    )
    from envoy_data_plane.envoy.config.endpoint.v3 import (
        ClusterLoadAssignment,
        Endpoint,
        LbEndpoint,
        LocalityLbEndpoints,
    )
    from envoy_data_plane.envoy.config.listener.v3 import Listener
    from envoy_data_plane.envoy.config.route.v3 import HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch
    from envoy_data_plane.envoy.extensions.access_loggers.stream.v3 import StdoutAccessLog
    from envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 import ExternalProcessor, ExtProcPerRoute
    from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import HttpConnectionManager
    from envoy_data_plane.envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
        HeaderMutation as EarlyHeaderMutation,
    )
    from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
        HttpProtocolOptions,
        HttpProtocolOptionsExplicitHttpConfig,
    )
    from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher
    from envoy_data_plane.google.protobuf import Any as AnyProto

ROUTE_HEADER: Final = "x-silo-route"
"""Set by the sidecar (only): the region a request goes to. DESIGN.md, "Routing header"."""
INTERNAL_HEADER_PREFIX: Final = "x-silo-"
"""Every client-sent header with this prefix is removed before routing (bootstrap.py)."""
REGION_ROUTE_PREFIX: Final = "region:"
CONTROL_CLUSTER: Final = "control"
SIDECAR_CLUSTER: Final = "sidecar"
EXT_PROC_SERVICE: Final = "envoy.service.ext_proc.v3.ExternalProcessor"
"""The gRPC health service name Envoy checks: SERVING only while the sidecar reaches its database."""

UPSTREAM_CONNECT_TIMEOUT: Final = timedelta(seconds=2)
"""Control and regions may be another continent away: a few RTTs for TCP, plus headroom."""
SIDECAR_CONNECT_TIMEOUT: Final = timedelta(milliseconds=250)
"""The sidecar is on loopback (or the same pod): a refused or slow connect is an outage."""
SIDECAR_HEALTH_INTERVAL: Final = timedelta(seconds=5)
"""How often Envoy asks each sidecar process whether it serves ext_proc (NOT_SERVING while its
database is down)."""
TYPE_URLS: Final[Mapping[type[betterproto2.Message], str]] = {
    # xDS resources: served over ADS in xds mode (xds/ads.py); the static bootstrap embeds them.
    Cluster: "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    RouteConfiguration: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    Listener: "type.googleapis.com/envoy.config.listener.v3.Listener",
    # typed_config / typed_per_filter_config / protocol options payloads.
    HttpConnectionManager: (
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    ),
    ExternalProcessor: "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
    ExtProcPerRoute: "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
    Router: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
    EarlyHeaderMutation: (
        "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation"
    ),
    StdoutAccessLog: "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
    HttpProtocolOptions: "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
}
"""Every type URL we emit, in one place (a test checks each against betterproto2's pool)."""

HTTP_PROTOCOL_OPTIONS_KEY: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
"""The ``typed_extension_protocol_options`` key Envoy looks the upstream HTTP options up by."""


def pack(message: betterproto2.Message) -> AnyProto:
    """``message`` as an ``Any``; only the types listed in ``TYPE_URLS``."""
    try:
        url = TYPE_URLS[type(message)]
    except KeyError:
        raise TypeError(f"{type(message).__name__} is not in TYPE_URLS") from None
    return AnyProto(type_url=url, value=bytes(message))


def to_dict(message: betterproto2.Message) -> dict[str, Any]:
    """Proto-JSON with proto field names: the shape Envoy's YAML loader expects."""
    return message.to_dict(casing=betterproto2.Casing.SNAKE)


def region_cluster_name(region: str) -> str:
    return f"region_{region}"


def region_route_name(region: str) -> str:
    """The route's name says which region it serves: the ADS server drops routes by it (``xds/snapshot.py``)."""
    return f"{REGION_ROUTE_PREFIX}{region}"


def region_clusters(settings: Settings) -> list[Cluster]:
    """``control``, ``region_<name>`` per region (sorted by name), and the ``sidecar`` gRPC cluster."""
    control = upstream_cluster(CONTROL_CLUSTER, settings.control)
    return [control, *regional_clusters(settings.regions), sidecar_cluster(settings)]


def regional_clusters(regions: Mapping[str, Address]) -> list[Cluster]:
    """``region_<name>`` per region, sorted by name: in the static bootstrap, or served over CDS."""
    return [upstream_cluster(region_cluster_name(name), regions[name]) for name in sorted(regions)]


def region_routes(settings: Settings) -> list[Route]:
    """One route per region: ``x-silo-route: <name>`` → ``region_<name>``, any path.

    On the ingress listener these are only reachable after the sidecar set the header and cleared
    the route cache: the client's own ``x-silo-*`` headers are removed before the first route pick.
    """
    return [region_route(name, settings) for name in sorted(settings.regions)]


def region_route(name: str, settings: Settings) -> Route:
    return Route(
        name=region_route_name(name),
        match=RouteMatch(
            prefix="/",
            headers=[HeaderMatcher(name=ROUTE_HEADER, string_match=StringMatcher(exact=name))],
        ),
        route=RouteAction(cluster=region_cluster_name(name), timeout=timedelta(seconds=settings.envoy.route_timeout_s)),
    )


def upstream_cluster(name: str, address: Address) -> Cluster:
    return _cluster(name, (address,), UPSTREAM_CONNECT_TIMEOUT)


def sidecar_cluster(settings: Settings) -> Cluster:
    """The ext_proc gRPC cluster: HTTP/2 is mandatory for gRPC, so say so explicitly."""
    # Streams are not capped per connection, so Envoy keeps one connection per worker to each
    # process. A cap of 4 used to make Envoy open more connections for the kernel to spread over
    # processes sharing one port; with an endpoint per process, uncapped was no worse (an A/B: 1–8 %
    # less sidecar CPU per request; a full bench run after it: within noise), split still 50/50.
    http2 = HttpProtocolOptions(
        explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(http2_protocol_options=Http2ProtocolOptions())
    )
    addresses = [_dialable(address) for address in settings.sidecar.grpc_addresses()]
    cluster = _cluster(SIDECAR_CLUSTER, addresses, SIDECAR_CONNECT_TIMEOUT)
    cluster.typed_extension_protocol_options = {HTTP_PROTOCOL_OPTIONS_KEY: pack(http2)}
    # One endpoint per sidecar process: a new stream goes to the process with fewer in flight (of
    # two picked at random), so a process slowed by a burst or a cold cache gets fewer.
    cluster.lb_policy = ClusterLbPolicy.LEAST_REQUEST
    # The sidecar reports NOT_SERVING for the ext_proc service while its database is down. With
    # one endpoint Envoy still sends (panic routing), which is right: cached routes keep working;
    # with several, Envoy prefers the ones that can reach the database.
    # no_traffic_interval as well: Envoy counts no ext_proc stream as cluster traffic, so without
    # it the checks after the first come every 60 s (its default), not every interval.
    cluster.health_checks = [
        HealthCheck(
            timeout=timedelta(seconds=1),
            interval=SIDECAR_HEALTH_INTERVAL,
            no_traffic_interval=SIDECAR_HEALTH_INTERVAL,
            unhealthy_threshold=2,
            healthy_threshold=1,
            grpc_health_check=HealthCheckGrpcHealthCheck(service_name=EXT_PROC_SERVICE),
        )
    ]
    # A process that died refuses connections: eject it on the first refusal rather than after
    # two failed health checks, so only the streams already on their way there fail (503, the
    # provider retries). Refusals and timeouts count apart from answers; of answers, only five
    # gRPC errors in a row (a broken process: the sidecar answers even a database outage with a
    # response) eject, Envoy's default. The next passing health check takes a process back.
    cluster.outlier_detection = OutlierDetection(
        split_external_local_origin_errors=True,
        consecutive_local_origin_failure=1,
        base_ejection_time=timedelta(seconds=10),
        max_ejection_percent=50,
    )
    return cluster


def _dialable(address: Address) -> Address:
    """The sidecar binds every interface in a pod (so the kubelet can probe it); Envoy, beside it,
    dials loopback."""
    host = _host(address)
    if host in ("0.0.0.0", "::"):
        return Address("127.0.0.1" if host == "0.0.0.0" else "::1", address.port)
    return address


def socket_address(address: Address) -> SocketAddressWrapper:
    return SocketAddressWrapper(socket_address=SocketAddress(address=_host(address), port_value=address.port))


def _host(address: Address) -> str:
    return address.host.removeprefix("[").removesuffix("]")  # "[::1]:80" parses to host "[::1]"


def _cluster(name: str, addresses: Sequence[Address], connect_timeout: timedelta) -> Cluster:
    endpoints = [LbEndpoint(endpoint=Endpoint(address=socket_address(address))) for address in addresses]
    cluster = Cluster(
        name=name,
        connect_timeout=connect_timeout,
        load_assignment=ClusterLoadAssignment(
            cluster_name=name, endpoints=[LocalityLbEndpoints(lb_endpoints=endpoints)]
        ),
    )
    if all(_is_ip(_host(address)) for address in addresses):
        cluster.type = ClusterDiscoveryType.STATIC
    else:
        # STATIC takes IP literals only (Envoy rejects a hostname as a malformed IP address).
        # LOGICAL_DNS is Envoy's recommendation for one name fronting a large service (a region's
        # load balancer): one connection pool, re-resolved for new connections. It takes a single
        # endpoint; several (sidecar processes on one named host) need STRICT_DNS. IPv4 first
        # because "localhost" resolves to ::1 first while local services often bind 127.0.0.1.
        cluster.type = ClusterDiscoveryType.LOGICAL_DNS if len(addresses) == 1 else ClusterDiscoveryType.STRICT_DNS
        cluster.dns_lookup_family = ClusterDnsLookupFamily.V4_PREFERRED
    return cluster


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
