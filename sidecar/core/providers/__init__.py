"""The provider registry: one line per provider module (a test checks that none is missing)."""

from __future__ import annotations

from sidecar.core.providers import (
    bitbucket,
    bitbucket_server,
    cursor_origin,
    discord,
    gitea,
    github,
    github_enterprise,
    gitlab,
    google,
    jira,
    jira_server,
    msteams,
    plugins,
    slack,
    slack_staging,
    vercel,
    vsts,
)
from sidecar.core.providers._spec import ProviderSpec

PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        bitbucket.SPEC,
        bitbucket_server.SPEC,
        cursor_origin.SPEC,
        discord.SPEC,
        gitea.SPEC,
        github.SPEC,
        github_enterprise.SPEC,
        gitlab.SPEC,
        google.SPEC,
        jira.SPEC,
        jira_server.SPEC,
        msteams.SPEC,
        plugins.SPEC,
        slack.SPEC,
        slack_staging.SPEC,
        vercel.SPEC,
        vsts.SPEC,
    )
}

__all__ = ["PROVIDERS", "ProviderSpec"]
