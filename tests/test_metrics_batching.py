"""sidecar.metrics rule 4: the per-request helpers batch in process, and every reader still sees
exactly what direct ``.inc()``/``.observe()`` calls would have exported."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from sidecar import metrics

ROOT = Path(__file__).resolve().parents[1]
HISTOGRAM = "silo_router_decision_seconds"

Sample = tuple[str, tuple[tuple[str, str], ...], float]


def _just_above(bound: float) -> float:
    return math.nextafter(bound, math.inf)


# Every bound exactly (``observe`` counts a value equal to a bound in that bucket), just above each,
# zero, a negative duration, and values past the last bound; in an order that is not sorted. The
# script records them alternately through record_request and observe_phase.
EDGES = [*metrics.DECISION_BUCKETS, *map(_just_above, metrics.DECISION_BUCKETS)]
OBSERVATIONS: list[tuple[str, float]] = [
    *(("headers", seconds) for seconds in reversed(EDGES)),
    *(("body", seconds) for seconds in EDGES),
    ("headers", 0.0),
    ("body", -0.25),
    ("headers", 7.0),
    ("body", 1e9),
    ("headers", 0.0001234),
    ("body", 0.0123),
    ("headers", 0.00042),
]


def samples(triples: Iterable[tuple[str, dict[str, str], float]], family: str) -> list[Sample]:
    """One family's samples as a scraper sees them, without the per-process ``_created``."""
    return sorted(
        (name, tuple(sorted(labels.items())), float(value))
        for name, labels, value in triples
        if name.startswith(family) and not name.endswith("_created")
    )


def collected(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in registry.collect() for s in family.samples]


def direct(observations: Iterable[tuple[str, float]]) -> list[Sample]:
    """What prometheus_client exports for ``observations`` made one by one with ``.observe()``."""
    registry = CollectorRegistry()
    histogram = Histogram(HISTOGRAM, "reference", ["phase"], buckets=metrics.DECISION_BUCKETS, registry=registry)
    for phase, seconds in observations:
        histogram.labels(phase).observe(max(seconds, 0.0))
    return samples(collected(registry), HISTOGRAM)


# A fresh interpreter per scenario: this module's metrics start empty there, so the whole export
# can be compared, not deltas.
SCRIPT = """
import json, os, sys
from sidecar import metrics
observations = json.loads(sys.argv[1])
mode = sys.argv[2]

def record(part):
    for i, (phase, seconds) in enumerate(part):
        if i % 2:
            metrics.record_request("github", "forward", None, seconds, phase)
        else:
            metrics.observe_phase(phase, seconds)
        metrics.observe_cache("hit")

if mode.startswith("scrape"):  # flushes where the mode says, and the last one by the scrape
    metrics.FLUSH_EVERY_S = 3600  # no tick of the flusher thread in between
    start = 0
    for end in json.loads(mode.removeprefix("scrape")):
        record(observations[start:end])
        metrics.flush()
        start = end
    record(observations[start:])
    from prometheus_client import REGISTRY
    print(json.dumps([[s.name, s.labels, s.value] for f in REGISTRY.collect() for s in f.samples]))
elif mode == "exit":  # nothing but the atexit flush: the flusher thread must not tick meanwhile
    metrics.FLUSH_EVERY_S = 3600
    record(observations)
elif mode == "wait":  # the flusher thread only; exits when stdin closes
    record(observations)
    print("recorded", flush=True)
    sys.stdin.read()
    os._exit(0)  # skip atexit: the values must be in the files already
elif mode == "fork":  # the child must neither flush the parent's counts again nor deadlock
    record(observations[:3])
    pid = os.fork()
    if pid == 0:
        record(observations[3:5])
        metrics.flush()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
"""


def run(observations: list[tuple[str, float]], mode: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, json.dumps(observations), mode],
        cwd=ROOT,
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return out


def from_files(directory: Path, name: str) -> list[Sample]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return samples(collected(registry), name)


def cache_hits(directory: Path) -> float:
    found = dict((labels, value) for _, labels, value in from_files(directory, "silo_router_directory_cache"))
    return found.get((("result", "hit"),), 0.0)


def test_the_histogram_internals_batching_writes_to_are_still_there() -> None:
    child = metrics.DECISION_SECONDS.labels("headers")
    assert child._upper_bounds == list(metrics._BOUNDS)
    assert len(child._buckets) == len(metrics._BOUNDS)
    assert callable(child._sum.inc)
    assert all(callable(bucket.inc) for bucket in child._buckets)


def assert_same(batched: list[Sample], expected: list[Sample]) -> None:
    """Equal, except that a sum added in several flushes (or files) may differ in its last bits."""
    assert [(name, labels) for name, labels, _ in batched] == [(name, labels) for name, labels, _ in expected]
    for (name, labels, got), (_, _, want) in zip(batched, expected, strict=True):
        assert got == (pytest.approx(want, rel=1e-12) if name.endswith("_sum") else want), (name, labels)


def test_a_scrape_exports_exactly_what_direct_observations_export() -> None:
    # One flush of sums that started at zero: the same additions in the same order, bit for bit.
    assert samples(json.loads(finish(run(OBSERVATIONS, "scrape[]", {}))), HISTOGRAM) == direct(OBSERVATIONS)


def test_a_scrape_after_several_flushes_exports_what_direct_observations_export() -> None:
    exported = samples(json.loads(finish(run(OBSERVATIONS, "scrape[9, 30]", {}))), HISTOGRAM)
    assert_same(exported, direct(OBSERVATIONS))


def test_exit_flushes_into_the_multiprocess_files_exactly(tmp_path: Path) -> None:
    finish(run(OBSERVATIONS, "exit", {metrics.MULTIPROC_ENV: str(tmp_path)}))
    # One flush of sums that started at zero: the same additions in the same order, bit for bit.
    assert from_files(tmp_path, HISTOGRAM) == direct(OBSERVATIONS)
    assert cache_hits(tmp_path) == len(OBSERVATIONS)


def test_the_flusher_thread_writes_the_multiprocess_files_of_a_running_process(tmp_path: Path) -> None:
    proc = run(OBSERVATIONS, "wait", {metrics.MULTIPROC_ENV: str(tmp_path)})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "recorded"
        deadline = time.monotonic() + 30  # a wait, not a measurement: the flusher runs every 0.5 s
        while cache_hits(tmp_path) < len(OBSERVATIONS) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cache_hits(tmp_path) == len(OBSERVATIONS)
        assert_same(from_files(tmp_path, HISTOGRAM), direct(OBSERVATIONS))
    finally:
        finish(proc)


def test_a_forked_child_counts_only_its_own(tmp_path: Path) -> None:
    finish(run(OBSERVATIONS, "fork", {metrics.MULTIPROC_ENV: str(tmp_path)}))
    assert cache_hits(tmp_path) == 5
    assert_same(from_files(tmp_path, HISTOGRAM), direct(OBSERVATIONS[:5]))


def test_the_multiprocess_exporter_flushes_its_own_process_before_reading_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    me = threading.get_ident()  # this module's flusher thread may flush meanwhile: not counted

    def flush() -> None:
        if threading.get_ident() == me:
            events.append("flush")

    def read_files(self: MultiProcessCollector) -> list[object]:
        events.append("files")
        return []

    monkeypatch.setattr(metrics, "flush", flush)
    monkeypatch.setattr(MultiProcessCollector, "collect", read_files)
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    list(metrics.exposition_registry().collect())
    assert events == ["flush", "files"]


def error_count(reason: str) -> float:
    return REGISTRY.get_sample_value("silo_router_errors_total", {"reason": reason}) or 0.0


def test_every_way_of_collecting_flushes_first() -> None:
    before = error_count("batching_collect_check")
    metrics.record_error("batching_collect_check")
    restricted = REGISTRY.restricted_registry(["silo_router_errors_total"])
    value = next(
        s.value
        for family in restricted.collect()
        for s in family.samples
        if s.labels.get("reason") == "batching_collect_check"
    )
    assert value == before + 1
    metrics.record_error("batching_collect_check")
    totals = [s for family in metrics.ERRORS.collect() for s in family.samples if s.name.endswith("_total")]
    by_reason = {s.labels["reason"]: s.value for s in totals}
    assert by_reason["batching_collect_check"] == before + 2


def test_concurrent_flushes_lose_no_increment() -> None:
    writers, each = 4, 5000
    reason = "batching_concurrency_check"
    before = error_count(reason)
    count_before = REGISTRY.get_sample_value(f"{HISTOGRAM}_count", {"phase": "body"}) or 0.0
    done = threading.Event()

    def write() -> None:
        for _ in range(each):
            metrics.record_error(reason)
            metrics.observe_phase("body", 0.003)

    def flush() -> None:
        while not done.is_set():
            metrics.flush()
            error_count(reason)  # a scrape from yet another thread

    flushers = [threading.Thread(target=flush) for _ in range(2)]
    threads = [threading.Thread(target=write) for _ in range(writers)]
    for thread in (*flushers, *threads):
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    for thread in flushers:
        thread.join()
    assert error_count(reason) == before + writers * each
    assert REGISTRY.get_sample_value(f"{HISTOGRAM}_count", {"phase": "body"}) == count_before + writers * each


def test_unbounded_raw_values_are_counted_under_one_label_without_growing_memory() -> None:
    before = error_count("other")
    for i in range(2 * metrics._RAW_KEY_LIMIT):
        metrics.record_error(f"Not A Code {i}")
    assert error_count("other") == before + 2 * metrics._RAW_KEY_LIMIT
    assert len(metrics._ERRORS.by_key) <= metrics._RAW_KEY_LIMIT


def test_a_nan_or_negative_duration_counts_as_instant_and_keeps_the_sum() -> None:
    def read(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"phase": "headers", **labels}) or 0.0

    total, fastest = read(f"{HISTOGRAM}_sum"), read(f"{HISTOGRAM}_bucket", le="0.0005")
    metrics.observe_phase("headers", math.nan)
    metrics.observe_phase("headers", -1.0)
    assert read(f"{HISTOGRAM}_sum") == total
    assert read(f"{HISTOGRAM}_bucket", le="0.0005") == fastest + 2
