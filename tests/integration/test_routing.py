"""End to end: real Envoy, the real sidecar process, real PostgreSQL, real upstream servers."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from harness import Edge, running_edge

pytestmark = [pytest.mark.db, pytest.mark.envoy]


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, edge_database: str) -> Iterator[Edge]:
    with running_edge(tmp_path_factory.mktemp("edge"), edge_database) as running:
        yield running


@pytest.fixture(autouse=True)
def clean(edge: Edge, edge_database: str) -> None:
    edge.clear()
    with psycopg.connect(edge_database, autocommit=True) as conn:
        conn.execute("DELETE FROM webhook_payload")


def github(
    installation: int, event: str = "push", repo: int = 1296269, extra: bytes = b""
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"installation": {"id": installation}, "repository": {"id": repo}, "ref": "x"}).encode() + extra
    return body, {"content-type": "application/json", "x-github-event": event, "x-hub-signature-256": "sha256=abc"}


def rows(database_url: str) -> list[tuple[str, str, bytes, str, str, dict[str, str]]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT region_name, mailbox_name, request_body, request_method, request_path, request_headers"
            " FROM webhook_payload ORDER BY region_name"
        ).fetchall()


def slack_event(team: str, secret: str = "test-slack-secret", at: float | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": "event_callback", "team_id": team, "event": {"type": "app_mention"}}).encode()
    timestamp = str(int(at if at is not None else time.time()))
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/json",
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": "v0=" + digest,
    }
    return body, headers


def test_github_push_is_stored_once_per_region_and_answered_202(edge: Edge, edge_database: str) -> None:
    body, headers = github(4712)
    response = edge.post("/extensions/github/webhook/?src=test", body, headers)
    assert response.status_code == 202
    assert response.content == b""
    stored = rows(edge_database)
    assert [(r[0], r[1]) for r in stored] == [("de", "github:11:69:push"), ("us", "github:11:69:push")]
    for _region, _mailbox, stored_body, method, path, stored_headers in stored:
        assert bytes(stored_body) == body
        assert (method, path) == ("POST", "/extensions/github/webhook/?src=test")
        assert stored_headers["x-hub-signature-256"] == "sha256=abc"
        assert not any(name.startswith(":") for name in stored_headers)
    assert edge.receivers() == []  # answered by the sidecar: no upstream saw it


def test_stored_body_is_byte_identical_with_odd_spacing_and_non_ascii(edge: Edge, edge_database: str) -> None:
    body = '{ "installation" :{"id":4711},\n\t"repository": {"id": 5}, "title": "\u00fcber 🔥" }  '.encode()
    headers = {"content-type": "application/json; charset=utf-8", "x-github-event": "issues"}
    assert edge.post("/extensions/github/webhook/", body, headers).status_code == 202
    [(region, mailbox, stored_body, *_)] = rows(edge_database)
    assert (region, mailbox) == ("us", "github:10:5:issues")
    assert bytes(stored_body) == body


def test_malformed_json_is_400_and_stores_nothing(edge: Edge, edge_database: str) -> None:
    body, headers = github(4711, extra=b"  \xff\xfe")  # trailing junk after valid JSON is invalid JSON
    assert edge.post("/extensions/github/webhook/", body, headers).status_code == 400
    assert rows(edge_database) == []


def test_installation_event_reaches_control_unchanged(edge: Edge) -> None:
    body, headers = github(4711, event="installation")
    response = edge.post("/extensions/github/webhook/", body, headers)
    assert response.status_code == 200
    assert response.json()["upstream"] == "control"
    assert edge.upstreams["control"].received[-1].body == body


def test_slack_event_routes_to_the_owning_region_with_the_body_intact(edge: Edge) -> None:
    body, headers = slack_event("T0GLOBEX")
    response = edge.post("/extensions/slack/event/?x=1", body, headers)
    assert response.status_code == 200, response.text
    assert response.json()["upstream"] == "de"
    received = edge.upstreams["de"].received[-1]
    assert received.body == body
    assert received.target == "/extensions/slack/event/?x=1"
    assert received.headers["x-slack-signature"] == headers["x-slack-signature"]


def test_client_sent_route_header_is_ignored(edge: Edge) -> None:
    body, headers = slack_event("T0ACME")
    response = edge.post("/extensions/slack/event/", body, {**headers, "x-silo-route": "de", "X-Silo-Other": "1"})
    assert response.json()["upstream"] == "us"
    assert "x-silo-other" not in edge.upstreams["us"].received[-1].headers
    # and on a path the sidecar sends to control
    response = edge.client.get(edge.url + "/api/0/", headers={"x-silo-route": "de"})
    assert response.json()["upstream"] == "control"


def test_forged_slack_signature_never_reaches_a_region(edge: Edge) -> None:
    body, headers = slack_event("T0ACME", secret="wrong")
    response = edge.post("/extensions/slack/event/", body, headers)
    assert response.status_code == 401
    assert edge.receivers() == []


def test_unknown_integration_is_400_and_stores_nothing(edge: Edge, edge_database: str) -> None:
    body, headers = github(999999)
    assert edge.post("/extensions/github/webhook/", body, headers).status_code == 400
    assert rows(edge_database) == []


def test_integration_without_active_organization_is_400(edge: Edge) -> None:
    body, headers = github(4713)
    assert edge.post("/extensions/github/webhook/", body, headers).status_code == 400


def test_unknown_provider_passes_through_to_control(edge: Edge) -> None:
    response = edge.post("/extensions/nonesuch/webhook/", b"{}", {"content-type": "application/json"})
    assert response.json()["upstream"] == "control"


def test_unknown_view_of_known_provider_is_404(edge: Edge) -> None:
    assert edge.post("/extensions/github/nope/", b"{}").status_code == 404
    assert edge.receivers() == []


def decided_by_sidecar(edge: Edge) -> float:
    """Requests the sidecar decided so far (``silo_router_requests_total``, every label)."""
    text = edge.client.get(f"http://{edge.settings.sidecar.metrics}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("silo_router_requests_total{")
    )


def test_control_only_view_and_other_paths_reach_control(edge: Edge) -> None:
    assert edge.client.get(edge.url + "/extensions/github/installation/5/").json()["upstream"] == "control"
    assert edge.client.get(edge.url + "/extensions/github/setup/").json()["upstream"] == "control"
    assert edge.client.get(edge.url + "/healthz").json()["upstream"] == "control"


@pytest.mark.parametrize(
    "path", ["/extensions/github/installation/5/?x=1", "/extensions/github/setup/", "/extensions/nope/x/link/"]
)
def test_control_only_paths_skip_the_sidecar_and_reach_control_unchanged(edge: Edge, path: str) -> None:
    """Envoy decides these alone (no ext_proc stream); a spoofed route header is still stripped."""
    counted = decided_by_sidecar(edge)
    assert edge.client.get(edge.url + "/extensions/github/nope/").status_code == 404  # the sidecar's answer
    before = decided_by_sidecar(edge)
    assert before == counted + 1  # so the count below would see a stream
    edge.clear()
    headers = {"x-silo-route": "de", "x-silo-other": "1", "x-custom": "kept"}
    response = edge.client.post(edge.url + path, content=b'{"a": 1}', headers=headers)
    assert response.json()["upstream"] == "control"
    received = edge.upstreams["control"].received[-1]
    assert (received.target, received.body) == (path, b'{"a": 1}')
    assert received.headers["x-custom"] == "kept"
    assert not any(name.lower().startswith("x-silo-") for name in received.headers)
    assert edge.receivers() == ["control"]
    assert decided_by_sidecar(edge) == before


def test_body_over_the_limit_is_413_promptly(edge: Edge, edge_database: str) -> None:
    body, headers = github(4711, extra=b" " * (edge.settings.envoy.body_limit_bytes + 10))
    started = time.monotonic()
    response = edge.post("/extensions/github/webhook/", body, headers)
    assert response.status_code == 413
    assert time.monotonic() - started < 5
    assert rows(edge_database) == []


def test_rendered_config_passes_envoy_validate(edge: Edge, tmp_path: Path) -> None:
    from sidecar.xds.envoy_binary import validate

    validate(edge.envoy.config_path.read_text())


def test_shed_rules_take_effect_without_a_restart(edge: Edge, edge_database: str) -> None:
    import yaml

    original = edge.config_path.read_text()
    body, headers = github(4711)

    def status_within(expected: int, seconds: float = 8) -> int:
        deadline = time.monotonic() + seconds
        status = 0
        while time.monotonic() < deadline:
            status = edge.post("/extensions/github/webhook/", body, headers).status_code
            if status == expected:
                break
            time.sleep(0.25)
        return status

    try:
        raw = yaml.safe_load(original)
        raw["shed"] = [{"provider": "github", "integration_id": 10}]
        edge.config_path.write_text(yaml.safe_dump(raw))
        assert status_within(429) == 429
        response = edge.post("/extensions/github/webhook/", body, headers)
        assert (response.status_code, response.headers["retry-after"]) == (429, "60")
        with psycopg.connect(edge_database, autocommit=True) as conn:
            conn.execute("DELETE FROM webhook_payload")
        # another integration of the same provider is not shed
        assert edge.post("/extensions/github/webhook/", *github(4712)).status_code == 202
    finally:
        edge.config_path.write_text(original)
    assert status_within(202) == 202


def test_a_running_sidecar_exports_every_documented_metric(edge: Edge) -> None:
    from prometheus_client.metrics import MetricWrapperBase
    from prometheus_client.parser import text_string_to_metric_families

    from sidecar import metrics

    assert edge.post("/extensions/github/webhook/", *github(4711)).status_code == 202
    assert edge.post("/extensions/github/nope/", b"{}").status_code == 404
    scraped = edge.client.get(f"http://{edge.settings.sidecar.metrics}/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(scraped)}
    documented = {m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    assert documented <= set(families), documented - set(families)
    samples = {
        (s.labels.get("provider"), s.labels.get("decision"), s.labels.get("status")): s.value
        for s in families["silo_router_requests"].samples
        if s.name == "silo_router_requests_total"
    }
    assert samples[("github", "store", "202")] >= 1
    assert samples[("github", "reply", "404")] >= 1
    stored = [s for s in families["silo_router_outbox_stored"].samples if s.name.endswith("_total")]
    assert any(s.labels == {"provider": "github", "region": "us"} and s.value >= 1 for s in stored)


def test_grpc_health_reports_serving(edge: Edge) -> None:
    assert health_of(edge, "") == "SERVING"
    assert health_of(edge, "envoy.service.ext_proc.v3.ExternalProcessor") == "SERVING"


def health_of(edge: Edge, service: str, process: int = 0) -> str:
    """What sidecar process ``process`` (``sidecar.processes``) answers a gRPC health check for ``service``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(str(edge.settings.sidecar.grpc_addresses()[process])) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
