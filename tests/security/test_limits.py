"""Size and time limits: bodies over the limit get 413 at once on every view that buffers, header
floods get 431 at once, and a client that sends slowly (or lies about its length) is cut off by
Envoy's stream idle timeout instead of holding a stream forever."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import Edge, running_edge
from hostile import BODY_ROUTES, ROUTES, mark, raw_request, rebuilt, send, status_of, stored

pytestmark = [pytest.mark.security, pytest.mark.db, pytest.mark.envoy]


def _over(limit: int, extra: int) -> bytes:
    return b'{"pad": "' + b"x" * (limit + extra) + b'"}'


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_bodies_over_the_limit_get_413_promptly_on_every_buffered_view(
    route: str, hostile_edge: Edge, security_database: str
) -> None:
    limit = hostile_edge.settings.envoy.body_limit_bytes
    for extra in (1, 1_000_000):
        nonce = mark()
        outcome = send(hostile_edge.client, hostile_edge.url, rebuilt(route, _over(limit, extra)), nonce)
        assert outcome.status == 413, (extra, outcome.status)
        assert outcome.elapsed < 3
        assert stored(security_database, nonce) == []


def test_a_body_exactly_at_the_limit_is_accepted(hostile_edge: Edge, security_database: str) -> None:
    limit = hostile_edge.settings.envoy.body_limit_bytes
    head = json.dumps({"installation": {"id": 4711}, "repository": {"id": 7}, "pad": ""}).encode()
    body = head[:-2] + b"x" * (limit - len(head)) + head[-2:]
    assert len(body) == limit
    nonce = mark()
    outcome = send(hostile_edge.client, hostile_edge.url, rebuilt("github-push", body), nonce)
    assert outcome.status == 202
    assert [region for region, _ in stored(security_database, nonce)] == ["us"]


def test_a_chunked_body_over_the_limit_gets_413_promptly(hostile_edge: Edge) -> None:
    chunk = b"x" * 16_384
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(64)) + b"0\r\n\r\n"
    request = (
        b"POST /extensions/github/webhook/ HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"x-github-event: push\r\ntransfer-encoding: chunked\r\n\r\n" + chunks
    )
    line, seconds = raw_request(str(hostile_edge.settings.listen), request)
    assert status_of(line) == 413, line
    assert seconds < 3


def test_a_large_body_on_a_streaming_route_passes_to_control_untouched(hostile_edge: Edge) -> None:
    """Bypass and header-only routes stream (no buffering, no limit of ours); nothing hangs."""
    nonce = mark()
    body = b"x" * 2_000_000
    response = hostile_edge.client.post(
        hostile_edge.url + "/api/0/upload/", content=body, headers={"x-hostile-id": nonce}
    )
    assert response.status_code == 200
    assert response.json()["body_len"] == len(body)


def _flood(headers: list[tuple[str, str]]) -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return f"POST /extensions/slack/event/ HTTP/1.1\r\nHost: x\r\n{lines}content-length: 2\r\n\r\n{{}}".encode()


FLOODS = {
    "200-headers": [(f"x-f{i}", "v") for i in range(200)],
    "5000-headers": [(f"x-f{i}", "v") for i in range(5_000)],
    "one-70kb-header": [("x-big", "a" * 70_000)],
    "ten-8kb-headers": [(f"x-big{i}", "a" * 8_000) for i in range(10)],
    "many-cookies": [("cookie", f"c{i}={'v' * 100}") for i in range(700)],
    "repeated-internal-header": [("x-silo-route", "de")] * 300,
}


@pytest.mark.parametrize("flood", sorted(FLOODS))
def test_header_floods_get_431_promptly_and_the_edge_stays_up(flood: str, hostile_edge: Edge) -> None:
    line, seconds = raw_request(str(hostile_edge.settings.listen), _flood(FLOODS[flood]))
    assert status_of(line) == 431, line
    assert seconds < 2
    assert hostile_edge.client.get(hostile_edge.url + "/api/0/").status_code == 200


def test_headers_just_under_the_limits_are_served(hostile_edge: Edge, security_database: str) -> None:
    build, _ = ROUTES["slack-event"]
    nonce = mark()
    extra = [(f"x-f{i}", "v") for i in range(60)] + [("x-big", "a" * 50_000)]
    outcome = send(hostile_edge.client, hostile_edge.url, build(), nonce, extra)
    assert (outcome.status, outcome.upstream) == (200, "us")


# --- slow clients ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def impatient_edge(tmp_path_factory: pytest.TempPathFactory, security_database: str) -> Iterator[Edge]:
    """Route timeout 1 s, so Envoy's stream idle timeout (twice the route timeout) is 2 s."""
    tmp: Path = tmp_path_factory.mktemp("impatient")
    with running_edge(tmp, security_database, envoy={"route_timeout_s": 1}) as edge:
        yield edge


HEAD = (
    b"POST /extensions/github/webhook/ HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
    b"x-github-event: push\r\ncontent-length: 200\r\n\r\n"
)

SLOW = {
    "body-shorter-than-its-length": (HEAD + b"{}", 0.0),
    "body-trickled": (HEAD + b"{" + b" " * 199, 0.5),
    "headers-trickled": (b"POST /extensions/github/webhook/ HTTP/1.1\r\nHost: x\r\nx-a: " + b"b" * 200, 0.3),
}


@pytest.mark.parametrize("case", sorted(SLOW))
def test_slow_or_lying_clients_are_cut_off_by_the_idle_timeout(case: str, impatient_edge: Edge) -> None:
    data, pace = SLOW[case]
    line, seconds = raw_request(str(impatient_edge.settings.listen), data, timeout_s=20, pace_s=pace)
    assert status_of(line) == 408 or line == b"", line
    assert seconds < 8, seconds


def test_the_edge_answers_normally_after_the_slow_clients(impatient_edge: Edge) -> None:
    with httpx.Client(timeout=5) as client:
        assert client.get(impatient_edge.url + "/api/0/").status_code == 200
