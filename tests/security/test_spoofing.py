"""Spoofed ``x-silo-*`` headers on every route, with the sidecar up and down, in both failure modes.

A client must never choose its region: whatever it sends, a request reaches the region the
directory names, or control, or nothing; no client-sent ``x-silo-*`` header reaches an upstream or
the outbox (the sidecar's own ``x-silo-route`` is the only one a region sees).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import Edge, running_edge
from hostile import (
    ROUTES,
    SECRETS,
    SIDECAR_BYPASS,
    Expect,
    check,
    mark,
    nothing_reached_a_region,
    raw_request,
    receipts,
    send,
)

pytestmark = [pytest.mark.security, pytest.mark.db, pytest.mark.envoy]


def other(region: str | None) -> str:
    return "us" if region == "de" else "de"


def spoofs(expect: Expect) -> dict[str, list[tuple[str, str]]]:
    wrong = other(expect.region or (expect.regions[0] if expect.regions else None))
    return {
        "route": [("x-silo-route", wrong)],
        "route-mixed-case": [("X-Silo-Route", wrong), ("X-SILO-REGION", wrong), ("x-silo-anything", "1")],
        "route-twice": [("x-silo-route", wrong), ("x-silo-route", "control")],
        "route-unknown-region": [("x-silo-route", "nowhere")],
        "route-list": [("x-silo-route", f"{wrong}, control")],
    }


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_spoofed_internal_headers_change_nothing(route: str, hostile_edge: Edge, security_database: str) -> None:
    build, expect = ROUTES[route]
    problems = {}
    for name, extra in spoofs(expect).items():
        nonce = mark()
        outcome = send(hostile_edge.client, hostile_edge.url, build(), nonce, extra)
        found = check(outcome, expect, hostile_edge.upstreams, security_database, nonce)
        if found:
            problems[name] = found
    assert problems == {}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_the_unspoofed_request_has_its_expected_effect(route: str, hostile_edge: Edge, security_database: str) -> None:
    """The baseline the spoofing test compares with: without this, "nothing changed" proves nothing."""
    build, expect = ROUTES[route]
    nonce = mark()
    outcome = send(hostile_edge.client, hostile_edge.url, build(), nonce)
    assert check(outcome, expect, hostile_edge.upstreams, security_database, nonce) == []


@pytest.mark.parametrize("route", ["slack-event", "github-push"])
def test_underscore_spellings_of_internal_headers_never_reach_a_region(
    route: str, hostile_edge: Edge, security_database: str
) -> None:
    build, expect = ROUTES[route]
    call = build()
    nonce = mark()
    headers = "".join(f"{k}: {v}\r\n" for k, v in {**call.headers, "x-hostile-id": nonce}.items())
    request = (
        f"{call.method} {call.path} HTTP/1.1\r\nHost: hooks\r\nConnection: close\r\n{headers}"
        f"x_silo_route: de\r\nX_Silo_Region: de\r\ncontent-length: {len(call.body)}\r\n\r\n"
    ).encode() + call.body
    line, _ = raw_request(str(hostile_edge.settings.listen), request)
    assert line.startswith(b"HTTP/1.1 2")
    from hostile import Outcome

    outcome = Outcome(200 if expect.kind == "region" else 202, expect.region, 0.0)
    if expect.kind == "region":  # the status line is all we read: take the upstream from the receipt
        outcome.upstream = next(iter(receipts(hostile_edge.upstreams, nonce)), None)
    assert check(outcome, expect, hostile_edge.upstreams, security_database, nonce, strict_underscores=True) == []


def test_query_parameters_named_like_the_route_header_are_ignored(hostile_edge: Edge, security_database: str) -> None:
    build, expect = ROUTES["slack-event"]
    call = build()
    nonce = mark()
    outcome = send(
        hostile_edge.client, hostile_edge.url, call.with_path(call.path + "?x-silo-route=de&route=de"), nonce
    )
    assert check(outcome, expect, hostile_edge.upstreams, security_database, nonce) == []


# --- the sidecar down -------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[False, True], ids=["fail-closed", "fail-open"])
def edge_without_sidecar(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp: Path = tmp_path_factory.mktemp("nosidecar")
    with running_edge(tmp, database_url=None, envoy={"failure_mode_allow": request.param}) as edge:
        yield edge


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_with_the_sidecar_down_no_spoofed_request_reaches_a_region(route: str, edge_without_sidecar: Edge) -> None:
    """Fail-closed: Envoy's 503 on every route the sidecar decides; fail-open: control. Never a region."""
    fail_open = edge_without_sidecar.settings.envoy.failure_mode_allow
    build, expect = ROUTES[route]
    for extra in spoofs(expect).values():
        nonce = mark()
        outcome = send(edge_without_sidecar.client, edge_without_sidecar.url, build(), nonce, extra)
        assert nothing_reached_a_region(edge_without_sidecar.upstreams, nonce) == []
        if fail_open or route in SIDECAR_BYPASS:
            assert (outcome.status, outcome.upstream) == (200, "control")
        elif expect.kind == "control" and outcome.status == 200:
            # Envoy sends paths the sidecar always passes to control straight there (bootstrap.py
            # control-only routes): the same answer, with or without the sidecar.
            assert outcome.upstream == "control"
        else:
            assert outcome.status == 503
            assert receipts(edge_without_sidecar.upstreams, nonce) == {}
        for headers in receipts(edge_without_sidecar.upstreams, nonce).get("control", []):
            assert not [k for k in headers if k.lower().startswith("x-silo-")]


@pytest.fixture(scope="module")
def fail_open_edge(tmp_path_factory: pytest.TempPathFactory, security_database: str) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("failopen")
    with running_edge(tmp, security_database, secrets=SECRETS, envoy={"failure_mode_allow": True}) as edge:
        yield edge


@pytest.mark.parametrize("route", ["slack-event", "github-push", "discord-command", "api", "unknown-provider"])
def test_fail_open_with_the_sidecar_up_ignores_spoofed_headers_too(
    route: str, fail_open_edge: Edge, security_database: str
) -> None:
    build, expect = ROUTES[route]
    for extra in spoofs(expect).values():
        nonce = mark()
        outcome = send(fail_open_edge.client, fail_open_edge.url, build(), nonce, extra)
        assert check(outcome, expect, fail_open_edge.upstreams, security_database, nonce) == []


def test_http2_requests_are_stripped_the_same_way(hostile_edge: Edge, security_database: str) -> None:
    """h2c with prior knowledge: header names arrive lower-cased and still meet the early strip."""
    build, expect = ROUTES["slack-event"]
    nonce = mark()
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        outcome = send(client, hostile_edge.url, build(), nonce, [("x-silo-route", "de")])
    assert check(outcome, expect, hostile_edge.upstreams, security_database, nonce) == []


ENVOY_CONTROL_HEADERS = [
    ("x-envoy-upstream-rq-timeout-ms", "1"),
    ("x-envoy-upstream-rq-per-try-timeout-ms", "1"),
    ("x-envoy-retry-on", "5xx,reset,connect-failure"),
    ("x-envoy-max-retries", "5"),
    ("x-envoy-retry-grpc-on", "unavailable"),
    ("x-envoy-internal", "true"),
    ("x-forwarded-for", "10.0.0.1"),
]


@pytest.mark.parametrize("route", ["slack-event", "api"])
def test_client_sent_envoy_control_headers_are_not_obeyed(
    route: str, hostile_edge: Edge, security_database: str
) -> None:
    """A client is external to Envoy even claiming an internal address: it cannot make Envoy retry a
    webhook into a region several times (duplicates) or cut the upstream timeout."""
    build, expect = ROUTES[route]
    nonce = mark()
    outcome = send(hostile_edge.client, hostile_edge.url, build(), nonce, ENVOY_CONTROL_HEADERS)
    assert check(outcome, expect, hostile_edge.upstreams, security_database, nonce) == []
    target = expect.region or "control"
    server = hostile_edge.upstreams[target]
    server.status = 503
    try:
        nonce = mark()
        outcome = send(hostile_edge.client, hostile_edge.url, build(), nonce, ENVOY_CONTROL_HEADERS)
    finally:
        server.status = 200
    assert outcome.status == 503
    assert len(receipts(hostile_edge.upstreams, nonce).get(target, [])) == 1, "Envoy retried on the client's say-so"
