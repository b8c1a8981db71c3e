"""Every Prometheus metric of silo-router, and the exporter that serves them.

Rules (the dashboard, the alerts and ``docs/operations.md`` rely on them):

1. Callers use the ``record_*`` / ``set_*`` helpers, never the metric objects: label names and
   the normalisation of label values live here only.
2. Label values are bounded: a provider is a registered slug, ``plugins``, ``unknown`` or
   ``none``; a status is a three-digit code or ``none``; reasons are stable codes
   (``[a-z][a-z0-9_]*``); a region is a configured region name. Anything else becomes ``unknown``
   or ``other``, so a bug can never turn a path or an id into a new time series.
3. Several worker processes: when ``PROMETHEUS_MULTIPROC_DIR`` is set *before prometheus_client
   is first imported*, every process writes its values to mmap files in that directory and
   ``start_exporter`` serves the sum (counters, histograms) or the max (gauges) over all of them.
   The directory must be emptied before the workers start (``wipe_multiprocess_dir``) and a
   worker's live gauges removed when it exits (``mark_process_dead``).
4. The per-request helpers (``record_request``, ``observe_phase``, ``observe_cache``,
   ``record_stored``, ``record_shed``, ``record_error``) only add to plain in-process counts under
   one lock; ``flush`` moves them into the prometheus_client metrics, which then export exactly
   what calling ``.inc()``/``.observe()`` each time would have. Why: measured in a loop,
   ``.inc()``/``.observe()`` cost 4 us per routed webhook (8 us with ``PROMETHEUS_MULTIPROC_DIR``,
   which writes the mmap file on every call), the batched helpers 0.8 us. A flush runs before
   every collection of these metrics (a scrape of this process, ``get_sample_value``, the
   multiprocess exporter), every ``FLUSH_EVERY_S`` from a daemon thread (so the files another
   process's exporter reads lag by at most that) and at exit (``atexit``; a killed process loses
   at most its last ``FLUSH_EVERY_S``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, Literal, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Metric, start_http_server
from prometheus_client import multiprocess as _multiprocess

from sidecar import __version__
from sidecar.config import Address
from sidecar.core.providers import PROVIDERS
from sidecar.errors import ConfigError

log = logging.getLogger(__name__)

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_EVERY_S: Final = 0.5
"""How long the batched counts (rule 4) may wait before another process's exporter sees them."""

DecisionLabel = Literal["control", "forward", "store", "reply"]
Phase = Literal["headers", "body"]
CacheResult = Literal["hit", "miss", "negative_hit"]
XdsType = Literal["cds", "rds"]

DECISIONS: Final[frozenset[str]] = frozenset(("control", "forward", "store", "reply"))
PHASES: Final[frozenset[str]] = frozenset(("headers", "body"))
CACHE_RESULTS: Final[frozenset[str]] = frozenset(("hit", "miss", "negative_hit"))
XDS_TYPES: Final[frozenset[str]] = frozenset(("cds", "rds"))
ERROR_REASONS: Final = ("directory_unavailable", "outbox_unavailable", "budget_exceeded", "internal_error")
"""Created at zero on start, so ``rate()`` in an alert has a series before the first error."""

DECISION_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""0.5 ms (a cached decision) to 2.5 s (past Envoy's 2 s message timeout: those answers came too late)."""

_REASON = re.compile(r"[a-z][a-z0-9_]{0,47}")
_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


def _multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


# prometheus_client opens a file per process and metric type in the directory as soon as a value
# exists; a missing directory would crash the first import rather than say what is wrong.
if (_dir := _multiprocess_dir()) is not None:
    Path(_dir).mkdir(parents=True, exist_ok=True)


class _FlushedCounter(Counter):
    """A counter fed by batched counts (rule 4): whatever collects it sees them all."""

    def collect(self) -> Iterable[Metric]:
        flush()
        return super().collect()


class _FlushedHistogram(Histogram):
    """A histogram fed by batched observations (rule 4): whatever collects it sees them all."""

    def collect(self) -> Iterable[Metric]:
        flush()
        return super().collect()


REQUESTS: Final = _FlushedCounter(
    "silo_router_requests",
    "Webhook requests decided by the sidecar, by provider, decision and the status the sidecar answered "
    "(none when an upstream answers).",
    ["provider", "decision", "status"],
)
DECISION_SECONDS: Final = _FlushedHistogram(
    "silo_router_decision_seconds",
    "Time the sidecar spent answering one ext_proc message (headers or body phase).",
    ["phase"],
    buckets=DECISION_BUCKETS,
)
DIRECTORY_CACHE: Final = _FlushedCounter(
    "silo_router_directory_cache",
    "Directory cache lookups by result (negative_hit: a cached 'not found').",
    ["result"],
)
DIRECTORY_ERRORS: Final = Counter(
    "silo_router_directory_errors",
    "Directory queries that failed (database unreachable, timeout, bad row).",
)
OUTBOX_STORED: Final = _FlushedCounter(
    "silo_router_outbox_stored", "Webhook copies committed to the outbox.", ["provider", "region"]
)
OUTBOX_DELIVERED: Final = Counter(
    "silo_router_outbox_delivered", "Outbox rows delivered to their region.", ["provider", "region"]
)
OUTBOX_RETRIED: Final = Counter(
    "silo_router_outbox_retried", "Delivery attempts that failed and were rescheduled.", ["provider", "region"]
)
OUTBOX_DROPPED: Final = Counter(
    "silo_router_outbox_dropped",
    "Outbox rows the region refused for good (400/401/403/404/409); kept as dead letters.",
    ["provider", "region", "reason"],
)
OUTBOX_DEAD: Final = Counter(
    "silo_router_outbox_dead",
    "Outbox rows that became dead letters (attempts exhausted, too old, dropped).",
    ["provider", "region", "reason"],
)
# Backlog gauges are sampled from the database, so every process that samples sees the same
# number: "max" over processes is the value, and "live" forgets a process that exited (its last
# sample would otherwise hold an alert up forever).
OUTBOX_PENDING: Final = Gauge(
    "silo_router_outbox_pending", "Outbox rows waiting for delivery.", ["region"], multiprocess_mode="livemax"
)
OUTBOX_OLDEST_PENDING_AGE: Final = Gauge(
    "silo_router_outbox_oldest_pending_age_seconds",
    "Age of the oldest outbox row still waiting for delivery (0 when none).",
    ["region"],
    multiprocess_mode="livemax",
)
SHED: Final = _FlushedCounter("silo_router_shed", "Webhooks answered 429 by a shed rule.", ["provider"])
ERRORS: Final = _FlushedCounter(
    "silo_router_errors", "Failures answered with an error status, by stable error code.", ["reason"]
)
# xDS (envoy.mode: xds). Versions are per process (each counts the changes it has seen), so the
# gauges compare within a process: acked below snapshot means an update in flight or rejected.
XDS_SNAPSHOT_VERSION: Final = Gauge(
    "silo_router_xds_snapshot_version",
    "The version of the region snapshot this sidecar serves over ADS; it goes up with every change of the "
    "region table.",
    multiprocess_mode="livemax",
)
XDS_ACKED_VERSION: Final = Gauge(
    "silo_router_xds_acked_version",
    "The snapshot version every Envoy connected to this sidecar has applied, by type (cds, rds).",
    ["type"],
    multiprocess_mode="livemin",
)
XDS_PUSHES: Final = Counter("silo_router_xds_pushes", "Discovery responses sent to Envoy, by type.", ["type"])
XDS_NACKS: Final = Counter(
    "silo_router_xds_nacks",
    "Discovery responses Envoy rejected (NACK), by type; Envoy keeps its previous configuration.",
    ["type"],
)
XDS_STREAMS: Final = Gauge(
    "silo_router_xds_streams", "Envoys connected to this sidecar's ADS.", multiprocess_mode="livesum"
)
# A gauge, not prometheus_client.Info: Info is not supported in multiprocess mode. Every process
# sets 1, and "max" keeps one series per version however many processes report it.
INFO: Final = Gauge(
    "silo_router_info", "Always 1; the version label says which build runs.", ["version"], multiprocess_mode="max"
)

METRIC_NAMES: Final = frozenset(
    {
        "silo_router_requests_total",
        "silo_router_decision_seconds",
        "silo_router_directory_cache_total",
        "silo_router_directory_errors_total",
        "silo_router_outbox_stored_total",
        "silo_router_outbox_delivered_total",
        "silo_router_outbox_retried_total",
        "silo_router_outbox_dropped_total",
        "silo_router_outbox_dead_total",
        "silo_router_outbox_pending",
        "silo_router_outbox_oldest_pending_age_seconds",
        "silo_router_shed_total",
        "silo_router_errors_total",
        "silo_router_info",
        "silo_router_xds_snapshot_version",
        "silo_router_xds_acked_version",
        "silo_router_xds_pushes_total",
        "silo_router_xds_nacks_total",
        "silo_router_xds_streams",
    }
)
"""The exported names (histograms add ``_bucket``/``_sum``/``_count``); the deploy tests check
the dashboard and the alerts against this set."""


# -- label normalisation (rule 2) ------------------------------------------------------------


def provider_label(provider: str | None) -> str:
    if provider is None:
        return "none"
    if provider == "plugins" or provider in PROVIDERS:
        return provider
    return "unknown"


def status_label(status: int | None) -> str:
    if status is None:
        return "none"
    return str(status) if 100 <= status <= 599 else "other"


def reason_label(reason: str) -> str:
    return reason if _REASON.fullmatch(reason) else "other"


def region_label(region: str | None) -> str:
    if region is None:
        return "none"
    return region if _REGION.fullmatch(region) else "unknown"


def _one_of(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else "other"


# -- recording (rule 4) ----------------------------------------------------------------------

# Each batched metric has a _Pending: one "cell" (a list of floats) per normalised label set, with
# what was recorded since the last flush, and a dict from the callers' raw label values to that
# cell, so the hot path pays neither ``labels()`` nor the normalisation above. A miss normalises
# (rule 2) and remembers the raw key; cells are bounded by rule 2 and raw keys by _RAW_KEY_LIMIT,
# so a bug feeding unbounded values costs time, not memory.
_RAW_KEY_LIMIT: Final = 1024

# _LOCK guards every cell, the hot path's additions and a flush's read-and-zero, so that a flush
# from another thread (exporter, flusher) never loses an addition, whichever threads record.
# Measured: acquire/release adds 0.15 us to a helper; held for a few additions, never for I/O.
_LOCK = threading.Lock()
# A flush drains under _LOCK and applies outside it: _FLUSH_LOCK makes the whole flush one step,
# so a scrape that flushes while the flusher thread applies waits for it instead of missing counts.
_FLUSH_LOCK = threading.Lock()

_BOUNDS: Final = (*DECISION_BUCKETS, math.inf)
"""``observe()`` counts a value in the first bucket whose bound is >= the value, +Inf last."""

_Key = TypeVar("_Key", bound=Hashable)
_Child = Any
_Cell = list[float]
_Apply = Callable[[_Child, _Cell], None]


def _add_count(child: _Child, cell: _Cell) -> None:
    child.inc(cell[0])


def _add_observations(child: _Child, cell: _Cell) -> None:
    """What ``observe()`` does once per observation, for all of them: the sum, then each bucket's own
    (non-cumulative) count. ``_sum`` and ``_buckets`` are private to prometheus_client (0.26):
    tests/test_metrics_batching.py fails if an upgrade changes them."""
    child._sum.inc(cell[0])
    for bucket, count in zip(child._buckets, cell[1:], strict=True):
        if count:
            bucket.inc(count)


class _Pending(Generic[_Key]):
    """What the hot path recorded for one metric since the last flush."""

    __slots__ = ("_apply", "_cells", "_labels", "_metric", "_size", "by_key")

    def __init__(
        self, metric: Counter | Histogram, labels: Callable[[_Key], tuple[str, ...]], apply: _Apply, size: int
    ) -> None:
        self.by_key: dict[_Key, _Cell] = {}
        self._metric = metric
        self._labels = labels
        self._apply = apply
        self._size = size
        self._cells: dict[tuple[str, ...], tuple[_Cell, _Child]] = {}

    def cell(self, key: _Key) -> _Cell:
        """The hot path's miss: the cell of ``key``'s normalised labels, remembered under ``key``."""
        labels = self._labels(key)
        with _LOCK:
            found = self._cells.get(labels)
        if found is None:
            child = self._metric.labels(*labels)  # takes prometheus_client's lock: not under ours
            with _LOCK:
                found = self._cells.setdefault(labels, ([0.0] * self._size, child))
        if len(self.by_key) < _RAW_KEY_LIMIT:
            self.by_key[key] = found[0]
        _start_flusher()
        return found[0]

    def drain(self) -> list[tuple[_Apply, _Child, _Cell]]:
        """Take what was recorded since the last drain; the caller holds _LOCK."""
        drained = []
        zeros = [0.0] * self._size
        for cell, child in self._cells.values():
            if any(cell):
                drained.append((self._apply, child, cell[:]))
                cell[:] = zeros
        return drained

    def forget(self, counts: bool) -> None:
        """In a forked child: forget the raw keys (the next call misses, which starts this process's
        flusher) and, if ``counts``, what the parent recorded (the parent flushes it)."""
        self.by_key.clear()
        if counts:
            self.drain()


def _request_labels(key: tuple[str | None, str, int | None]) -> tuple[str, ...]:
    provider, decision, status = key
    return provider_label(provider), _one_of(decision, DECISIONS), status_label(status)


def _stored_labels(key: tuple[str | None, str]) -> tuple[str, ...]:
    return provider_label(key[0]), region_label(key[1])


_REQUESTS: Final = _Pending(REQUESTS, _request_labels, _add_count, 1)
_PHASES: Final[_Pending[str]] = _Pending(
    DECISION_SECONDS, lambda phase: (_one_of(phase, PHASES),), _add_observations, 1 + len(_BOUNDS)
)
_CACHE: Final[_Pending[str]] = _Pending(
    DIRECTORY_CACHE, lambda result: (_one_of(result, CACHE_RESULTS),), _add_count, 1
)
_STORED: Final = _Pending(OUTBOX_STORED, _stored_labels, _add_count, 1)
_SHED: Final[_Pending[str | None]] = _Pending(SHED, lambda provider: (provider_label(provider),), _add_count, 1)
_ERRORS: Final[_Pending[str]] = _Pending(ERRORS, lambda reason: (reason_label(reason),), _add_count, 1)
_PENDING: Final = (_REQUESTS, _PHASES, _CACHE, _STORED, _SHED, _ERRORS)

# The helpers called on every request read these dicts directly (one global load, no attribute
# lookup) and inline ``_count``; the others call it.
_REQUEST_CELLS: Final = _REQUESTS.by_key
_PHASE_CELLS: Final = _PHASES.by_key
_CACHE_CELLS: Final = _CACHE.by_key


def _count(pending: _Pending[_Key], key: _Key) -> None:
    cell = pending.by_key.get(key)
    if cell is None:
        cell = pending.cell(key)
    _LOCK.acquire()
    try:
        cell[0] += 1.0
    finally:
        _LOCK.release()


def flush() -> None:
    """Move everything the hot path recorded into the prometheus_client metrics (rule 4)."""
    with _FLUSH_LOCK:
        with _LOCK:
            drained = [entry for pending in _PENDING for entry in pending.drain()]
        for apply, child, cell in drained:
            apply(child, cell)


_flusher: threading.Thread | None = None


def _flush_periodically() -> None:
    while True:
        time.sleep(FLUSH_EVERY_S)
        try:
            flush()
        except Exception:  # only a changed prometheus_client fails here (the tests say so): keep going
            log.exception("flushing metrics failed; the counts drained by this flush are lost")


def _start_flusher() -> None:
    """Started by the first record of a process (a cell miss), not at import: importing this module
    for a CLI command should not start a thread."""
    global _flusher
    if _flusher is not None:
        return
    with _LOCK:
        if _flusher is not None:
            return
        _flusher = threading.Thread(target=_flush_periodically, name="metrics-flush", daemon=True)
    with contextlib.suppress(RuntimeError):  # shutting down: the atexit flush is all that is left
        _flusher.start()


def _after_fork_in_child() -> None:
    # The threads are gone: a lock one of them held would stay held, and there is no flusher.
    global _LOCK, _FLUSH_LOCK, _flusher
    _LOCK = threading.Lock()
    _FLUSH_LOCK = threading.Lock()
    _flusher = None
    # In multiprocess mode prometheus_client gives the child its own files, starting at zero; in
    # single-process mode the child inherits the parent's values, so it keeps the pending counts too.
    for pending in _PENDING:
        pending.forget(counts=multiprocess_enabled())


atexit.register(flush)
os.register_at_fork(after_in_child=_after_fork_in_child)


def record_request(
    provider: str | None, decision: DecisionLabel, status: int | None, seconds: float, phase: Phase
) -> None:
    """One decided request: ``status`` is what the sidecar answered (None when it routed the
    request and an upstream answers); ``seconds`` the time spent on the deciding message."""
    key = (provider, decision, status)
    cell = _REQUEST_CELLS.get(key)
    if cell is None:
        cell = _REQUESTS.cell(key)
    # observe_phase's work under the same lock: one lock round instead of two on the hottest call.
    times, seconds, slot = _phase_slot(phase, seconds)
    _LOCK.acquire()
    try:
        cell[0] += 1.0
        times[0] += seconds
        times[slot] += 1.0
    finally:
        _LOCK.release()


def observe_phase(phase: Phase, seconds: float) -> None:
    """A message answered without a decision (the headers phase that asked for the body)."""
    times, seconds, slot = _phase_slot(phase, seconds)
    _LOCK.acquire()
    try:
        times[0] += seconds
        times[slot] += 1.0
    finally:
        _LOCK.release()


def _phase_slot(phase: Phase, seconds: float) -> tuple[list[float], float, int]:
    """The phase histogram's cells (sum first, then one per bucket), the time to add and its bucket."""
    times = _PHASE_CELLS.get(phase)
    if times is None:
        times = _PHASES.cell(phase)
    if not seconds > 0.0:  # a clock step (negative) or NaN counts as instant
        seconds = 0.0
    return times, seconds, bisect_left(_BOUNDS, seconds) + 1


def record_cache(result: CacheResult) -> None:
    _count(_CACHE, result)


def record_directory_error() -> None:
    DIRECTORY_ERRORS.inc()  # rare: not batched


def observe_cache(event: str) -> None:
    """The directory cache's hook: a hit, negative hit or miss, or an error of the database behind it."""
    cell = _CACHE_CELLS.get(event)
    if cell is None:
        if event == "error":
            record_directory_error()
            return
        cell = _CACHE.cell(event)
    _LOCK.acquire()
    try:
        cell[0] += 1.0
    finally:
        _LOCK.release()


def record_stored(provider: str | None, regions: Iterable[str]) -> None:
    """After the commit: one copy per region."""
    for region in regions:
        _count(_STORED, (provider, region))


def record_delivered(provider: str | None, region: str) -> None:
    OUTBOX_DELIVERED.labels(provider_label(provider), region_label(region)).inc()


def record_retried(provider: str | None, region: str) -> None:
    OUTBOX_RETRIED.labels(provider_label(provider), region_label(region)).inc()


def record_dropped(provider: str | None, region: str, reason: str) -> None:
    """The region refused the row for good (e.g. ``http_404``); call ``record_dead`` too if it is kept."""
    OUTBOX_DROPPED.labels(provider_label(provider), region_label(region), reason_label(reason)).inc()


def record_dead(provider: str | None, region: str, reason: str) -> None:
    """A row became a dead letter (``max_attempts``, ``expired``, ``dropped``)."""
    OUTBOX_DEAD.labels(provider_label(provider), region_label(region), reason_label(reason)).inc()


def set_backlog(region: str, pending: int, oldest_age_seconds: float) -> None:
    """A sample of the backlog of one region (0 and 0 when it is empty: never leave a stale age)."""
    label = region_label(region)
    OUTBOX_PENDING.labels(label).set(pending)
    OUTBOX_OLDEST_PENDING_AGE.labels(label).set(max(oldest_age_seconds, 0.0))


def record_shed(provider: str | None) -> None:
    _count(_SHED, provider)


def record_error(reason: str) -> None:
    """``reason`` is a stable code: ``SiloError.code``, ``budget_exceeded``, ``internal_error``."""
    _count(_ERRORS, reason)


def set_xds_snapshot(version: int) -> None:
    XDS_SNAPSHOT_VERSION.set(version)


def set_xds_acked(type_: XdsType, version: int) -> None:
    XDS_ACKED_VERSION.labels(_one_of(type_, XDS_TYPES)).set(version)


def record_xds_push(type_: XdsType) -> None:
    XDS_PUSHES.labels(_one_of(type_, XDS_TYPES)).inc()


def record_xds_nack(type_: XdsType) -> None:
    XDS_NACKS.labels(_one_of(type_, XDS_TYPES)).inc()


def set_xds_streams(count: int) -> None:
    XDS_STREAMS.set(count)


def initialise(version: str = __version__, regions: Iterable[str] = ()) -> None:
    """Create the series that alerts read at zero (an absent series makes ``rate()`` silent), and
    set ``silo_router_info``. Each process calls it once on start."""
    INFO.labels(version).set(1)
    for reason in ERROR_REASONS:
        ERRORS.labels(reason)
    for result in sorted(CACHE_RESULTS):
        DIRECTORY_CACHE.labels(result)
    for phase in sorted(PHASES):
        DECISION_SECONDS.labels(phase)
    for type_ in sorted(XDS_TYPES):
        XDS_PUSHES.labels(type_)
        XDS_NACKS.labels(type_)
        XDS_ACKED_VERSION.labels(type_)
    for region in regions:
        OUTBOX_PENDING.labels(region_label(region))
        OUTBOX_OLDEST_PENDING_AGE.labels(region_label(region))


# -- exposition (rule 3) ---------------------------------------------------------------------


def multiprocess_enabled() -> bool:
    return _multiprocess_dir() is not None


def exposition_registry() -> CollectorRegistry:
    """What ``/metrics`` serves: the merged files of every process, or this process's registry."""
    path = _multiprocess_dir()
    if path is None:
        return REGISTRY
    # A fresh registry: the default one would add this process's values a second time.
    registry = CollectorRegistry()
    registry.register(_FlushFirst())  # collected first: this process's pending counts reach its files
    _multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


class _FlushFirst:
    """Flushes this process (rule 4) when collected; yields no metric of its own."""

    def describe(self) -> Iterable[Metric]:
        return ()  # without it, registering would collect (flush) once for the names

    def collect(self) -> Iterable[Metric]:
        flush()
        return ()


@dataclass(frozen=True, slots=True)
class Exporter:
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        port: int = self.server.server_address[1]
        return port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_exporter(address: Address | str) -> Exporter:
    """Serve ``/metrics`` on ``address`` (``host:port``; port 0 picks one) from a daemon thread.

    Each sidecar process serves its own (``sidecar.processes``: process k on the metrics port + k);
    in multiprocess mode every one of them serves the values of all.
    """
    if isinstance(address, str):
        address = Address.parse(address, "metrics address")
    host = address.host.strip("[]")
    try:
        server, thread = start_http_server(address.port, addr=host, registry=exposition_registry())
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from None
    return Exporter(server, thread)


def wipe_multiprocess_dir() -> None:
    """Remove the files of every other process: the parent calls it before it starts its workers,
    so the values of an earlier run (a restarted container keeps its emptyDir) are not added again.
    This process's own files stay: its metric objects already write to them."""
    path = _multiprocess_dir()
    if path is None:
        return
    mine = str(os.getpid())
    for file in Path(path).glob("*.db"):
        # prometheus_client names them <type>[_<mode>]_<pid>.db
        if file.stem.rpartition("_")[2] != mine:
            file.unlink(missing_ok=True)


def mark_process_dead(pid: int) -> None:
    """A worker process exited: forget its live gauges (counters and histograms keep counting)."""
    path = _multiprocess_dir()
    if path is not None:
        _multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
