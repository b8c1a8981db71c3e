"""JSON Web Tokens for the parsers: peek, verify (HS256, RS256) and Atlassian's query string hash.

Pure and total: every function answers ``None`` (or ``False``) for a token it cannot use and
never raises, whatever the input (core rule 2). The clock is a parameter (core rule 1).

Verification is written on the standard library (HMAC) and ``cryptography`` (RSA) rather than
on PyJWT's ``decode``, whose claim checks read the wall clock and whose key-length warnings fire
on every call. The JWS steps are RFC 7515 §5.2: split, base64url-decode, check the header's
``alg`` against the one algorithm the caller expects (never ``none``, never the algorithm the
token names), verify the signature over ``<header>.<payload>``, then the claims (RFC 7519 §7.2).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

MAX_TOKEN_LENGTH = 16_384
"""Atlassian tokens are well under 2 KiB; anything longer is refused before any decoding."""
MIN_RSA_BITS = 2048
_TOKEN = re.compile(r"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_JSON = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class Peek:
    """A token's header and claims, decoded but NOT verified: use them to find the key only.

    It also keeps what ``verify_*`` needs (the signed bytes and the signature), so a token that
    was peeked at is verified without being split and decoded a second time."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    signing_input: bytes = field(default=b"", repr=False, compare=False)
    signature: bytes = field(default=b"", repr=False, compare=False)


def peek(token: str) -> Peek | None:
    """Header and claims of a compact JWS, unverified; None when it is not one."""
    return _split(token)


def verify_hs256(
    token: str | Peek, secret: str | bytes, *, now: float, leeway: float = 0.0
) -> Mapping[str, Any] | None:
    """The claims when ``token`` is HS256-signed with ``secret`` and its time claims hold at ``now``.

    ``token`` may be what ``peek`` returned for it (decoded once). An empty secret verifies
    nothing: anyone could sign with it.
    """
    parts = _decoded(token)
    key = secret.encode("utf-8", "surrogatepass") if isinstance(secret, str) else secret
    if parts is None or not key or parts.header.get("alg") != "HS256":
        return None
    expected = hmac.digest(key, parts.signing_input, "sha256")
    if not hmac.compare_digest(expected, parts.signature):
        return None
    return parts.claims if times_valid(parts.claims, now, leeway) else None


def verify_rs256(
    token: str | Peek, public_key_pem: str | bytes, *, now: float, audience: str | None, leeway: float = 0.0
) -> Mapping[str, Any] | None:
    """The claims when ``token`` is RS256-signed by the RSA key in ``public_key_pem``, its time
    claims hold at ``now`` and its ``aud`` names ``audience``. ``audience=None`` verifies nothing:
    an asymmetric token without an audience check could be replayed from any other app."""
    parts = _decoded(token)
    if parts is None or audience is None or parts.header.get("alg") != "RS256":
        return None
    key = _rsa_public_key(public_key_pem)
    if key is None:
        return None
    try:
        key.verify(parts.signature, parts.signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return None
    if not times_valid(parts.claims, now, leeway) or not audience_matches(parts.claims.get("aud"), audience):
        return None
    return parts.claims


def times_valid(claims: Mapping[str, Any], now: float, leeway: float = 0.0) -> bool:
    """RFC 7519 §4.1.4–4.1.5 as PyJWT applies them: ``exp`` and ``nbf`` are optional, but when
    present must be finite numbers with ``now < exp + leeway`` and ``nbf <= now + leeway``."""
    if "exp" in claims:
        exp = _number(claims["exp"])
        if exp is None or not now < exp + leeway:
            return False
    if "nbf" in claims:
        nbf = _number(claims["nbf"])
        if nbf is None or nbf > now + leeway:
            return False
    return True


def audience_matches(aud: Any, audience: str) -> bool:
    """``aud`` is a string or a list of strings (RFC 7519 §4.1.3). A trailing ``/`` is ignored
    on both sides: Atlassian copies the descriptor's ``baseUrl`` verbatim, with or without one."""
    wanted = audience.rstrip("/")
    values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    return any(isinstance(value, str) and value.rstrip("/") == wanted for value in values)


# --- Atlassian Connect query string hash ---------------------------------------------------
# https://developer.atlassian.com/cloud/jira/platform/understanding-jwt-for-connect-apps/
# ("Creating a query string hash"): qsh = hex(sha256("<METHOD>&<canonical URI>&<canonical query>")).


def canonical_request(method: str, path: str, params: Iterable[tuple[str, str]]) -> str:
    """``METHOD&<path>&<query>``. The path keeps a leading ``/``, loses a trailing one (unless it
    is just ``/``) and has ``&`` encoded, so it cannot be confused with the separators. The
    query drops ``jwt``, percent-encodes names and values (RFC 3986: only ``A-Za-z0-9-._~``
    stay), sorts by encoded name, and joins repeated values, sorted, with ``,``."""
    uri = path.replace("&", "%26")
    if not uri.startswith("/"):
        uri = "/" + uri
    if len(uri) > 1 and uri.endswith("/"):
        uri = uri[:-1]
    values: dict[str, list[str]] = {}
    for name, value in params:
        if name != "jwt":
            values.setdefault(_encode(name), []).append(_encode(value))
    query = "&".join(f"{name}={','.join(sorted(values[name]))}" for name in sorted(values)) if values else ""
    return f"{method.upper()}&{uri}&{query}"


def query_hash(method: str, path: str, params: Iterable[tuple[str, str]]) -> str:
    # surrogatepass: a lone surrogate in the path (a Request can hold any str) must not raise (core rule 2).
    return hashlib.sha256(canonical_request(method, path, params).encode("utf-8", "surrogatepass")).hexdigest()


# --- internals -----------------------------------------------------------------------------


def _encode(text: str) -> str:
    # surrogatepass: a lone surrogate (from a mis-encoded query) must not raise.
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _decoded(token: str | Peek) -> Peek | None:
    return token if isinstance(token, Peek) else _split(token)


def _split(token: str) -> Peek | None:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        return None
    head, body, sig = token.split(".")
    if not _TOKEN.fullmatch(token):
        return None
    header, claims, signature = _header(head), _json_object(body), _b64(sig)
    if header is None or claims is None or signature is None:
        return None
    return Peek(header, claims, f"{head}.{body}".encode("ascii"), signature)


def _b64(segment: str) -> bytes | None:
    # a2b_base64 of the translated segment is base64.urlsafe_b64decode without its Python layers;
    # _TOKEN already admitted only the URL-safe alphabet, so the translation cannot let a "+" in.
    try:
        padded = segment + "=" * (-len(segment) % 4)
        return binascii.a2b_base64(padded.encode("ascii").translate(_FROM_URLSAFE))  # bytes.translate: C
    except (binascii.Error, ValueError):
        return None


def _json_object(segment: str) -> dict[str, Any] | None:
    raw = _b64(segment)
    if not raw:
        return None
    try:
        value = _JSON.decode(raw.decode("utf-8"))  # json.loads(bytes) would first sniff the encoding
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@lru_cache(maxsize=32)
def _header(segment: str) -> Mapping[str, Any] | None:
    """A JOSE header, decoded once per distinct segment: an issuer signs every token with the same
    header (``{"alg":"HS256","typ":"JWT"}``), only the claims change. Read-only for the callers."""
    value = _json_object(segment)
    return None if value is None else MappingProxyType(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # beyond any float: no time at all
            return None
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _rsa_public_key(pem: str | bytes) -> rsa.RSAPublicKey | None:
    data = pem.encode("utf-8", "surrogatepass") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
        return None
    return key
