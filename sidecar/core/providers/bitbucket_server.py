"""Bitbucket Server / Data Center (reference §3.10): Bitbucket Cloud's routing by organization.

The webhook URL also carries the integration id; Sentry's parser ignores it and so do we (the
region's endpoint uses it). Mailbox ``bitbucket_server:<organization_id>``.
"""

from __future__ import annotations

from sidecar.core.providers._spec import SEARCH, ProviderSpec, View
from sidecar.core.providers.bitbucket import ORGANIZATION, organization_webhook

SPEC = ProviderSpec(
    name="bitbucket_server",
    views=(
        View(
            "webhook",
            ORGANIZATION + r"webhook/(?P<integration_id>[^/]+)/",
            organization_webhook("bitbucket_server"),
            needs_body=True,
        ),
        SEARCH,
    ),
    id_source="path `organizations/<organization_id>/webhook/<integration_id>/` → organization mapping",
    delivery="async: mailbox `bitbucket_server:<organization_id>`, the organization's one region",
)
