"""gRPC's I/O path: importing the package chooses iomgr unless the environment says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import sidecar

PRINT = "import sidecar.wire.server, os; print(os.environ['GRPC_EXPERIMENTS'])"


def run_python(environ: dict[str, str]) -> str:
    env = {key: value for key, value in os.environ.items() if key != "GRPC_EXPERIMENTS"} | environ
    done = subprocess.run([sys.executable, "-c", PRINT], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_package_sets_the_experiments_before_grpc_reads_them() -> None:
    assert run_python({}) == sidecar.GRPC_EXPERIMENTS
    assert "-event_engine_listener" in sidecar.GRPC_EXPERIMENTS.split(",")


@pytest.mark.parametrize("value", ["", "-event_engine_client"])
def test_a_value_in_the_environment_wins(value: str) -> None:
    assert run_python({"GRPC_EXPERIMENTS": value}) == value


def test_grpc_accepts_every_experiment_named() -> None:
    # An experiment gRPC does not know is logged as "Unknown experiment" and ignored: the setting
    # would then silently do nothing after a grpcio upgrade.
    code = "import asyncio, sidecar.wire.server as s\nasync def m():\n    s.new_server(1 << 20)\nasyncio.run(m())"
    env = {key: value for key, value in os.environ.items() if key != "GRPC_EXPERIMENTS"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Unknown experiment" not in done.stderr
