"""Real processes for integration tests: Envoy, the sidecar (``silo-router serve``), upstreams."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from sidecar import config, db
from sidecar.config import Settings
from sidecar.demo import UpstreamServer
from sidecar.directory.loader import load_directory
from sidecar.proxy import EnvoyProcess


def free_port(count: int = 1) -> int:
    """A free port, and the ``count - 1`` after it free too (``sidecar.processes``)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + count <= 65536 and all(_is_free(port + k) for k in range(1, count)):
            return port


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def edge_settings(tmp: Path, regions: Mapping[str, int], control: int, **overrides: Any) -> tuple[Settings, Path]:
    """Settings on free ports, written to ``tmp/silo-router.yaml`` so a subprocess reads the same."""
    raw: dict[str, Any] = {
        "listen": f"127.0.0.1:{free_port()}",
        "data_dir": str(tmp / "data"),
        "control": {"address": f"127.0.0.1:{control}"},
        "regions": {name: {"address": f"127.0.0.1:{port}"} for name, port in regions.items()},
        "secrets": {"slack_signing_secret": "test-slack-secret"},
        "envoy": {
            "admin": f"127.0.0.1:{free_port()}",
            "egress": f"127.0.0.1:{free_port()}",
            "body_limit_bytes": 65536,
        },
        "sidecar": {"grpc": f"127.0.0.1:{free_port()}", "metrics": f"127.0.0.1:{free_port()}"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    path = tmp / "silo-router.yaml"
    path.write_text(yaml.safe_dump(raw))
    return config.load(path, environ={}), path


@dataclass
class Sidecar:
    """``silo-router serve`` as a child process, so a test can kill it like an operator would."""

    config_path: Path
    database_url: str
    grpc_port: int
    log_path: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    index: int = 0
    """Which of ``sidecar.processes`` this is (``serve --process``): ``grpc_port`` is its own."""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Sidecar:
        env = {**os.environ, "DATABASE_URL": self.database_url, **self.extra_env}
        argv = [sys.executable, "-m", "sidecar", "serve", "--config", str(self.config_path)]
        argv += ["--process", str(self.index)]
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.grpc_port, self.process, self.log_path)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_for_port(port: int, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not open after {timeout_s}s:\n{log_path.read_text()[-4000:]}")


@contextmanager
def running_envoy(settings: Settings, tmp: Path) -> Iterator[EnvoyProcess]:
    import asyncio

    envoy = EnvoyProcess(settings, tmp / "envoy.yaml", tmp / "envoy.log")
    envoy.start()
    try:
        asyncio.run(envoy.wait_ready())
        yield envoy
    finally:
        envoy.stop()


@dataclass
class Edge:
    settings: Settings
    config_path: Path
    upstreams: dict[str, UpstreamServer]
    sidecars: list[Sidecar]
    """One per ``sidecar.processes``, process 0 first; none without a database URL."""
    envoy: EnvoyProcess
    client: httpx.Client

    @property
    def sidecar(self) -> Sidecar | None:
        """Process 0, the only one unless ``sidecar.processes`` says otherwise."""
        return self.sidecars[0] if self.sidecars else None

    @property
    def url(self) -> str:
        return f"http://{self.settings.listen}"

    def post(self, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None) -> httpx.Response:
        return self.client.post(self.url + path, content=body, headers=dict(headers or {}))

    def clear(self) -> None:
        for upstream in self.upstreams.values():
            upstream.received.clear()

    def receivers(self) -> list[str]:
        """Names of the upstreams that received anything since ``clear``."""
        return sorted(name for name, server in self.upstreams.items() if server.received)


@contextmanager
def running_edge(
    tmp: Path, database_url: str | None, regions: tuple[str, ...] = ("de", "us"), **overrides: Any
) -> Iterator[Edge]:
    """Upstreams + sidecar processes (when ``database_url``) + Envoy, all real, on free ports.

    The sidecar starts first, as its startup probe orders it in a pod (deploy/base): Envoy's first health
    check then finds it serving."""
    names = ("control", *regions)
    upstreams = {name: UpstreamServer(name, "127.0.0.1", 0).start() for name in names}
    ports = {name: server.server_address[1] for name, server in upstreams.items()}
    control = ports.pop("control")
    settings, path = edge_settings(tmp, ports, control, **overrides)
    sidecars: list[Sidecar] = []
    try:
        if database_url is not None:
            for k, address in enumerate(settings.sidecar.grpc_addresses()):
                log = tmp / ("sidecar.log" if k == 0 else f"sidecar-{k}.log")
                sidecars.append(Sidecar(path, database_url, address.port, log, index=k).start())
        with running_envoy(settings, tmp) as envoy, httpx.Client(timeout=10) as client:
            yield Edge(settings, path, upstreams, sidecars, envoy, client)
    finally:
        for sidecar in sidecars:
            sidecar.stop()
        for server in upstreams.values():
            server.stop()


@contextmanager
def loaded_schema(server_url: str, name: str, directory: Mapping[str, Any]) -> Iterator[str]:
    """A schema of its own on ``server_url`` (other tests truncate theirs), migrated and loaded with
    ``directory``; dropped afterwards. Yields its URL."""
    import asyncio

    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    schema = f"silo_{name}_{os.getpid()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    url = make_conninfo(server_url, options=f"-c search_path={schema}")

    async def prepare() -> None:
        await db.migrate(url)
        await load_directory(url, directory)

    try:
        asyncio.run(prepare())
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
