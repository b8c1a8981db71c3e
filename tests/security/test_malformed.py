"""Malformed JSON, forms and tokens on every view that reads the body (validly signed where the
provider signs, so the parser is what meets them): a prompt answer below 500, and no trace
anywhere but where the route may put it."""

from __future__ import annotations

import pytest
from harness import Edge
from hostile import BODY_ROUTES, ROUTES, Call, jira_glance, mark, rebuilt, send, traces_outside

pytestmark = [pytest.mark.security, pytest.mark.db, pytest.mark.envoy]

MALFORMED: dict[str, bytes] = {
    "empty": b"",
    "truncated": b'{"installation": {"id": 47',
    "array": b"[]",
    "null": b"null",
    "string": b'"installation"',
    "invalid-utf8": b'{"installation": {"id": "\xff\xfe"}}',
    "utf16-bom": b"\xff\xfe{\x00}\x00",
    "utf8-bom": b'\xef\xbb\xbf{"installation": {"id": 1}, "team_id": "T0NOBODY"}',
    "nested-50k": b"[" * 50_000 + b"]" * 50_000,
    "nested-objects": b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
    "huge-float": b'{"installation": {"id": 1e999999}}',
    "huge-int": b'{"installation": {"id": ' + b"9" * 20_000 + b"}}",
    "nan": b'{"installation": {"id": NaN}, "team_id": Infinity}',
    "lone-surrogate": b'{"installation": {"id": "\\ud800"}, "team_id": "\\udfff", "guild_id": "\\ud83d"}',
    "nul-in-ids": b'{"installation": {"id": "4711\\u0000"}, "team_id": "T0ACME\\u0000", "guild_id": "1\\u0000"}',
    "ids-as-objects": b'{"installation": {"id": {"id": 4711}}, "team_id": ["T0ACME"], "guild_id": {"$gt": 0}}',
    "ids-as-bools": b'{"installation": {"id": true}, "team_id": false, "guild_id": true, "type": true}',
    "many-keys": b"{" + b",".join(b'"k%d": %d' % (i, i) for i in range(5_000)) + b"}",
    "form-bad-escape": b"payload=%ZZ&team_id=%E0%A4%A",
    "form-payload-not-json": b"payload={{{&team_id=",
    "form-flood": b"&".join(b"a%d=%d" % (i, i) for i in range(8_000)),
    "form-payload-nested": b"payload=" + b"%5B" * 10_000,
    "binary": bytes(range(256)) * 40,
}


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_malformed_bodies_are_answered_below_500_promptly_and_leave_no_stray_trace(
    route: str, hostile_edge: Edge, security_database: str
) -> None:
    expect = ROUTES[route][1]
    problems = {}
    for name, body in MALFORMED.items():
        nonce = mark()
        outcome = send(hostile_edge.client, hostile_edge.url, rebuilt(route, body), nonce)
        found = traces_outside(expect, hostile_edge.upstreams, security_database, nonce)
        if outcome.status >= 500:
            found.append(f"answered {outcome.status}")
        if outcome.elapsed > 2:
            found.append(f"took {outcome.elapsed:.1f}s")
        if found:
            problems[name] = found
    assert problems == {}


MALFORMED_TOKENS = {
    "empty": "",
    "one-dot": "a.b",
    "three-dots": "a.b.c.d",
    "bad-base64": "###.###.###",
    "header-not-json": "bm90IGpzb24.e30.c2ln",
    "header-array": "W10.e30.c2ln",
    "claims-array": "e30.W10.c2ln",
    "huge": "e30." + "A" * 15_000 + ".c2ln",
    "percent-encoded": "%7B%7D.%7B%7D.x",
}


@pytest.mark.parametrize("token", sorted(MALFORMED_TOKENS))
def test_malformed_jwts_are_404_everywhere_a_token_is_read(
    token: str, hostile_edge: Edge, security_database: str
) -> None:
    value = MALFORMED_TOKENS[token]
    glance = jira_glance()
    calls = [
        rebuilt("jira-issue-updated", b"{}").with_headers(authorization=f"JWT {value}".strip()),
        glance.with_headers(authorization=f"JWT {value}".strip()),
        Call("GET", glance.path + "?jwt=" + value, {}),
    ]
    for call in calls:
        nonce = mark()
        outcome = send(hostile_edge.client, hostile_edge.url, call, nonce)
        assert outcome.status == 404, (call.path, outcome)
        assert traces_outside(ROUTES["jira-issue-glance"][1], hostile_edge.upstreams, security_database, nonce) == []
