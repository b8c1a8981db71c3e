"""Jira Server / Data Center webhooks (reference §3.8): a signed token in the path names the integration.

Sentry registers each Jira Server webhook at ``issue-updated/<jwt>/``, the JWT carrying the
integration's external id in claim ``id`` and signed (HS256) with the integration's webhook
secret. A token that does not verify is answered 200: Jira Server disables a webhook that keeps
failing, and an unverifiable one is most likely left over from an old install.
https://developer.atlassian.com/server/jira/platform/webhooks/
"""

from __future__ import annotations

from collections.abc import Mapping

from sidecar.core import jwt
from sidecar.core.context import Context
from sidecar.core.decision import Decision, Lookup, Reply, Step
from sidecar.core.lookup import ByExternalId, Integration, Resolution
from sidecar.core.mailbox import Mailbox
from sidecar.core.providers._spec import SEARCH, ProviderSpec, View, identify, store_all
from sidecar.core.providers.jira import numeric_id
from sidecar.core.request import Request, dig, id_text

UNVERIFIED = Reply(200, "unverified_token")
MISSING_CHANGELOG = Reply(200, "missing_changelog")
"""Only issue changes are processed; other issue events are acknowledged and dropped."""


def _issue_updated(req: Request, params: Mapping[str, str], ctx: Context) -> Step:
    token = params.get("token", "")
    peeked = jwt.peek(token)
    external_id = id_text(peeked.claims.get("id")) if peeked else None
    if peeked is None or external_id is None:
        return UNVERIFIED

    def on_found(integration: Integration, resolution: Resolution) -> Decision:
        payload = req.json()
        if not isinstance(payload, dict):
            return Reply(400, "invalid_json")
        if not payload.get("changelog"):
            return MISSING_CHANGELOG
        mailbox = Mailbox("jira_server", str(integration.id), bucket_key=numeric_id(dig(payload, "issue", "id")))
        return store_all("jira_server", integration, resolution, mailbox)

    lookup = identify(ByExternalId("jira_server", external_id), on_found, ctx, missing=UNVERIFIED)

    def then(resolution: Resolution) -> Decision:
        # Verified once the secret is known, and before the organizations are looked at.
        integration = resolution.integration
        if integration is not None:
            secret = integration.metadata.get("webhook_secret")
            if not isinstance(secret, str) or jwt.verify_hs256(peeked, secret, now=ctx.now) is None:
                return UNVERIFIED
        return lookup.then(resolution)

    return Lookup(lookup.keys, then)


SPEC = ProviderSpec(
    name="jira_server",
    views=(
        View("issue-updated", r"issue-updated/(?P<token>[^/]+)/", _issue_updated, needs_body=True),
        SEARCH,
    ),
    id_source="JWT in the path (`issue-updated/<token>/`), claim `id`, verified with the webhook secret",
    delivery="async: mailbox `jira_server:<integration>[:<issue.id % 100>]`; no changelog → 200",
)
