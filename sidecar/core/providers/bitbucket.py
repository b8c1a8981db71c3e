"""Bitbucket Cloud (reference §3.9): the organization is in the webhook URL; async to its one region.

https://support.atlassian.com/bitbucket-cloud/docs/event-payloads/
Sentry registers the webhook as ``…/organizations/<organization_id>/webhook/``, so no integration
lookup is needed: the organization mapping names the region. Nothing is verified here (the region
checks the request against the repository's webhook), and the integration id stays empty.

``organization_webhook`` is shared with Bitbucket Server and the legacy plugins, which route the
same way and differ only in the mailbox provider and the answer for an unknown organization.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sidecar.core.context import Context
from sidecar.core.decision import Control, Decision, Lookup, Step, Store
from sidecar.core.lookup import ByOrganization, Resolution
from sidecar.core.mailbox import Mailbox
from sidecar.core.providers._spec import SEARCH, Handler, ProviderSpec, View
from sidecar.core.request import Request

MAX_ORGANIZATION_ID = 2**63 - 1
"""Organization ids are bigint: a larger number cannot name one (and must not reach SQL)."""

_DIGITS = re.compile(r"[0-9]{1,19}")


def organization_id(text: str | None) -> int | None:
    """The path's organization id, or None when it is not a bigint in ASCII digits.

    Sentry passes the path text to an integer lookup and answers 500 on ``ValueError``; we guard
    it and send the request to control instead, as Sentry's Gitea parser does (reference §3.15).
    """
    if text is None or not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_ORGANIZATION_ID else None


NO_MAPPING = Control("no_mapping")
"""No mapping for the organization: control decides (Sentry logs ``bitbucket.no_mapping``)."""


def organization_webhook(provider: str, *, no_mapping: Decision = NO_MAPPING) -> Handler:
    """Store to the region of the path's organization, mailbox ``<provider>:<organization_id>``."""

    def handle(req: Request, params: Mapping[str, str], ctx: Context) -> Step:
        org_id = organization_id(params.get("organization_id"))
        if org_id is None:
            return Control("invalid_organization_id")

        def then(resolution: Resolution) -> Decision:
            mapping = next((org for org in resolution.organizations if org.id == org_id), None)
            if mapping is None:
                return no_mapping
            if not ctx.knows_region(mapping.region):
                return Control("no_region")
            return Store(provider, (mapping.region,), Mailbox(provider, str(org_id)), None, "stored")

        return Lookup((ByOrganization(org_id),), then)

    return handle


ORGANIZATION = r"organizations/(?P<organization_id>[^/]+)/"

SPEC = ProviderSpec(
    name="bitbucket",
    views=(
        View("webhook", ORGANIZATION + r"webhook/", organization_webhook("bitbucket"), needs_body=True),
        View("descriptor", r"descriptor/"),
        View("installed", r"installed/"),
        View("uninstalled", r"uninstalled/"),
        SEARCH,
    ),
    id_source="path `organizations/<organization_id>/webhook/` → organization mapping",
    delivery="async: mailbox `bitbucket:<organization_id>`, the organization's one region",
)
