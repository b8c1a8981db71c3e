"""GitLab webhooks (reference §3.6): identified by the secret token header, async per project.

https://docs.gitlab.com/user/project/integrations/webhooks/
Sentry sets each hook's secret token to ``<instance>:<group path>:<secret>``; the first two parts
name the integration. The secret itself is compared in the region, not here.
"""

from __future__ import annotations

from collections.abc import Mapping

from sidecar.core.context import Context
from sidecar.core.decision import Decision, Reply, Step
from sidecar.core.lookup import ByExternalId, Integration, Resolution
from sidecar.core.mailbox import Mailbox
from sidecar.core.providers._spec import SEARCH, ProviderSpec, View, identify, store_all
from sidecar.core.request import Request, dig, int_or_none

TOKEN_HEADER = "x-gitlab-token"

# The three answers Sentry gives before any lookup; GitLab shows the text in the hook's log.
# Sentry puts it in the HTTP reason phrase, which Envoy cannot set (and HTTP/2 does not have),
# so it is the body here.
_TEXT = (("content-type", "text/plain; charset=utf-8"),)
TOKEN_MISSING = Reply(400, "gitlab_token_missing", b"The customer needs to set a Secret Token in their webhook.", _TEXT)
TOKEN_MALFORMED = Reply(400, "gitlab_token_malformed", b"The customer's Secret Token is malformed.", _TEXT)
TOKEN_INVALID = Reply(400, "gitlab_token_invalid", b"Generic catch-all error.", _TEXT)

EVENT_KINDS = frozenset(
    {
        "access_token",
        "build",
        "deployment",
        "emoji",
        "feature_flag",
        "issue",
        "merge_request",
        "milestone",
        "note",
        "pipeline",
        "push",
        "release",
        "tag_push",
        "vulnerability",
        "wiki_page",
    }
)
"""GitLab's documented ``object_kind`` values: the only ones allowed into a mailbox name.
https://docs.gitlab.com/user/project/integrations/webhook_events/"""


def external_id(token: str | None) -> str | Reply:
    """``<instance>:<group path>`` from the token, or the 400 Sentry answers for it."""
    if token is None:
        return TOKEN_MISSING
    parts = token.split(":")
    if len(parts) != 3:
        return TOKEN_MALFORMED
    instance, group, _secret = parts
    if not instance or not group:
        # Three parts, but no integration can have an empty instance or group: Sentry's
        # catch-all covers the token errors that are neither missing nor mis-split.
        return TOKEN_INVALID
    return f"{instance}:{group}"


def _webhook(req: Request, params: Mapping[str, str], ctx: Context) -> Step:
    found = external_id(req.header(TOKEN_HEADER))
    if isinstance(found, Reply):
        return found
    if "application/json" not in req.content_type:
        return Reply(400, "not_json")
    payload = req.json()

    def on_found(integration: Integration, resolution: Resolution) -> Decision:
        project_id = dig(payload, "project", "id")
        kind = dig(payload, "object_kind")
        mailbox = Mailbox(
            "gitlab",
            str(integration.id),
            bucket_key=int_or_none(project_id),
            event_type=kind if isinstance(kind, str) and kind in EVENT_KINDS else None,
        )
        return store_all("gitlab", integration, resolution, mailbox)

    return identify(ByExternalId("gitlab", found), on_found, ctx)


SPEC = ProviderSpec(
    name="gitlab",
    views=(
        View("webhook", r"webhook/", _webhook, needs_body=True),
        SEARCH,
    ),
    id_source="header `X-Gitlab-Token` = `instance:group:secret` → `instance:group`",
    delivery="async: mailbox `gitlab:<integration>[:<project % 100>][:<object_kind>]`",
)
