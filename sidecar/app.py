"""Lifecycle: declare (Settings), materialise (pool, directory, gRPC server), run, shut down.

``serve`` is the sidecar alone (in Kubernetes Envoy is another container); ``up`` is the whole
edge on one machine: PostgreSQL (embedded unless ``database_url`` is set), migrations, the
sidecar, Envoy, and optionally the demo upstreams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sidecar import admin, config, db, logs, metrics
from sidecar.config import Settings
from sidecar.core import Context
from sidecar.demo import UpstreamServer
from sidecar.directory.cache import CachedDirectory
from sidecar.directory.listen import listen_for_changes
from sidecar.directory.loader import load_directory, read_directory_file
from sidecar.directory.postgres import PostgresDirectory
from sidecar.errors import ConfigError
from sidecar.keysource import HttpKeySource
from sidecar.outbox.batching import BatchingOutbox
from sidecar.outbox.runner import run_delivery
from sidecar.proxy import EnvoyProcess
from sidecar.router import Router
from sidecar.wire import server as wire_server
from sidecar.wire.servicer import ExternalProcessor
from sidecar.xds.ads import Invalidations, open_xds
from sidecar.xds.resources import EXT_PROC_SERVICE

log = logging.getLogger(__name__)

HEALTH_EVERY_S = 5.0
GRACE_S = 10.0
"""SIGTERM: in-flight streams get this long to finish (Kubernetes' default grace is 30 s)."""
RELOAD_EVERY_S = 2.0


@dataclass
class LiveSettings:
    """The settings a running sidecar re-reads from its file: shed rules and secrets take effect
    without a restart (a ConfigMap update changes the file's mtime)."""

    current: Settings
    _mtime: float = field(default=0.0)
    regions: Callable[[], frozenset[str]] | None = None
    """xds mode: the regions Envoy routes (``ControlPlane.known_regions``), not the file's."""

    _loaded: Settings | None = field(default=None, repr=False)
    _file_regions: frozenset[str] = field(default=frozenset(), repr=False)

    def context(self) -> Context:
        """Called once per request: only the clock is read here, the rest is derived once per load."""
        s = self.current
        if s is not self._loaded:  # ``region_names`` builds a frozenset per call
            self._loaded, self._file_regions = s, s.region_names
        regions = self._file_regions if self.regions is None else self.regions()
        return Context(time.time(), s.secrets, regions, s.shed, s.public_url)

    def reload_if_changed(self) -> bool:
        source = self.current.source
        if source is None:
            return False
        try:
            mtime = source.stat().st_mtime
        except OSError:
            return False
        if mtime == self._mtime:
            return False
        first = self._mtime == 0.0
        self._mtime = mtime
        if first:
            return False
        try:
            self.current = config.load(source)
        except ConfigError as exc:
            log.error("config reload failed, keeping the previous settings: %s", exc)
            return False
        logs.set_secrets(logs.secrets_of(self.current))
        log.info("config reloaded from %s", source)
        return True


async def _watch(live: LiveSettings, stop: asyncio.Event) -> None:
    live.reload_if_changed()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RELOAD_EVERY_S)
        live.reload_if_changed()


async def _report_health(pool: db.Pool, status: health.aio.HealthServicer, stop: asyncio.Event) -> None:
    """The ext_proc service is SERVING only while the database answers (readiness); the overall
    service "" stays SERVING while the process runs (liveness): a database outage must make
    Kubernetes stop sending traffic, not restart a sidecar that still serves cached routes."""
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    while not stop.is_set():
        try:
            async with asyncio.timeout(2), pool.connection() as conn:
                await conn.execute("SELECT 1")
            await status.set(EXT_PROC_SERVICE, serving)
        except Exception as exc:  # any failure means "not ready"; the reason goes to the log
            log.warning("database check failed: %s", exc.__class__.__name__)
            await status.set(EXT_PROC_SERVICE, not_serving)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HEALTH_EVERY_S)


@contextlib.asynccontextmanager
async def sidecar_server(settings: Settings, dsn: str, stop: asyncio.Event) -> AsyncIterator[grpc.aio.Server]:
    """The ext_proc gRPC server with its directory, outbox and background tasks, for one block."""
    s = settings.sidecar
    metrics.initialise(regions=settings.region_names)
    pool = await db.open_pool(dsn, max_size=s.db_pool_max, timeout=s.db_connect_timeout_s)
    tasks: list[asyncio.Task[None]] = []
    try:
        directory = CachedDirectory(
            PostgresDirectory(pool),
            max_entries=s.cache_size,
            ttl_s=s.cache_ttl_s,
            negative_ttl_s=s.negative_ttl_s,
            observe=metrics.observe_cache,
        )
        # xds mode: Envoy's regions come from the region table over ADS, and so do the core's.
        xds = await open_xds(settings, pool) if settings.envoy.mode == "xds" else None
        live = LiveSettings(settings, regions=xds.plane.known_regions if xds else None)
        changes = directory if xds is None else Invalidations((directory, xds.feed))
        tasks.append(asyncio.create_task(listen_for_changes(dsn, changes, stop)))
        if xds is not None:
            tasks.append(asyncio.create_task(xds.feed.run(stop)))
        tasks.append(asyncio.create_task(_watch(live, stop)))
        keys = HttpKeySource.from_settings(settings)
        router = Router(
            directory,
            BatchingOutbox(pool),  # group commit: concurrent webhooks share one transaction
            live.context,
            keys=keys,
            budget_s=max(0.2, settings.envoy.message_timeout_ms / 1000 * 0.8),
        )
        # Options shared with the no-op floor (wire/server.py), so benchmarks compare routing only.
        server = wire_server.new_server(settings.envoy.body_limit_bytes + (1 << 20))
        ep_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(router), server)
        status = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(status, server)
        if xds is not None:
            xds.register(server)
        admin.register(server, router, pool)  # Explain and the outbox calls (silo_router.admin.v1)
        wire_server.listen(server, str(s.grpc))
        await server.start()
        await status.set("", health_pb2.HealthCheckResponse.SERVING)
        tasks.append(asyncio.create_task(_report_health(pool, status, stop)))
        try:
            yield server
        finally:
            # Health first, so Envoy and Kubernetes stop sending; then new streams are refused at
            # once and in-flight ones get the grace period.
            await status.enter_graceful_shutdown()
            if xds is not None:
                xds.plane.close()  # ADS streams never end by themselves: they would hold the whole grace
            await server.stop(GRACE_S)
            await keys.aclose()
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """``silo-router serve``: the sidecar only."""
    stop = stop or asyncio.Event()
    install_signal_handlers(stop)
    dsn = await asyncio.to_thread(db.database_url, settings)
    exporter = metrics.start_exporter(settings.sidecar.metrics)
    try:
        async with sidecar_server(settings, dsn, stop):
            log.info("sidecar listening on %s, metrics on :%s", settings.sidecar.grpc, exporter.port)
            await stop.wait()
    finally:
        exporter.stop()


async def up(
    settings: Settings,
    *,
    directory_file: Path | None = None,
    demo_upstreams: bool = False,
    stop: asyncio.Event | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """``silo-router up``: PostgreSQL, migrations, sidecar, Envoy (and the demo upstreams)."""
    if settings.sidecar.processes != 1:
        # Envoy would list endpoints nobody serves: run `serve --process K` for each instead.
        raise ConfigError("up runs one sidecar process: set sidecar.processes to 1, or run `serve --process K`")
    stop = stop or asyncio.Event()
    install_signal_handlers(stop)
    dsn = await asyncio.to_thread(db.database_url, settings)
    applied = await db.migrate(dsn)
    if applied:
        announce(f"migrated: {', '.join(applied)}")
    if directory_file is not None:
        report = await load_directory(dsn, read_directory_file(directory_file))
        announce(f"directory loaded from {directory_file}: {report}")
    upstreams = _start_demo_upstreams(settings, announce) if demo_upstreams else []
    envoy = EnvoyProcess(settings, settings.data_dir / "envoy.yaml")
    exporter = metrics.start_exporter(settings.sidecar.metrics)
    try:
        async with sidecar_server(settings, dsn, stop):
            envoy.start()
            await envoy.wait_ready()
            # After Envoy is ready: the worker sends through its egress listener.
            delivery = asyncio.create_task(run_delivery(settings, dsn, stop), name="delivery")
            announce(f"webhooks:  http://{settings.listen}/extensions/<provider>/…")
            announce(f"sidecar:   {settings.sidecar.grpc} (gRPC ext_proc)")
            announce(f"envoy:     admin http://{settings.envoy.admin}/  egress http://{settings.envoy.egress}/")
            announce(f"database:  {db.redact(dsn)}")
            announce(f"metrics:   http://{settings.sidecar.metrics}/metrics  (Envoy's: /stats/prometheus on admin)")
            for server in upstreams:
                host, port = server.server_address[:2]
                announce(f"upstream:  {server.name} on {host!s}:{port}")
            announce("ready; Ctrl-C stops everything")
            await _wait_stop_or_exit(stop, envoy)
            await asyncio.wait([delivery], timeout=GRACE_S)  # sends in flight finish, then give up
            delivery.cancel()
    finally:
        envoy.stop()
        exporter.stop()
        for server in upstreams:
            server.stop()


async def _wait_stop_or_exit(stop: asyncio.Event, envoy: EnvoyProcess) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
        if envoy.process is not None and envoy.process.poll() is not None:
            log.error("envoy exited with status %s; stopping", envoy.process.returncode)
            stop.set()


def _start_demo_upstreams(settings: Settings, announce: Callable[[str], None]) -> list[UpstreamServer]:
    """Tiny upstreams that say what reached them, so the demo shows where each webhook landed."""
    targets = {"control": settings.control, **settings.regions}
    return [
        UpstreamServer(name, address.host, address.port, announce=announce).start() for name, address in targets.items()
    ]
