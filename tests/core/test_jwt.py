"""sidecar.core.jwt: peek, HS256/RS256 verification with an explicit clock, and Atlassian's qsh.

Tokens are minted with PyJWT (an independent implementation) or assembled by hand where a test
needs a token PyJWT would refuse to make.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core import jwt

NOW = 1_700_000_000.0
SECRET = "a-shared-secret-that-is-at-least-32-bytes-long"
AUDIENCE = "https://sentry.example.com"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assemble(header: Any, claims: Any, secret: str | None = SECRET) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest() if secret else b""
    return f"{signing_input}.{b64url(mac)}"


def hs(claims: dict[str, Any], secret: str = SECRET) -> str:
    return pyjwt.encode(claims, secret, algorithm="HS256")


_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: Any = None) -> str:
    key = key or _KEY
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def rs(claims: dict[str, Any], key: Any = None) -> str:
    return pyjwt.encode(claims, key or _KEY, algorithm="RS256", headers={"kid": "k1"})


# --- peek --------------------------------------------------------------------------------------


def test_peek_reads_header_and_claims_without_verifying() -> None:
    peeked = jwt.peek(hs({"iss": "client"}, secret="not-the-secret-but-long-enough-to-sign-with"))
    assert peeked is not None
    assert peeked.header == {"alg": "HS256", "typ": "JWT"}
    assert peeked.claims == {"iss": "client"}


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "e30.e30.+/==",  # standard base64 alphabet is not base64url
        "e30.e30.a",  # 1 char mod 4 cannot be base64
        f"{b64url(b'[1]')}.{b64url(b'{}')}.",  # header not an object
        f"{b64url(b'{}')}.{b64url(b'not json')}.",
        f"{b64url(b'{}')}..",
        "é30.e30.",
        "e30.e30." + "A" * jwt.MAX_TOKEN_LENGTH,
    ],
)
def test_peek_answers_none_for_what_is_not_a_compact_jws(token: str) -> None:
    assert jwt.peek(token) is None


def test_peek_accepts_an_unsigned_token_it_only_reads() -> None:
    assert jwt.peek(assemble({"alg": "none"}, {"id": 1}, secret=None)) is not None


# --- HS256 -------------------------------------------------------------------------------------


def test_hs256_verifies_a_pyjwt_token() -> None:
    assert jwt.verify_hs256(hs({"iss": "c", "exp": NOW + 60}), SECRET, now=NOW) == {"iss": "c", "exp": NOW + 60}
    assert jwt.verify_hs256(hs({"iss": "c"}), SECRET.encode(), now=NOW) == {"iss": "c"}


@pytest.mark.parametrize(
    ("token", "secret"),
    [
        (hs({"iss": "c"}), "another-secret-that-is-at-least-32-bytes"),
        (hs({"iss": "c"}), ""),
        (hs({"iss": "c"}), "\ud800"),  # a lone surrogate in a stored secret must not raise
        (assemble({"alg": "none"}, {"iss": "c"}, secret=None), SECRET),
        (assemble({"alg": "HS512"}, {"iss": "c"}), SECRET),
        (assemble({"typ": "JWT"}, {"iss": "c"}), SECRET),
        (assemble({"alg": "HS256"}, {"iss": "c"}, secret=None), SECRET),
        (assemble({"alg": "HS256"}, ["not", "an", "object"]), SECRET),
    ],
)
def test_hs256_refuses_wrong_keys_algorithms_and_shapes(token: str, secret: str) -> None:
    assert jwt.verify_hs256(token, secret, now=NOW) is None


def test_hs256_refuses_a_tampered_payload() -> None:
    head, _, sig = hs({"iss": "c"}).split(".")
    other = b64url(json.dumps({"iss": "d"}).encode())
    assert jwt.verify_hs256(f"{head}.{other}.{sig}", SECRET, now=NOW) is None


@pytest.mark.parametrize(
    ("claims", "valid"),
    [
        ({"exp": NOW + 1}, True),
        ({"exp": NOW}, False),
        ({"exp": NOW - 1}, False),
        ({"exp": int(NOW) + 1}, True),
        ({"exp": None}, False),
        ({"exp": "1800000000"}, False),
        ({"exp": True}, False),
        ({"exp": 10**30}, True),
        ({"exp": 10**400}, False),
        ({"exp": float("nan")}, False),
        ({"exp": float("inf")}, False),
        ({"nbf": NOW}, True),
        ({"nbf": NOW + 1}, False),
        ({"nbf": "soon"}, False),
        ({"iat": "whenever"}, True),  # iat is informational, as in PyJWT without verify_iat
    ],
)
def test_time_claims_are_checked_against_the_given_now(claims: dict[str, Any], valid: bool) -> None:
    assert (jwt.verify_hs256(assemble({"alg": "HS256"}, claims), SECRET, now=NOW) is not None) is valid


def test_leeway_widens_both_ends() -> None:
    token = assemble({"alg": "HS256"}, {"exp": NOW - 5, "nbf": NOW + 5})
    assert jwt.verify_hs256(token, SECRET, now=NOW) is None
    assert jwt.verify_hs256(token, SECRET, now=NOW, leeway=10) is not None


# --- RS256 -------------------------------------------------------------------------------------


def test_rs256_verifies_with_the_public_key_and_audience() -> None:
    claims = {"iss": "c", "aud": AUDIENCE, "exp": NOW + 60}
    assert jwt.verify_rs256(rs(claims), pem(), now=NOW, audience=AUDIENCE) == claims
    assert jwt.verify_rs256(rs(claims), pem().encode(), now=NOW, audience=AUDIENCE + "/") == claims


@pytest.mark.parametrize(
    ("aud", "valid"),
    [
        (AUDIENCE, True),
        (AUDIENCE + "/", True),
        ([AUDIENCE], True),
        (["x", AUDIENCE], True),
        ("https://evil.example", False),
        ([], False),
        ([1], False),
        (None, False),
        ({"aud": AUDIENCE}, False),
    ],
)
def test_rs256_audience(aud: Any, valid: bool) -> None:
    claims: dict[str, Any] = {"iss": "c"} if aud is None else {"iss": "c", "aud": aud}
    token = pyjwt.PyJWS().encode(json.dumps(claims).encode(), _KEY, algorithm="RS256")
    assert (jwt.verify_rs256(token, pem(), now=NOW, audience=AUDIENCE) is not None) is valid


def test_rs256_without_an_expected_audience_verifies_nothing() -> None:
    assert jwt.verify_rs256(rs({"aud": AUDIENCE}), pem(), now=NOW, audience=None) is None


@pytest.mark.parametrize(
    "key_pem",
    [
        pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),  # another key
        pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # too small
        pem(ec.generate_private_key(ec.SECP256R1())),  # not RSA
        "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n",
        "",
        "\ud800",
    ],
)
def test_rs256_refuses_other_small_foreign_or_broken_keys(key_pem: str) -> None:
    assert jwt.verify_rs256(rs({"aud": AUDIENCE}), key_pem, now=NOW, audience=AUDIENCE) is None


def test_rs256_refuses_an_expired_token_and_an_hs256_one() -> None:
    assert jwt.verify_rs256(rs({"aud": AUDIENCE, "exp": NOW}), pem(), now=NOW, audience=AUDIENCE) is None
    confused = assemble({"alg": "HS256"}, {"aud": AUDIENCE}, secret=pem())
    assert jwt.verify_rs256(confused, pem(), now=NOW, audience=AUDIENCE) is None


# --- the query string hash ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "query", "canonical"),
    [
        ("get", "/", [], "GET&/&"),
        ("POST", "", [], "POST&/&"),
        ("POST", "/extensions/jira/issue-updated/", [], "POST&/extensions/jira/issue-updated&"),
        ("GET", "/a&b/", [("x", "1")], "GET&/a%26b&x=1"),
        ("GET", "rel/path", [], "GET&/rel/path&"),
        ("GET", "/p", [("b", "2"), ("a", "1"), ("jwt", "x.y.z")], "GET&/p&a=1&b=2"),
        ("GET", "/p", [("a", "y"), ("a", "x"), ("a", "x")], "GET&/p&a=x,x,y"),
        ("GET", "/p", [("a", "b,c")], "GET&/p&a=b%2Cc"),
        ("GET", "/p", [("b", "1"), ("B", "2"), ("_", "3")], "GET&/p&B=2&_=3&b=1"),
        ("GET", "/p", [("k y", "v w+*~")], "GET&/p&k%20y=v%20w%2B%2A~"),
        ("GET", "/p", [("e", "é")], "GET&/p&e=%C3%A9"),
        ("GET", "/p", [("empty", "")], "GET&/p&empty="),
    ],
)
def test_canonical_request(method: str, path: str, query: list[tuple[str, str]], canonical: str) -> None:
    assert jwt.canonical_request(method, path, query) == canonical
    assert jwt.query_hash(method, path, query) == hashlib.sha256(canonical.encode()).hexdigest()


# --- agreement with PyJWT, and totality --------------------------------------------------------

claim_values = st.none() | st.booleans() | st.integers() | st.text(max_size=10) | st.lists(st.integers(), max_size=3)


@given(
    claims=st.dictionaries(st.sampled_from(["iss", "sub", "qsh", "id", "x"]), claim_values, max_size=4),
    right_key=st.booleans(),
)
def test_hs256_agrees_with_pyjwt_on_signatures(claims: dict[str, Any], right_key: bool) -> None:
    token = pyjwt.PyJWS().encode(
        json.dumps(claims).encode(), SECRET if right_key else SECRET + "-other", algorithm="HS256"
    )
    theirs = True
    try:
        pyjwt.PyJWS().decode(token, SECRET, algorithms=["HS256"])
    except pyjwt.InvalidSignatureError:
        theirs = False
    assert (jwt.verify_hs256(token, SECRET, now=NOW) is not None) is theirs


@given(token=st.text(max_size=300), secret=st.text(max_size=40), key=st.text(max_size=60), now=st.floats())
def test_nothing_raises_on_any_text(token: str, secret: str, key: str, now: float) -> None:
    jwt.peek(token)
    jwt.verify_hs256(token, secret, now=now)
    jwt.verify_rs256(token, key, now=now, audience=AUDIENCE)


@given(
    header=st.dictionaries(st.text(max_size=5), claim_values, max_size=3),
    claims=st.dictionaries(st.sampled_from(["exp", "nbf", "aud", "iat"]), claim_values | st.floats(), max_size=4),
)
def test_nothing_raises_on_well_formed_tokens_with_any_content(header: dict[str, Any], claims: dict[str, Any]) -> None:
    token = assemble({**header, "alg": "HS256"}, claims)
    jwt.verify_hs256(token, SECRET, now=NOW)
    jwt.verify_rs256(token, pem(), now=NOW, audience=AUDIENCE)


@given(
    method=st.text(max_size=8), path=st.text(max_size=40), query=st.lists(st.tuples(st.text(), st.text()), max_size=5)
)
def test_canonical_request_never_raises(method: str, path: str, query: list[tuple[str, str]]) -> None:
    jwt.query_hash(method, path, query)
