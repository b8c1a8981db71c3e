"""Path tricks: Envoy normalises the path once (``normalize_path``, ``merge_slashes``) and the routes,
the sidecar's URL tables and the stored copy all see that one spelling. A trick either means the
same view (same outcome as the plain path) or no view at all (404, 400 or control), never another
region, never a stored webhook that control receives instead.
"""

from __future__ import annotations

import json
import re

import pytest
from harness import Edge
from hostile import (
    ROUTES,
    Call,
    Expect,
    check,
    control_receipts_the_sidecar_disagrees_with,
    mark,
    raw_request,
    receipts,
    send,
    status_of,
    stored,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.core.providers import PROVIDERS

pytestmark = [pytest.mark.security, pytest.mark.db, pytest.mark.envoy]

SAME_SLACK_VIEW = [
    "/extensions//slack/event/",
    "/extensions/slack//event/",
    "/extensions/slack/event//",
    "/extensions/slack/./event/",
    "/./extensions/slack/event/",
    "/extensions/github/../slack/event/",
    "/extensions/github/%2e%2e/slack/event/",
    "/extensions/github/%2E%2E/slack/event/",
    "/extensions/slack/%2e/event/",
    "/extensions/slack/%65vent/",
    "/extensions/sl%61ck/event/",
    "/extensions/slack/event/?x-silo-route=de",
    "/extensions/slack/event/?a=1&a=2&%78-silo-route=de",
]
SAME_GITHUB_VIEW = [
    "/extensions//github/webhook/",
    "/extensions/github/webhook//",
    "/extensions/github/./webhook/",
    "/extensions/github/%77ebhook/",
    "/extensions/slack/../github/webhook/",
]
NO_VIEW = [
    "/extensions/slack/event",
    "/extensions/slack/EVENT/",
    "/extensions/slack/event/;x=1",
    "/extensions/slack/event/%2F",
    "/extensions/slack/event/%2f/",
    "/extensions/slack/event/..",
    "/extensions/slack/event/extra/",
    "/extensions/slack%2Fevent/",
    "/extensions%2Fslack/event/",
    "/Extensions/slack/event/",
    "/extensions/SLACK/event/",
    "/extensions/slack/event%20/",
    "/extensions/slack/event/%00",
    "/extensions/github/webhook",
    "/extensions/github/WEBHOOK/",
    "/extensions/github/webhook/%2F..%2F..%2Fslack%2Fevent/",
    "/extensions/github/webhook%2F",
    "/extensions/github-enterprise/webhook/github-com",
    "/plugins/github/organizations/2/webhook",
    "/plugins/github/organizations/2%2F/webhook/",
]


def _no_trace(edge: Edge, database_url: str, nonce: str) -> list[str]:
    problems = []
    regions = [name for name in receipts(edge.upstreams, nonce) if name != "control"]
    if regions:
        problems.append(f"reached {regions}")
    rows = stored(database_url, nonce)
    if rows:
        problems.append(f"stored for {[r for r, _ in rows]}")
    return problems


@pytest.mark.parametrize(
    ("route", "path"), [("slack-event", p) for p in SAME_SLACK_VIEW] + [("github-push", p) for p in SAME_GITHUB_VIEW]
)
def test_equivalent_spellings_of_a_view_have_the_same_effect(
    route: str, path: str, hostile_edge: Edge, security_database: str
) -> None:
    build, expect = ROUTES[route]
    nonce = mark()
    outcome = send(hostile_edge.client, hostile_edge.url, build().with_path(path), nonce)
    assert check(outcome, expect, hostile_edge.upstreams, security_database, nonce) == []
    assert outcome.elapsed < 2


@pytest.mark.parametrize("path", NO_VIEW)
def test_spellings_of_no_view_reach_no_region_and_store_nothing(
    path: str, hostile_edge: Edge, security_database: str
) -> None:
    body_route = "github-push" if "github" in path else "slack-event"
    if path.startswith("/plugins/"):
        body_route = "plugin-github"
    nonce = mark()
    outcome = send(hostile_edge.client, hostile_edge.url, ROUTES[body_route][0]().with_path(path), nonce)
    assert _no_trace(hostile_edge, security_database, nonce) == []
    assert outcome.status in (400, 404) or (outcome.status, outcome.upstream) == (200, "control"), outcome
    assert outcome.elapsed < 2


@pytest.mark.parametrize("length", [8_000, 32_000, 60_000])
def test_long_paths_are_answered_promptly(length: int, hostile_edge: Edge, security_database: str) -> None:
    nonce = mark()
    path = "/extensions/github/" + "a" * length + "/"
    outcome = send(hostile_edge.client, hostile_edge.url, Call("POST", path, {}, b"{}"), nonce)
    assert outcome.status == 404
    assert outcome.elapsed < 2
    assert _no_trace(hostile_edge, security_database, nonce) == []


@pytest.mark.parametrize("length", [70_000, 200_000, 2_000_000])
def test_paths_over_envoys_header_limit_get_431_promptly(length: int, hostile_edge: Edge) -> None:
    request = b"POST /extensions/slack/event/" + b"a" * length + b" HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n"
    line, seconds = raw_request(str(hostile_edge.settings.listen), request)
    assert status_of(line) == 431, line
    assert seconds < 2
    assert hostile_edge.client.get(hostile_edge.url + "/api/0/").status_code == 200  # the edge is fine


def test_a_long_query_string_does_not_change_the_route(hostile_edge: Edge, security_database: str) -> None:
    build, expect = ROUTES["slack-event"]
    call = build()
    nonce = mark()
    outcome = send(hostile_edge.client, hostile_edge.url, call.with_path(call.path + "?q=" + "x" * 50_000), nonce)
    assert check(outcome, expect, hostile_edge.upstreams, security_database, nonce) == []


# --- a little path fuzzing through the real Envoy ---------------------------------------------------

SEGMENT = st.sampled_from(
    ["extensions", "github", "webhook", "slack", "event", "plugins", "organizations", "2", "", ".", "..",
     "%2e", "%2E%2e", "%2F", "%2f", "%5C", "\\", "%77ebhook", "WEBHOOK", "github-com", ";a=b", "%00", "%25",
     "%", "~", "x" * 40]
)  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    segments=st.lists(SEGMENT, min_size=1, max_size=7),
    trailing=st.booleans(),
    query=st.sampled_from(["", "?x-silo-route=de", "?a=%zz"]),
)
def test_fuzzed_paths_never_misroute_and_never_hand_control_a_stored_webhook(
    segments: list[str], trailing: bool, query: str, hostile_edge: Edge, security_database: str
) -> None:
    """A GitHub push (installation 4711: us, stored) sent to arbitrary path spellings: it is stored
    for us, or refused, or (when the path is not the webhook view) continues to control. If control
    receives it on the webhook view's own path, Envoy and the sidecar disagreed on which routes are
    buffered: the sidecar waited for a body Envoy never sent, and the push slipped past the outbox."""
    path = "/" + "/".join(segments) + ("/" if trailing else "") + query
    body = json.dumps({"installation": {"id": 4711}, "repository": {"id": 7}}).encode()
    call = Call("POST", path, {"content-type": "application/json", "x-github-event": "push"}, body)
    nonce = mark()
    try:
        outcome = send(hostile_edge.client, hostile_edge.url, call, nonce)
    except Exception as exc:  # httpx refuses some targets outright: nothing was sent
        if "Invalid" in str(exc) or "URL" in str(exc):
            return
        raise
    assert outcome.status < 500, (path, outcome)
    seen = receipts(hostile_edge.upstreams, nonce)
    assert set(seen) <= {"control"}, (path, seen)
    rows = stored(security_database, nonce)
    assert [r for r, _ in rows] in ([], ["us"]), (path, rows)
    if rows:
        assert outcome.status == 202
    assert control_receipts_the_sidecar_disagrees_with(hostile_edge.upstreams, nonce) == [], path


CONTROL_ONLY_VIEWS = sorted(
    spec.prefix + re.sub(r"\(\?P<\w+>\[\^/\]\+\)", "5", view.pattern).replace(".*", "x/")
    for spec in PROVIDERS.values()
    for view in spec.views
    if view.handler is None
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    base=st.sampled_from([*CONTROL_ONLY_VIEWS, "/extensions/github/setup/", "/extensions/x/link/"]),
    trick=st.sampled_from(["", "x/", "//", "/..", "/../webhook/", "%2F", "?a=1", "/setup/", "/link/", ";x"]),
    method=st.sampled_from(["GET", "POST"]),
    body=st.sampled_from([b"", b"{}", b'{"installation": {"id": 4711}, "repository": {"id": 1}}']),
)
def test_paths_envoy_sends_straight_to_control_are_ones_the_sidecar_would_send_there(
    base: str, trick: str, method: str, body: bytes, hostile_edge: Edge, security_database: str
) -> None:
    """Envoy routes control-only views to control without asking the sidecar; for every spelling
    of such a path that reaches control, the sidecar's own decision must be "control" too."""
    path = base.rstrip("/") + trick if trick.startswith(("/", "%", "?", ";")) else base + trick
    headers = {"content-type": "application/json", "x-github-event": "push"}
    nonce = mark()
    outcome = send(hostile_edge.client, hostile_edge.url, Call(method, path, headers, body), nonce)
    assert outcome.status < 500, (path, outcome)
    assert set(receipts(hostile_edge.upstreams, nonce)) <= {"control"}, path
    assert stored(security_database, nonce) == [] or outcome.status == 202
    assert control_receipts_the_sidecar_disagrees_with(hostile_edge.upstreams, nonce) == [], path


def test_every_route_table_expectation_is_reachable() -> None:
    """The table above is not vacuous: every expectation kind appears."""
    assert {expect.kind for _, expect in ROUTES.values()} == {"region", "stored", "control"}
    assert Expect("control").kind == "control"
