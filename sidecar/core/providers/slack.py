"""Slack (reference §3.1): verified here, then to the first region of the workspace (or all).

https://api.slack.com/authentication/verifying-requests-from-slack
Slack signs every request (``X-Slack-Signature`` over ``v0:<timestamp>:<raw body>``). The team id
comes from the Events API JSON, the slash-command form or the interactive ``payload`` form field;
the integration is the ACTIVE ``slack`` integration of that team.

Choices that differ from Sentry, on purpose:

* **Forged requests are refused with 401.** Sentry's parser treats a failed check as "integration
  not found" and answers 400. We answer 401 (``bad_signature``, ``stale_signature``,
  ``bad_token``, or ``no_signing_secret`` when neither secret is configured) before any directory
  lookup: forged traffic costs no lookup, never reaches a region, and shows up in metrics apart
  from unknown workspaces. Slack retries any non-2xx alike, so a genuine request loses nothing.
* **link-team / unlink-team go to control.** Sentry unsigns ``<signed_params>`` (a Django
  ``TimestampSigner`` value) to find the integration. Only control holds the signing key; the
  integration id inside can be read unsigned, but routing on an unverified id would let a client
  choose its region (rule 4 of ``sidecar.core``). Control can verify and serve it.
* **Async replies go through the outbox.** With a ``response_url`` Sentry answers 200 at once and
  replays the request to the regions from a task. Here the request is stored like any webhook
  (one row per target region, mailbox ``<provider>:<integration id>``), answered 200 with an
  empty body, and the delivery worker posts the last region answer to the ``response_url``
  (``ReplyTarget``; the worker only posts to allow-listed hosts).
* An action for all regions *without* a ``response_url`` is a synchronous fan-out in Sentry
  (first success wins); Envoy routes a request to one cluster, so it goes to the first region
  under the reason code ``all_regions_as_first``.
* [L] Seer events (``app_mention``…) are answered 200 by a task in Sentry's newest code; here
  they follow the baseline: first region, synchronously.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from sidecar.core import verify
from sidecar.core.context import Context
from sidecar.core.decision import Control, Decision, Forward, Reply, ReplyTarget, Step, Store
from sidecar.core.lookup import ByExternalId, Integration, Organization, Resolution
from sidecar.core.mailbox import Mailbox
from sidecar.core.providers._spec import Handler, ProviderSpec, View, identify
from sidecar.core.request import Request, dig, id_text, parse_json

Data = dict[str, Any]
Reader = Callable[[Request], Data]
Narrower = Callable[[Data, tuple[Organization, ...]], tuple[Organization, ...]]

FIRST_REGION_ACTIONS = frozenset({"link", "ignore", "all_slack"})
"""Action values that concern one region only: the unfurl buttons (``link``, ``ignore``) and the
notification-settings button (``all_slack``). Any other action is an issue action that Sentry
sends to every region."""

LINK_IDENTITY_ACTION = "link_identity"
"""[L] The "link your identity" button is answered by control itself."""

NO_REGIONS = Reply(202, "no_active_organization")
"""Slack-specific: the workspace is known but no organization uses it any more. 202 so that Slack
stops retrying (Sentry does the same)."""

_ROUTED_ACTION_ID = re.compile(r"[^:]*::(?P<org>[0-9]{1,18})(?:::[0-9]{1,18})?")
"""``action::<organization_id>[::<project_id>]``: Sentry's routing data in a block ``action_id``."""


# --- reading the three body shapes -----------------------------------------------------------


def _json_body(req: Request) -> Data:
    """Events API: a JSON object (https://api.slack.com/apis/events-api#receiving-events)."""
    payload = req.json()
    return payload if isinstance(payload, dict) else {}


def _form_body(req: Request) -> Data:
    """Slash commands: an url-encoded form (https://api.slack.com/interactivity/slash-commands)."""
    return dict(req.form())


def _payload_field(req: Request) -> Data:
    """Interactivity and options loads: JSON in the ``payload`` form field
    (https://api.slack.com/interactivity/handling#payloads)."""
    payload = parse_json(req.form().get("payload"))
    return payload if isinstance(payload, dict) else {}


def _team_id(data: Data) -> str | None:
    return id_text(data.get("team_id")) or id_text(dig(data, "team", "id"))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _actions(data: Data) -> list[Data]:
    actions = data.get("actions")
    return [action for action in actions if isinstance(action, dict)] if isinstance(actions, list) else []


# --- organization narrowing (Sentry's filter_organizations_from_request) -----------------------


def _keep(organizations: tuple[Organization, ...], wanted: Callable[[Organization], bool]) -> tuple[Organization, ...]:
    """Only the wanted organizations when any matches; all of them otherwise."""
    kept = tuple(org for org in organizations if wanted(org))
    return kept or organizations


def _by_command_slug(data: Data, organizations: tuple[Organization, ...]) -> tuple[Organization, ...]:
    """``/sentry link team <org-slug>`` and ``unlink team <org-slug>`` name their organization."""
    words = (_text(data.get("text")) or "").split()
    if len(words) < 3 or words[0].lower() not in ("link", "unlink") or words[1].lower() != "team":
        return organizations
    slug = words[2].lower()  # organization slugs are lower case; people type what they like
    return _keep(organizations, lambda org: org.slug == slug)


def _action_ids(data: Data) -> Iterable[Any]:
    yield from (action.get("action_id") for action in _actions(data))
    yield data.get("action_id")  # block_suggestion (options load) carries it at the top level


def _by_action_routing(data: Data, organizations: tuple[Organization, ...]) -> tuple[Organization, ...]:
    """Action ids built by Sentry's message builder carry the organization they were sent for."""
    ids = set()
    for action_id in _action_ids(data):
        found = _ROUTED_ACTION_ID.fullmatch(action_id) if isinstance(action_id, str) else None
        if found:
            ids.add(int(found.group("org")))
    if not ids:
        return organizations
    return _keep(organizations, lambda org: org.id in ids)


def _all(data: Data, organizations: tuple[Organization, ...]) -> tuple[Organization, ...]:
    return organizations


# --- checks and targets ------------------------------------------------------------------------


def authenticate(provider: str, req: Request, data: Data, ctx: Context) -> Reply | None:
    """The signing secret when configured, else the legacy verification token, else refuse.

    Sentry falls back to the token only when no signing secret is configured at all; a request
    that fails the signature check is not retried against the token.
    """
    signing_secret, verification_token = ctx.secrets.slack(provider)
    if signing_secret:
        verdict = verify.slack_v0(
            signing_secret,
            ctx.now,
            req.header("x-slack-request-timestamp"),
            req.body or b"",
            req.header("x-slack-signature"),
        )
        if verdict == "valid":
            return None
        return Reply(401, "stale_signature" if verdict == "stale" else "bad_signature")
    if verification_token:
        token = _text(data.get("token"))
        if token is not None and verify.equal_secrets(verification_token, token):
            return None
        return Reply(401, "bad_token")
    return Reply(401, "no_signing_secret")


def _action_option(data: Data) -> str | None:
    """The first action with a non-empty ``value``: what Sentry decides the fan-out on."""
    for action in _actions(data):
        value = _text(action.get("value"))
        if value is not None:
            return value
    return None


def _response_url(data: Data) -> str | None:
    """The payload's ``response_url`` when it is an absolute http(s) URL; anything else is no URL."""
    url = _text(data.get("response_url"))
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        usable = parts.scheme in ("https", "http") and bool(parts.hostname)
    except ValueError:  # e.g. "http://[x" (an unclosed IPv6 literal)
        return None
    return url if usable else None


def _target(
    provider: str, integration: Integration, regions: tuple[str, ...], all_regions: bool, data: Data
) -> Decision:
    response_url = _response_url(data)
    if response_url is not None:
        return Store(
            provider,
            regions if all_regions else regions[:1],
            Mailbox(provider, str(integration.id)),
            integration.id,
            "async_all_regions" if all_regions else "async_first_region",
            reply_status=200,
            reply_to=ReplyTarget("slack", response_url),
        )
    if all_regions:
        return Forward(regions[0], "all_regions_as_first")
    return Forward(regions[0], "first_region")


def webhook(provider: str, read: Reader, narrow: Narrower, *, is_action: bool = False) -> Handler:
    """One of the four signed webhook views (action, commands, event, options-load)."""

    def handle(req: Request, params: Mapping[str, str], ctx: Context) -> Step:
        payload = req.json()  # parsed once: the Events API reader below reuses it
        if dig(payload, "type") == "url_verification":
            # https://api.slack.com/events/url_verification: control's view answers the challenge.
            return Control("url_verification")
        data = (payload if isinstance(payload, dict) else {}) if read is _json_body else read(req)
        refused = authenticate(provider, req, data, ctx)
        if refused is not None:
            return refused
        if is_action and any(action.get("action_id") == LINK_IDENTITY_ACTION for action in _actions(data)):
            return Control("link_identity_action")
        team_id = _team_id(data)
        if team_id is None:
            return Reply(400, "unknown_integration")

        def on_found(integration: Integration, resolution: Resolution) -> Decision:
            regions = Resolution(integration, narrow(data, resolution.organizations)).regions
            all_regions = is_action and _action_option(data) not in FIRST_REGION_ACTIONS
            return _target(provider, integration, regions, all_regions, data)

        return identify(ByExternalId(provider, team_id, active_only=True), on_found, ctx, no_regions=NO_REGIONS)

    return handle


def webhook_views(provider: str) -> tuple[View, ...]:
    """The signed views; Slack staging has only these (reference §3.2)."""
    action = webhook(provider, _payload_field, _by_action_routing, is_action=True)
    commands = webhook(provider, _form_body, _by_command_slug)
    event = webhook(provider, _json_body, _all)
    options_load = webhook(provider, _payload_field, _by_action_routing)
    return (
        View("action", r"action/", action, needs_body=True),
        View("commands", r"commands/", commands, needs_body=True),
        View("event", r"event/", event, needs_body=True),
        View("options-load", r"options-load/", options_load, needs_body=True),
    )


def spec(provider: str, extra_views: tuple[View, ...] = ()) -> ProviderSpec:
    return ProviderSpec(
        name=provider,
        views=webhook_views(provider) + extra_views,
        id_source="`team_id` / `team.id` (JSON body, command form or `payload` field), after the Slack signature",
        delivery="sync: first region; with a response_url: 200, stored for the first region (issue actions: "
        "all regions), the last region answer posted to the response_url",
    )


_SIGNED = r"(?P<signed_params>[^/]+)/"

SPEC = spec(
    "slack",
    (
        View("link-identity", r"link-identity/" + _SIGNED),
        View("unlink-identity", r"unlink-identity/" + _SIGNED),
        # Control-only here, not in Sentry: see "link-team / unlink-team" in the module docstring.
        View("link-team", r"link-team/" + _SIGNED),
        View("unlink-team", r"unlink-team/" + _SIGNED),
    ),
)
