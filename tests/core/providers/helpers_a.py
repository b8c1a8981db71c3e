"""Helpers for the Slack, Discord, Bitbucket and plugin tests (``helpers_a``: other provider tests
in this folder keep their own helpers)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sidecar.core import Context, Decision, Lookup, NeedBody, Organization, Request, Resolution, Secrets, Step, plan
from sidecar.core.verify import slack_v0_signature

NOW = 1_700_000_000.0
"""The edge's clock reading in every test context (the core never reads the clock)."""

US = Organization(1, "acme", "us")
DE = Organization(2, "globex", "de")
EU = Organization(3, "initech", "eu")
"""Three organizations in three regions: "de" < "eu" < "us", so the first region is "de"."""

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TOKEN = "xyzz0WbapA4vBCDEFasx0q6G"


def step_for(req: Request, ctx: Context) -> Step:
    """Both phases as the edge runs them: headers first (must ask for the body), then the body."""
    assert req.body is not None
    header_phase = Request(req.method, req.path, req.query, req.headers, None)
    assert plan(header_phase, ctx) == NeedBody()
    return plan(req, ctx)


def lookup_of(req: Request, ctx: Context) -> Lookup:
    step = step_for(req, ctx)
    assert isinstance(step, Lookup), step
    return step


def decide(req: Request, ctx: Context, resolution: Resolution) -> Decision:
    return lookup_of(req, ctx).then(resolution)


# --- Slack -------------------------------------------------------------------------------------


def slack_ctx(
    signing_secret: str | None = SLACK_SECRET, token: str | None = None, *, now: float = NOW, **kw: Any
) -> Context:
    secrets = Secrets(
        slack_signing_secret=signing_secret,
        slack_verification_token=token,
        slack_staging_signing_secret=signing_secret,
        slack_staging_verification_token=token,
    )
    return Context(now=now, secrets=secrets, **kw)


def slack_request(
    path: str,
    body: bytes,
    content_type: str,
    *,
    secret: str | None = SLACK_SECRET,
    timestamp: str | None = None,
    signature: str | None = None,
) -> Request:
    """A request as Slack sends it, signed with ``secret`` (unsigned when None)."""
    headers = {"Content-Type": content_type, "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
    ts = timestamp if timestamp is not None else str(int(NOW))
    if secret is not None:
        headers["X-Slack-Request-Timestamp"] = ts
        headers["X-Slack-Signature"] = signature or slack_v0_signature(secret, ts, body)
    return Request.from_target("POST", path, headers, body)


def slack_event(prefix: str, payload: dict[str, Any], **kw: Any) -> Request:
    return slack_request(prefix + "event/", json.dumps(payload).encode(), "application/json", **kw)


def slack_form(path: str, fields: dict[str, str], **kw: Any) -> Request:
    return slack_request(path, urlencode(fields).encode(), "application/x-www-form-urlencoded", **kw)


def slack_payload(path: str, payload: dict[str, Any], **kw: Any) -> Request:
    """Interactivity / options load: the JSON in the ``payload`` form field."""
    return slack_form(path, {"payload": json.dumps(payload)}, **kw)


def event_callback(team_id: str = "T0001", **extra: Any) -> dict[str, Any]:
    """https://api.slack.com/apis/events-api#callback-field"""
    return {
        "token": SLACK_TOKEN,
        "team_id": team_id,
        "api_app_id": "A0001",
        "event": {"type": "link_shared", "channel": "C0001", "links": [{"url": "https://acme.sentry.io/issues/1/"}]},
        "type": "event_callback",
        "event_id": "Ev0001",
        "event_time": int(NOW),
        **extra,
    }


def slash_command(text: str = "help", team_id: str = "T0001", response_url: str | None = None) -> dict[str, str]:
    """https://api.slack.com/interactivity/slash-commands#app_command_handling"""
    fields = {
        "token": SLACK_TOKEN,
        "team_id": team_id,
        "team_domain": "acme",
        "channel_id": "C0001",
        "user_id": "U0001",
        "command": "/sentry",
        "text": text,
        "api_app_id": "A0001",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
    }
    if response_url is not None:
        fields["response_url"] = response_url
    return fields


RESPONSE_URL = "https://hooks.slack.com/actions/T0001/1234/abcd"


def block_actions(
    *actions: dict[str, Any], team_id: str = "T0001", response_url: str | None = RESPONSE_URL
) -> dict[str, Any]:
    """https://api.slack.com/reference/interaction-payloads/block-actions"""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "token": SLACK_TOKEN,
        "team": {"id": team_id, "domain": "acme"},
        "user": {"id": "U0001", "team_id": team_id},
        "api_app_id": "A0001",
        "trigger_id": "12466734323.1395872398",
        "actions": list(actions),
    }
    if response_url is not None:
        payload["response_url"] = response_url
    return payload


def button(action_id: str, value: str | None) -> dict[str, Any]:
    action: dict[str, Any] = {"type": "button", "action_id": action_id, "block_id": "b1", "action_ts": "1.2"}
    if value is not None:
        action["value"] = value
    return action


def block_suggestion(action_id: str, team_id: str = "T0001") -> dict[str, Any]:
    """https://api.slack.com/reference/block-kit/block-elements#external_select"""
    return {
        "type": "block_suggestion",
        "token": SLACK_TOKEN,
        "team": {"id": team_id, "domain": "acme"},
        "action_id": action_id,
        "block_id": "b1",
        "value": "ali",
    }


# --- Discord -----------------------------------------------------------------------------------


class DiscordApp:
    """A Discord application's key pair: signs interactions as Discord would."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.public_hex = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def ctx(self, *, now: float = NOW, **kw: Any) -> Context:
        return Context(now=now, secrets=Secrets(discord_public_key=self.public_hex), **kw)

    def sign(self, timestamp: str, body: bytes) -> str:
        return self.private.sign(timestamp.encode("utf-8", "surrogatepass") + body).hex()

    def request(
        self, body: bytes | dict[str, Any], *, timestamp: str | None = None, signature: str | None = None
    ) -> Request:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        ts = timestamp if timestamp is not None else str(int(NOW))
        headers = {
            "Content-Type": "application/json",
            "X-Signature-Timestamp": ts,
            "X-Signature-Ed25519": signature if signature is not None else self.sign(ts, raw),
        }
        return Request.from_target("POST", "/extensions/discord/interactions/", headers, raw)
