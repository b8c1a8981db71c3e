"""``envoy.mode: xds``: the rendered bootstrap, and the resources the sidecar serves over ADS, are
what Envoy 1.40 accepts, and the served routes are the static render's, region for region."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy_data_plane.envoy.config.cluster.v3 import Cluster
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration

from sidecar import config
from sidecar.config import Address, Settings
from sidecar.directory.loader import RegionRow
from sidecar.errors import ConfigError
from sidecar.xds.bootstrap import egress_route_config, render_bootstrap, render_yaml, webhooks_route_config
from sidecar.xds.envoy_binary import validate
from sidecar.xds.resources import to_dict
from sidecar.xds.snapshot import SnapshotBuilder, _canonical, usable_regions

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS: dict[str, dict[str, Any]] = {
    "no-regions-defaults": {},
    "regions-fail-open-16k": {
        "regions": {"de": "127.0.0.1:9002", "us-2": "[::1]:9003"},
        "envoy": {"failure_mode_allow": True, "body_limit_bytes": 16_384},
    },
    "hostnames": {
        "control": "control.internal:443",
        "regions": {"us": "us.example.com:8443"},
        "sidecar": {"grpc": "localhost:50051"},
    },
}


def xds_settings(raw: dict[str, Any]) -> Settings:
    return config.from_mapping({**raw, "envoy": {**raw.get("envoy", {}), "mode": "xds"}}, {}, ROOT)


@functools.cache
def rendered(name: str) -> tuple[str, dict[str, Any]]:
    text = render_yaml(xds_settings(SCENARIOS[name]))
    return text, yaml.safe_load(text)


def hcm(tree: dict[str, Any], listener: str) -> dict[str, Any]:
    (found,) = (item for item in tree["static_resources"]["listeners"] if item["name"] == listener)
    typed: dict[str, Any] = found["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_envoy_validates_the_xds_render(name: str) -> None:
    validate(rendered(name)[0])


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_regions_are_left_to_ads_and_everything_else_stays_static(name: str) -> None:
    tree = rendered(name)[1]
    assert {c["name"] for c in tree["static_resources"]["clusters"]} == {"control", "sidecar"}
    ads = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
    for listener in ("webhooks", "egress"):
        assert "route_config" not in hcm(tree, listener)
        assert hcm(tree, listener)["rds"] == {"config_source": ads, "route_config_name": listener}
    assert tree["dynamic_resources"] == {
        "cds_config": ads,
        "ads_config": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "sidecar"}}],
            "set_node_on_first_message_only": True,
        },
    }
    assert tree["node"] == {"id": "silo-router-edge", "cluster": "silo-router"}
    # The rest of the listener is the static one: same filters, same early header stripping.
    static = render_bootstrap(config.from_mapping(SCENARIOS[name], {}, ROOT))
    for key in ("http_filters", "early_header_mutation_extensions"):
        assert hcm(tree, "webhooks").get(key) == hcm(static, "webhooks").get(key)


def test_the_default_mode_is_static_and_unknown_modes_are_refused() -> None:
    assert config.from_mapping({}, {}, ROOT).envoy.mode == "static"
    with pytest.raises(ConfigError, match=r"envoy\.mode"):
        config.from_mapping({"envoy": {"mode": "dynamic"}}, {}, ROOT)


# -- what the sidecar serves ----------------------------------------------------------------------

REGIONS = {"de": Address("127.0.0.1", 9002), "eu": Address("eu.example.com", 443), "us": Address("::1", 9001)}


@functools.cache
def builder() -> SnapshotBuilder:
    return SnapshotBuilder(xds_settings({}))


def test_a_snapshot_serves_the_static_render_byte_for_byte() -> None:
    settings = replace(xds_settings({}), regions=REGIONS)
    snap = builder().build(3, REGIONS)
    assert snap.route_configs["webhooks"] == _canonical(webhooks_route_config(settings))
    assert snap.route_configs["egress"] == _canonical(egress_route_config(settings))
    assert snap.names == {"de", "eu", "us"}
    assert [Cluster.parse(snap.clusters[name].value).name for name in sorted(snap.clusters)] == [
        "region_de",
        "region_eu",
        "region_us",
    ]


@pytest.mark.parametrize("subset", [frozenset({"de", "eu", "us"}), frozenset({"us"})])
def test_envoy_accepts_what_the_sidecar_serves(subset: frozenset[str], tmp_path: Path) -> None:
    """The xds bootstrap with the served resources put in place of ADS passes ``envoy --mode validate``
    (for a subset too: the routes a stream sends while a region's cluster is not yet ACKed)."""
    snap = builder().build(3, REGIONS)
    tree = render_bootstrap(xds_settings({}))
    del tree["dynamic_resources"]
    for listener in ("webhooks", "egress"):
        served = snap.route_config(listener, subset)
        assert served is not None
        config_ = hcm(tree, listener)
        del config_["rds"]
        config_["route_config"] = to_dict(RouteConfiguration.parse(served.value))
    tree["static_resources"]["clusters"] += [to_dict(Cluster.parse(any_.value)) for any_ in snap.clusters.values()]
    validate(yaml.safe_dump(tree))
    routes = tree["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = {r["name"] for r in routes["route_config"]["virtual_hosts"][0]["routes"]}
    assert {n.removeprefix("region:") for n in names if n.startswith("region:")} == subset


def test_rows_without_a_usable_address_are_not_served() -> None:
    rows = [RegionRow("us", "127.0.0.1:9001"), RegionRow("later", None), RegionRow("typo", "10.0.0.1")]
    usable, skipped = usable_regions(rows)
    assert usable == {"us": Address("127.0.0.1", 9001)}
    assert skipped["later"] == "no address" and "host:port" in skipped["typo"]
