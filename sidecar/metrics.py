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
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess as _multiprocess

from sidecar import __version__
from sidecar.config import Address
from sidecar.core.providers import PROVIDERS

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

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

REQUESTS: Final = Counter(
    "silo_router_requests",
    "Webhook requests decided by the sidecar, by provider, decision and the status the sidecar answered "
    "(none when an upstream answers).",
    ["provider", "decision", "status"],
)
DECISION_SECONDS: Final = Histogram(
    "silo_router_decision_seconds",
    "Time the sidecar spent answering one ext_proc message (headers or body phase).",
    ["phase"],
    buckets=DECISION_BUCKETS,
)
DIRECTORY_CACHE: Final = Counter(
    "silo_router_directory_cache",
    "Directory cache lookups by result (negative_hit: a cached 'not found').",
    ["result"],
)
DIRECTORY_ERRORS: Final = Counter(
    "silo_router_directory_errors",
    "Directory queries that failed (database unreachable, timeout, bad row).",
)
OUTBOX_STORED: Final = Counter(
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
SHED: Final = Counter("silo_router_shed", "Webhooks answered 429 by a shed rule.", ["provider"])
ERRORS: Final = Counter(
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


# -- recording -------------------------------------------------------------------------------

# The hot path (two or three calls per webhook) must not pay for ``labels()`` (validation, a lock,
# a dict lookup) nor for the normalisation above on every call: each metric keeps its labelled
# children in a dict keyed by the caller's raw values. A miss normalises (rule 2), asks
# prometheus_client for the child and remembers it; the normalised label space is bounded by rule 2
# and the raw keys by _CHILD_CACHE_LIMIT, so a bug feeding unbounded values costs time, not memory.
_CHILD_CACHE_LIMIT: Final = 1024

_Child = Any
_REQUEST_CHILDREN: dict[tuple[str | None, str, int | None], _Child] = {}
_PHASE_CHILDREN: dict[str, _Child] = {}
_CACHE_CHILDREN: dict[str, _Child] = {}
_ERROR_CHILDREN: dict[str, _Child] = {}
_SHED_CHILDREN: dict[str | None, _Child] = {}
_STORED_CHILDREN: dict[tuple[str | None, str], _Child] = {}


def _remember(cache: dict[Any, _Child], key: Any, child: _Child) -> _Child:
    if len(cache) < _CHILD_CACHE_LIMIT:
        cache[key] = child
    return child


def record_request(
    provider: str | None, decision: DecisionLabel, status: int | None, seconds: float, phase: Phase
) -> None:
    """One decided request: ``status`` is what the sidecar answered (None when it routed the
    request and an upstream answers); ``seconds`` the time spent on the deciding message."""
    key = (provider, decision, status)
    child = _REQUEST_CHILDREN.get(key)
    if child is None:
        labels = (provider_label(provider), _one_of(decision, DECISIONS), status_label(status))
        child = _remember(_REQUEST_CHILDREN, key, REQUESTS.labels(*labels))
    child.inc()
    observe_phase(phase, seconds)


def observe_phase(phase: Phase, seconds: float) -> None:
    """A message answered without a decision (the headers phase that asked for the body)."""
    child = _PHASE_CHILDREN.get(phase)
    if child is None:
        child = _remember(_PHASE_CHILDREN, phase, DECISION_SECONDS.labels(_one_of(phase, PHASES)))
    child.observe(max(seconds, 0.0))


def record_cache(result: CacheResult) -> None:
    DIRECTORY_CACHE.labels(_one_of(result, CACHE_RESULTS)).inc()


def record_directory_error() -> None:
    DIRECTORY_ERRORS.inc()


def observe_cache(event: str) -> None:
    """The directory cache's hook: a hit, negative hit or miss, or an error of the database behind it."""
    child = _CACHE_CHILDREN.get(event)
    if child is None:
        if event == "error":
            record_directory_error()
            return
        child = _remember(_CACHE_CHILDREN, event, DIRECTORY_CACHE.labels(_one_of(event, CACHE_RESULTS)))
    child.inc()


def record_stored(provider: str | None, regions: Iterable[str]) -> None:
    """After the commit: one copy per region."""
    for region in regions:
        key = (provider, region)
        child = _STORED_CHILDREN.get(key)
        if child is None:
            child = _remember(
                _STORED_CHILDREN, key, OUTBOX_STORED.labels(provider_label(provider), region_label(region))
            )
        child.inc()


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
    child = _SHED_CHILDREN.get(provider)
    if child is None:
        child = _remember(_SHED_CHILDREN, provider, SHED.labels(provider_label(provider)))
    child.inc()


def record_error(reason: str) -> None:
    """``reason`` is a stable code: ``SiloError.code``, ``budget_exceeded``, ``internal_error``."""
    child = _ERROR_CHILDREN.get(reason)
    if child is None:
        child = _remember(_ERROR_CHILDREN, reason, ERRORS.labels(reason_label(reason)))
    child.inc()


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
    _multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


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

    With several worker processes exactly one of them (or their parent) calls this: it serves the
    values of all of them.
    """
    if isinstance(address, str):
        address = Address.parse(address, "metrics address")
    host = address.host.strip("[]")
    server, thread = start_http_server(address.port, addr=host, registry=exposition_registry())
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
