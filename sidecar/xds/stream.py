"""One ADS stream, state of the world, without I/O: ``receive`` a request, ask for ``responses``.

Why state of the world and not delta: there are two small resource types (a cluster per region,
two route configurations), so resending all of a type on a change costs nothing, and SotW has one
ordering rule per type where delta adds per-resource subscriptions and removals to get wrong.

Theory of operation (numbered rules; ``tests/xds/test_stream.py`` checks each):

1. Per type (CDS, RDS) at most one response is in flight; the next waits for its ACK or NACK. A
   request naming an older nonce is stale and ignored (xDS protocol, "ACK/NACK and versioning").
2. ACK (the in-flight nonce, no ``error_detail``): Envoy applied it. NACK (``error_detail``):
   Envoy kept what it had, so the previous ACK stays in force here too, and the rejected content
   is not sent again; only a different content (a new snapshot) is.
3. Make before break. A region's route is sent only once this Envoy ACKed its cluster, and a
   cluster is removed only once this Envoy ACKed routes that no longer use it. Adding a region is
   CDS, ACK, RDS; removing one is RDS, ACK, CDS. Envoy never routes to a missing cluster (503 NC);
   a request still headed for a removed region meets no route for it and falls back to control.
4. RDS waits for the stream's first CDS ACK: a reconnecting Envoy still routes every region it
   had, and must not get routes trimmed to clusters it has not re-confirmed yet.
5. ``version_info`` is the snapshot version (``"7"``) when a response carries all of the
   snapshot's regions, and ``"7.<digest>"`` for a staged one (rule 3); every response has a
   fresh nonce.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2 as ds
from google.protobuf import any_pb2

from sidecar.xds.snapshot import CLUSTER_TYPE, ROUTE_TYPE, Snapshot

TypeName = Literal["cds", "rds"]
TYPE_URLS: Final[Mapping[TypeName, str]] = {"cds": CLUSTER_TYPE, "rds": ROUTE_TYPE}
TYPES_BY_URL: Final[Mapping[str, TypeName]] = {url: name for name, url in TYPE_URLS.items()}
CONTROL_PLANE: Final = base_pb2.ControlPlane(identifier="silo-router")

Outcome = Literal["subscribed", "ack", "nack", "resubscribed", "stale", "ignored"]


@dataclass(frozen=True, slots=True)
class Sent:
    """One response, remembered until its ACK or NACK and after."""

    nonce: str
    version: str
    snapshot: int
    regions: frozenset[str]
    """Regions whose cluster (CDS) or route (RDS) it carries."""
    complete: bool
    """It carries exactly the snapshot's regions (not a rule-3 stage)."""
    digest: str
    resources: Mapping[str, any_pb2.Any]
    """By region name (CDS) or route configuration name (RDS)."""


@dataclass(frozen=True, slots=True)
class Received:
    type: TypeName | None
    outcome: Outcome
    sent: Sent | None = None
    """The response this request ACKs or NACKs."""
    error: str = ""
    """Envoy's reason for a NACK."""


@dataclass(slots=True)
class _TypeState:
    subscribed: bool = False
    names: frozenset[str] = frozenset()
    """Requested resource names; empty asks for all (CDS always does)."""
    in_flight: Sent | None = None
    last: Sent | None = None
    """The latest response sent, whatever became of it (rule 2)."""
    acked: Sent | None = None


def _nonces() -> Iterator[str]:
    return (str(n) for n in itertools.count(1))


@dataclass(eq=False)  # identity: the control plane keys its streams by them
class AdsStream:
    nonces: Iterator[str] = field(default_factory=_nonces)
    _types: dict[TypeName, _TypeState] = field(default_factory=lambda: {name: _TypeState() for name in TYPE_URLS})

    def acked(self, type_name: TypeName) -> Sent | None:
        return self._types[type_name].acked

    @property
    def routed(self) -> frozenset[str] | None:
        """Regions Envoy has routes for (its last RDS ACK on this stream); None before the first."""
        acked = self._types["rds"].acked
        return None if acked is None else acked.regions

    @property
    def routing(self) -> frozenset[str] | None:
        """``routed``, or before the first RDS ACK the regions of the routes on their way there;
        None while no route was sent (Envoy still has those of an earlier stream, if any)."""
        rds = self._types["rds"]
        sent = rds.acked or rds.in_flight
        return None if sent is None else sent.regions

    def receive(self, request: ds.DiscoveryRequest) -> Received:
        type_name = TYPES_BY_URL.get(request.type_url)
        if type_name is None:
            return Received(None, "ignored")
        state = self._types[type_name]
        nonce = request.response_nonce
        if not nonce:
            # The first request for the type on this stream: answer it whatever was sent before.
            state.subscribed, state.in_flight, state.last = True, None, None
            state.names = frozenset(request.resource_names)
            return Received(type_name, "subscribed")
        if state.in_flight is not None and nonce == state.in_flight.nonce:
            return self._settle(state, type_name, request)
        if state.last is not None and nonce == state.last.nonce:
            # Already settled: Envoy changed what it subscribes to (a route configuration name).
            state.names = frozenset(request.resource_names)
            return Received(type_name, "resubscribed")
        return Received(type_name, "stale")

    def responses(self, snapshot: Snapshot) -> list[ds.DiscoveryResponse]:
        """What to send now; each returned response is in flight from here on."""
        found = []
        for type_name in TYPE_URLS:
            state = self._types[type_name]
            if not state.subscribed or state.in_flight is not None:
                continue  # rule 1
            if type_name == "rds" and self._types["cds"].acked is None:
                continue  # rule 4
            regions, resources = self._wanted(type_name, snapshot)
            digest = _digest(resources)
            if state.last is not None and state.last.digest == digest:
                continue  # rule 2: sent already (ACKed, NACKed)
            found.append(self._send(type_name, snapshot, regions, resources, digest))
        return found

    def _settle(self, state: _TypeState, type_name: TypeName, request: ds.DiscoveryRequest) -> Received:
        sent, state.in_flight = state.in_flight, None
        state.names = frozenset(request.resource_names)
        if request.HasField("error_detail"):
            return Received(type_name, "nack", sent, request.error_detail.message)
        state.acked = sent
        return Received(type_name, "ack", sent)

    def _wanted(self, type_name: TypeName, snapshot: Snapshot) -> tuple[frozenset[str], dict[str, any_pb2.Any]]:
        if type_name == "cds":
            return self._clusters(snapshot)
        return self._route_configs(snapshot)

    def _clusters(self, snapshot: Snapshot) -> tuple[frozenset[str], dict[str, any_pb2.Any]]:
        """The snapshot's clusters, plus those of removed regions Envoy still has routes for (rule 3)."""
        resources = dict(snapshot.clusters)
        acked = self._types["cds"].acked
        for region in (self.routed or frozenset()) - snapshot.names:
            if acked is not None and region in acked.resources:
                resources[region] = acked.resources[region]
        return frozenset(resources), resources

    def _route_configs(self, snapshot: Snapshot) -> tuple[frozenset[str], dict[str, any_pb2.Any]]:
        """Routes for the snapshot's regions whose cluster Envoy ACKed (rule 3)."""
        acked = self._types["cds"].acked
        regions = snapshot.names & (acked.regions if acked is not None else frozenset())
        names = self._types["rds"].names or frozenset(snapshot.route_configs)
        resources = {}
        for name in sorted(names):
            config = snapshot.route_config(name, regions)
            if config is not None:  # a name we do not serve stays unanswered, as xDS allows
                resources[name] = config
        return regions, resources

    def _send(
        self,
        type_name: TypeName,
        snapshot: Snapshot,
        regions: frozenset[str],
        resources: Mapping[str, any_pb2.Any],
        digest: str,
    ) -> ds.DiscoveryResponse:
        complete = regions == snapshot.names
        version = str(snapshot.version) if complete else f"{snapshot.version}.{digest[:8]}"
        sent = Sent(next(self.nonces), version, snapshot.version, regions, complete, digest, dict(resources))
        state = self._types[type_name]
        state.in_flight = state.last = sent
        return ds.DiscoveryResponse(
            version_info=version,
            type_url=TYPE_URLS[type_name],
            nonce=sent.nonce,
            resources=[resources[key] for key in sorted(resources)],
            control_plane=CONTROL_PLANE,
        )


def _digest(resources: Mapping[str, any_pb2.Any]) -> str:
    digest = hashlib.sha256()
    for key in sorted(resources):
        digest.update(key.encode() + b"\0" + resources[key].SerializeToString(deterministic=True) + b"\0")
    return digest.hexdigest()
