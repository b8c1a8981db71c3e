"""Discord (reference §3.3), from Discord's documented interaction objects, signed with a test key.

https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers_a import DE, EU, NOW, US, DiscordApp, decide, lookup_of, step_for
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core import (
    ByExternalId,
    Context,
    Control,
    Forward,
    Integration,
    Lookup,
    NeedBody,
    Reply,
    Request,
    Resolution,
    Secrets,
    ShedRule,
    Store,
    plan,
)
from sidecar.core.decision import ReplyTarget
from sidecar.core.mailbox import Mailbox

P = "/extensions/discord/"
APP = DiscordApp()
CTX = APP.ctx()
DISCORD = Integration(9, "discord", "81384788765712384")
ALL = Resolution(DISCORD, (US, DE, EU))


def interaction(kind: Any, *, guild: Any = "81384788765712384", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "1063583524412940360",
        "application_id": "1063572232434495520",
        "type": kind,
        "token": "aW50ZXJhY3Rpb246MTA2MzU4MzUyNDQxMjk0MDM2MDpLYkR3Q2ZuZXhK",
        "version": 1,
        "channel_id": "1034877211116752917",
        "member": {"user": {"id": "53908232506183680", "username": "mason"}},
    }
    if guild is not None:
        body["guild_id"] = guild
    if kind == 2:
        body["data"] = {"id": "1063577131098202163", "name": "link", "type": 1}
    if kind == 3:
        body["data"] = {"custom_id": "resolve:123", "component_type": 2}
        body["message"] = {"id": "1063583418384621628"}
    body.update(extra)
    return body


# --- views ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [P + "configure/", P + "link-identity/abc:1:sig/", P + "unlink-identity/abc:1:sig/"])
def test_configure_and_identity_views_are_control_only(path: str) -> None:
    assert plan(Request.from_target("GET", path), CTX) == Control("control_only_view")


@pytest.mark.parametrize("path", [P, P + "interactions", P + "interactions/x/", P + "link-identity/", P + "webhook/"])
def test_paths_matching_no_view_are_404(path: str) -> None:
    assert plan(Request.from_target("POST", path, body=b"{}"), CTX) == Reply(404, "no_such_view")


def test_interactions_ask_for_the_body() -> None:
    assert plan(Request.from_target("POST", P + "interactions/"), CTX) == NeedBody()


# --- PING ---------------------------------------------------------------------------------------


def test_signed_ping_is_answered_with_pong() -> None:
    decision = step_for(APP.request(interaction(1, guild=None)), CTX)
    assert decision == Reply(200, "pong", b'{"type":1}', (("content-type", "application/json"),))
    assert isinstance(decision, Reply)
    assert json.loads(decision.body) == {"type": 1}


def test_json_true_is_not_a_ping() -> None:
    assert isinstance(step_for(APP.request(interaction(True)), CTX), Lookup)


# --- signature ------------------------------------------------------------------------------------


def test_discords_probe_with_a_bad_signature_is_401() -> None:
    other = DiscordApp()
    ping = json.dumps(interaction(1, guild=None)).encode()
    forged = APP.request(ping, signature=other.sign(str(int(NOW)), ping))
    assert step_for(forged, CTX) == Reply(401, "bad_signature")


def test_body_changed_after_signing_is_401() -> None:
    raw = json.dumps(interaction(2)).encode()
    req = APP.request(raw, signature=APP.sign(str(int(NOW)), raw)).with_body(raw.replace(b"81384", b"99999"))
    assert step_for(req, CTX) == Reply(401, "bad_signature")


def test_timestamp_is_part_of_the_signed_message() -> None:
    raw = json.dumps(interaction(2)).encode()
    req = APP.request(raw, timestamp="1700000001", signature=APP.sign("1700000000", raw))
    assert step_for(req, CTX) == Reply(401, "bad_signature")


@pytest.mark.parametrize("drop", ["x-signature-ed25519", "x-signature-timestamp"])
def test_missing_signature_headers_are_401(drop: str) -> None:
    signed = APP.request(interaction(1))
    headers = {k: v for k, v in signed.headers.items() if k != drop}
    req = Request(signed.method, signed.path, signed.query, headers, signed.body)
    assert step_for(req, CTX) == Reply(401, "bad_signature")


@pytest.mark.parametrize("signature", ["", "zz" * 64, "00" * 63, "00" * 65, "é" * 128, "\ud800" * 128, "00" * 64])
def test_malformed_signatures_are_401(signature: str) -> None:
    assert step_for(APP.request(interaction(1), signature=signature), CTX) == Reply(401, "bad_signature")


def test_no_public_key_configured_is_401() -> None:
    assert step_for(APP.request(interaction(1)), Context(now=NOW)) == Reply(401, "no_public_key")
    assert step_for(APP.request(interaction(1)), Context(secrets=Secrets(discord_public_key=""))) == Reply(
        401, "no_public_key"
    )


@pytest.mark.parametrize("key", ["not hex", "00" * 31, "zz" * 32, "00" * 32, "01" + "00" * 31])
def test_a_malformed_or_weak_configured_key_refuses_everything(key: str) -> None:
    # An all-zero "placeholder" key is a small-order point: it must not accept an all-zero signature.
    ctx = Context(now=NOW, secrets=Secrets(discord_public_key=key))
    assert step_for(APP.request(interaction(1), signature="00" * 64), ctx) == Reply(401, "bad_signature")
    assert step_for(APP.request(interaction(1)), ctx) == Reply(401, "bad_signature")


def test_an_old_timestamp_still_verifies_discord_defines_no_window() -> None:
    # Neither Discord nor Sentry bound X-Signature-Timestamp; the signature is what is checked.
    old = APP.request(interaction(1), timestamp=str(int(NOW) - 86_400))
    assert step_for(old, APP.ctx(now=NOW + 86_400)) == Reply(
        200, "pong", b'{"type":1}', (("content-type", "application/json"),)
    )


def test_the_public_key_may_be_upper_case_hex() -> None:
    ctx = Context(now=NOW, secrets=Secrets(discord_public_key=APP.public_hex.upper()))
    assert isinstance(step_for(APP.request(interaction(2)), ctx), Lookup)


# --- identification and targets -------------------------------------------------------------------------


def test_guild_is_looked_up_among_active_discord_integrations() -> None:
    assert lookup_of(APP.request(interaction(2)), CTX).keys == (ByExternalId("discord", "81384788765712384", True),)


def test_numeric_guild_id_is_used_as_text() -> None:
    req = APP.request(interaction(2, guild=81384788765712384))
    assert lookup_of(req, CTX).keys == (ByExternalId("discord", "81384788765712384", True),)


FOLLOW_UP = ReplyTarget("discord", "/api/v10/webhooks/1063572232434495520/" + interaction(2)["token"])


def deferred(regions: tuple[str, ...], reason: str) -> Store:
    return Store(
        "discord",
        regions,
        Mailbox("discord", "9"),
        9,
        reason,
        reply_status=200,
        reply_body=b'{"type":5,"data":{"flags":64}}',
        reply_headers=(("content-type", "application/json"),),
        reply_to=FOLLOW_UP,
    )


def test_command_is_deferred_and_stored_for_the_first_region() -> None:
    # Sentry answers a deferred response (type 5) and replays the interaction from a task.
    decision = decide(APP.request(interaction(2)), CTX, ALL)
    assert decision == deferred(("de",), "deferred_first_region")
    assert isinstance(decision, Store)
    assert json.loads(decision.reply_body) == {"type": 5, "data": {"flags": 64}}


@pytest.mark.parametrize(
    ("field", "value"),
    [("application_id", "12ab"), ("application_id", ""), ("token", "a/../b"), ("token", "x..y"), ("token", "a" * 1025)],
)
def test_ids_that_cannot_be_a_url_path_mean_no_follow_up(field: str, value: str) -> None:
    assert decide(APP.request(interaction(2, **{field: value})), CTX, ALL) == Forward("de", "first_region")


def test_numeric_application_id_is_used_as_text() -> None:
    decision = decide(APP.request(interaction(2, application_id=1063572232434495520)), CTX, ALL)
    assert isinstance(decision, Store) and decision.reply_to == FOLLOW_UP


def test_deferred_interactions_are_shed_like_any_stored_webhook() -> None:
    ctx = APP.ctx(shed=(ShedRule("discord", 9),))
    assert decide(APP.request(interaction(3)), ctx, ALL) == Reply(429, "shed", headers=(("retry-after", "60"),))


@pytest.mark.parametrize("drop", ["application_id", "token"])
def test_command_without_a_response_url_goes_to_the_first_region(drop: str) -> None:
    body = interaction(2)
    del body[drop]
    assert decide(APP.request(body), CTX, ALL) == Forward("de", "first_region")


def test_component_is_deferred_and_stored_for_every_region() -> None:
    assert decide(APP.request(interaction(3)), CTX, ALL) == deferred(("de", "eu", "us"), "deferred_all_regions")


def test_component_without_a_response_url_goes_to_the_first_region() -> None:
    body = interaction(3)
    del body["token"]
    assert decide(APP.request(body), CTX, ALL) == Forward("de", "all_regions_as_first")


@pytest.mark.parametrize("kind", [4, 5, 99, None, "2", 2.0, True])
def test_other_interaction_types_go_to_control(kind: Any) -> None:
    assert decide(APP.request(interaction(kind)), CTX, ALL) == Control("other_interaction_type")


def test_missing_guild_is_400() -> None:
    assert step_for(APP.request(interaction(2, guild=None)), CTX) == Reply(400, "unknown_integration")
    assert step_for(APP.request(interaction(2, guild="")), CTX) == Reply(400, "unknown_integration")
    assert step_for(APP.request(interaction(2, guild={"id": 1})), CTX) == Reply(400, "unknown_integration")


def test_unknown_guild_is_400() -> None:
    assert decide(APP.request(interaction(2)), CTX, Resolution()) == Reply(400, "unknown_integration")


def test_guild_without_active_organization_is_400() -> None:
    assert decide(APP.request(interaction(2)), CTX, Resolution(DISCORD, ())) == Reply(400, "no_active_organization")


def test_unknown_guild_is_400_whatever_the_interaction_type() -> None:
    # Sentry identifies before it looks at the type, so a modal submit of an unknown guild is 400 too.
    assert decide(APP.request(interaction(5)), CTX, Resolution()) == Reply(400, "unknown_integration")


def test_a_mapping_to_an_unconfigured_region_is_500() -> None:
    ctx = APP.ctx(regions=frozenset({"us"}))
    assert decide(APP.request(interaction(2)), ctx, ALL) == Reply(500, "unknown_region")


@pytest.mark.parametrize("body", [b"", b"not json", b"[1]", b'"ping"', b"\xff\xfe", b"[" * 100_000, b"1" * 5000])
def test_signed_body_that_is_not_a_json_object_is_400(body: bytes) -> None:
    assert step_for(APP.request(body), CTX) == Reply(400, "invalid_json")


# --- rule 2: never raise --------------------------------------------------------------------------------


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=200), timestamp=st.text(max_size=12), signature=st.text(max_size=140))
def test_arbitrary_unsigned_input_never_raises(body: bytes, timestamp: str, signature: str) -> None:
    assert step_for(APP.request(body, timestamp=timestamp, signature=signature), CTX) == Reply(401, "bad_signature")


@settings(max_examples=200, deadline=None)
@given(kind=JSONISH, guild=JSONISH, application=JSONISH, token=JSONISH, timestamp=st.text(max_size=12))
def test_arbitrary_signed_interactions_never_raise(
    kind: Any, guild: Any, application: Any, token: Any, timestamp: str
) -> None:
    body = {"type": kind, "guild_id": guild, "application_id": application, "token": token}
    step = step_for(APP.request(body, timestamp=timestamp), CTX)
    if isinstance(step, Lookup):
        for resolution in (ALL, Resolution(), Resolution(DISCORD, ())):
            step.then(resolution)
