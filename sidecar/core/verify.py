"""Pure signature checks: the secret, the clock reading and the signed data are all arguments.

Nothing here reads the clock or the environment (rule 1 of ``sidecar.core``) and nothing raises
on request data (rule 2): every malformed header, hex string or key is a plain ``False``.
Comparisons of secrets run in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
import re
from functools import lru_cache
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SLACK_MAX_AGE_S = 300
"""Slack: "reject the request if the timestamp is more than five minutes from local time"
(https://api.slack.com/authentication/verifying-requests-from-slack). Applied in both
directions, as Slack's own SDK does, so a clock running ahead cannot widen the replay window."""

SlackVerdict = Literal["valid", "stale", "invalid"]

_SLACK_TIMESTAMP = re.compile(r"[0-9]{1,20}")
"""ASCII digits only: ``int()`` would also take ``" 12"``, ``"1_2"`` or Arabic-Indic digits, none of
which Slack sends, and a bounded length keeps ``int()`` far from its digit limit."""
_HEX_SIGNATURE = re.compile(r"[0-9a-fA-F]{128}")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")

_P = 2**255 - 19
_Y_ORDER_8 = 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7
_SMALL_ORDER_Y = frozenset({0, 1, _P - 1, _Y_ORDER_8, _P - _Y_ORDER_8})
"""y coordinates of the eight Ed25519 points of order 1, 2, 4 and 8. With such a "public key"
(e.g. an all-zero placeholder left in a config) OpenSSL accepts forged signatures for most
messages, so these keys are refused outright ("Taming the many EdDSAs", https://eprint.iacr.org/2020/1244)."""


def _raw(text: str) -> bytes:
    """UTF-8 bytes of any ``str``: ``surrogatepass`` so a lone surrogate in a decoded JSON
    string cannot make ``encode`` raise. It is injective, so no two strings collide."""
    return text.encode("utf-8", "surrogatepass")


def equal_secrets(expected: str, given: str) -> bool:
    """Constant-time string comparison that also accepts non-ASCII input (``compare_digest``
    raises ``TypeError`` on non-ASCII ``str``; bytes have no such limit)."""
    return hmac.compare_digest(_raw(expected), _raw(given))


def slack_v0_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v0=`` + hex HMAC-SHA256 of ``v0:<timestamp>:<raw body>`` keyed with the signing secret."""
    base = b"v0:" + _raw(timestamp) + b":" + body
    return "v0=" + hmac.digest(_raw(secret), base, "sha256").hex()  # one-shot: no HMAC object


def slack_v0(secret: str, now: float, timestamp: str | None, body: bytes, signature: str | None) -> SlackVerdict:
    """Check ``X-Slack-Signature`` / ``X-Slack-Request-Timestamp`` over the raw body.

    "stale" when the timestamp is well formed but more than five minutes away from ``now``
    (checked first, as Slack's SDK does: a captured request replayed later is stale whatever
    its signature); "invalid" for a missing or malformed header or a signature that does not
    match.
    """
    if timestamp is None or signature is None or not _SLACK_TIMESTAMP.fullmatch(timestamp):
        return "invalid"
    if not abs(now - int(timestamp)) <= SLACK_MAX_AGE_S:  # written so that a NaN clock fails closed
        return "stale"
    if not equal_secrets(slack_v0_signature(secret, timestamp, body), signature):
        return "invalid"
    return "valid"


@lru_cache(maxsize=8)
def _ed25519_key(public_key_hex: str) -> Ed25519PublicKey | None:
    """The configured key, parsed once (the cache only ever holds configuration values)."""
    if not _HEX_KEY.fullmatch(public_key_hex):
        return None
    raw = bytes.fromhex(public_key_hex)
    if (int.from_bytes(raw, "little") & (2**255 - 1)) % _P in _SMALL_ORDER_Y:
        return None
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:  # 32 bytes that are not a valid key
        return None


def discord_ed25519(public_key_hex: str, timestamp: str | None, body: bytes, signature_hex: str | None) -> bool:
    """Discord interaction signature: Ed25519 over ``timestamp + raw body`` with the
    application's public key (hex), signature from ``X-Signature-Ed25519`` (hex).

    https://discord.com/developers/docs/interactions/overview#setting-up-an-endpoint-validating-security-request-headers
    Discord defines no freshness window for ``X-Signature-Timestamp`` and Sentry checks none.
    """
    if timestamp is None or signature_hex is None or not _HEX_SIGNATURE.fullmatch(signature_hex):
        return False
    key = _ed25519_key(public_key_hex)
    if key is None:
        return False
    try:
        key.verify(bytes.fromhex(signature_hex), _raw(timestamp) + body)
    except InvalidSignature:
        return False
    return True
