"""Jira Cloud, an Atlassian Connect app (reference §3.7): identified by a verified JWT's ``iss``.

https://developer.atlassian.com/cloud/jira/platform/understanding-jwt-for-connect-apps/
Jira signs webhooks and iframe loads with the install's shared secret (HS256, no ``kid``), and
the install/uninstall lifecycle callbacks with an Atlassian key (RS256, ``kid`` names the key at
https://connect-install-keys.atlassian.com/). Either way the ``qsh`` claim binds the token to
this method, path and query. Unlike most providers the token is checked here, before routing:
an unverified token reads as "no such integration", answered 404 (reference §1.3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sidecar.core import jwt
from sidecar.core.context import Context
from sidecar.core.decision import Control, Decision, FetchKey, Forward, Lookup, Reply, Step
from sidecar.core.lookup import ByExternalId, Integration, Resolution
from sidecar.core.mailbox import Mailbox
from sidecar.core.providers._spec import SEARCH, Handler, OnFound, ProviderSpec, View, identify, store_all
from sidecar.core.request import Request, dig, int_or_none

KEY_SOURCE = "atlassian_connect"
BUCKET_COUNT = 10
"""Jira's mailboxes get 10 buckets, not 100 (reference §2.6 [L])."""

INVALID_JWT = Reply(404, "invalid_jwt")
UNKNOWN_INTEGRATION = Reply(404, "unknown_integration")
"""Sentry raises ``Integration.DoesNotExist`` here and the classification turns it into 404."""

Verified = Callable[[Integration], bool]


def token_of(req: Request) -> str | None:
    """The second word of ``Authorization`` (``JWT <token>``), else the ``jwt`` query parameter
    (iframe loads carry it there)."""
    words = (req.header("authorization") or "").split(None, 1)
    if len(words) == 2:
        return words[1].strip()
    return req.query_param("jwt")


def numeric_id(value: Any) -> int | None:
    """An id sent as a JSON number or as a decimal string (Jira sends ``issue.id`` as ``"10002"``).
    Bounded: Python refuses to parse very long digit strings, and a bucket key needs no more."""
    if (number := int_or_none(value)) is not None:
        return number
    if isinstance(value, str) and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
        return int(value)
    return None


def authenticated(on_found_for: Callable[[Request, Mapping[str, str]], OnFound]) -> Handler:
    """A handler that verifies the Connect JWT, then identifies by its ``iss`` (the clientKey)."""

    def handle(req: Request, params: Mapping[str, str], ctx: Context) -> Step:
        token = token_of(req)
        peeked = jwt.peek(token) if token else None
        issuer = peeked.claims.get("iss") if peeked else None
        if token is None or peeked is None or not isinstance(issuer, str) or not issuer:
            return INVALID_JWT
        qsh = jwt.query_hash(req.method, req.path, req.query_params())
        on_found = on_found_for(req, params)
        kid = peeked.header.get("kid")
        if kid is None:

            def shared_secret_signed(integration: Integration) -> bool:
                secret = integration.metadata.get("shared_secret")
                claims = jwt.verify_hs256(peeked, secret, now=ctx.now) if isinstance(secret, str) else None
                return claims is not None and claims.get("qsh") == qsh

            return _identify(issuer, shared_secret_signed, on_found, ctx)
        if not isinstance(kid, str) or ctx.jira_audience is None:
            return INVALID_JWT

        def with_key(pem: str | None) -> Step:
            claims = jwt.verify_rs256(peeked, pem, now=ctx.now, audience=ctx.jira_audience) if pem else None
            if claims is None or claims.get("qsh") != qsh:
                return INVALID_JWT
            return _identify(issuer, lambda integration: True, on_found, ctx)

        return FetchKey(KEY_SOURCE, kid, with_key)

    return handle


def _identify(issuer: str, verified: Verified, on_found: OnFound, ctx: Context) -> Lookup:
    """The base tree, with the signature checked once the integration (and its secret) is known
    and before its organizations are: a bad token is 404 even for an orphaned integration."""
    lookup = identify(ByExternalId("jira", issuer), on_found, ctx, missing=UNKNOWN_INTEGRATION)

    def then(resolution: Resolution) -> Decision:
        if resolution.integration is not None and not verified(resolution.integration):
            return INVALID_JWT
        return lookup.then(resolution)

    return Lookup(lookup.keys, then)


def _issue_updated(req: Request, params: Mapping[str, str]) -> OnFound:
    def on_found(integration: Integration, resolution: Resolution) -> Decision:
        mailbox = Mailbox(
            "jira",
            str(integration.id),
            bucket_key=numeric_id(dig(req.json(), "issue", "id")),
            bucket_count=BUCKET_COUNT,
        )
        return store_all("jira", integration, resolution, mailbox)

    return on_found


def _issue_glance(req: Request, params: Mapping[str, str]) -> OnFound:
    def on_found(integration: Integration, resolution: Resolution) -> Decision:
        # The legacy glance is answered by the one region that holds the issue; with several
        # there is no telling which, and control serves its own issue-details view instead.
        if len(resolution.regions) > 1:
            return Control("multiple_regions")
        return Forward(resolution.regions[0], "single_region")

    return on_found


SPEC = ProviderSpec(
    name="jira",
    views=(
        View("ui-hook", r"ui-hook/"),
        View("descriptor", r"descriptor/"),
        View("installed", r"installed/"),
        View("uninstalled", r"uninstalled/"),
        View("issue-updated", r"issue-updated/", authenticated(_issue_updated), needs_body=True),
        SEARCH,
        View("configure", r"configure/"),
        View("issue", r"issue/(?P<issue_key>[^/]+)/", authenticated(_issue_glance)),
        View("issue-details", r"issue-details/(?P<issue_key>[^/]+)/"),
    ),
    id_source="Atlassian Connect JWT (`Authorization: JWT …` or `?jwt=`), verified, claim `iss`",
    delivery="`issue-updated/` async: mailbox `jira:<integration>[:<issue.id % 10>]`; `issue/<key>/` sync, one region",
)
