"""Legacy plugin webhooks (reference §4): ``/plugins/<github|bitbucket>/organizations/<id>/webhook/``.

Sentry's plugin classification handles only these two views; everything else under ``/plugins/``
(the GitHub plugin's installation webhook among them) falls through to control. Routing is
Bitbucket's, by the path's organization, with one difference: an organization without a mapping
has been deleted, and Sentry answers 400 rather than passing the request on.
"""

from __future__ import annotations

from sidecar.core.decision import Control, Reply
from sidecar.core.providers._spec import ProviderSpec, View
from sidecar.core.providers.bitbucket import ORGANIZATION, organization_webhook

_webhook = organization_webhook("plugins", no_mapping=Reply(400, "no_mapping"))

SPEC = ProviderSpec(
    name="plugins",
    prefix="/plugins/",
    views=(
        View("github-webhook", r"github/" + ORGANIZATION + r"webhook/", _webhook, needs_body=True),
        View("bitbucket-webhook", r"bitbucket/" + ORGANIZATION + r"webhook/", _webhook, needs_body=True),
    ),
    unmatched=Control("not_a_plugin_webhook"),
    id_source="path `organizations/<organization_id>/webhook/` → organization mapping",
    delivery="async: mailbox `plugins:<organization_id>`, the organization's one region",
)
