"""The processes of a benchmark run: PostgreSQL, a fast upstream, and one edge per variant.

* **Upstream**: an Envoy of its own with one listener per cluster (control, us, de), each a
  ``direct_response`` naming itself. About 15k requests/s on one core, so never the bottleneck,
  and the body tells a scenario's check which cluster a request reached.
* **Edge** (one per variant): the real bootstrap (``render_bootstrap``) plus a ``/bench/direct``
  route answered by Envoy itself, in front of either the no-op sidecar or the real one
  (``silo-router serve``), with one or more worker processes, each on its own port
  (``sidecar.processes``: Envoy balances streams across them).

All edges run at once, each on its own ports; only the one being measured gets traffic, so
scenarios alternate within a round instead of restarting processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench import webhooks
from sidecar import config, db
from sidecar.config import Settings
from sidecar.directory.loader import load_directory
from sidecar.wire.server import DEFAULT_LOOP
from sidecar.xds.bootstrap import EXT_PROC_FILTER, render_bootstrap
from sidecar.xds.envoy_binary import envoy_binary
from tests.integration.harness import free_port  # the tests' real stacks pick ports the same way

UPSTREAMS = ("control", "us", "de")
EXT_PROC_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

SidecarKind = Literal["noop", "full"]


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    sidecar: SidecarKind
    workers: int


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn(name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Child:
    with open(log, "ab") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(
            list(argv),
            stdout=subprocess.DEVNULL if name.startswith("envoy") else out,
            stderr=out,
            env={**os.environ, **(env or {})},
        )
    return Child(name, process, log)


def _listening_inodes(port: int) -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    found.add(parts[9])
    return found


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a listening socket on ``port`` (SO_REUSEPORT: several may)."""
    inodes = _listening_inodes(port)
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return True
    return False


def wait_listening(child: Child, port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        child.check_alive()
        if listens(child.pid, port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} not listening on {port} after {timeout_s}s")


def wait_ready(child: Child, admin_port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        child.check_alive()
        url = f"http://127.0.0.1:{admin_port}/ready"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as answer:
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} not ready after {timeout_s}s")


def envoy_argv(config_path: Path) -> list[str]:
    return [
        envoy_binary(),
        "-c",
        str(config_path),
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "--log-level",
        "warning",
    ]


def upstream_bootstrap(admin_port: int, ports: Mapping[str, int]) -> dict[str, Any]:
    """An Envoy that answers 200 with its listener's name on each port: the fastest upstream here."""

    def listener(name: str, port: int) -> dict[str, Any]:
        route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": name}}}
        hcm = {
            "@type": HCM,
            "stat_prefix": name,
            "route_config": {"virtual_hosts": [{"name": name, "domains": ["*"], "routes": [route]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
        }
        return {
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}],
        }  # fmt: skip

    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": [listener(name, port) for name, port in ports.items()]},
    }


def edge_bootstrap(settings: Settings) -> dict[str, Any]:
    """The product's bootstrap, plus ``/bench/direct`` answered by Envoy itself (no ext_proc)."""
    rendered = render_bootstrap(settings)
    listener = rendered["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    routes.insert(
        0,
        {
            "name": "bench:direct",
            "match": {"path": "/bench/direct"},
            "direct_response": {"status": 200, "body": {"inline_string": "direct"}},
            "typed_per_filter_config": {EXT_PROC_FILTER: {"@type": EXT_PROC_PER_ROUTE, "disabled": True}},
        },
    )
    return rendered


@dataclass
class Edge:
    variant: Variant
    settings: Settings
    config_path: Path
    envoy: Child
    sidecars: list[Child] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.settings.listen}"

    @property
    def grpc_port(self) -> int:
        return self.settings.sidecar.grpc.port


@dataclass
class Database:
    url: str
    postmaster: int | None
    """PID of the embedded server (its CPU is reported), None for an external DATABASE_URL."""


@contextlib.contextmanager
def database(workdir: Path) -> Iterator[Database]:
    """``BENCH_DATABASE_URL`` (a private schema in it), else an embedded pgserver in ``workdir``."""
    external = os.environ.get("BENCH_DATABASE_URL")
    if external:
        schema = f"silo_bench_{os.getpid()}"
        with psycopg.connect(external, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            yield Database(make_conninfo(external, options=f"-c search_path={schema}"), None)
        finally:
            with psycopg.connect(external, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        return
    pgdata = workdir / "pg"
    server = db.embedded_server(pgdata)
    try:
        pid_file = pgdata.resolve() / "postmaster.pid"
        postmaster = int(pid_file.read_text().split("\n", 1)[0]) if pid_file.exists() else None
        yield Database(server.get_uri(), postmaster)
    finally:
        server.cleanup()


class Stack:
    """Everything of one run; ``with Stack(...) as stack`` starts it and stops it all."""

    def __init__(self, workdir: Path, variants: Sequence[Variant], loop: str = DEFAULT_LOOP) -> None:
        self.workdir = workdir
        self.variants = variants
        self.loop = loop
        self.edges: dict[str, Edge] = {}
        self.upstream: Child | None = None
        self.db: Database | None = None
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db = self._exit.enter_context(database(self.workdir))
        asyncio.run(self._prepare_database(self.db.url))
        ports = {name: free_port() for name in UPSTREAMS}
        admin = free_port()
        upstream_yaml = self.workdir / "upstream.yaml"
        upstream_yaml.write_text(yaml.safe_dump(upstream_bootstrap(admin, ports), sort_keys=False))
        self.upstream = spawn("envoy-upstream", envoy_argv(upstream_yaml), self.workdir / "upstream.log")
        self._exit.callback(self.upstream.stop)
        wait_ready(self.upstream, admin)
        for variant in self.variants:
            self.edges[variant.name] = self._start_edge(variant, ports)

    async def _prepare_database(self, url: str) -> None:
        await db.migrate(url)
        await load_directory(url, webhooks.DIRECTORY)

    def _start_edge(self, variant: Variant, upstream_ports: Mapping[str, int]) -> Edge:
        folder = self.workdir / variant.name
        folder.mkdir(exist_ok=True)
        raw = {
            "listen": f"127.0.0.1:{free_port()}",
            "data_dir": str(folder / "data"),
            "control": {"address": f"127.0.0.1:{upstream_ports['control']}"},
            "regions": {name: {"address": f"127.0.0.1:{upstream_ports[name]}"} for name in ("us", "de")},
            "secrets": {"slack_signing_secret": webhooks.SLACK_SECRET},
            "envoy": {"admin": f"127.0.0.1:{free_port()}", "egress": f"127.0.0.1:{free_port()}"},
            # One port per worker process (Envoy balances across them); metrics port 0: each
            # process picks its own.
            "sidecar": {
                "grpc": f"127.0.0.1:{free_port(variant.workers)}",
                "metrics": "127.0.0.1:0",
                "processes": variant.workers,
            },
        }
        config_path = folder / "silo-router.yaml"
        config_path.write_text(yaml.safe_dump(raw))
        settings = config.load(config_path, environ={})
        envoy_yaml = folder / "envoy.yaml"
        envoy_yaml.write_text(yaml.safe_dump(edge_bootstrap(settings), sort_keys=False))
        sidecars = [self._start_sidecar(variant, settings, config_path, i) for i in range(variant.workers)]
        envoy = spawn(f"envoy-{variant.name}", envoy_argv(envoy_yaml), folder / "envoy.log")
        self._exit.callback(envoy.stop)
        wait_ready(envoy, settings.envoy.admin.port)
        return Edge(variant, settings, config_path, envoy, sidecars)

    def _start_sidecar(self, variant: Variant, settings: Settings, config_path: Path, index: int) -> Child:
        assert self.db is not None
        log = self.workdir / variant.name / f"sidecar-{index}.log"
        address = settings.sidecar.grpc_addresses()[index]
        if variant.sidecar == "noop":
            argv = [sys.executable, "-m", "sidecar.wire.noop", "--grpc", str(address), "--loop", self.loop]
        else:
            argv = [sys.executable, "-m", "sidecar", "serve", "--config", str(config_path), "--log-level", "WARNING"]
            argv += ["--process", str(index)]
        env = {"DATABASE_URL": self.db.url, "SILO_ROUTER_LOOP": self.loop}
        child = spawn(f"sidecar-{variant.name}-{index}", argv, log, env)
        self._exit.callback(child.stop)
        wait_listening(child, address.port)
        return child
