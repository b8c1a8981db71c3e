"""Slack (reference §3.1), from Slack's documented request formats, signed as Slack signs them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers_a import (
    DE,
    EU,
    NOW,
    RESPONSE_URL,
    SLACK_SECRET,
    SLACK_TOKEN,
    US,
    block_actions,
    block_suggestion,
    button,
    decide,
    event_callback,
    lookup_of,
    slack_ctx,
    slack_event,
    slack_form,
    slack_payload,
    slack_request,
    slash_command,
    step_for,
)
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
    ShedRule,
    Store,
    plan,
)
from sidecar.core.decision import ReplyTarget
from sidecar.core.mailbox import Mailbox
from sidecar.core.verify import slack_v0_signature

P = "/extensions/slack/"
SLACK = Integration(7, "slack", "T0001")
ALL = Resolution(SLACK, (US, DE, EU))
"""The workspace is used by three organizations; the first region is "de"."""
CTX = slack_ctx()


def stored(regions: tuple[str, ...], reason: str, url: str) -> Store:
    """An async reply: stored for ``regions`` in the workspace's mailbox, 200 now, the answer to ``url`` later."""
    target = ReplyTarget("slack", url)
    return Store("slack", regions, Mailbox("slack", "7"), 7, reason, reply_status=200, reply_to=target)


def async_first(region: str = "de", url: str = RESPONSE_URL) -> Store:
    return stored((region,), "async_first_region", url)


def async_all(regions: tuple[str, ...], url: str = RESPONSE_URL) -> Store:
    return stored(regions, "async_all_regions", url)


# --- views ------------------------------------------------------------------------------------


@pytest.mark.parametrize("view", ["link-identity", "unlink-identity", "link-team", "unlink-team"])
def test_identity_and_team_link_views_are_control_only(view: str) -> None:
    # link-team / unlink-team: the signed params can only be checked on control (module docstring).
    req = Request.from_target("GET", f"{P}{view}/eyJpbnRlZ3JhdGlvbl9pZCI6MX0:1pQ:abc/")
    assert plan(req, CTX) == Control("control_only_view")


@pytest.mark.parametrize(
    "path",
    [P + "events/", P + "event", P + "event/extra/", P + "link-identity/", P + "link-team/a/b/", P, P + "ACTION/"],
)
def test_paths_matching_no_view_are_404(path: str) -> None:
    assert plan(Request.from_target("POST", path, body=b""), CTX) == Reply(404, "no_such_view")


@pytest.mark.parametrize("view", ["action/", "commands/", "event/", "options-load/"])
def test_signed_views_ask_for_the_body(view: str) -> None:
    assert plan(Request.from_target("POST", P + view, {"x-slack-signature": "v0=00"}), CTX) == NeedBody()


# --- Events API ---------------------------------------------------------------------------------


def test_event_is_looked_up_by_team_id_among_active_slack_integrations() -> None:
    assert lookup_of(slack_event(P, event_callback("T0001")), CTX).keys == (ByExternalId("slack", "T0001", True),)


def test_event_goes_to_the_first_region() -> None:
    assert decide(slack_event(P, event_callback()), CTX, ALL) == Forward("de", "first_region")


def test_event_with_team_object_only() -> None:
    payload = event_callback()
    del payload["team_id"]
    payload["team"] = {"id": "T0002"}
    assert lookup_of(slack_event(P, payload), CTX).keys == (ByExternalId("slack", "T0002", True),)


def test_url_verification_goes_to_control_which_answers_the_challenge() -> None:
    # https://api.slack.com/events/url_verification — control's view verifies and answers it.
    challenge = {"token": SLACK_TOKEN, "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWM", "type": "url_verification"}
    assert step_for(slack_event(P, challenge), CTX) == Control("url_verification")
    assert step_for(slack_event(P, challenge, secret=None), slack_ctx(None)) == Control("url_verification")


# --- slash commands -----------------------------------------------------------------------------


def test_command_without_response_url_is_forwarded_to_the_first_region() -> None:
    req = slack_form(P + "commands/", slash_command("help"))
    assert lookup_of(req, CTX).keys == (ByExternalId("slack", "T0001", True),)
    assert decide(req, CTX, ALL) == Forward("de", "first_region")


def test_command_with_response_url_is_stored_for_the_first_region_and_answered_200() -> None:
    # Sentry: 200 at once, the request replayed to the region, its answer posted to response_url.
    url = "https://hooks.slack.com/commands/T0001/1/x"
    req = slack_form(P + "commands/", slash_command("help", response_url=url))
    decision = decide(req, CTX, ALL)
    assert decision == async_first("de", url)
    assert isinstance(decision, Store)
    assert (decision.reply_status, decision.reply_body, decision.reply_headers) == (200, b"", ())


@pytest.mark.parametrize("url", ["", "hooks.slack.com/commands/1", "ftp://hooks.slack.com/x", "https://", "http://[x/"])
def test_a_response_url_that_is_no_http_url_is_no_response_url(url: str) -> None:
    req = slack_form(P + "commands/", slash_command("help", response_url=url))
    assert decide(req, CTX, ALL) == Forward("de", "first_region")


def test_async_replies_are_shed_like_any_stored_webhook() -> None:
    ctx = slack_ctx(shed=(ShedRule("slack"),))
    req = slack_form(P + "commands/", slash_command("help", response_url=RESPONSE_URL))
    assert decide(req, ctx, ALL) == Reply(429, "shed", headers=(("retry-after", "60"),))


@pytest.mark.parametrize(
    ("text", "region"),
    [
        ("link team acme", "us"),
        ("unlink team acme", "us"),
        ("  Link   TEAM   ACME  ", "us"),
        ("link team initech", "eu"),
        ("link team someone-else", "de"),  # not one of the workspace's organizations: all of them
        ("link team", "de"),
        ("link acme", "de"),
        ("link", "de"),
        ("", "de"),
    ],
)
def test_link_team_command_narrows_to_the_named_organization(text: str, region: str) -> None:
    req = slack_form(P + "commands/", slash_command(text))
    decision = decide(req, CTX, ALL)
    assert decision == Forward(region, "first_region")


# --- interactive actions --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["link", "ignore", "all_slack"])
def test_unfurl_and_settings_actions_go_to_the_first_region(value: str) -> None:
    req = slack_payload(P + "action/", block_actions(button("unfurl", value)))
    assert decide(req, CTX, ALL) == async_first("de")


def test_unfurl_action_without_response_url_is_plain_first_region() -> None:
    req = slack_payload(P + "action/", block_actions(button("unfurl", "link"), response_url=None))
    assert decide(req, CTX, ALL) == Forward("de", "first_region")


def test_issue_actions_with_response_url_are_stored_for_every_region() -> None:
    req = slack_payload(P + "action/", block_actions(button("status", "resolved")))
    assert decide(req, CTX, ALL) == async_all(("de", "eu", "us"))


def test_issue_actions_without_response_url_go_to_the_first_region() -> None:
    # Sentry fans these out synchronously (first success wins); Envoy routes to one cluster.
    req = slack_payload(P + "action/", block_actions(button("status", "resolved"), response_url=None))
    assert decide(req, CTX, ALL) == Forward("de", "all_regions_as_first")


def test_the_first_action_with_a_value_decides() -> None:
    payload = block_actions(button("a", None), button("b", ""), button("c", "link"), button("d", "resolved"))
    assert decide(slack_payload(P + "action/", payload), CTX, ALL) == async_first("de")


def test_actions_without_any_value_target_all_regions() -> None:
    # A view submission has no actions at all: Sentry's action option is None → all regions.
    view_submission = {"type": "view_submission", "token": SLACK_TOKEN, "team": {"id": "T0001"}, "view": {"id": "V1"}}
    assert decide(slack_payload(P + "action/", view_submission), CTX, ALL) == Forward("de", "all_regions_as_first")


@pytest.mark.parametrize(
    ("action_id", "regions"),
    [
        ("resolve_dialog::1", ("us",)),
        ("archive_dialog::3::42", ("eu",)),
        ("status::99", ("de", "eu", "us")),  # not one of the workspace's organizations: all of them
        ("status::x", ("de", "eu", "us")),
        ("status::1::x", ("de", "eu", "us")),
        ("status", ("de", "eu", "us")),
        ("::1", ("us",)),
    ],
)
def test_action_id_routing_data_narrows_to_its_organization(action_id: str, regions: tuple[str, ...]) -> None:
    req = slack_payload(P + "action/", block_actions(button(action_id, "resolved")))
    assert decide(req, CTX, ALL) == async_all(regions)
    without_url = slack_payload(P + "action/", block_actions(button(action_id, "resolved"), response_url=None))
    assert decide(without_url, CTX, ALL) == Forward(regions[0], "all_regions_as_first")


def test_routing_data_of_two_organizations_keeps_both() -> None:
    payload = block_actions(button("a::1", "resolved"), button("b::3", None))
    assert decide(slack_payload(P + "action/", payload), CTX, ALL) == async_all(("eu", "us"))


def test_link_identity_button_is_handled_on_control() -> None:
    req = slack_payload(P + "action/", block_actions(button("link_identity", "link")))
    assert step_for(req, CTX) == Control("link_identity_action")


def test_options_load_is_narrowed_by_its_action_id_and_goes_to_one_region() -> None:
    req = slack_payload(P + "options-load/", block_suggestion("assign::1::5"))
    assert lookup_of(req, CTX).keys == (ByExternalId("slack", "T0001", True),)
    assert decide(req, CTX, ALL) == Forward("us", "first_region")
    assert decide(slack_payload(P + "options-load/", block_suggestion("assign")), CTX, ALL) == Forward(
        "de", "first_region"
    )


# --- the base tree: unknown integration, no organization, unknown region ------------------------------


def test_unknown_workspace_is_400() -> None:
    assert decide(slack_event(P, event_callback()), CTX, Resolution()) == Reply(400, "unknown_integration")


def test_workspace_without_active_organization_is_202_so_slack_stops_retrying() -> None:
    assert decide(slack_event(P, event_callback()), CTX, Resolution(SLACK, ())) == Reply(202, "no_active_organization")


def test_a_mapping_to_an_unconfigured_region_is_500() -> None:
    ctx = slack_ctx(regions=frozenset({"us", "eu"}))
    assert decide(slack_event(P, event_callback()), ctx, ALL) == Reply(500, "unknown_region")


@pytest.mark.parametrize(
    "req",
    [
        slack_event(P, {"type": "event_callback", "event": {}}),
        slack_event(P, {"team_id": 42.5}),
        slack_event(P, {"team_id": ""}),
        slack_event(P, {"team_id": None, "team": "T0001"}),
        slack_request(P + "event/", b"[1, 2]", "application/json"),
        slack_request(P + "event/", b"not json", "application/json"),
        slack_request(P + "event/", b"\xff\xfe{", "application/json"),
        slack_form(P + "commands/", {"text": "help"}),
        slack_request(P + "commands/", b"team_id=%ZZ&\xff=1", "application/x-www-form-urlencoded"),
        slack_form(P + "action/", {"payload": "{not json"}),
        slack_form(P + "action/", {"payload": "[]"}),
        slack_form(P + "action/", {"team_id": "T0001"}),  # the team id must be inside the payload
        slack_request(P + "options-load/", b"", "application/x-www-form-urlencoded"),
    ],
)
def test_signed_requests_without_a_team_id_are_400(req: Request) -> None:
    assert step_for(req, CTX) == Reply(400, "unknown_integration")


def test_numeric_team_id_is_used_as_text() -> None:
    assert lookup_of(slack_event(P, {"team_id": 12345}), CTX).keys == (ByExternalId("slack", "12345", True),)


# --- signature: forged, stale, replayed, missing --------------------------------------------------


def test_forged_signature_is_401() -> None:
    forged = slack_event(P, event_callback(), secret="not-the-secret")
    assert step_for(forged, CTX) == Reply(401, "bad_signature")


def test_body_changed_after_signing_is_401() -> None:
    signed = slack_event(P, event_callback("T0001"))
    assert signed.body is not None
    tampered = signed.with_body(signed.body.replace(b"T0001", b"T0002"))
    assert step_for(tampered, CTX) == Reply(401, "bad_signature")


@pytest.mark.parametrize("age", [301, -301, 3600, -86400])
def test_signature_older_or_newer_than_five_minutes_is_stale(age: int) -> None:
    req = slack_event(P, event_callback(), timestamp=str(int(NOW) - age))
    assert step_for(req, CTX) == Reply(401, "stale_signature")


@pytest.mark.parametrize("age", [300, -300, 0])
def test_signature_within_five_minutes_is_accepted(age: int) -> None:
    assert isinstance(step_for(slack_event(P, event_callback(), timestamp=str(int(NOW) - age)), CTX), Lookup)


def test_a_genuine_request_replayed_an_hour_later_is_refused() -> None:
    genuine = slack_event(P, event_callback(), timestamp=str(int(NOW)))
    assert isinstance(step_for(genuine, CTX), Lookup)
    assert step_for(genuine, slack_ctx(now=NOW + 3600)) == Reply(401, "stale_signature")


@pytest.mark.parametrize("drop", ["x-slack-signature", "x-slack-request-timestamp"])
def test_missing_signature_headers_are_401(drop: str) -> None:
    signed = slack_event(P, event_callback())
    headers = {k: v for k, v in signed.headers.items() if k != drop}
    assert step_for(Request(signed.method, signed.path, signed.query, headers, signed.body), CTX) == Reply(
        401, "bad_signature"
    )


def test_unsigned_request_is_401() -> None:
    assert step_for(slack_event(P, event_callback(), secret=None), CTX) == Reply(401, "bad_signature")


@pytest.mark.parametrize(
    "timestamp", [" 1700000000", "+1700000000", "1_700_000_000", "1.7e9", "١٧٠٠٠٠٠٠٠٠", "", "-1", "9" * 5000]
)
def test_malformed_timestamps_are_401(timestamp: str) -> None:
    body = json.dumps(event_callback()).encode()
    signature = slack_v0_signature(SLACK_SECRET, timestamp, body)
    req = slack_request(P + "event/", body, "application/json", timestamp=timestamp, signature=signature)
    assert step_for(req, CTX) == Reply(401, "bad_signature")


@pytest.mark.parametrize("signature", ["v0=", "v1=" + "0" * 64, "v0=é" * 10, "\ud800", "V0=" + "A" * 64])
def test_malformed_signatures_are_401(signature: str) -> None:
    req = slack_event(P, event_callback(), signature=signature)
    assert step_for(req, CTX) == Reply(401, "bad_signature")


# --- verification token (legacy) and no configuration ----------------------------------------------


TOKEN_CTX = slack_ctx(None, SLACK_TOKEN)


@pytest.mark.parametrize(
    "req",
    [
        slack_event(P, event_callback(), secret=None),
        slack_form(P + "commands/", slash_command(), secret=None),
        slack_payload(P + "action/", block_actions(button("status", "resolved")), secret=None),
        slack_payload(P + "options-load/", block_suggestion("assign"), secret=None),
    ],
)
def test_without_signing_secret_the_verification_token_is_compared(req: Request) -> None:
    assert isinstance(step_for(req, TOKEN_CTX), Lookup)


@pytest.mark.parametrize("token", ["wrong", "", None, 42, ["xyzz0WbapA4vBCDEFasx0q6G"], "\ud800", "é"])
def test_wrong_or_missing_verification_token_is_401(token: Any) -> None:
    payload = event_callback()
    if token is None:
        del payload["token"]
    else:
        payload["token"] = token
    assert step_for(slack_event(P, payload, secret=None), TOKEN_CTX) == Reply(401, "bad_token")


def test_a_configured_signing_secret_wins_over_the_token() -> None:
    # Sentry checks the token only when no signing secret is configured: no fallback.
    req = slack_event(P, event_callback(), secret=None)
    assert step_for(req, slack_ctx(SLACK_SECRET, SLACK_TOKEN)) == Reply(401, "bad_signature")


def test_with_neither_secret_configured_everything_is_refused() -> None:
    assert step_for(slack_event(P, event_callback()), slack_ctx(None, None)) == Reply(401, "no_signing_secret")
    assert step_for(slack_event(P, event_callback()), Context()) == Reply(401, "no_signing_secret")


# --- rule 2: never raise -----------------------------------------------------------------------------


VIEWS = st.sampled_from(["action/", "commands/", "event/", "options-load/"])
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(view=VIEWS, body=st.binary(max_size=300), timestamp=st.text(max_size=12), signature=st.text(max_size=80))
def test_arbitrary_bytes_and_headers_never_raise(view: str, body: bytes, timestamp: str, signature: str) -> None:
    req = slack_request(P + view, body, "application/json", timestamp=timestamp, signature=signature)
    for ctx in (CTX, TOKEN_CTX, slack_ctx(None)):
        step = plan(req, ctx)
        if isinstance(step, Lookup):
            step.then(ALL)


@settings(max_examples=300, deadline=None)
@given(view=VIEWS, payload=JSONISH, team=JSONISH, actions=JSONISH, text=JSONISH)
def test_arbitrary_signed_payloads_never_raise(view: str, payload: Any, team: Any, actions: Any, text: Any) -> None:
    document = {"team": team, "team_id": payload, "actions": actions, "action_id": text, "text": text, "token": team}
    raw = json.dumps(document).encode()
    for body in (raw, b"payload=" + raw, b"text=" + raw):
        step = plan(slack_request(P + view, body, "application/x-www-form-urlencoded"), CTX)
        assert isinstance(step, (Lookup, Reply, Control)), step
        if isinstance(step, Lookup):
            for resolution in (ALL, Resolution(), Resolution(SLACK, ())):
                step.then(resolution)


def test_huge_numbers_and_deep_nesting_never_raise() -> None:
    for body in (b'{"team_id": ' + b"9" * 10_000 + b"}", b"[" * 100_000, b'{"team": {"id": 1e999}}'):
        assert step_for(slack_request(P + "event/", body, "application/json"), CTX) == Reply(400, "unknown_integration")
