"""Several sidecar processes beside one Envoy (``sidecar.processes``), each on its own port.

Real Envoy, two real ``silo-router serve --process K`` children, real PostgreSQL: Envoy must
spread webhooks over both (the kernel's SO_REUSEPORT hash, which balances connections rather
than streams, gave 20/80 in a benchmark run), and keep answering when one of them dies.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from harness import Edge, free_port, running_edge
from test_routing import health_of, slack_event

from sidecar.wire.server import EXT_PROC_SERVICE

pytestmark = [pytest.mark.db, pytest.mark.envoy]

PROCESSES = 2
REQUESTS = 40
REQUESTS_TOTAL = re.compile(r"^silo_router_requests_total\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, edge_database: str) -> Iterator[Edge]:
    sidecar = {
        "grpc": f"127.0.0.1:{free_port(PROCESSES)}",
        "metrics": f"127.0.0.1:{free_port(PROCESSES)}",
        "processes": PROCESSES,
    }
    with running_edge(tmp_path_factory.mktemp("processes"), edge_database, sidecar=sidecar) as running:
        wait_until_routed(running)
        yield running


def wait_until_routed(edge: Edge, timeout_s: float = 30) -> None:
    """Envoy health-checks each endpoint before it sends it streams."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body, headers = slack_event("T0ACME")
        if edge.post("/extensions/slack/event/", body, headers).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError("the edge never routed a Slack event")


def requests_seen(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    return sum(float(value) for value in REQUESTS_TOTAL.findall(text))


def test_each_process_listens_on_its_own_ports(edge: Edge) -> None:
    for k in range(PROCESSES):
        # serve --process k: ext_proc on the gRPC port + k, /metrics on the metrics port + k.
        assert health_of(edge, EXT_PROC_SERVICE, process=k) == "SERVING"
        metrics = httpx.get(f"http://127.0.0.1:{edge.settings.sidecar.metrics.port + k}/metrics", timeout=5)
        assert metrics.status_code == 200 and "silo_router_requests_total" in metrics.text


def test_envoy_spreads_webhooks_over_every_process(edge: Edge) -> None:
    metrics = [edge.settings.sidecar.metrics.port + k for k in range(PROCESSES)]
    before = [requests_seen(port) for port in metrics]
    edge.clear()
    for _ in range(REQUESTS):
        body, headers = slack_event("T0ACME")
        assert edge.post("/extensions/slack/event/", body, headers).status_code == 200
    assert edge.receivers() == ["us"]
    handled = [requests_seen(port) - was for port, was in zip(metrics, before, strict=True)]
    assert sum(handled) == REQUESTS
    # LEAST_REQUEST between two idle processes is a coin toss per request: fewer than 5 of 40 on
    # one side has a probability of about 1e-7, while one shared port can put them all on one.
    assert min(handled) >= 5, handled


def test_a_dead_process_costs_a_stream_or_two_and_a_restarted_one_is_taken_back(edge: Edge) -> None:
    processes = edge.sidecars
    processes[1].kill()
    try:
        statuses = []
        for _ in range(40):
            body, headers = slack_event("T0ACME")
            statuses.append(edge.post("/extensions/slack/event/", body, headers).status_code)
            time.sleep(0.02)
        # Never a wrong route: a stream to the dead process fails closed (503, the provider
        # retries), and the first refused connection ejects it (outlier detection), so at most
        # the one stream each Envoy worker had on its way there fails. Before the ejection,
        # LEAST_REQUEST kept sending it half the streams until two health checks failed (~10 s).
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(503) <= 2, statuses
    finally:
        processes[1].start()
    metrics = edge.settings.sidecar.metrics.port + 1
    deadline = time.monotonic() + 20  # the next passing health check (every 5 s) takes it back
    while requests_seen(metrics) == 0:
        assert time.monotonic() < deadline, "the restarted process never got a stream"
        body, headers = slack_event("T0ACME")
        assert edge.post("/extensions/slack/event/", body, headers).status_code == 200
        time.sleep(0.1)
