"""Helpers for the GitLab, Jira, Jira Server, VSTS, MS Teams, Vercel, Google, Gitea and Cursor Origin
tests (``helpers_b``): a fake directory and key source, a driver that runs a request through
both phases and every effect as the edge does, and Atlassian Connect token minting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import strategies as st

from sidecar.core import (
    ByOrganization,
    Context,
    Decision,
    FetchKey,
    Integration,
    Lookup,
    LookupKey,
    NeedBody,
    Organization,
    Request,
    Resolution,
    Step,
    plan,
)

NOW = 1_700_000_000.0
"""The edge's clock reading in every test context (the core never reads the clock)."""

US = Organization(1, "acme", "us")
DE = Organization(2, "globex", "de")
EU = Organization(3, "initech", "eu")
"""Three organizations in three regions: "de" < "eu" < "us", so the first region is "de"."""

SHARED_SECRET = "b0c8f1a7-6d5e-4c3b-9a21-7f4e8d2c1b0a-jira-shared-secret"
"""At least 32 bytes: PyJWT (used here to mint tokens) warns on shorter HMAC keys."""


@dataclass
class Directory:
    """The directory twin: answers each key from a table, trying keys in order as the real one does."""

    table: Mapping[LookupKey, Resolution] = field(default_factory=dict)
    asked: list[tuple[LookupKey, ...]] = field(default_factory=list)

    def resolve(self, keys: tuple[LookupKey, ...]) -> Resolution:
        self.asked.append(keys)
        for key in keys:
            found = self.table.get(key)
            if found is not None and (found.integration is not None or isinstance(key, ByOrganization)):
                return found
        return Resolution()


@dataclass
class Run:
    decision: Decision
    header_phase: Step
    lookups: list[tuple[LookupKey, ...]]
    fetches: list[tuple[str, str]]


def run(
    req: Request,
    ctx: Context | None = None,
    directory: Directory | Mapping[LookupKey, Resolution] | None = None,
    keys: Mapping[tuple[str, str], str] | None = None,
) -> Run:
    """Both phases as the edge runs them (headers first; the body only when asked for), then every
    effect, against the twins. ``req.body`` is what Envoy would send when asked."""
    ctx = ctx or Context(now=NOW)
    if not isinstance(directory, Directory):
        directory = Directory(dict(directory or {}))
    header_phase = plan(Request(req.method, req.path, req.query, req.headers, None), ctx)
    step = header_phase
    if isinstance(step, NeedBody):
        step = plan(req if req.body is not None else req.with_body(b""), ctx)
    fetches: list[tuple[str, str]] = []
    for _ in range(4):
        if isinstance(step, Lookup):
            step = step.then(directory.resolve(step.keys))
        elif isinstance(step, FetchKey):
            fetches.append((step.source, step.kid))
            step = step.then((keys or {}).get((step.source, step.kid)))
        else:
            break
    assert not isinstance(step, Lookup | FetchKey | NeedBody), step
    return Run(step, header_phase, directory.asked, fetches)


def decide(req: Request, ctx: Context | None = None, directory: Any = None, keys: Any = None) -> Decision:
    return run(req, ctx, directory, keys).decision


def found(integration: Integration, *orgs: Organization) -> Resolution:
    return Resolution(integration, orgs)


def json_request(
    method: str,
    target: str,
    payload: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> Request:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Request.from_target(method, target, {"Content-Type": content_type, **(headers or {})}, body)


# --- Atlassian Connect tokens -------------------------------------------------------------------


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey | None = None) -> str:
    key = key or rsa_key()
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def hs256(claims: Mapping[str, Any], secret: str = SHARED_SECRET, headers: Mapping[str, Any] | None = None) -> str:
    """Signed by PyJWT's JWS layer: its JWT layer would refuse the malformed claims some tests need."""
    payload = json.dumps(dict(claims)).encode()
    return pyjwt.PyJWS().encode(payload, secret, algorithm="HS256", headers=dict(headers) if headers else None)


def rs256(claims: Mapping[str, Any], kid: str, key: rsa.RSAPrivateKey | None = None) -> str:
    return pyjwt.PyJWS().encode(
        json.dumps(dict(claims)).encode(), key or rsa_key(), algorithm="RS256", headers={"kid": kid}
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: Mapping[str, Any], claims: Mapping[str, Any], hmac_secret: str | None = None) -> str:
    """A token with any header (``alg: none``, a wrong ``alg``…), unsigned or HMAC-SHA256-signed."""
    signing_input = f"{b64url(json.dumps(dict(header)).encode())}.{b64url(json.dumps(dict(claims)).encode())}"
    signature = b""
    if hmac_secret is not None:
        signature = hmac.new(hmac_secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


# --- hypothesis ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
header_values = st.text(st.characters(blacklist_categories=["Cs"]), max_size=60)
"""Any text Envoy could hand over as a header value (lone surrogates cannot arrive over HTTP)."""


def any_body(shape: Any = None) -> st.SearchStrategy[bytes]:
    """Raw garbage, any JSON, or JSON shaped like the provider's payload with fuzzed leaves."""
    shaped = st.just(shape).map(lambda v: json.dumps(v).encode()) if shape is not None else st.nothing()
    return st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()), shaped)


def any_resolution() -> st.SearchStrategy[Resolution]:
    metadata = st.dictionaries(st.sampled_from(["shared_secret", "webhook_secret"]), json_values, max_size=2)
    integrations = st.builds(Integration, st.integers(1, 10**6), st.just("x"), st.just("y"), metadata=metadata)
    orgs = st.lists(st.sampled_from([US, DE, EU]), max_size=3).map(tuple)
    return st.builds(Resolution, st.none() | integrations, orgs)


@dataclass
class Always(Directory):
    """A directory that gives the same answer to every lookup (for property tests)."""

    answer: Resolution = field(default_factory=Resolution)

    def resolve(self, keys: tuple[LookupKey, ...]) -> Resolution:
        self.asked.append(keys)
        return self.answer


def decide_any(req: Request, ctx: Context, resolution: Resolution, pem: str | None = None) -> Decision:
    """Run ``req`` to a decision whatever it is, with one answer for every lookup and key fetch."""

    class AnyKey(dict[tuple[str, str], str]):
        def get(self, key: Any, default: Any = None) -> Any:
            return pem

    return run(req, ctx, Always(answer=resolution), AnyKey()).decision
