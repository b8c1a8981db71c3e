"""Gitea webhooks (reference §3.15): organization and integration named in the path, async to that org's region.

https://docs.gitea.com/usage/webhooks
Sentry gives each Gitea hook the URL ``organizations/<org id>/webhook/<integration id>/``; the
signature (``X-Gitea-Signature``) is verified in the region, not here.

One lookup answers both questions: the integration by id, with the organizations it is ACTIVE
in. Sentry routes on the path's organization mapping alone, so any integration id paired with
any organization id would be stored for that organization's region; here the organization must
be one the integration is installed in (rule 4: a sender never chooses its region).
"""

from __future__ import annotations

from collections.abc import Mapping

from sidecar.core.context import Context
from sidecar.core.decision import Control, Decision, Lookup, Step, Store
from sidecar.core.lookup import ByIntegrationId, ByOrganization, Resolution
from sidecar.core.mailbox import Mailbox
from sidecar.core.providers._spec import MISSING_INTEGRATION, SEARCH, ProviderSpec, View
from sidecar.core.request import Request, dig, int_or_none


def path_id(text: str) -> int | None:
    """A primary key from the path: ASCII digits that fit a bigint, else None."""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


def organization_region(resolution: Resolution, organization_id: int, ctx: Context) -> str | Control:
    """The path organization's region, or control when it has none we can route to (Sentry's
    ``gitea.no_mapping`` / ``gitea.no_cell``)."""
    for org in resolution.organizations:
        if org.id == organization_id:
            return org.region if ctx.knows_region(org.region) else Control("no_region")
    return Control("no_mapping")


def _webhook(req: Request, params: Mapping[str, str], ctx: Context) -> Step:
    organization_id = path_id(params["organization_id"])
    if organization_id is None:
        return Control("invalid_organization_id")
    integration_id = path_id(params["integration_id"])
    if integration_id is None or "application/json" not in req.content_type:
        # Nothing to identify; as in Sentry, an organization we cannot route still goes to control.
        def unidentified(resolution: Resolution) -> Decision:
            region = organization_region(resolution, organization_id, ctx)
            return region if isinstance(region, Control) else MISSING_INTEGRATION

        return Lookup((ByOrganization(organization_id),), unidentified)

    def then(resolution: Resolution) -> Decision:
        integration = resolution.integration
        if integration is None:
            return MISSING_INTEGRATION
        region = organization_region(resolution, organization_id, ctx)
        if isinstance(region, Control):
            return region
        repo_id = dig(req.json(), "repository", "id")
        mailbox = Mailbox(
            "gitea",
            str(integration.id),
            bucket_key=int_or_none(repo_id),
        )
        return Store("gitea", (region,), mailbox, integration.id, "stored")

    return Lookup((ByIntegrationId(integration_id, provider="gitea"),), then)


SPEC = ProviderSpec(
    name="gitea",
    views=(
        View(
            "webhook",
            r"organizations/(?P<organization_id>[^/]+)/webhook/(?P<integration_id>[^/]+)/",
            _webhook,
            needs_body=True,
        ),
        SEARCH,
    ),
    id_source="path `organizations/<org id>/webhook/<integration id>/`",
    delivery="async to the organization's region: mailbox `gitea:<integration>[:<repository.id % 100>]`",
)
