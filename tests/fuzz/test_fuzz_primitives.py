"""The primitives every parser stands on, fuzzed: JWT peek/verify and Atlassian's query hash,
Slack and Discord signatures, the Request helpers, classification. Total (never raise, whatever
the str or bytes) and correct (a good signature verifies, a changed byte does not).

Regression: ``jwt.query_hash`` raised ``UnicodeEncodeError`` on a path holding a lone surrogate
(found by the seeded fuzzer), so a Jira request with one was a 500 instead of a 404.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fuzzkit import RandomSource, budget, hs256, source_mutate, source_request, tried
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core import Request, jwt, verify
from sidecar.core.classify import classify, provider_of

ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=60)
"""Every code point, surrogates included: a Request can hold any str."""
CLAIMS = st.dictionaries(
    st.text(max_size=6), st.one_of(st.integers(), st.text(max_size=10), st.booleans(), st.none()), max_size=4
)
SECRET = st.text(min_size=1, max_size=40)


@budget(3_000)
@given(token=ANY_TEXT | st.sampled_from(["a.b.c", "..", "e30.e30.", "eyJhbGciOiJub25lIn0.e30."]), secret=ANY_TEXT)
def test_fuzz_jwt_functions_are_total(token: str, secret: str) -> None:
    tried("primitives/jwt-total")
    jwt.peek(token)
    jwt.verify_hs256(token, secret, now=0.0)
    jwt.verify_rs256(token, secret, now=0.0, audience="https://x")
    jwt.verify_rs256(token, "-----BEGIN PUBLIC KEY-----\n" + secret, now=0.0, audience="https://x")


@budget(3_000)
@given(claims=CLAIMS, secret=SECRET, flip=st.integers(min_value=0))
def test_fuzz_hs256_round_trip_and_tamper(claims: dict[str, object], secret: str, flip: int) -> None:
    tried("primitives/hs256")
    claims = {k: v for k, v in claims.items() if k not in ("exp", "nbf")}
    token = hs256(claims, secret)
    assert jwt.verify_hs256(token, secret, now=0.0) == claims
    assert jwt.verify_hs256(token, secret + "x", now=0.0) is None
    head, body, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[flip % len(raw)] ^= 1
    flipped = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert jwt.verify_hs256(f"{head}.{body}.{flipped}", secret, now=0.0) is None
    other_body = hs256({**claims, "forged_claim": True}, "attacker").split(".")[1]  # keys drawn are ≤ 6 chars
    assert jwt.verify_hs256(f"{head}.{other_body}.{signature}", secret, now=0.0) is None


@budget(3_000)
@given(method=ANY_TEXT, path=ANY_TEXT, params=st.lists(st.tuples(ANY_TEXT, ANY_TEXT), max_size=5), seed=st.integers())
def test_fuzz_query_hash_is_total_and_ignores_parameter_order(
    method: str, path: str, params: list[tuple[str, str]], seed: int
) -> None:
    tried("primitives/qsh")
    shuffled = list(params)
    random.Random(seed).shuffle(shuffled)
    assert jwt.query_hash(method, path, params) == jwt.query_hash(method, path, shuffled)


def test_query_hash_of_a_path_with_a_lone_surrogate_does_not_raise() -> None:
    """Regression (found by the fuzzer): 500 internal_error instead of the Jira view's 404."""
    assert len(jwt.query_hash("GET", "/extensions/jira/issue/\ud800/", [("a", "\udfff")])) == 64


SLACK_SECRET = "s3cr3t"


@budget(3_000)
@given(
    body=st.binary(max_size=200),
    skew=st.integers(-1000, 1000),
    timestamp=ANY_TEXT,
    signature=ANY_TEXT,
    flip=st.integers(min_value=0),
)
def test_fuzz_slack_signatures(body: bytes, skew: int, timestamp: str, signature: str, flip: int) -> None:
    tried("primitives/slack")
    now = 1_700_000_000.0
    verify.slack_v0(SLACK_SECRET, now, timestamp, body, signature)  # total
    ts = str(int(now) + skew)
    good = verify.slack_v0_signature(SLACK_SECRET, ts, body)
    verdict = verify.slack_v0(SLACK_SECRET, now, ts, body, good)
    assert verdict == ("valid" if abs(skew) <= verify.SLACK_MAX_AGE_S else "stale")
    if body and abs(skew) <= verify.SLACK_MAX_AGE_S:
        i = flip % len(body)
        changed = body[:i] + bytes([body[i] ^ 1]) + body[i + 1 :]
        assert verify.slack_v0(SLACK_SECRET, now, ts, changed, good) == "invalid"


DISCORD = Ed25519PrivateKey.generate()
DISCORD_HEX = DISCORD.public_key().public_bytes_raw().hex()


@budget(3_000)
@given(
    body=st.binary(max_size=200),
    timestamp=st.text(max_size=12),
    key=ANY_TEXT | st.binary(min_size=32, max_size=32).map(bytes.hex),
    signature=ANY_TEXT,
)
def test_fuzz_discord_signatures(body: bytes, timestamp: str, key: str, signature: str) -> None:
    tried("primitives/discord")
    verify.discord_ed25519(key, timestamp, body, signature)  # total, whatever the key
    good = DISCORD.sign(timestamp.encode("utf-8", "surrogatepass") + body).hex()
    assert verify.discord_ed25519(DISCORD_HEX, timestamp, body, good)
    assert not verify.discord_ed25519(DISCORD_HEX, timestamp, body + b"x", good)


@budget(3_000)
@given(path=ANY_TEXT, query=ANY_TEXT, body=st.none() | st.binary(max_size=300), ctype=ANY_TEXT)
def test_fuzz_request_helpers_and_classification_are_total(
    path: str, query: str, body: bytes | None, ctype: str
) -> None:
    tried("primitives/request")
    req = Request("POST", path, query, {"content-type": ctype}, body)
    req.json()
    req.form()
    req.query_params()
    req.query_param("jwt")
    assert req.content_type == ctype.lower()
    classify(path)
    provider_of(path)
    _ = req.full_path


@budget(15_000)
@given(seed=st.integers(0, 2**64))
def test_fuzz_primitives_with_seeded_inputs(seed: int) -> None:
    """Volume: the seeded generator's requests through every primitive, plus raw mutations."""
    tried("primitives/seeded")
    src = RandomSource(seed)
    req = source_request(src)
    raw = source_mutate(src, json.dumps({"a": src.text(20)}).encode("utf-8", "surrogatepass"))
    req.json()
    req.form()
    Request("POST", req.path, req.query, req.headers, raw).json()
    classify(req.path)
    token = req.header("authorization") or req.query_param("jwt") or src.text(40)
    jwt.peek(token)
    jwt.verify_hs256(token, src.text(10) or "k", now=float(src.integer(0, 2**31)))
    jwt.query_hash(req.method, req.path, req.query_params())
    verify.slack_v0("k", 0.0, req.header("x-slack-request-timestamp"), req.body or b"", req.header("x-slack-signature"))
    verify.discord_ed25519(
        DISCORD_HEX, req.header("x-signature-timestamp"), req.body or b"", req.header("x-signature-ed25519")
    )
    digest = hmac.new(b"k", raw, hashlib.sha256).hexdigest()
    assert verify.slack_v0("k", 0.0, "0", raw, "v0=" + digest) in ("valid", "invalid")
