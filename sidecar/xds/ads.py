"""The sidecar as Envoy's aggregated discovery service (``envoy.mode: xds``).

Push path: a write to the ``region`` table fires the directory trigger (channel
``silo_directory``); the directory listener calls ``RegionFeed.invalidate_all``; the feed reloads
the table and, when the usable regions changed, renders a new ``Snapshot`` in a thread and
publishes it; every connected stream wakes and sends what its ``AdsStream`` says is due.

What the core may route to comes from the same place (``ControlPlane.known_regions``): the
snapshot's regions that every connected Envoy has ACKed routes for (``SETTLE_S`` ago). A new region
becomes known only once Envoy can route it; a removed one is unknown at once, so the core stops
naming it before Envoy loses the route (``stream.py`` rule 3 is the Envoy half of that drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Final

import grpc
import psycopg
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3 import discovery_pb2 as ds

from sidecar import metrics
from sidecar.config import Settings
from sidecar.core.providers import PROVIDERS, ProviderSpec
from sidecar.db import Pool
from sidecar.directory.listen import Invalidates
from sidecar.errors import SiloError
from sidecar.regions import list_regions, seed_regions
from sidecar.xds.snapshot import Snapshot, SnapshotBuilder, usable_regions
from sidecar.xds.stream import TYPES_BY_URL, AdsStream, Received

log = logging.getLogger(__name__)

RETRY_S: Final = 2.0
"""Pause before reading the region table again after a failed read."""
POLL_S: Final = 1.0
"""How long a set ``stop`` can go unnoticed by the feed (a change is noticed at once)."""
SETTLE_S: Final = 0.5
"""Envoy snaps a request's route configuration when the request starts. A request that started
just before Envoy applied routes for a new region keeps the old ones, so a decision naming that
region would meet no route and fall back to control (seen in the integration test, once in a few
hundred requests). The core names a new region only this long after Envoy's ACK: decisions take
milliseconds; a slower one (a large body still arriving) still ends on the control fallback, never
on a 503."""


class _Closed:
    """Queued to a stream when the server shuts down."""


_CLOSED: Final = _Closed()
_WAKE: Final = None
"""Queued to a stream when a new snapshot is published."""
Inbox = asyncio.Queue[ds.DiscoveryRequest | _Closed | None]


@dataclass(frozen=True, slots=True)
class _Routes:
    """The regions one Envoy routes: ``before`` and ``after`` both until ``since + SETTLE_S``,
    then ``after``."""

    before: frozenset[str]
    after: frozenset[str]
    since: float

    def at(self, now: float) -> frozenset[str]:
        return self.after if now >= self.since + SETTLE_S else self.before & self.after


class ControlPlane:
    """The snapshot every stream serves, the streams, and the regions the core may route to."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._streams: dict[AdsStream, Inbox] = {}
        self._routes: dict[AdsStream, _Routes] = {}

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def publish(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        metrics.set_xds_snapshot(snapshot.version)
        for inbox in self._streams.values():
            inbox.put_nowait(_WAKE)

    def known_regions(self) -> frozenset[str]:
        """The snapshot's regions that every connected Envoy routes (all of them with none connected:
        another sidecar process may hold the Envoy's ADS stream, and it routes by the same table)."""
        if self._snapshot is None:
            return frozenset()
        known, now = self._snapshot.names, self._clock()
        for stream in self._streams:
            routes = self._routes.get(stream)
            routing = routes.at(now) if routes is not None else stream.routing
            if routing is not None:  # None: a new stream; Envoy still routes what it had
                known &= routing
        return known

    def close(self) -> None:
        """End every stream (Envoy keeps its configuration and reconnects to a live sidecar)."""
        for inbox in self._streams.values():
            inbox.put_nowait(_CLOSED)

    async def serve(self, requests: AsyncIterator[ds.DiscoveryRequest]) -> AsyncIterator[ds.DiscoveryResponse]:
        """One Envoy's ADS stream: responses as the stream's state machine releases them."""
        stream, inbox = AdsStream(), Inbox()
        reader = asyncio.create_task(_read(requests, inbox))
        self._streams[stream] = inbox
        metrics.set_xds_streams(len(self._streams))
        try:
            while not isinstance(item := await inbox.get(), _Closed):
                if item is not None:
                    self._received(stream, stream.receive(item))
                if self._snapshot is not None:
                    for response in stream.responses(self._snapshot):
                        metrics.record_xds_push(TYPES_BY_URL[response.type_url])
                        yield response
        finally:
            reader.cancel()
            del self._streams[stream]
            self._routes.pop(stream, None)
            metrics.set_xds_streams(len(self._streams))

    def _received(self, stream: AdsStream, received: Received) -> None:
        if received.type is None or received.sent is None:
            return
        if received.outcome == "nack":
            metrics.record_xds_nack(received.type)
            log.warning(
                "envoy rejected %s version %s (keeps its previous one): %s",
                received.type,
                received.sent.version,
                " ".join(received.error.split())[:2000],  # Envoy's message is a multi-line proto dump
            )
        elif received.outcome == "ack":
            if received.type == "rds":
                self._routed(stream, received.sent.regions)
            if received.sent.complete:
                versions = [a.snapshot for s in self._streams if (a := s.acked(received.type)) and a.complete]
                metrics.set_xds_acked(received.type, min(versions))
            log.info("envoy applied %s version %s", received.type, received.sent.version)

    def _routed(self, stream: AdsStream, regions: frozenset[str]) -> None:
        now, earlier = self._clock(), self._routes.get(stream)
        # The first routes of a stream need no settling: Envoy had none (starting) or the same (reconnecting).
        before = earlier.at(now) if earlier is not None else regions
        self._routes[stream] = _Routes(before, regions, now)


async def _read(requests: AsyncIterator[ds.DiscoveryRequest], inbox: Inbox) -> None:
    try:
        async for request in requests:
            inbox.put_nowait(request)
    except grpc.RpcError:
        pass  # Envoy went away: the stream ends like a clean close
    finally:
        inbox.put_nowait(_CLOSED)


class AggregatedDiscovery(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """The gRPC face of ``ControlPlane``. Delta xDS is not offered (``stream.py`` says why): the
    base class answers it UNIMPLEMENTED, and Envoy is configured for state of the world."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[ds.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ds.DiscoveryResponse]:
        async for response in self.plane.serve(request_iterator):
            yield response


class RegionFeed:
    """Keeps the control plane's snapshot equal to the ``region`` table."""

    def __init__(
        self, plane: ControlPlane, pool: Pool, settings: Settings, providers: Mapping[str, ProviderSpec] = PROVIDERS
    ) -> None:
        self.plane = plane
        self._pool = pool
        self._builder = SnapshotBuilder(settings, providers)
        self._dirty = asyncio.Event()
        self._skipped: dict[str, str] = {}

    def invalidate_all(self) -> None:
        """The directory listener's hook: some directory table changed, or it reconnected (and may
        have missed notifications). Reading the small region table again is cheaper than telling."""
        self._dirty.set()

    async def refresh(self) -> bool:
        """Read the table; publish a new snapshot if its usable regions changed."""
        log.debug("reading the region table")
        regions, skipped = usable_regions(await list_regions(self._pool))
        self._log_skipped(skipped)
        current = self.plane.snapshot
        if current is not None and regions == current.regions:
            return False
        version = 1 if current is None else current.version + 1
        snapshot = await asyncio.to_thread(self._builder.build, version, regions)
        self.plane.publish(snapshot)
        log.info("regions version %d: %s", version, ", ".join(f"{n}={a}" for n, a in sorted(regions.items())) or "-")
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), POLL_S)
            if stop.is_set() or not self._dirty.is_set():
                continue
            self._dirty.clear()
            try:
                await self.refresh()
            except (psycopg.Error, OSError, SiloError) as exc:
                log.warning("cannot read the region table (%s); retrying in %.0fs", exc, RETRY_S)
                self._dirty.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RETRY_S)

    def _log_skipped(self, skipped: dict[str, str]) -> None:
        if skipped != self._skipped:
            for name, reason in sorted(skipped.items()):
                log.warning("region %s is not routed: %s", name, reason)
            self._skipped = skipped


@dataclass(frozen=True, slots=True)
class Invalidations:
    """Several caches behind the directory's one LISTEN connection."""

    targets: tuple[Invalidates, ...]

    def invalidate_all(self) -> None:
        for target in self.targets:
            target.invalidate_all()


@dataclass(frozen=True, slots=True)
class Xds:
    plane: ControlPlane
    feed: RegionFeed

    def register(self, server: grpc.aio.Server) -> None:
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AggregatedDiscovery(self.plane), server)


async def open_xds(settings: Settings, pool: Pool, providers: Mapping[str, ProviderSpec] = PROVIDERS) -> Xds:
    """Seed the settings file's regions into the table and load the first snapshot, so Envoy's
    first request is answered at once."""
    await seed_regions(pool, settings.regions)
    plane = ControlPlane()
    feed = RegionFeed(plane, pool, settings, providers)
    await feed.refresh()
    return Xds(plane, feed)
