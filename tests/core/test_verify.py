"""Pure signature checks (sidecar.core.verify), against the providers' published test vectors."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core import verify

# https://api.slack.com/authentication/verifying-requests-from-slack (the worked example)
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TS = "1531420618"
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
SLACK_NOW = float(SLACK_TS)

# RFC 8032 §7.1, TEST 2: a one-byte message 0x72 ("r"); as Discord signs timestamp + body,
# it is timestamp "r" with an empty body.
RFC_KEY = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
RFC_SIGNATURE = (
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


# --- Slack v0 ------------------------------------------------------------------------------------


def test_slack_documented_example_signature() -> None:
    assert verify.slack_v0_signature(SLACK_SECRET, SLACK_TS, SLACK_BODY) == SLACK_SIGNATURE
    assert verify.slack_v0(SLACK_SECRET, SLACK_NOW, SLACK_TS, SLACK_BODY, SLACK_SIGNATURE) == "valid"


def test_slack_wrong_secret_body_or_signature_is_invalid() -> None:
    assert verify.slack_v0("other", SLACK_NOW, SLACK_TS, SLACK_BODY, SLACK_SIGNATURE) == "invalid"
    assert verify.slack_v0(SLACK_SECRET, SLACK_NOW, SLACK_TS, SLACK_BODY + b"&x=1", SLACK_SIGNATURE) == "invalid"
    assert verify.slack_v0(SLACK_SECRET, SLACK_NOW, SLACK_TS, SLACK_BODY, SLACK_SIGNATURE[:-1] + "4") == "invalid"
    assert verify.slack_v0(SLACK_SECRET, SLACK_NOW, SLACK_TS, SLACK_BODY, SLACK_SIGNATURE.upper()) == "invalid"


def test_slack_timestamp_is_signed() -> None:
    # A fresh timestamp with an old signature: the signature covers the timestamp.
    assert verify.slack_v0(SLACK_SECRET, SLACK_NOW + 1, str(int(SLACK_TS) + 1), SLACK_BODY, SLACK_SIGNATURE) == (
        "invalid"
    )


@pytest.mark.parametrize(("skew", "verdict"), [(0, "valid"), (300, "valid"), (-300, "valid"), (300.5, "stale")])
def test_slack_freshness_window_is_five_minutes_both_ways(skew: float, verdict: str) -> None:
    assert verify.slack_v0(SLACK_SECRET, SLACK_NOW + skew, SLACK_TS, SLACK_BODY, SLACK_SIGNATURE) == verdict
    assert verify.slack_v0(SLACK_SECRET, SLACK_NOW - skew, SLACK_TS, SLACK_BODY, SLACK_SIGNATURE) == verdict


def test_slack_a_nan_clock_fails_closed() -> None:
    assert verify.slack_v0(SLACK_SECRET, float("nan"), SLACK_TS, SLACK_BODY, SLACK_SIGNATURE) == "stale"


def test_slack_stale_is_reported_whatever_the_signature() -> None:
    assert verify.slack_v0(SLACK_SECRET, SLACK_NOW + 3600, SLACK_TS, SLACK_BODY, "v0=forged") == "stale"


@pytest.mark.parametrize("timestamp", [None, "", " 1531420618", "+1531420618", "1531420618.0", "1_531_420_618", "١٥"])
def test_slack_missing_or_malformed_timestamp_is_invalid(timestamp: str | None) -> None:
    assert verify.slack_v0(SLACK_SECRET, SLACK_NOW, timestamp, SLACK_BODY, SLACK_SIGNATURE) == "invalid"


def test_slack_missing_signature_is_invalid() -> None:
    assert verify.slack_v0(SLACK_SECRET, SLACK_NOW, SLACK_TS, SLACK_BODY, None) == "invalid"


def test_equal_secrets_accepts_any_text() -> None:
    assert verify.equal_secrets("xyzz0", "xyzz0")
    assert not verify.equal_secrets("xyzz0", "xyzz1")
    assert not verify.equal_secrets("xyzz0", "")
    assert not verify.equal_secrets("é", "\ud800")  # compare_digest on str would raise TypeError here
    assert verify.equal_secrets("é\ud800", "é\ud800")


@settings(max_examples=300, deadline=None)
@given(
    secret=st.text(), now=st.floats(allow_nan=True, allow_infinity=True), timestamp=st.none() | st.text(),
    body=st.binary(), signature=st.none() | st.text(),
)  # fmt: skip
def test_slack_never_raises(secret: str, now: float, timestamp: str | None, body: bytes, signature: str | None) -> None:
    assert verify.slack_v0(secret, now, timestamp, body, signature) in ("valid", "stale", "invalid")


# --- Discord Ed25519 ---------------------------------------------------------------------------------


def test_discord_rfc8032_vector() -> None:
    assert verify.discord_ed25519(RFC_KEY, "r", b"", RFC_SIGNATURE)
    assert verify.discord_ed25519(RFC_KEY, "", b"r", RFC_SIGNATURE)  # only the concatenation is signed
    assert not verify.discord_ed25519(RFC_KEY, "r", b"r", RFC_SIGNATURE)


def test_discord_generated_key_round_trip() -> None:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    body = b'{"type":1}'
    signature = private.sign(b"1700000000" + body).hex()
    assert verify.discord_ed25519(public, "1700000000", body, signature)
    assert verify.discord_ed25519(public.upper(), "1700000000", body, signature.upper())
    assert not verify.discord_ed25519(public, "1700000001", body, signature)
    assert not verify.discord_ed25519(public, "1700000000", body + b" ", signature)
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    assert not verify.discord_ed25519(other, "1700000000", body, signature)


@pytest.mark.parametrize(
    "signature", [None, "", RFC_SIGNATURE[:-2], RFC_SIGNATURE + "00", " " + RFC_SIGNATURE[1:], "g" * 128, "é" * 128]
)
def test_discord_missing_or_malformed_signature_is_false(signature: str | None) -> None:
    assert not verify.discord_ed25519(RFC_KEY, "r", b"", signature)


def test_discord_missing_timestamp_is_false() -> None:
    assert not verify.discord_ed25519(RFC_KEY, None, b"r", RFC_SIGNATURE)


@pytest.mark.parametrize("key", ["", "xyz", RFC_KEY[:-2], RFC_KEY + "00", "g" * 64, " " + RFC_KEY[1:]])
def test_discord_malformed_key_is_false(key: str) -> None:
    assert not verify.discord_ed25519(key, "r", b"", RFC_SIGNATURE)


SMALL_ORDER_KEYS = [
    "0100000000000000000000000000000000000000000000000000000000000000",  # identity
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # identity, non-canonical (y = p + 1)
]


@pytest.mark.parametrize("key", SMALL_ORDER_KEYS)
def test_discord_small_order_keys_are_refused(key: str) -> None:
    # With these keys OpenSSL verifies (R = small-order point, S = 0) for most messages.
    forgeries = [r + "00" * 32 for r in SMALL_ORDER_KEYS]
    for message in (b"a", b"b", b"c", b'{"type":1}'):
        assert not any(verify.discord_ed25519(key, "1700000000", message, forged) for forged in forgeries)


@settings(max_examples=300, deadline=None)
@given(key=st.text(max_size=70), timestamp=st.none() | st.text(), body=st.binary(), signature=st.none() | st.text())
def test_discord_never_raises(key: str, timestamp: str | None, body: bytes, signature: str | None) -> None:
    assert verify.discord_ed25519(key, timestamp, body, signature) in (True, False)


@settings(max_examples=50, deadline=None)
@given(key=st.binary(min_size=32, max_size=32).map(bytes.hex))
def test_discord_arbitrary_32_byte_keys_never_raise(key: str) -> None:
    assert verify.discord_ed25519(key, "r", b"", RFC_SIGNATURE) in (True, False)
