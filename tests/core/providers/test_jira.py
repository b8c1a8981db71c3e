"""Jira Cloud (reference §3.7), with Atlassian Connect JWTs minted here as Atlassian mints them.

https://developer.atlassian.com/cloud/jira/platform/understanding-jwt-for-connect-apps/
Every ``qsh`` below is the SHA-256 of a canonical request written out by hand, so the tests do
not share the implementation's canonicalisation.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers_b import (
    DE,
    EU,
    NOW,
    SHARED_SECRET,
    US,
    any_body,
    any_resolution,
    compact,
    decide,
    decide_any,
    found,
    header_values,
    hs256,
    json_request,
    public_pem,
    rs256,
    rsa_key,
    run,
    sha256_hex,
)
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core import ByExternalId, Context, Control, Forward, Integration, Mailbox, NeedBody, Reply, Request, Store
from sidecar.core.context import ShedRule

CLIENT_KEY = "a4b3c2d1-0e9f-4a8b-b7c6-d5e4f3a2b1c0"
KEY = ByExternalId("jira", CLIENT_KEY)
INTEGRATION = Integration(30, "jira", CLIENT_KEY, metadata={"shared_secret": SHARED_SECRET})
ONE_REGION = {KEY: found(INTEGRATION, US)}
TWO_REGIONS = {KEY: found(INTEGRATION, US, DE)}
AUDIENCE = "https://sentry.example.com"
KID = "0e50fccb-239d-4991-a5db-dc850ba3f236"
PEMS = {("atlassian_connect", KID): public_pem()}

WEBHOOK_PATH = "/extensions/jira/issue-updated/"
WEBHOOK_QSH = sha256_hex("POST&/extensions/jira/issue-updated&")
GLANCE_QUERY = "xdm_e=https%3A%2F%2Facme.atlassian.net&xdm_c=channel-sentry&cp=&lic=none&cv=1001.0.0"
GLANCE_QSH = sha256_hex(
    "GET&/extensions/jira/issue/PROJ-2&cp=&cv=1001.0.0&lic=none&xdm_c=channel-sentry&xdm_e=https%3A%2F%2Facme.atlassian.net"
)


def claims(qsh: str = WEBHOOK_QSH, **extra: Any) -> dict[str, Any]:
    return {"iss": CLIENT_KEY, "iat": int(NOW) - 10, "exp": int(NOW) + 170, "qsh": qsh, **extra}


def issue_updated(issue_id: Any = "10002") -> dict[str, Any]:
    return {
        "timestamp": 1525698237764,
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_generic",
        "user": {"accountId": "5b10a2844c20165700ede21g", "displayName": "Mia Krystof"},
        "issue": {
            "id": issue_id,
            "self": "https://acme.atlassian.net/rest/api/2/issue/10002",
            "key": "PROJ-2",
            "fields": {"summary": "Crash on start", "status": {"name": "In Progress"}},
        },
        "changelog": {
            "id": "10101",
            "items": [{"field": "status", "fromString": "To Do", "toString": "In Progress"}],
        },
    }


def webhook(token: str | None, payload: Any = None, target: str = WEBHOOK_PATH) -> Request:
    headers = {"Authorization": f"JWT {token}"} if token is not None else {}
    return json_request("POST", target, issue_updated() if payload is None else payload, headers)


def glance(token: str, query: str = GLANCE_QUERY, headers: dict[str, str] | None = None) -> Request:
    return Request.from_target("GET", f"/extensions/jira/issue/PROJ-2/?{query}&jwt={token}", headers)


def ctx(**kw: Any) -> Context:
    return Context(now=NOW, **kw)


# --- issue-updated: async ---------------------------------------------------------------------


def test_issue_updated_is_stored_in_a_ten_bucket_mailbox() -> None:
    result = run(webhook(hs256(claims())), ctx(), TWO_REGIONS)
    assert result.header_phase == NeedBody()
    assert result.lookups == [(KEY,)]
    mailbox = Mailbox("jira", "30", bucket_key=10002, bucket_count=10)
    assert result.decision == Store("jira", ("de", "us"), mailbox, 30, "stored")
    assert mailbox.name() == "jira:30"
    assert mailbox.name(over_volume=True) == "jira:30:2"


@pytest.mark.parametrize(
    ("issue_id", "bucket"),
    [(10002, 10002), ("7", 7), ("PROJ-2", None), (None, None), ("1" * 40, None), ("١٢", None), (True, None)],
)
def test_the_bucket_key_is_the_numeric_issue_id(issue_id: Any, bucket: int | None) -> None:
    decision = decide(webhook(hs256(claims()), issue_updated(issue_id)), ctx(), ONE_REGION)
    assert isinstance(decision, Store)
    assert decision.mailbox.bucket_key == bucket


def test_issue_updated_is_shed_with_429() -> None:
    decision = decide(webhook(hs256(claims())), ctx(shed=(ShedRule("jira", 30),)), ONE_REGION)
    assert decision == Reply(429, "shed", headers=(("retry-after", "60"),))


# --- issue/<key>/: sync, single region ----------------------------------------------------------


def test_the_issue_glance_is_forwarded_to_the_single_region_without_the_body() -> None:
    result = run(glance(hs256(claims(GLANCE_QSH))), ctx(), ONE_REGION)
    assert result.header_phase != NeedBody()
    assert result.decision == Forward("us", "single_region")


def test_the_issue_glance_of_an_integration_in_several_regions_goes_to_control() -> None:
    assert decide(glance(hs256(claims(GLANCE_QSH))), ctx(), TWO_REGIONS) == Control("multiple_regions")


# --- where the token comes from ----------------------------------------------------------------


def test_the_authorization_header_wins_over_the_query_parameter() -> None:
    req = glance("not-a-token", headers={"Authorization": f"JWT {hs256(claims(GLANCE_QSH))}"})
    assert decide(req, ctx(), ONE_REGION) == Forward("us", "single_region")


def test_an_authorization_header_without_a_token_falls_back_to_the_query() -> None:
    req = glance(hs256(claims(GLANCE_QSH)), headers={"Authorization": "JWT"})
    assert decide(req, ctx(), ONE_REGION) == Forward("us", "single_region")


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "not-a-token",
        "a.b.c",
        "a.b",
        hs256({"exp": int(NOW) + 60, "qsh": WEBHOOK_QSH}),  # no iss
        hs256(claims(iss=42)),
        hs256(claims(iss="")),
    ],
)
def test_a_token_without_an_issuer_is_404_without_lookup(token: str | None) -> None:
    result = run(webhook(token), ctx(), ONE_REGION)
    assert result.decision == Reply(404, "invalid_jwt")
    assert result.lookups == []


# --- shared-secret (HS256) verification ------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        hs256(claims(), secret="another-shared-secret-of-32-bytes-or-more"),
        hs256(claims(qsh=sha256_hex("GET&/extensions/jira/issue-updated&"))),  # another method
        hs256(claims(qsh=sha256_hex("POST&/extensions/jira/issue-updated/&"))),  # trailing slash kept
        hs256(claims(qsh="context-qsh")),  # a context token is not bound to this request
        hs256({k: v for k, v in claims().items() if k != "qsh"}),
        hs256(claims(exp=int(NOW) - 1)),
        hs256(claims(exp=int(NOW))),  # expiry is exclusive
        hs256(claims(exp="tomorrow")),
        hs256(claims(nbf=int(NOW) + 60)),
        compact({"alg": "HS512", "typ": "JWT"}, claims(), SHARED_SECRET),  # the HS256 signature of a HS512 header
    ],
)
def test_a_token_that_does_not_verify_is_404(token: str) -> None:
    result = run(webhook(token), ctx(), ONE_REGION)
    assert result.decision == Reply(404, "invalid_jwt")
    assert result.lookups == [(KEY,)]


@pytest.mark.parametrize("alg", ["none", "None", "HS256"])
def test_an_unsigned_token_is_404(alg: str) -> None:
    unsigned = compact({"alg": alg, "typ": "JWT"}, claims())
    assert decide(webhook(unsigned), ctx(), ONE_REGION) == Reply(404, "invalid_jwt")


def test_a_token_without_exp_verifies_as_pyjwt_would() -> None:
    token = hs256({"iss": CLIENT_KEY, "qsh": WEBHOOK_QSH})
    assert isinstance(decide(webhook(token), ctx(), ONE_REGION), Store)


@pytest.mark.parametrize("metadata", [{}, {"shared_secret": ""}, {"shared_secret": 12345}])
def test_an_integration_without_a_usable_shared_secret_verifies_nothing(metadata: dict[str, Any]) -> None:
    integration = Integration(30, "jira", CLIENT_KEY, metadata=metadata)
    assert decide(webhook(hs256(claims())), ctx(), {KEY: found(integration, US)}) == Reply(404, "invalid_jwt")


def test_unknown_integration_is_404_as_sentry_raises_does_not_exist() -> None:
    assert decide(webhook(hs256(claims())), ctx(), {}) == Reply(404, "unknown_integration")


def test_no_active_organization_is_400_but_only_after_the_token_verified() -> None:
    orphan = {KEY: found(INTEGRATION)}
    assert decide(webhook(hs256(claims())), ctx(), orphan) == Reply(400, "no_active_organization")
    forged = hs256(claims(), secret="another-shared-secret-of-32-bytes-or-more")
    assert decide(webhook(forged), ctx(), orphan) == Reply(404, "invalid_jwt")


def test_an_organization_in_an_unconfigured_region_is_a_500() -> None:
    assert decide(webhook(hs256(claims())), ctx(regions=frozenset({"de"})), ONE_REGION) == Reply(500, "unknown_region")


# --- the query string hash ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "canonical_query"),
    [
        ("", ""),
        ("b=2&a=1", "a=1&b=2"),
        ("a=y&a=x", "a=x,y"),  # repeated: values sorted, joined with a comma
        ("q=hello+world", "q=hello%20world"),
        ("q=a%2Bb", "q=a%2Bb"),
        ("q=*~!'()", "q=%2A~%21%27%28%29"),
        ("flag", "flag="),
        ("name=J%C3%BCrgen", "name=J%C3%BCrgen"),
        ("jwt_like=1", "jwt_like=1"),
    ],
)
def test_the_query_string_hash_follows_atlassians_canonical_request(query: str, canonical_query: str) -> None:
    qsh = sha256_hex(f"GET&/extensions/jira/issue/PROJ-2&{canonical_query}")
    assert decide(glance(hs256(claims(qsh)), query), ctx(), ONE_REGION) == Forward("us", "single_region")


def test_a_tampered_query_fails_the_hash() -> None:
    token = hs256(claims(GLANCE_QSH))
    assert decide(glance(token, GLANCE_QUERY + "&extra=1"), ctx(), ONE_REGION) == Reply(404, "invalid_jwt")


# --- Atlassian-signed (RS256, kid) tokens ------------------------------------------------------


def rs_claims(**extra: Any) -> dict[str, Any]:
    return claims(**{"aud": AUDIENCE, **extra})


def test_a_kid_token_is_verified_with_the_fetched_key_then_identified() -> None:
    result = run(webhook(rs256(rs_claims(), KID)), ctx(jira_audience=AUDIENCE), ONE_REGION, PEMS)
    assert result.fetches == [("atlassian_connect", KID)]
    assert result.lookups == [(KEY,)]
    assert result.decision == Store(
        "jira", ("us",), Mailbox("jira", "30", bucket_key=10002, bucket_count=10), 30, "stored"
    )


@pytest.mark.parametrize("audience", [AUDIENCE + "/", [AUDIENCE, "https://other.example.com"]])
def test_the_audience_may_have_a_trailing_slash_or_be_a_list(audience: Any) -> None:
    token = rs256(claims(aud=audience), KID)
    assert isinstance(decide(webhook(token), ctx(jira_audience=AUDIENCE), ONE_REGION, PEMS), Store)


@pytest.mark.parametrize(
    ("token", "keys"),
    [
        (rs256(rs_claims(), KID), {}),  # the key source has no such key
        (rs256(rs_claims(), KID, rsa.generate_private_key(public_exponent=65537, key_size=2048)), PEMS),
        (rs256(rs_claims(aud="https://evil.example.com"), KID), PEMS),
        (rs256(claims(), KID), PEMS),  # no audience
        (rs256(rs_claims(exp=int(NOW) - 5), KID), PEMS),
        (rs256(rs_claims(qsh=GLANCE_QSH), KID), PEMS),
        (compact({"alg": "HS256", "kid": KID}, rs_claims(), public_pem()), PEMS),  # algorithm confusion
        (rs256(rs_claims(), KID), {("atlassian_connect", KID): "-----BEGIN PUBLIC KEY-----\ngarbage\n"}),
    ],
)
def test_a_kid_token_that_does_not_verify_is_404_without_lookup(token: str, keys: dict[Any, str]) -> None:
    result = run(webhook(token), ctx(jira_audience=AUDIENCE), ONE_REGION, keys)
    assert result.fetches == [("atlassian_connect", KID)]
    assert result.decision == Reply(404, "invalid_jwt")
    assert result.lookups == []


def test_a_kid_token_is_refused_without_a_configured_audience() -> None:
    result = run(webhook(rs256(rs_claims(), KID)), ctx(), ONE_REGION, PEMS)
    assert result.decision == Reply(404, "invalid_jwt")
    assert result.fetches == []


def test_a_non_string_kid_is_404_without_fetch() -> None:
    token = compact({"alg": "HS256", "kid": 7}, claims(), SHARED_SECRET)
    result = run(webhook(token), ctx(jira_audience=AUDIENCE), ONE_REGION, PEMS)
    assert (result.decision, result.fetches) == (Reply(404, "invalid_jwt"), [])


def test_an_rs256_token_without_kid_is_not_accepted_as_shared_secret_signed() -> None:
    _, payload, signature = rs256(rs_claims(), KID).split(".")
    header = compact({"alg": "RS256", "typ": "JWT"}, {}).split(".")[0]
    token = f"{header}.{payload}.{signature}"
    assert decide(webhook(token), ctx(jira_audience=AUDIENCE), ONE_REGION, PEMS) == Reply(404, "invalid_jwt")


def test_a_verified_kid_token_for_an_unknown_client_is_404() -> None:
    decision = decide(webhook(rs256(rs_claims(), KID)), ctx(jira_audience=AUDIENCE), {}, PEMS)
    assert decision == Reply(404, "unknown_integration")


# --- control-only views ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "descriptor/",
        "ui-hook/",
        "installed/",
        "uninstalled/",
        "configure/",
        "search/acme/30/",
        "issue-details/PROJ-2/",
    ],
)
def test_control_only_views_pass_through_even_with_a_token(path: str) -> None:
    result = run(webhook(hs256(claims()), target=f"/extensions/jira/{path}"), ctx(), ONE_REGION)
    assert result.decision == Control("control_only_view")
    assert result.lookups == []


def test_an_unknown_view_is_404() -> None:
    assert decide(Request.from_target("POST", "/extensions/jira/issue-created/")) == Reply(404, "no_such_view")


# --- never raises ------------------------------------------------------------------------------


@given(
    authorization=header_values,
    query=st.text(max_size=80),
    body=any_body(issue_updated()),
    resolution=any_resolution(),
    pem=st.none() | st.just(public_pem()) | st.text(max_size=40),
    audience=st.none() | st.just(AUDIENCE),
    path=st.sampled_from(["issue-updated/", "issue/PROJ-2/"]),
)
def test_never_raises(
    authorization: str, query: str, body: bytes, resolution: Any, pem: str | None, audience: str | None, path: str
) -> None:
    req = Request("POST", f"/extensions/jira/{path}", query, {"authorization": authorization}, body)
    decide_any(req, ctx(jira_audience=audience), resolution, pem)


@given(
    claim_values=st.dictionaries(
        st.sampled_from(["iss", "exp", "nbf", "qsh", "aud"]),
        st.none() | st.integers() | st.text(max_size=8) | st.floats() | st.lists(st.integers(), max_size=2),
    ),
    kid=st.none() | st.text(max_size=8) | st.integers(),
)
def test_well_signed_tokens_with_arbitrary_claims_never_raise(claim_values: dict[str, Any], kid: Any) -> None:
    header = {"alg": "HS256", "kid": kid} if kid is not None else {"alg": "HS256"}
    token = compact(header, claim_values, SHARED_SECRET)
    decide_any(webhook(token), ctx(jira_audience=AUDIENCE), found(INTEGRATION, US, EU), public_pem(rsa_key()))
