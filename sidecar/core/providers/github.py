"""GitHub App webhooks (reference §3.4): async, one mailbox per installation, repository and event.

https://docs.github.com/en/webhooks/webhook-events-and-payloads
The ``X-Hub-Signature-256`` signature is not checked here: the region verifies it, on the exact
bytes we store and forward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sidecar.core.context import Context
from sidecar.core.decision import Control, Decision, Reply, Step
from sidecar.core.lookup import ByExternalId, Integration, Resolution
from sidecar.core.mailbox import Mailbox
from sidecar.core.providers._spec import SEARCH, ProviderSpec, View, identify, store_all
from sidecar.core.request import Request, dig, id_text, int_or_none

PROCESSED_EVENTS = frozenset(
    {
        "check_run",
        "check_suite",
        "issue_comment",
        "issues",
        "pull_request",
        "pull_request_review",
        "pull_request_review_comment",
        "pull_request_review_thread",
        "push",
    }
)
"""Events a region consumes; others are answered 202 and dropped. Also the only event names
allowed into a mailbox name, so a sender cannot invent mailboxes."""

CONTROL_EVENTS = frozenset({"installation", "installation_repositories"})
"""Control owns the integration rows these events change."""

CONSUMED_ACTIONS = {
    "check_run": frozenset({"completed", "requested_action", "rerequested"}),
    "check_suite": frozenset({"completed"}),
}

ExternalIdOf = Callable[[Request, Mapping[str, str], Any], str | None]


def _installation_id(req: Request, params: Mapping[str, str], payload: Any) -> str | None:
    return id_text(dig(payload, "installation", "id"))


def _only_other_repos(payload: Any) -> bool:
    """True when every pull request of a check payload belongs to another repository (a fork's
    check run reported to us): the region has nothing to update."""
    pulls = dig(payload, "check_run", "pull_requests") or dig(payload, "check_suite", "pull_requests")
    repo_id = dig(payload, "repository", "id")
    if not isinstance(pulls, list) or not pulls or repo_id is None:
        return False
    return all(dig(pr, "base", "repo", "id") not in (None, repo_id) for pr in pulls)


def event_filter(event: str | None, payload: Any) -> Reply | None:
    """202-and-drop what no region processes (reference §3.4 steps 4–5). A missing event
    header is forwarded: the region answers it with its own 400."""
    if not event:
        return None
    if event not in PROCESSED_EVENTS:
        return Reply(202, "unprocessed_event")
    consumed = CONSUMED_ACTIONS.get(event)
    if consumed is not None:
        if dig(payload, "action") not in consumed:
            return Reply(202, "unconsumed_action")
        if _only_other_repos(payload):
            return Reply(202, "no_own_repo_pr")
    return None


def webhook_handler(provider: str, external_id_of: ExternalIdOf) -> Callable[..., Step]:
    """The webhook view of GitHub and GitHub Enterprise: they differ only in the external id."""

    def handle(req: Request, params: Mapping[str, str], ctx: Context) -> Step:
        payload = req.json()
        if not isinstance(payload, dict):
            return Reply(400, "invalid_json")
        event = req.header("x-github-event")
        if event in CONTROL_EVENTS:
            return Control("installation_event")
        external_id = external_id_of(req, params, payload) if "application/json" in req.content_type else None
        if external_id is None:
            return Reply(400, "unknown_integration")

        def on_found(integration: Integration, resolution: Resolution) -> Decision:
            dropped = event_filter(event, payload)
            if dropped is not None:
                return dropped
            repo_id = dig(payload, "repository", "id")
            mailbox = Mailbox(
                provider,
                str(integration.id),
                bucket_key=int_or_none(repo_id),
                event_type=event if event in PROCESSED_EVENTS else None,
                always_bucket=True,
            )
            return store_all(provider, integration, resolution, mailbox)

        return identify(ByExternalId(provider, external_id), on_found, ctx)

    return handle


SPEC = ProviderSpec(
    name="github",
    views=(
        View("webhook", r"webhook/", webhook_handler("github", _installation_id), needs_body=True),
        View("installation", r"installation/(?P<installation_id>[^/]+)/"),
        SEARCH,
    ),
    id_source="JSON `installation.id`",
    delivery="async: mailbox `github:<integration>:<repo % 100>:<event>`; unprocessed events 202",
)
