"""Envoy as a child process: render its config, start it, wait until it is ready, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import urllib.request
from pathlib import Path

from sidecar.config import Settings
from sidecar.xds.bootstrap import render_yaml
from sidecar.xds.envoy_binary import envoy_binary

log = logging.getLogger(__name__)


class EnvoyProcess:
    def __init__(self, settings: Settings, config_path: Path, log_path: Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_yaml(self.settings))
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 - closed below
        self.process = subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(self.config_path),
                "--concurrency",
                str(self.settings.envoy.concurrency),
                "--log-level",
                "warning",
                # Several Envoys share this machine (tests, demo): no hot-restart shared memory.
                "--disable-hot-restart",
            ],
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
        if out is not None:
            out.close()  # the child holds its own descriptor

    async def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Poll the admin ``/ready`` endpoint; raise if Envoy exits or does not get ready."""
        url = f"http://{self.settings.envoy.admin}/ready"
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"envoy exited with status {self.process.returncode}")
            with contextlib.suppress(OSError):
                ready = await asyncio.to_thread(_get_status, url)
                if ready == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"envoy not ready after {timeout_s:.0f}s")

    def stop(self, grace_s: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _get_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=1) as response:
        status: int = response.status
        return status
