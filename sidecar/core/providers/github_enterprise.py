"""GitHub Enterprise Server webhooks (reference §3.5): GitHub's flow, identified by host + installation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.core.providers._spec import SEARCH, ProviderSpec, View
from sidecar.core.providers.github import webhook_handler
from sidecar.core.request import Request, dig, id_text

GITHUB_COM = "github.com"


def _host_and_installation(req: Request, params: Mapping[str, str], payload: Any) -> str | None:
    installation = id_text(dig(payload, "installation", "id"))
    host = GITHUB_COM if params.get("github_com") else req.header("x-github-enterprise-host")
    if not host or installation is None:
        return None
    return f"{host}:{installation}"


_handler = webhook_handler("github_enterprise", _host_and_installation)

SPEC = ProviderSpec(
    name="github_enterprise",
    views=(
        View("webhook", r"webhook/", _handler, needs_body=True),
        View("webhook-github-com", r"webhook/(?P<github_com>github-com)/", _handler, needs_body=True),
        View("installation", r"installation/(?P<installation_id>[^/]+)/"),
        SEARCH,
    ),
    id_source="header `X-GitHub-Enterprise-Host` + JSON `installation.id` (`host:id`)",
    delivery="async: mailbox `github_enterprise:<integration>:<repo % 100>:<event>`",
)
