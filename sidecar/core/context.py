"""What a parser may know besides the request: the clock, secrets, regions and shed rules.

The edge builds one Context per request from the live settings; the core never reads the
environment or the clock itself (rule 1 in ``sidecar.core``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Secrets:
    slack_signing_secret: str | None = None
    slack_verification_token: str | None = None
    slack_staging_signing_secret: str | None = None
    slack_staging_verification_token: str | None = None
    discord_public_key: str | None = None

    def slack(self, provider: str) -> tuple[str | None, str | None]:
        """(signing secret, verification token) of the Slack app behind ``provider``: staging is
        another Slack app with its own secrets."""
        if provider == "slack_staging":
            return self.slack_staging_signing_secret, self.slack_staging_verification_token
        return self.slack_signing_secret, self.slack_verification_token


@dataclass(frozen=True, slots=True)
class ShedRule:
    """Answer 429 instead of storing webhooks of ``provider`` (and of one integration when given)."""

    provider: str
    integration_id: int | None = None

    def matches(self, provider: str, integration_id: int | None) -> bool:
        if self.provider != provider:
            return False
        return self.integration_id is None or self.integration_id == integration_id


@dataclass(frozen=True, slots=True)
class Context:
    now: float = 0.0
    """Unix time in seconds, for signature freshness checks."""
    secrets: Secrets = field(default_factory=Secrets)
    regions: frozenset[str] | None = None
    """Configured region names; None accepts any (offline explain, unit tests)."""
    shed: tuple[ShedRule, ...] = ()
    jira_audience: str | None = None
    """Sentry's absolute base URL (the Jira descriptor's ``baseUrl``): the ``aud`` Atlassian puts
    in its asymmetrically signed tokens. None: such tokens are refused (they cannot be checked)."""

    def knows_region(self, region: str) -> bool:
        return self.regions is None or region in self.regions

    def sheds(self, provider: str, integration_id: int | None) -> bool:
        return any(rule.matches(provider, integration_id) for rule in self.shed)
