"""Cursor Origin (reference §3.16): Standard Webhooks headers, signed as the spec signs them.

https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from helpers_b import DE, NOW, US, any_body, any_resolution, decide, decide_any, found, header_values, run
from hypothesis import given

from sidecar.core import ByExternalId, Context, Control, Integration, Mailbox, NeedBody, Reply, Request, ShedRule, Store
from sidecar.core.providers.cursor_origin import MAX_SKEW_S

PATH = "/extensions/cursor-origin/webhook/"
INSTALLATION = "inst_01HV8Y3Z5K2N"
KEY = ByExternalId("cursor_origin", INSTALLATION)
INTEGRATION = Integration(80, "cursor_origin", INSTALLATION)
DIRECTORY = {KEY: found(INTEGRATION, US, DE)}
SECRET = base64.b64encode(b"cursor-origin-signing-secret-32b").decode()
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"


def event_body(repo_id: Any = 123456) -> bytes:
    return json.dumps(
        {"type": "pull_request.opened", "payload": {"repository": {"id": repo_id, "name": "acme/web"}, "number": 7}}
    ).encode()


def signature(body: bytes, timestamp: str, msg_id: str = MSG_ID) -> str:
    """Standard Webhooks ``v1``: base64(HMAC-SHA256(secret, "<id>.<timestamp>.<body>"))."""
    mac = hmac.new(base64.b64decode(SECRET), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def hook(event: str | None = "pull_request.opened", body: bytes | None = None, **overrides: str | None) -> Request:
    body = event_body() if body is None else body
    timestamp = str(int(NOW))
    headers: dict[str, str | None] = {
        "content-type": "application/json",
        "webhook-event-type": event,
        "webhook-installation-id": INSTALLATION,
        "webhook-id": MSG_ID,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature(body, timestamp),
    }
    headers.update(overrides)
    return Request.from_target("POST", PATH, {k: v for k, v in headers.items() if v is not None}, body)


def expected_bucket(repo_id: Any) -> int:
    return int.from_bytes(hashlib.sha256(json.dumps(repo_id).encode()).digest()[:8], "big")


def test_a_handled_signed_event_is_stored_in_a_repository_bucketed_mailbox() -> None:
    result = run(hook(), Context(now=NOW), DIRECTORY)
    assert result.header_phase == NeedBody()
    assert result.lookups == [(KEY,)]
    mailbox = Mailbox("cursor_origin", "80", bucket_key=expected_bucket(123456))
    assert result.decision == Store("cursor_origin", ("de", "us"), mailbox, 80, "stored")
    assert mailbox.name(over_volume=True) == f"cursor_origin:80:{expected_bucket(123456) % 100}"


@pytest.mark.parametrize(
    ("repo_id", "bucket"), [("r_9", expected_bucket("r_9")), (None, None), ("", None), (True, None), ({"id": 1}, None)]
)
def test_the_bucket_key_hashes_the_repository_id(repo_id: Any, bucket: int | None) -> None:
    decision = decide(hook(body=event_body(repo_id)), None, DIRECTORY)
    assert isinstance(decision, Store)
    assert decision.mailbox.bucket_key == bucket


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (None, "no_event_type"),
        ("", "no_event_type"),
        ("ping", "ping_event"),
        ("installation.created", "installation_event"),
        ("installation.deleted", "installation_event"),
    ],
)
def test_control_events_pass_through_even_unsigned(event: str | None, reason: str) -> None:
    result = run(hook(event, **{"webhook-signature": None}), Context(now=NOW), DIRECTORY)
    assert (result.decision, result.lookups) == (Control(reason), [])


@pytest.mark.parametrize("event", ["agent.finished", "installation", "pushed", "pull-request.opened"])
def test_events_no_region_handles_are_202_and_dropped(event: str) -> None:
    result = run(hook(event), Context(now=NOW), DIRECTORY)
    assert (result.decision, result.lookups) == (Reply(202, "unprocessed_event"), [])


@pytest.mark.parametrize("event", ["push", "pull_request", "pull_request.closed"])
def test_handled_event_families(event: str) -> None:
    assert isinstance(decide(hook(event), None, DIRECTORY), Store)


stale = str(int(NOW) - MAX_SKEW_S - 1)
ahead = str(int(NOW) + MAX_SKEW_S + 1)


@pytest.mark.parametrize(
    "overrides",
    [
        {"webhook-id": None},
        {"webhook-id": ""},
        {"webhook-timestamp": None},
        {"webhook-timestamp": "yesterday"},
        {"webhook-timestamp": "١٧٠٠٠٠٠٠٠٠"},
        {"webhook-timestamp": " 1700000000"},
        {"webhook-timestamp": stale, "webhook-signature": signature(event_body(), stale)},
        {"webhook-timestamp": ahead, "webhook-signature": signature(event_body(), ahead)},
        {"webhook-signature": None},
        {"webhook-signature": ""},
        {"webhook-signature": "v2,dGVzdA=="},
        {"webhook-signature": "v1a,dGVzdA=="},
        {"webhook-signature": "v1,"},
        {"webhook-signature": "v1,not base64!"},
        {"webhook-signature": "sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
    ],
)
def test_a_request_that_does_not_look_signed_is_401_without_lookup(overrides: dict[str, str | None]) -> None:
    result = run(hook(**overrides), Context(now=NOW), DIRECTORY)
    assert (result.decision, result.lookups) == (Reply(401, "unsigned"), [])


@pytest.mark.parametrize("skew", [-MAX_SKEW_S, MAX_SKEW_S])
def test_a_timestamp_at_the_edge_of_the_window_is_fresh(skew: int) -> None:
    timestamp = str(int(NOW) + skew)
    req = hook(**{"webhook-timestamp": timestamp, "webhook-signature": signature(event_body(), timestamp)})
    assert isinstance(decide(req, None, DIRECTORY), Store)


def test_one_v1_token_among_several_signatures_is_enough() -> None:
    timestamp = str(int(NOW))
    both = f"v1a,c2lnbmF0dXJl {signature(event_body(), timestamp)}"
    assert isinstance(decide(hook(**{"webhook-signature": both}), None, DIRECTORY), Store)


def test_the_signature_itself_is_left_to_the_region() -> None:
    forged = "v1," + base64.b64encode(b"\x00" * 32).decode()
    assert isinstance(decide(hook(**{"webhook-signature": forged}), None, DIRECTORY), Store)


def test_without_an_installation_id_it_is_400_without_lookup() -> None:
    result = run(hook(**{"webhook-installation-id": None}), Context(now=NOW), DIRECTORY)
    assert (result.decision, result.lookups) == (Reply(400, "unknown_integration"), [])


def test_unknown_integration_and_no_active_organization_are_400() -> None:
    assert decide(hook(), None, {}) == Reply(400, "unknown_integration")
    assert decide(hook(), None, {KEY: found(INTEGRATION)}) == Reply(400, "no_active_organization")


def test_an_organization_in_an_unconfigured_region_is_a_500() -> None:
    assert decide(hook(), Context(now=NOW, regions=frozenset({"us"})), DIRECTORY) == Reply(500, "unknown_region")


def test_shed_cursor_origin_is_429() -> None:
    ctx = Context(now=NOW, shed=(ShedRule("cursor_origin"),))
    assert decide(hook(), ctx, DIRECTORY) == Reply(429, "shed", headers=(("retry-after", "60"),))


def test_an_unknown_view_is_404() -> None:
    assert decide(Request.from_target("POST", "/extensions/cursor-origin/events/")) == Reply(404, "no_such_view")


@given(
    event=header_values,
    timestamp=header_values,
    signature_=header_values,
    msg_id=header_values,
    installation=header_values,
    body=any_body(json.loads(event_body())),
    resolution=any_resolution(),
)
def test_never_raises(
    event: str, timestamp: str, signature_: str, msg_id: str, installation: str, body: bytes, resolution: Any
) -> None:
    headers = {
        "webhook-event-type": event,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature_,
        "webhook-id": msg_id,
        "webhook-installation-id": installation,
    }
    decide_any(Request("POST", PATH, "", headers, body), Context(now=NOW), resolution)


@given(body=any_body(json.loads(event_body())), resolution=any_resolution())
def test_never_raises_once_it_looks_signed(body: bytes, resolution: Any) -> None:
    decide_any(hook(body=body), Context(now=NOW), resolution)
