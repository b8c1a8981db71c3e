"""The rendered Envoy bootstrap: Envoy 1.40 accepts it, and its routes keep the promises made in
``sidecar/xds/bootstrap.py`` and ``envoy/README.md``.

Rendering costs ~0.7 s (betterproto2 validates every message), so each settings scenario is
rendered once and the assertions read the YAML text Envoy would load.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy_data_plane.message_pool import default_message_pool
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar import config
from sidecar.config import Settings
from sidecar.core import Context, Control, Request, plan
from sidecar.core.providers import PROVIDERS, ProviderSpec
from sidecar.core.providers._spec import View
from sidecar.errors import ConfigError
from sidecar.xds.bootstrap import ENVOY_VERSION, render_bootstrap, render_yaml
from sidecar.xds.envoy_binary import EnvoyConfigInvalid, envoy_binary, validate
from sidecar.xds.resources import INTERNAL_HEADER_PREFIX, ROUTE_HEADER, TYPE_URLS

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = Path("examples/silo-router.yaml")
DEMO = ROOT / "envoy" / "demo.yaml"
EXT_PROC = "envoy.filters.http.ext_proc"
URL_OF = {cls.__name__: url for cls, url in TYPE_URLS.items()}

REGIONS = {
    0: {},
    1: {"eu": "10.0.0.1:80"},
    3: {"de": "127.0.0.1:9002", "us": "127.0.0.1:9001", "us-2": "[::1]:9003"},
}
SCENARIOS: dict[str, tuple[int, dict[str, Any]]] = {
    "0-regions-defaults": (0, {}),
    "1-region-fail-open-16k-500": (1, {"failure_mode_allow": True, "body_limit_bytes": 16_384, "status_on_error": 500}),
    "3-regions-8m-250ms": (3, {"body_limit_bytes": 8 << 20, "message_timeout_ms": 250}),
}


def make_settings(regions: int, envoy: Mapping[str, Any]) -> Settings:
    raw = {
        "listen": "0.0.0.0:8080",
        "control": {"address": "127.0.0.1:9000"},
        "regions": {name: {"address": address} for name, address in REGIONS[regions].items()},
        "envoy": dict(envoy),
    }
    return config.from_mapping(raw, {}, ROOT)


@functools.cache
def scenario(name: str) -> tuple[Settings, str, dict[str, Any]]:
    settings_ = make_settings(*SCENARIOS[name])
    text = render_yaml(settings_)
    return settings_, text, yaml.safe_load(text)


@functools.cache
def demo() -> tuple[Settings, str, dict[str, Any]]:
    """The demo settings, loaded the way the documented command does (path relative to the repo)."""
    with contextlib.chdir(ROOT):
        settings_ = config.load(DEMO_CONFIG, environ={})
        text = render_yaml(settings_)
    return settings_, text, yaml.safe_load(text)


def all_scenarios() -> list[Any]:
    return [pytest.param(name, id=name) for name in SCENARIOS]


# --- reading the rendered tree ------------------------------------------------------------------


def listener(tree: Mapping[str, Any], name: str) -> dict[str, Any]:
    (found,) = (item for item in tree["static_resources"]["listeners"] if item["name"] == name)
    return found


def hcm(tree: Mapping[str, Any], name: str) -> dict[str, Any]:
    (chain,) = listener(tree, name)["filter_chains"]
    (network_filter,) = chain["filters"]
    assert network_filter["name"] == "envoy.filters.network.http_connection_manager"
    found: dict[str, Any] = network_filter["typed_config"]
    return found


def routes(tree: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    (vhost,) = hcm(tree, name)["route_config"]["virtual_hosts"]
    found: list[dict[str, Any]] = vhost["routes"]
    return found


def ext_proc(tree: Mapping[str, Any]) -> dict[str, Any]:
    filters = hcm(tree, "webhooks")["http_filters"]
    assert [f["name"] for f in filters] == [EXT_PROC, "envoy.filters.http.router"]
    found: dict[str, Any] = filters[0]["typed_config"]
    return found


def clusters(tree: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in tree["static_resources"]["clusters"]}


def per_route(route: Mapping[str, Any]) -> dict[str, Any] | None:
    found: dict[str, Any] | None = route.get("typed_per_filter_config", {}).get(EXT_PROC)
    return found


def is_buffered(route: Mapping[str, Any]) -> bool:
    override = per_route(route) or {}
    return override.get("overrides", {}).get("processing_mode", {}).get("request_body_mode") == "BUFFERED"


def first_route(route_list: list[dict[str, Any]], path: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """Envoy's route pick for the match kinds we render (``path`` without its query string)."""
    for route in route_list:
        match = route["match"]
        if "prefix" in match and not path.startswith(match["prefix"]):
            continue
        if "safe_regex" in match and not re.fullmatch(match["safe_regex"]["regex"], path):
            continue
        if any(headers.get(h["name"]) != h["string_match"]["exact"] for h in match.get("headers", [])):
            continue
        return route
    raise AssertionError(f"no route for {path}")


def body_views() -> Iterator[tuple[ProviderSpec, View]]:
    for spec in PROVIDERS.values():
        for view in spec.views:
            if view.needs_body:
                yield spec, view


# --- Envoy accepts it ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", all_scenarios())
def test_envoy_validates_the_render(name: str) -> None:
    validate(scenario(name)[1])


def test_envoy_validates_hostname_upstreams() -> None:
    raw = {
        "control": "control.internal:443",
        "regions": {"us": "us.example.com:8443"},
        "sidecar": {"grpc": "localhost:50051"},
    }
    text = render_yaml(config.from_mapping(raw, {}, ROOT))
    kinds = {name: (c["type"], c.get("dns_lookup_family")) for name, c in clusters(yaml.safe_load(text)).items()}
    assert kinds == {
        "control": ("LOGICAL_DNS", "V4_PREFERRED"),
        "region_us": ("LOGICAL_DNS", "V4_PREFERRED"),
        "sidecar": ("LOGICAL_DNS", "V4_PREFERRED"),
    }
    validate(text)


def test_sidecar_processes_are_endpoints_envoy_balances_and_ejects() -> None:
    raw = {"control": "127.0.0.1:9000", "sidecar": {"grpc": "0.0.0.0:50051", "processes": 3}}
    text = render_yaml(config.from_mapping(raw, {}, ROOT))
    sidecar = clusters(yaml.safe_load(text))["sidecar"]
    (locality,) = sidecar["load_assignment"]["endpoints"]
    dialled = [e["endpoint"]["address"]["socket_address"] for e in locality["lb_endpoints"]]
    assert dialled == [{"address": "127.0.0.1", "port_value": 50051 + k} for k in range(3)]
    assert (sidecar["type"], sidecar["lb_policy"]) == ("STATIC", "LEAST_REQUEST")
    (check,) = sidecar["health_checks"]
    assert check["no_traffic_interval"] == check["interval"] == "5s"  # not Envoy's 60 s
    assert sidecar["outlier_detection"]["consecutive_local_origin_failure"] == 1
    assert sidecar["outlier_detection"]["split_external_local_origin_errors"] is True
    validate(text)


def test_sidecar_processes_on_a_named_host_resolve_each_endpoint() -> None:
    raw = {"control": "127.0.0.1:9000", "sidecar": {"grpc": "localhost:50051", "processes": 2}}
    sidecar = clusters(yaml.safe_load(render_yaml(config.from_mapping(raw, {}, ROOT))))["sidecar"]
    assert sidecar["type"] == "STRICT_DNS"  # LOGICAL_DNS takes one endpoint only
    assert len(sidecar["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 2


def test_validate_reports_envoys_own_message(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(demo()[1].replace("cluster: region_de", "cluster: region_xx", 1))
    with pytest.raises(EnvoyConfigInvalid, match="unknown cluster 'region_xx'"):
        validate(path)


def test_envoy_binary_is_found() -> None:
    assert Path(envoy_binary()).name == "envoy"


def test_demo_yaml_is_a_fresh_render() -> None:
    fresh = demo()[1]
    assert DEMO.read_text() == fresh, (
        "envoy/demo.yaml is stale; regenerate it from the repository root with\n"
        "  silo-router envoy render --config examples/silo-router.yaml -o envoy/demo.yaml"
    )
    assert fresh.startswith(f"# Envoy {ENVOY_VERSION} bootstrap") and f"--config {DEMO_CONFIG}`" in fresh
    validate(DEMO)  # the file itself, through the path branch


# --- structure ----------------------------------------------------------------------------------


def test_early_mutation_strips_every_client_x_silo_header() -> None:
    tree = demo()[2]
    (extension,) = hcm(tree, "webhooks")["early_header_mutation_extensions"]
    assert extension["name"] == "envoy.http.early_header_mutation.header_mutation"
    assert extension["typed_config"]["mutations"] == [{"remove_on_match": {"key_matcher": {"prefix": "x-silo-"}}}]
    assert INTERNAL_HEADER_PREFIX == "x-silo-" and ROUTE_HEADER.startswith(INTERNAL_HEADER_PREFIX)
    # The egress listener serves the delivery worker: there the header is ours and must survive.
    assert "early_header_mutation_extensions" not in hcm(tree, "egress")


@pytest.mark.parametrize("name", all_scenarios())
def test_region_routes_come_first_then_body_then_prefixes(name: str) -> None:
    settings_, _, tree = scenario(name)
    route_list = routes(tree, "webhooks")
    names = sorted(settings_.regions)
    head, rest = route_list[: len(names)], route_list[len(names) :]
    for region, route in zip(names, head, strict=True):
        assert route["match"] == {"prefix": "/", "headers": [{"name": ROUTE_HEADER, "string_match": {"exact": region}}]}
        assert route["route"]["cluster"] == f"region_{region}"
        assert per_route(route) is None
    assert all("headers" not in route["match"] for route in rest)
    body = [route for route in rest if route["name"].startswith("body:")]
    control_only = [route for route in rest if route["name"].startswith("control:")]
    tail = rest[len(body) + len(control_only) :]
    assert rest[: len(body)] == body and rest[len(body) : len(body) + len(control_only)] == control_only
    assert body and all(is_buffered(route) for route in body)
    assert control_only and all(per_route(route) == DISABLED for route in control_only)
    assert [(route["name"], route["match"]) for route in tail] == [
        ("headers:extensions", {"prefix": "/extensions/"}),
        ("headers:plugins", {"prefix": "/plugins/"}),
        ("control", {"prefix": "/"}),
    ]
    assert set(clusters(tree)) == {"control", "sidecar", *(f"region_{region}" for region in names)}
    assert {route["route"]["timeout"] for route in route_list} == {"15s"}


def test_catch_all_bypasses_the_sidecar_and_prefixes_use_the_filter_default() -> None:
    *_, extensions, plugins, catch_all = routes(demo()[2], "webhooks")
    assert per_route(catch_all) == {"@type": URL_OF["ExtProcPerRoute"], "disabled": True}
    assert per_route(extensions) is None and per_route(plugins) is None
    assert {route["route"]["cluster"] for route in (extensions, plugins, catch_all)} == {"control"}


@pytest.mark.parametrize("name", all_scenarios())
def test_every_body_view_has_a_buffered_route_with_the_body_limit(name: str) -> None:
    settings_, _, tree = scenario(name)
    buffered = {r["match"]["safe_regex"]["regex"]: r for r in routes(tree, "webhooks") if is_buffered(r)}
    assert len(buffered) == len(list(body_views())) > 0
    for spec, view in body_views():
        route = buffered[spec.path_regex(view)]
        assert route["route"]["cluster"] == "control"
        assert route["request_body_buffer_limit"] == settings_.envoy.body_limit_bytes
        mode = (per_route(route) or {})["overrides"]["processing_mode"]
        assert (mode["request_header_mode"], mode["request_body_mode"], mode["response_header_mode"]) == (
            "SEND",
            "BUFFERED",
            "SKIP",
        )


PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@%/"
"""What a request path may contain (RFC 3986 pchar and "/"; a "?" would start the query)."""


@pytest.mark.parametrize(("spec", "view"), [pytest.param(s, v, id=f"{s.name}/{v.name}") for s, v in body_views()])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_envoy_buffers_where_the_parser_needs_the_body(spec: ProviderSpec, view: View, data: Any) -> None:
    """For sample paths of a body view, the Python view table and Envoy's route pick agree."""
    path = data.draw(st.from_regex(spec.path_regex(view), fullmatch=True, alphabet=PATH_CHARS))
    matched = spec.match(path)
    assert matched is not None and matched.view.needs_body, f"{path}: the sidecar would not wait for the body"
    route = first_route(routes(demo()[2], "webhooks"), path, {})
    assert is_buffered(route), f"{path}: Envoy picks {route['name']}, which does not send the body"
    assert route["match"]["safe_regex"]["regex"] == spec.path_regex(matched.view)


DISABLED = {"@type": URL_OF["ExtProcPerRoute"], "disabled": True}


def control_routes() -> list[dict[str, Any]]:
    return [route for route in routes(demo()[2], "webhooks") if route["name"].startswith("control:")]


def test_control_only_paths_bypass_the_sidecar() -> None:
    """Setup/link paths and control-only views of known providers: Envoy sends them to control alone."""
    names = {route["name"] for route in control_routes()}
    assert "control:setup_or_link" in names and "control:github/installation" in names
    route_list = routes(demo()[2], "webhooks")
    for path in ("/extensions/github/installation/5/", "/extensions/github/setup/", "/extensions/nope/x/link/"):
        route = first_route(route_list, path, {})
        assert route["name"].startswith("control:") and per_route(route) == DISABLED
        assert route["route"]["cluster"] == "control"
    # Header-decided views keep the sidecar; a control-only view after one is left to it.
    for path in ("/extensions/jira/issue/ABC-1/", "/extensions/jira/issue-details/ABC-1/", "/extensions/nope/x/"):
        assert first_route(route_list, path, {})["name"] == "headers:extensions"


@pytest.mark.parametrize("route", [pytest.param(r, id=r["name"]) for r in control_routes()])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_envoy_bypasses_only_where_the_sidecar_decides_control(route: dict[str, Any], data: Any) -> None:
    """Paths Envoy sends to control without the sidecar are paths the sidecar passes to control."""
    path = data.draw(st.from_regex(route["match"]["safe_regex"]["regex"], fullmatch=True, alphabet=PATH_CHARS))
    picked = first_route(routes(demo()[2], "webhooks"), path, {})
    if picked["name"].startswith("control:"):
        assert isinstance(plan(Request("GET", path), Context()), Control), f"{path}: the sidecar would decide"


@pytest.mark.parametrize(
    ("name", "connection", "window"),
    [
        ("0-regions-defaults", 32_768, 1 << 20),
        ("1-region-fail-open-16k-500", 16_384, 65_535),
        ("3-regions-8m-250ms", 32_768, 8 << 20),
    ],
)
def test_body_limit_sets_the_connection_buffer_and_h2_window(name: str, connection: int, window: int) -> None:
    tree = scenario(name)[2]
    assert listener(tree, "webhooks")["per_connection_buffer_limit_bytes"] == connection
    h2 = hcm(tree, "webhooks")["http2_protocol_options"]
    assert (h2["initial_stream_window_size"], h2["max_concurrent_streams"]) == (window, 100)


@pytest.mark.parametrize(
    ("name", "status", "fail_open", "message_timeout"),
    [
        ("0-regions-defaults", "ServiceUnavailable", False, "2s"),
        ("1-region-fail-open-16k-500", "InternalServerError", True, "2s"),
        ("3-regions-8m-250ms", "ServiceUnavailable", False, "0.250s"),
    ],
)
def test_ext_proc_filter_follows_settings(name: str, status: str, fail_open: bool, message_timeout: str) -> None:
    tree = scenario(name)[2]
    processor = ext_proc(tree)
    assert processor["status_on_error"] == {"code": status}
    assert processor["failure_mode_allow"] is fail_open  # spelled out even when false
    assert processor["allow_mode_override"] is False
    assert processor["message_timeout"] == message_timeout
    assert processor["processing_mode"] == {
        "request_header_mode": "SEND",
        "response_header_mode": "SKIP",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
        "request_body_mode": "NONE",
        "response_body_mode": "NONE",
    }
    # envoy --mode validate accepted a misspelt gRPC cluster name, so check it here.
    sidecar = clusters(tree)[processor["grpc_service"]["envoy_grpc"]["cluster_name"]]
    options = sidecar["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    # HTTP/2 explicitly (gRPC), streams uncapped: one connection per Envoy worker per process.
    assert options["explicit_http_config"] == {"http2_protocol_options": {}}


def test_unknown_status_on_error_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="status_on_error"):
        render_bootstrap(make_settings(0, {"status_on_error": 599}))


@pytest.mark.parametrize("name", all_scenarios())
def test_egress_routes_by_header_else_404_without_ext_proc(name: str) -> None:
    settings_, _, tree = scenario(name)
    egress = hcm(tree, "egress")
    assert [f["name"] for f in egress["http_filters"]] == ["envoy.filters.http.router"]
    *by_region, fallback = routes(tree, "egress")
    assert by_region == routes(tree, "webhooks")[: len(settings_.regions)]
    assert fallback["direct_response"] == {"status": 404, "body": {"inline_string": "unknown region"}}
    assert first_route(routes(tree, "egress"), "/x", {ROUTE_HEADER: "mars"}) is fallback
    assert listener(tree, "egress")["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": 8081}}


def test_access_log_is_json_on_stdout_with_the_routing_fields() -> None:
    for name in ("webhooks", "egress"):
        (log,) = hcm(demo()[2], name)["access_log"]
        assert log["name"] == "envoy.access_loggers.stdout"
        fields = log["typed_config"]["log_format"]["json_format"]
        assert fields["silo_route"] == "%REQ(x-silo-route)%" and fields["listener"] == name
        assert {"start_time", "method", "path", "status", "response_flags", "response_code_details"} <= set(fields)
        assert {"upstream_cluster", "request_id", "duration_ms"} <= set(fields)


def test_type_urls_agree_with_betterproto() -> None:
    assert {cls: default_message_pool.type_to_url[cls] for cls in TYPE_URLS} == dict(TYPE_URLS)
