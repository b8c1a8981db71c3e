from __future__ import annotations

import pytest

from sidecar.core.classify import IntegrationRoute, PassThrough, PluginRoute, classify


@pytest.mark.parametrize(
    ("path", "provider"),
    [
        ("/extensions/github/webhook/", "github"),
        ("/extensions/jira-server/issue-updated/abc/", "jira_server"),
        ("/extensions/github-enterprise/webhook/", "github_enterprise"),
        ("/extensions/bitbucket-server/organizations/1/webhook/2/", "bitbucket_server"),
        ("/extensions/cursor-origin/webhook/", "cursor_origin"),
        ("/extensions/slack-staging/event/", "slack_staging"),
        ("/extensions/🔥🔥🔥/x/", "🔥🔥🔥"),
    ],
)
def test_provider_segment_dashes_become_underscores(path: str, provider: str) -> None:
    route = classify(path)
    assert isinstance(route, IntegrationRoute)
    assert route.provider == provider


@pytest.mark.parametrize(
    "path",
    ["/extensions/github/setup/", "/extensions/slack/link/", "/extensions/jira/anything/setup/"],
)
def test_setup_and_link_views_are_not_classified(path: str) -> None:
    assert classify(path) == PassThrough("setup_or_link_view")


def test_unknown_provider_falls_through_with_no_spec() -> None:
    route = classify("/extensions/nonesuch/webhook/")
    assert route == IntegrationRoute("nonesuch", None)


@pytest.mark.parametrize("path", ["/", "/api/0/organizations/", "/Extensions/github/webhook/", "/extensionsx/"])
def test_other_paths_pass_through(path: str) -> None:
    assert isinstance(classify(path), PassThrough)


def test_empty_provider_segment_passes_through() -> None:
    assert classify("/extensions//webhook/") == PassThrough("no_provider_segment")


def test_plugins_prefix_is_the_plugin_classification() -> None:
    assert isinstance(classify("/plugins/github/organizations/1/webhook/"), PluginRoute)
