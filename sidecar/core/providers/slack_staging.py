"""Slack staging (reference §3.2): Sentry's second Slack app, same flow under its own slug.

Only the four signed views exist under ``/extensions/slack-staging/`` (no identity or team-link
views), and the app's installations are ``slack_staging`` integrations, so lookups use that
provider. Signatures are checked with ``Secrets.slack_signing_secret`` like production: Sentry has
a separate ``slack-staging.signing-secret`` option, which ``Secrets`` does not carry yet.
"""

from __future__ import annotations

from sidecar.core.providers import slack

SPEC = slack.spec("slack_staging")
