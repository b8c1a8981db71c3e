"""sidecar.metrics: the names the dashboard and alerts use, bounded labels, multiprocess mode."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from sidecar import __version__, metrics

ROOT = Path(__file__).resolve().parents[1]


def value(name: str, registry: CollectorRegistry = REGISTRY, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Metric family names as a scraper sees them (counters with their ``_total``)."""
    names = set()
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            names.add(sample.name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count"))
    return names


def record_everything() -> None:
    metrics.initialise(regions=["us"])
    metrics.record_request("github", "forward", None, 0.002, "headers")
    metrics.observe_phase("headers", 0.001)
    metrics.record_cache("hit")
    metrics.record_directory_error()
    metrics.record_stored("github", ["us", "de"])
    metrics.record_delivered("github", "us")
    metrics.record_retried("github", "us")
    metrics.record_dropped("github", "us", "http_404")
    metrics.record_dead("github", "us", "dropped")
    metrics.set_backlog("us", 3, 42.0)
    metrics.record_shed("github")
    metrics.record_error("directory_unavailable")


def test_every_documented_name_is_exported_and_nothing_else() -> None:
    record_everything()
    ours = {name for name in exported_names(REGISTRY) if name.startswith("silo_router_")}
    assert ours == metrics.METRIC_NAMES


def test_record_request_counts_and_times_the_deciding_phase() -> None:
    labels = {"provider": "github", "decision": "reply", "status": "202"}
    before = value("silo_router_requests_total", **labels)
    fast = value("silo_router_decision_seconds_bucket", phase="body", le="0.0005")
    total = value("silo_router_decision_seconds_count", phase="body")
    metrics.record_request("github", "reply", 202, 0.0003, "body")
    assert value("silo_router_requests_total", **labels) == before + 1
    assert value("silo_router_decision_seconds_bucket", phase="body", le="0.0005") == fast + 1
    assert value("silo_router_decision_seconds_count", phase="body") == total + 1


def test_decision_buckets_span_half_a_millisecond_to_two_and_a_half_seconds() -> None:
    metrics.observe_phase("headers", 0.01)
    bounds = {
        sample.labels["le"]
        for family in REGISTRY.collect()
        if family.name == "silo_router_decision_seconds"
        for sample in family.samples
        if sample.name.endswith("_bucket")
    }
    assert {"0.0005", "2.5", "+Inf"} <= bounds
    assert min(float(b) for b in bounds) == 0.0005
    assert max(float(b) for b in bounds if b != "+Inf") == 2.5


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("github", "github"),
        ("plugins", "plugins"),
        (None, "none"),
        ("/extensions/evil/123", "unknown"),
        ("not-a-provider", "unknown"),
    ],
)
def test_provider_label_is_a_registered_slug_or_a_fixed_word(provider: str | None, expected: str) -> None:
    assert metrics.provider_label(provider) == expected


def test_labels_never_carry_paths_ids_or_messages() -> None:
    assert metrics.status_label(None) == "none"
    assert metrics.status_label(503) == "503"
    assert metrics.status_label(1234) == "other"
    assert metrics.reason_label("directory_unavailable") == "directory_unavailable"
    assert metrics.reason_label("connection refused to 10.0.0.1") == "other"
    assert metrics.reason_label("12345") == "other"
    assert metrics.region_label("us-east_1") == "us-east_1"
    assert metrics.region_label("../../etc") == "unknown"
    before = value("silo_router_requests_total", provider="unknown", decision="other", status="other")
    metrics.record_request("/extensions/x/1", "bogus", 99, 0.0, "headers")  # type: ignore[arg-type]
    assert value("silo_router_requests_total", provider="unknown", decision="other", status="other") == before + 1


def test_initialise_creates_alerting_series_at_zero() -> None:
    metrics.initialise(version="9.9.9", regions=["eu"])
    assert value("silo_router_info", version="9.9.9") == 1
    for reason in metrics.ERROR_REASONS:
        assert REGISTRY.get_sample_value("silo_router_errors_total", {"reason": reason}) is not None
    assert REGISTRY.get_sample_value("silo_router_outbox_pending", {"region": "eu"}) == 0


def test_exporter_serves_the_default_registry() -> None:
    metrics.initialise()
    exporter = metrics.start_exporter("127.0.0.1:0")
    try:
        text = httpx.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5).text
    finally:
        exporter.stop()
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {"silo_router_info", "silo_router_requests", "silo_router_errors"} <= families
    assert f'silo_router_info{{version="{__version__}"}} 1.0' in text


# -- multiprocess mode: two writers, one collector ------------------------------------------

WRITER = """
import os, sys
from sidecar import metrics
n, pending, age = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
metrics.initialise()
for _ in range(n):
    metrics.record_request("github", "forward", None, 0.001, "headers")
metrics.record_stored("github", ["us"])
metrics.set_backlog("us", pending, age)
print(os.getpid())
"""


def run_writers(directory: Path, *args: tuple[int, int, float]) -> list[int]:
    env = {**os.environ, metrics.MULTIPROC_ENV: str(directory)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, *map(str, arg)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for arg in args
    ]
    pids = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        pids.append(int(out))
    return pids


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """Two processes' files, written once per module (each test works on a copy)."""
    directory = tmp_path_factory.mktemp("multiproc")
    return directory, run_writers(directory, (3, 5, 120.0), (2, 7, 30.0))


@pytest.fixture
def multiproc_dir(written: tuple[Path, list[int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "multiproc"
    shutil.copytree(written[0], directory)
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(directory))
    return directory


def test_multiprocess_sums_counters_and_takes_the_max_of_live_gauges(
    multiproc_dir: Path, written: tuple[Path, list[int]]
) -> None:
    first, second = written[1]
    assert metrics.multiprocess_enabled()
    registry = metrics.exposition_registry()
    assert registry is not REGISTRY
    assert value("silo_router_requests_total", registry, provider="github", decision="forward", status="none") == 5
    assert value("silo_router_decision_seconds_count", registry, phase="headers") == 5
    assert value("silo_router_outbox_stored_total", registry, provider="github", region="us") == 2
    assert value("silo_router_info", registry, version=__version__) == 1
    assert value("silo_router_outbox_pending", registry, region="us") == 7
    assert value("silo_router_outbox_oldest_pending_age_seconds", registry, region="us") == 120
    # Dead processes keep their counts but not their backlog samples.
    metrics.mark_process_dead(second)
    registry = metrics.exposition_registry()
    assert value("silo_router_requests_total", registry, provider="github", decision="forward", status="none") == 5
    assert value("silo_router_outbox_pending", registry, region="us") == 5
    metrics.mark_process_dead(first)
    assert metrics.exposition_registry().get_sample_value("silo_router_outbox_pending", {"region": "us"}) is None


def test_multiprocess_exporter_serves_every_process(multiproc_dir: Path) -> None:
    exporter = metrics.start_exporter("127.0.0.1:0")
    try:
        text = httpx.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5).text
    finally:
        exporter.stop()
    assert 'silo_router_requests_total{decision="forward",provider="github",status="none"} 5.0' in text


def test_wipe_keeps_only_this_process_files(multiproc_dir: Path) -> None:
    mine = multiproc_dir / f"counter_{os.getpid()}.db"
    mine.write_bytes(b"")
    metrics.wipe_multiprocess_dir()
    assert sorted(multiproc_dir.glob("*.db")) == [mine]


def test_mark_process_dead_is_a_no_op_in_single_process_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    metrics.mark_process_dead(1)
    metrics.wipe_multiprocess_dir()
    assert metrics.exposition_registry() is REGISTRY
