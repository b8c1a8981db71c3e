"""Settings: read ``silo-router.yaml`` and the environment into frozen dataclasses. No other I/O.

Secrets may come from the environment (``SILO_ROUTER_SLACK_SIGNING_SECRET``…) or from files
(``slack_signing_secret_file: /run/secrets/slack``), so they never need to sit in the YAML.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeAlias, get_args

import yaml

from sidecar.core.context import Secrets, ShedRule
from sidecar.errors import ConfigError

DEFAULT_CONFIG = "silo-router.yaml"
_REGION_NAME = re.compile(r"[A-Za-z0-9_-]+")
ENV_PREFIX = "SILO_ROUTER_"
SECRET_NAMES = (
    "slack_signing_secret",
    "slack_verification_token",
    "slack_staging_signing_secret",
    "slack_staging_verification_token",
    "discord_public_key",
)
EnvoyMode: TypeAlias = Literal["static", "xds"]
ENVOY_MODES: tuple[EnvoyMode, ...] = get_args(EnvoyMode)


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str) -> Address:
        host, sep, port = str(text).rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"{what}: expected host:port, got {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class EnvoySettings:
    body_limit_bytes: int = 1_048_576
    failure_mode_allow: bool = False
    status_on_error: int = 503
    message_timeout_ms: int = 2000
    """Per ext_proc message. Slack gives a webhook 3 s in all; this leaves room for the upstream."""
    route_timeout_s: float = 15.0
    admin: Address = field(default_factory=lambda: Address("127.0.0.1", 9901))
    egress: Address = field(default_factory=lambda: Address("127.0.0.1", 8081))
    concurrency: int = 1
    mode: EnvoyMode = "static"
    """``static``: every region rendered into the bootstrap (edit, re-render, restart). ``xds``: the
    bootstrap holds listeners, control and the sidecar; region clusters and the webhook routes come
    from the sidecar over ADS, built from the ``region`` table (``silo-router region add``)."""


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    grpc: Address = field(default_factory=lambda: Address("127.0.0.1", 50051))
    metrics: Address = field(default_factory=lambda: Address("127.0.0.1", 9464))
    processes: int = 1
    """Sidecar processes beside one Envoy, each on its own ports: process k (``serve --process k``)
    listens on ``grpc`` and ``metrics`` port + k, and Envoy's sidecar cluster lists every one of
    them. Envoy then balances streams across processes itself; on one shared port the kernel would
    balance connections, and a few connections hash unevenly (docs/performance.md, fourth round)."""
    cache_size: int = 100_000
    cache_ttl_s: float = 60.0
    negative_ttl_s: float = 10.0
    db_pool_max: int = 8
    db_connect_timeout_s: float = 5.0

    def grpc_addresses(self) -> tuple[Address, ...]:
        """Where each sidecar process listens, process 0 first."""
        return tuple(Address(self.grpc.host, self.grpc.port + k) for k in range(self.processes))

    def for_process(self, k: int) -> SidecarSettings:
        """The settings process ``k`` runs with: its own gRPC port, and its own metrics port
        unless that is 0 (each process then picks a free one). ``processes`` is 1 there: a process
        serves one address, and only the Envoy bootstrap lists them all."""
        if not 0 <= k < self.processes:
            raise ConfigError(f"sidecar process {k}: sidecar.processes is {self.processes}, so 0…{self.processes - 1}")
        metrics = Address(self.metrics.host, self.metrics.port + k) if self.metrics.port else self.metrics
        return replace(self, grpc=self.grpc_addresses()[k], metrics=metrics, processes=1)


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """The delivery worker (``silo-router deliver``). Defaults are Sentry's numbers (reference §5)."""

    workers: int = 1
    """Concurrent drains per ``deliver`` process (``--workers`` overrides)."""
    poll_interval_s: float = 1.0
    """How long an idle worker waits before looking for due rows again."""
    batch_size: int = 300
    """Rows claimed from one queue's head at once (Sentry's MAX_MAILBOX_DRAIN)."""
    parallel_threshold: int = 60
    """A claim of at least this many rows is drained ``parallel_width`` at a time, order within a
    window not kept (Sentry: 300 / 5). 0 turns the parallel drain off."""
    parallel_width: int = 4
    lease_s: float = 60.0
    """A claim expires this long after it was taken or renewed: a killed worker's rows go to another."""
    timeout_s: float = 12.0
    """Connect and read timeout of one delivery; a send is abandoned after 2 × this + 2 s."""
    max_attempts: int = 10
    backoff_base_s: float = 180.0
    backoff_rate: float = 1.4
    backoff_max_s: float = 3600.0
    max_age_s: float = 3 * 86400.0
    drop_statuses: frozenset[int] = frozenset({400, 401, 403, 404, 409})
    retry_after_statuses: frozenset[int] = frozenset({429, 503})
    retry_after_max_s: float = 3600.0
    """A region's Retry-After is honoured up to this long."""
    retention_s: float = 86400.0
    """Delivered rows are kept this long, then purged; 0 deletes them on delivery."""
    egress_retry_s: float = 5.0
    """Pause after the Envoy egress listener refused a connection (no attempt is counted)."""
    discord_base_url: str = "https://discord.com"
    slack_response_hosts: tuple[str, ...] = ("hooks.slack.com",)
    """Hosts (https) or origins (``http://127.0.0.1:8125``) a Slack ``response_url`` may point at."""
    followup_max_attempts: int = 3
    followup_retry_s: float = 5.0
    followup_max_age_s: float = 1800.0
    """Slack's response_url lives 30 minutes (Discord's token 15): later follow-ups are dead letters."""
    response_limit_bytes: int = 1_048_576
    """The largest region answer kept for a follow-up."""

    @property
    def send_deadline_s(self) -> float:
        return 2 * self.timeout_s + 2


@dataclass(frozen=True, slots=True)
class Settings:
    listen: Address = field(default_factory=lambda: Address("127.0.0.1", 8080))
    database_url: str | None = None
    data_dir: Path = Path(".silo-router")
    control: Address = field(default_factory=lambda: Address("127.0.0.1", 9000))
    regions: Mapping[str, Address] = field(default_factory=dict)
    secrets: Secrets = field(default_factory=Secrets)
    envoy: EnvoySettings = field(default_factory=EnvoySettings)
    sidecar: SidecarSettings = field(default_factory=SidecarSettings)
    shed: tuple[ShedRule, ...] = ()
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    public_url: str | None = None
    """The absolute URL providers post to (e.g. https://hooks.example.com): Atlassian Connect
    tokens signed with a key (``kid``) must name it as their audience."""
    source: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def region_names(self) -> frozenset[str]:
        return frozenset(self.regions)


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``path`` (default ``silo-router.yaml`` if it exists) and ``environ``."""
    environ = os.environ if environ is None else environ
    chosen = Path(path) if path is not None else Path(DEFAULT_CONFIG)
    raw: dict[str, Any] = {}
    if chosen.exists():
        try:
            loaded = yaml.safe_load(chosen.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{chosen}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{chosen}: expected a mapping at the top level")
        raw = loaded or {}
    elif path is not None:
        raise ConfigError(f"{chosen}: no such file")
    base = chosen.resolve().parent if chosen.exists() else Path.cwd()
    return from_mapping(raw, environ, base, chosen if chosen.exists() else None)


def from_mapping(
    raw: Mapping[str, Any], environ: Mapping[str, str], base: Path, source: Path | None = None
) -> Settings:
    regions_raw = raw.get("regions") or {}
    if not isinstance(regions_raw, dict):
        raise ConfigError("regions: expected a mapping of name → {address: host:port}")
    regions = {}
    for name, spec in regions_raw.items():
        name = str(name)
        # ASCII only: the name becomes a header value (raw bytes) and an Envoy cluster name;
        # str.isalnum() would also take "zürich", which the sidecar cannot put in a header.
        if not _REGION_NAME.fullmatch(name):
            raise ConfigError(f"regions: bad region name {name!r} (letters, digits, - and _ only)")
        regions[name] = Address.parse(_address_of(spec, f"regions.{name}"), f"regions.{name}.address")
    data_dir = Path(str(raw.get("data_dir") or environ.get(ENV_PREFIX + "DATA_DIR") or ".silo-router"))
    if not data_dir.is_absolute():
        data_dir = base / data_dir
    database_url = environ.get("DATABASE_URL") or environ.get(ENV_PREFIX + "DATABASE_URL")
    database_url = database_url or raw.get("database_url") or None
    return Settings(
        listen=Address.parse(raw.get("listen", "127.0.0.1:8080"), "listen"),
        database_url=database_url,
        data_dir=data_dir,
        control=Address.parse(_address_of(raw.get("control", {}), "control", "127.0.0.1:9000"), "control"),
        regions=regions,
        secrets=_secrets(raw.get("secrets") or {}, environ, base),
        envoy=_envoy(raw.get("envoy") or {}),
        sidecar=_sidecar(raw.get("sidecar") or {}),
        shed=_shed(raw.get("shed") or []),
        delivery=_delivery(raw.get("delivery") or {}),
        public_url=str(raw["public_url"]) if raw.get("public_url") else None,
        source=source,
        raw=raw,
    )


def _address_of(spec: Any, what: str, default: str | None = None) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and "address" in spec:
        return str(spec["address"])
    if default is not None and not spec:
        return default
    raise ConfigError(f"{what}: expected {{address: host:port}}")


def _secrets(raw: Mapping[str, Any], environ: Mapping[str, str], base: Path) -> Secrets:
    values: dict[str, str | None] = {}
    for name in SECRET_NAMES:
        value = environ.get(ENV_PREFIX + name.upper()) or raw.get(name)
        file_name = raw.get(f"{name}_file") or environ.get(ENV_PREFIX + name.upper() + "_FILE")
        if not value and file_name:
            secret_path = Path(str(file_name))
            secret_path = secret_path if secret_path.is_absolute() else base / secret_path
            try:
                value = secret_path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"secrets.{name}_file: cannot read {secret_path}: {exc.strerror}") from None
        values[name] = str(value) if value else None
    return Secrets(**values)


def _envoy(raw: Mapping[str, Any]) -> EnvoySettings:
    default = EnvoySettings()
    try:
        return EnvoySettings(
            body_limit_bytes=int(raw.get("body_limit_bytes", default.body_limit_bytes)),
            failure_mode_allow=bool(raw.get("failure_mode_allow", default.failure_mode_allow)),
            status_on_error=int(raw.get("status_on_error", default.status_on_error)),
            message_timeout_ms=int(raw.get("message_timeout_ms", default.message_timeout_ms)),
            route_timeout_s=float(raw.get("route_timeout_s", default.route_timeout_s)),
            admin=Address.parse(raw.get("admin", str(default.admin)), "envoy.admin"),
            egress=Address.parse(raw.get("egress", str(default.egress)), "envoy.egress"),
            concurrency=int(raw.get("concurrency", default.concurrency)),
            mode=_envoy_mode(raw.get("mode", default.mode)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"envoy: {exc}") from None


def _envoy_mode(value: Any) -> EnvoyMode:
    if value not in ENVOY_MODES:
        raise ConfigError(f"envoy.mode: expected one of {', '.join(ENVOY_MODES)}, got {value!r}")
    mode: EnvoyMode = value
    return mode


def _sidecar(raw: Mapping[str, Any]) -> SidecarSettings:
    default = SidecarSettings()
    try:
        sidecar = SidecarSettings(
            grpc=Address.parse(raw.get("grpc", str(default.grpc)), "sidecar.grpc"),
            metrics=Address.parse(raw.get("metrics", str(default.metrics)), "sidecar.metrics"),
            cache_size=int(raw.get("cache_size", default.cache_size)),
            cache_ttl_s=float(raw.get("cache_ttl_s", default.cache_ttl_s)),
            negative_ttl_s=float(raw.get("negative_ttl_s", default.negative_ttl_s)),
            db_pool_max=int(raw.get("db_pool_max", default.db_pool_max)),
            db_connect_timeout_s=float(raw.get("db_connect_timeout_s", default.db_connect_timeout_s)),
            processes=int(raw.get("processes", default.processes)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sidecar: {exc}") from None
    if not 1 <= sidecar.processes <= 64:
        raise ConfigError(f"sidecar.processes: expected 1…64, got {sidecar.processes}")
    if sidecar.processes > 1 and sidecar.grpc.port == 0:
        raise ConfigError("sidecar.processes: each process takes the port after sidecar.grpc, so it cannot be 0")
    if sidecar.grpc.port + sidecar.processes - 1 > 65535 or sidecar.metrics.port + sidecar.processes - 1 > 65535:
        raise ConfigError("sidecar.processes: each process takes the next port after sidecar.grpc and sidecar.metrics")
    return sidecar


def _delivery(raw: Mapping[str, Any]) -> DeliverySettings:
    default = DeliverySettings()
    if not isinstance(raw, Mapping):
        raise ConfigError("delivery: expected a mapping")
    known = {f.name for f in fields(DeliverySettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"delivery: unknown setting(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    try:
        for name, value in raw.items():
            current = getattr(default, name)
            if isinstance(current, frozenset):
                values[name] = frozenset(int(v) for v in value)
            elif isinstance(current, tuple):
                values[name] = (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)
            else:
                values[name] = type(current)(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"delivery: {exc}") from None
    delivery = replace(default, **values)
    if delivery.workers < 1 or delivery.batch_size < 1 or delivery.parallel_width < 1 or delivery.max_attempts < 1:
        raise ConfigError("delivery: workers, batch_size, parallel_width and max_attempts must be at least 1")
    if delivery.lease_s <= delivery.send_deadline_s + 2:
        raise ConfigError(f"delivery.lease_s must exceed a send's deadline ({delivery.send_deadline_s + 2:g} s)")
    return delivery


def _shed(raw: Any) -> tuple[ShedRule, ...]:
    if not isinstance(raw, list):
        raise ConfigError("shed: expected a list of {provider: …, integration_id: …}")
    rules = []
    for item in raw:
        if not isinstance(item, dict) or "provider" not in item:
            # Sentry ignores conditions without a provider (reference §2.7); we refuse them loudly.
            raise ConfigError(f"shed: every rule needs a provider, got {item!r}")
        integration_id = item.get("integration_id")
        rules.append(ShedRule(str(item["provider"]), int(integration_id) if integration_id is not None else None))
    return tuple(rules)
