"""``make bench`` in miniature: every scenario runs (1 s, one round) and lands in the JSON.

Performance is not asserted, only that the harness starts everything, checks every scenario's
answer and writes its results (JSON, Markdown, chart).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.db,
    pytest.mark.envoy,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (make bench installs it)"),
]


def test_a_tiny_run_writes_every_scenario(tmp_path: Path, server_url: str) -> None:
    out = tmp_path / "results"
    # tests/bench shadows the bench package inside pytest: talk to it as `make bench` does.
    env = {**os.environ, "BENCH_DATABASE_URL": server_url, "PYTHONPATH": str(ROOT)}
    listed = subprocess.run(
        [sys.executable, "-m", "bench", "--list"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    names = set(listed.stdout.split())
    assert "full_store" in names and "noop_headers_2w" in names
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--duration", "1", "--rounds", "1", "--connections", "4", "--warmup", "0",
         "--sweep-fractions", "0.5", "--sweep-duration", "1", "--sweep", "envoy_proxy,full_header",
         "--equal-load-duration", "1",
         "--directory-sizes", "1000", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [results] = out.glob("*.json")
    data = json.loads(results.read_text())
    assert set(data["scenarios"]) == names
    for name, scenario in data["scenarios"].items():
        assert len(scenario["runs"]) == 1, name
        assert scenario["median"]["rps"] > 0, name
    assert {point["scenario"] for point in data["sweep"]} == {"envoy_proxy", "full_header"}
    assert [point["integrations"] for point in data["directory"]] == [1000]
    compared = {name for name in names if name.startswith("full_")}  # each has a no-op to compare with
    assert {point["scenario"] for point in data["equal_load"]} == compared
    for point in data["equal_load"]:
        assert len(point["sidecar_us"]) == len(point["floor_us"]) == 1, point
        assert point["floor_us"][0] > 0 and point["ratio"] >= 0, point  # full_control: Envoy alone, 0 µs
    assert data["targets"], "no target evaluated"
    assert (out / "latest.md").read_text().count("| full_header") >= 1
    if importlib.util.find_spec("matplotlib") is not None:  # the `bench` extra; `make test` has `test` only
        assert (out / "latest.png").stat().st_size > 0
