"""The ADS state machine (``sidecar/xds/stream.py``) driven by constructed DiscoveryRequests: one
test per numbered rule, plus versioning and the control plane's view of what the core may route."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2 as ds
from google.rpc import status_pb2

from sidecar import config, metrics
from sidecar.config import Address
from sidecar.xds.ads import SETTLE_S, ControlPlane
from sidecar.xds.snapshot import CLUSTER_TYPE, ROUTE_TYPE, Snapshot, build_snapshot
from sidecar.xds.stream import AdsStream

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = config.from_mapping({"control": "127.0.0.1:9000"}, {}, ROOT)
PORTS = {"de": 9002, "us": 9001, "eu": 9003, "bad": 70000}


@functools.cache
def snapshot(version: int, *names: str) -> Snapshot:
    """Rendering costs ~0.2 s: each region set is rendered once per session."""
    return build_snapshot(SETTINGS, version, {name: Address("127.0.0.1", PORTS[name]) for name in names})


def request(type_url: str, nonce: str = "", names: Iterable[str] = (), error: str | None = None) -> ds.DiscoveryRequest:
    message = ds.DiscoveryRequest(type_url=type_url, response_nonce=nonce, resource_names=list(names))
    if error is not None:
        message.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return message


def clusters(response: ds.DiscoveryResponse) -> set[str]:
    assert response.type_url == CLUSTER_TYPE
    return {cluster_pb2.Cluster.FromString(any_.value).name for any_ in response.resources}


def routed(response: ds.DiscoveryResponse) -> dict[str, set[str]]:
    """Route configuration name → the regions it has a route for."""
    assert response.type_url == ROUTE_TYPE
    found = {}
    for any_ in response.resources:
        config_ = route_pb2.RouteConfiguration.FromString(any_.value)
        names = {route.name for vhost in config_.virtual_hosts for route in vhost.routes}
        found[config_.name] = {name.removeprefix("region:") for name in names if name.startswith("region:")}
    return found


def only(responses: list[ds.DiscoveryResponse]) -> ds.DiscoveryResponse:
    (response,) = responses
    return response


def ack(stream: AdsStream, response: ds.DiscoveryResponse) -> None:
    assert stream.receive(request(response.type_url, response.nonce)).outcome == "ack"


def converged(snap: Snapshot) -> AdsStream:
    """A stream that subscribed to both types and ACKed everything of ``snap``."""
    stream = AdsStream()
    stream.receive(request(CLUSTER_TYPE))
    stream.receive(request(ROUTE_TYPE))
    while responses := stream.responses(snap):
        for response in responses:
            ack(stream, response)
    return stream


def test_clusters_first_and_routes_only_after_their_ack() -> None:
    snap = snapshot(1, "de", "us")
    stream = AdsStream()
    assert stream.receive(request(CLUSTER_TYPE)).outcome == "subscribed"
    assert stream.receive(request(ROUTE_TYPE, names=["webhooks", "egress"])).outcome == "subscribed"
    cds = only(stream.responses(snap))  # rule 4: no routes before this Envoy confirmed the clusters
    assert (cds.version_info, clusters(cds)) == ("1", {"region_de", "region_us"})
    assert stream.responses(snap) == []  # rule 1: one in flight
    ack(stream, cds)
    rds = only(stream.responses(snap))
    assert rds.version_info == "1" and rds.nonce != cds.nonce
    assert routed(rds) == {"webhooks": {"de", "us"}, "egress": {"de", "us"}}
    assert stream.routed is None
    ack(stream, rds)
    assert stream.routed == {"de", "us"}
    assert stream.responses(snap) == []


def test_a_new_region_gets_its_cluster_acked_before_its_route() -> None:
    stream = converged(snapshot(1, "de", "us"))
    bigger = snapshot(2, "de", "eu", "us")
    cds = only(stream.responses(bigger))
    assert (cds.version_info, clusters(cds)) == ("2", {"region_de", "region_eu", "region_us"})
    ack(stream, cds)
    rds = only(stream.responses(bigger))
    assert (rds.version_info, routed(rds)["webhooks"]) == ("2", {"de", "eu", "us"})


def test_a_removed_region_loses_its_route_before_its_cluster() -> None:
    stream = converged(snapshot(2, "de", "eu", "us"))
    smaller = snapshot(3, "de", "us")
    rds = only(stream.responses(smaller))  # the cluster stays while a route may still use it
    assert (rds.version_info, routed(rds)["webhooks"]) == ("3", {"de", "us"})
    ack(stream, rds)
    cds = only(stream.responses(smaller))
    assert (cds.version_info, clusters(cds)) == ("3", {"region_de", "region_us"})


def test_a_staged_response_has_a_version_of_its_own() -> None:
    stream = converged(snapshot(1, "de", "us"))
    swapped = snapshot(4, "de", "eu")  # us removed and eu added in one change
    cds, rds = stream.responses(swapped)  # adding eu's cluster and dropping us's route need no wait
    assert clusters(cds) == {"region_de", "region_eu", "region_us"}  # us kept: still routed
    assert routed(rds)["webhooks"] == {"de"}  # eu: its cluster is not ACKed yet
    for staged in (cds, rds):
        assert staged.version_info.startswith("4.") and len(staged.version_info) == len("4.") + 8
    assert cds.version_info != rds.version_info
    ack(stream, cds)
    ack(stream, rds)
    cds, rds = stream.responses(swapped)
    assert (cds.version_info, clusters(cds)) == ("4", {"region_de", "region_eu"})
    assert (rds.version_info, routed(rds)["egress"]) == ("4", {"de", "eu"})


def test_a_nack_keeps_the_last_good_version_and_is_not_resent() -> None:
    stream = converged(snapshot(1, "de", "us"))
    good = stream.acked("cds")
    broken = snapshot(5, "bad", "de", "us")
    cds = only(stream.responses(broken))
    received = stream.receive(request(CLUSTER_TYPE, cds.nonce, error="region_bad: port_value must be <= 65535"))
    assert (received.type, received.outcome, received.error) == (
        "cds",
        "nack",
        "region_bad: port_value must be <= 65535",
    )
    assert received.sent is not None and received.sent.version == "5"
    assert stream.acked("cds") is good
    assert stream.responses(broken) == []  # neither the rejected clusters again, nor a route to them
    assert stream.routed == {"de", "us"}
    fixed = snapshot(6, "de", "us")
    cds = only(stream.responses(fixed))  # the same clusters as version 1, under the new version
    assert (cds.version_info, clusters(cds)) == ("6", {"region_de", "region_us"})


def test_a_rejected_route_update_keeps_the_clusters_its_routes_use() -> None:
    stream = converged(snapshot(2, "de", "eu", "us"))
    smaller = snapshot(3, "de", "us")
    rds = only(stream.responses(smaller))
    assert stream.receive(request(ROUTE_TYPE, rds.nonce, error="invalid route")).outcome == "nack"
    assert stream.routed == {"de", "eu", "us"}  # Envoy still routes eu ...
    assert stream.responses(smaller) == []  # ... so eu's cluster stays, and the routes are not resent


def test_requests_with_an_old_nonce_are_ignored() -> None:
    stream = converged(snapshot(1, "de", "us"))
    cds = only(stream.responses(snapshot(2, "de", "eu", "us")))
    assert stream.receive(request(CLUSTER_TYPE, "not-the-latest")).outcome == "stale"
    assert stream.responses(snapshot(2, "de", "eu", "us")) == []  # still in flight
    assert stream.receive(request(CLUSTER_TYPE, cds.nonce)).outcome == "ack"
    assert stream.receive(request("type.googleapis.com/envoy.config.listener.v3.Listener")).outcome == "ignored"


def test_route_configurations_follow_the_subscribed_names() -> None:
    snap = snapshot(1, "de", "us")
    stream = AdsStream()
    stream.receive(request(CLUSTER_TYPE))
    ack(stream, only(stream.responses(snap)))
    stream.receive(request(ROUTE_TYPE, names=["webhooks"]))
    rds = only(stream.responses(snap))
    assert set(routed(rds)) == {"webhooks"}
    ack(stream, rds)
    # Envoy adds a name with the nonce it already ACKed: a subscription change, answered.
    assert stream.receive(request(ROUTE_TYPE, rds.nonce, names=["webhooks", "egress"])).outcome == "resubscribed"
    assert set(routed(only(stream.responses(snap)))) == {"webhooks", "egress"}


def test_a_new_stream_answers_even_what_an_earlier_one_sent() -> None:
    snap = snapshot(1, "de", "us")
    stream = converged(snap)
    assert stream.receive(request(CLUSTER_TYPE)).outcome == "subscribed"  # Envoy reconnected
    assert clusters(only(stream.responses(snap))) == {"region_de", "region_us"}


# -- the control plane: streams, pushes and the regions the core may name --------------------


class Envoy:
    """One ADS stream's client side, fed by hand; a task drains the server side as gRPC would."""

    def __init__(self, plane: ControlPlane) -> None:
        self.requests: asyncio.Queue[ds.DiscoveryRequest | None] = asyncio.Queue()
        self.responses: asyncio.Queue[ds.DiscoveryResponse | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._drain(plane.serve(self._requests())))

    async def _requests(self) -> AsyncIterator[ds.DiscoveryRequest]:
        while (item := await self.requests.get()) is not None:
            yield item

    async def _drain(self, responses: AsyncIterator[ds.DiscoveryResponse]) -> None:
        async for response in responses:
            await self.responses.put(response)
        await self.responses.put(None)

    async def send(self, message: ds.DiscoveryRequest) -> None:
        await self.requests.put(message)

    async def next(self) -> ds.DiscoveryResponse:
        response = await asyncio.wait_for(self.responses.get(), 5)
        if response is None:
            raise StopAsyncIteration
        return response

    async def ack(self, response: ds.DiscoveryResponse) -> None:
        await self.send(request(response.type_url, response.nonce))


async def test_the_core_names_a_region_only_while_envoy_routes_it() -> None:
    clock = [100.0]
    plane = ControlPlane(clock=lambda: clock[0])
    plane.publish(snapshot(1, "de", "us"))
    assert plane.known_regions() == {"de", "us"}  # no Envoy on this process: the table decides
    envoy = Envoy(plane)
    await envoy.send(request(CLUSTER_TYPE))
    await envoy.ack(await envoy.next())
    await envoy.send(request(ROUTE_TYPE))
    await envoy.ack(await envoy.next())

    plane.publish(snapshot(2, "de", "eu", "us"))
    cds = await envoy.next()
    assert plane.known_regions() == {"de", "us"}  # eu: Envoy has no route yet
    await envoy.ack(cds)
    rds = await envoy.next()
    assert plane.known_regions() == {"de", "us"}
    await envoy.ack(rds)
    await asyncio.sleep(0.01)
    # Requests that started before Envoy applied the routes keep the old ones: not yet.
    assert plane.known_regions() == {"de", "us"}
    clock[0] += SETTLE_S
    assert plane.known_regions() == {"de", "eu", "us"}

    plane.publish(snapshot(3, "de", "us"))
    assert plane.known_regions() == {"de", "us"}  # removed: unknown at once, before Envoy drops the route
    assert routed(await envoy.next())["webhooks"] == {"de", "us"}
    plane.close()
    with pytest.raises(StopAsyncIteration):
        await envoy.next()


async def test_nacks_and_pushes_are_counted_and_the_acked_version_lags() -> None:
    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    plane = ControlPlane()
    plane.publish(snapshot(1, "de", "us"))
    pushes, nacks = (
        sample("silo_router_xds_pushes_total", type="cds"),
        sample("silo_router_xds_nacks_total", type="cds"),
    )
    envoy = Envoy(plane)
    await envoy.send(request(CLUSTER_TYPE))
    await envoy.ack(await envoy.next())
    await envoy.send(request(ROUTE_TYPE))
    await envoy.ack(await envoy.next())
    plane.publish(snapshot(5, "bad", "de", "us"))
    cds = await envoy.next()
    await envoy.send(request(CLUSTER_TYPE, cds.nonce, error="region_bad: invalid port"))
    plane.publish(snapshot(6, "de", "us"))  # wakes the stream; proves the NACK was handled first
    await envoy.next()
    assert sample("silo_router_xds_nacks_total", type="cds") == nacks + 1
    assert sample("silo_router_xds_pushes_total", type="cds") == pushes + 3
    assert sample("silo_router_xds_acked_version", type="cds") == 1
    assert sample("silo_router_xds_snapshot_version") == 6
    plane.close()
