"""When something is down: never a 202 without its rows, never a route the client chose."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from harness import running_edge
from test_routing import github, health_of, slack_event

pytestmark = [pytest.mark.db, pytest.mark.envoy]

EXT_PROC = "envoy.service.ext_proc.v3.ExternalProcessor"


def test_sidecar_down_fail_closed_answers_503_on_webhook_paths(tmp_path: Path) -> None:
    with running_edge(tmp_path, database_url=None) as edge:  # no sidecar process at all
        body, headers = github(4711)
        assert edge.post("/extensions/github/webhook/", body, headers).status_code == 503
        assert edge.post("/extensions/slack/event/", *slack_event("T0ACME")).status_code == 503
        assert edge.receivers() == []
        # paths that never go through the sidecar still work
        assert edge.client.get(edge.url + "/api/0/").json()["upstream"] == "control"


def test_sidecar_down_fail_open_goes_to_control_even_with_a_spoofed_route(tmp_path: Path) -> None:
    with running_edge(tmp_path, database_url=None, envoy={"failure_mode_allow": True}) as edge:
        body, headers = slack_event("T0ACME")
        response = edge.post("/extensions/slack/event/", body, {**headers, "x-silo-route": "de"})
        assert response.json()["upstream"] == "control"
        response = edge.post("/extensions/github/webhook/", *github(4711, event="push"))
        assert response.json()["upstream"] == "control"
        assert edge.receivers() == ["control"]


def test_sidecar_killed_and_restarted_recovers(tmp_path: Path, edge_database: str) -> None:
    with running_edge(tmp_path, edge_database) as edge:
        assert edge.sidecar is not None
        assert edge.post("/extensions/slack/event/", *slack_event("T0ACME")).json()["upstream"] == "us"
        edge.sidecar.kill()
        assert edge.post("/extensions/slack/event/", *slack_event("T0ACME")).status_code == 503
        edge.sidecar.start()
        assert edge.post("/extensions/slack/event/", *slack_event("T0ACME")).json()["upstream"] == "us"


def test_database_down_gives_503_with_retry_after_never_202(
    tmp_path: Path, private_database: tuple[str, Callable[[], None]]
) -> None:
    url, stop_database = private_database
    with running_edge(tmp_path, url) as edge:
        body, headers = github(4711)
        assert edge.post("/extensions/github/webhook/", body, headers).status_code == 202  # warm: cached route
        with psycopg.connect(url) as conn:
            (count,) = conn.execute("SELECT count(*) FROM webhook_payload").fetchone() or (0,)
        assert count == 1
        assert edge.post("/extensions/slack/event/", *slack_event("T0ACME")).json()["upstream"] == "us"
        stop_database()
        # cached lookup, but the outbox cannot commit: 503, not 202
        response = edge.post("/extensions/github/webhook/", body, headers)
        assert response.status_code == 503
        assert response.headers.get("retry-after")
        # uncached lookup: the directory cannot answer
        response = edge.post("/extensions/github/webhook/", *github(4712))
        assert response.status_code == 503
        assert response.headers.get("retry-after")
        # a cached synchronous route still works while the database is down
        edge.clear()
        assert edge.post("/extensions/slack/event/", *slack_event("T0ACME")).json()["upstream"] == "us"
        # readiness follows the database; liveness does not (a restart would lose the cache)
        deadline = time.monotonic() + 15
        while health_of(edge, EXT_PROC) != "NOT_SERVING" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert health_of(edge, EXT_PROC) == "NOT_SERVING"
        assert health_of(edge, "") == "SERVING"
