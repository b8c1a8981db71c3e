"""Azure DevOps (VSTS) work item webhooks (reference §3.11): identified by the collection id, async.

https://learn.microsoft.com/en-us/azure/devops/service-hooks/events#workitem.updated
The service hook's basic-auth shared secret is checked in the region, not here.
"""

from __future__ import annotations

from collections.abc import Mapping

from sidecar.core.context import Context
from sidecar.core.decision import Decision, Step
from sidecar.core.lookup import ByExternalId, Integration, Resolution
from sidecar.core.mailbox import Mailbox
from sidecar.core.providers._spec import MISSING_INTEGRATION, SEARCH, ProviderSpec, View, identify, store_all
from sidecar.core.request import Request, dig, id_text, int_or_none

BUCKET_COUNT = 10
"""VSTS mailboxes get 10 buckets, not 100 (reference §2.6 [L])."""


def _work_item_updated(req: Request, params: Mapping[str, str], ctx: Context) -> Step:
    payload = req.json()
    collection = id_text(dig(payload, "resourceContainers", "collection", "id"))
    if collection is None:
        return MISSING_INTEGRATION

    def on_found(integration: Integration, resolution: Resolution) -> Decision:
        work_item = dig(payload, "resource", "workItemId")
        mailbox = Mailbox(
            "vsts",
            str(integration.id),
            bucket_key=int_or_none(work_item),
            bucket_count=BUCKET_COUNT,
        )
        return store_all("vsts", integration, resolution, mailbox)

    return identify(ByExternalId("vsts", collection), on_found, ctx)


SPEC = ProviderSpec(
    name="vsts",
    views=(
        View("issue-updated", r"issue-updated/", _work_item_updated, needs_body=True),
        SEARCH,
        View("configure", r"configure/"),
    ),
    id_source="JSON `resourceContainers.collection.id`",
    delivery="async: mailbox `vsts:<integration>[:<resource.workItemId % 10>]`",
)
