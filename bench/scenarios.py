"""What is measured: one request against one edge variant, and what it is compared with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bench import webhooks
from bench.stack import Variant
from bench.webhooks import Builder

Kind = Literal["limit", "envoy", "floor", "header", "body", "store"]

VARIANTS = (
    Variant("noop1", "noop", 1),
    Variant("full1", "full", 1),
    Variant("noop2", "noop", 2),
    Variant("full2", "full", 2),
)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    variant: str
    kind: Kind
    build: Builder
    expect_status: int
    expect_body: str | None
    """The upstream that must answer (its name is the body), or None for the sidecar's own answer."""
    floor: str | None = None
    """The no-op scenario on the same route shape: the protocol's cost for this request."""
    envoy: str | None = None
    """The Envoy-alone scenario for the same method and body."""
    routed: str | None = None
    """For the store path: the routed body-decided scenario it is compared with."""


def _with_workers(n: int) -> list[Scenario]:
    noop, full = f"noop{n}", f"full{n}"
    suffix = "" if n == 1 else f"_{n}w"
    return [
        Scenario(f"noop_headers{suffix}", "no-op, headers only (Jira glance GET)", noop, "floor",
                 webhooks.jira_issue_glance, 200, "control", envoy="envoy_proxy"),
        Scenario(f"noop_body{suffix}", "no-op, BUFFERED 2 KB body (GitHub push)", noop, "floor",
                 webhooks.github_push, 200, "control", envoy="envoy_proxy_2k"),
        Scenario(f"full_header{suffix}", "sidecar, header-decided + lookup (Jira glance → de)", full, "header",
                 webhooks.jira_issue_glance, 200, "de", floor=f"noop_headers{suffix}", envoy="envoy_proxy"),
        Scenario(f"full_slack{suffix}", "sidecar, body-decided (Slack event 2 KB → us)", full, "body",
                 webhooks.slack_event, 200, "us", floor=f"noop_body{suffix}", envoy="envoy_proxy_2k"),
        Scenario(f"full_store{suffix}", "sidecar, store-and-202 (GitHub push 2 KB → PostgreSQL)", full, "store",
                 webhooks.github_push, 202, None, floor=f"noop_body{suffix}", envoy="envoy_proxy_2k",
                 routed=f"full_slack{suffix}"),
    ]  # fmt: skip


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("envoy_direct", "Envoy alone, direct_response", "noop1", "limit", webhooks.direct, 200, "direct"),
    Scenario("envoy_proxy", "Envoy alone, GET proxied to upstream", "noop1", "envoy", webhooks.bypass_get, 200,
             "control"),
    Scenario("envoy_proxy_2k", "Envoy alone, POST 2 KB proxied", "noop1", "envoy", webhooks.bypass_post, 200,
             "control"),
    *_with_workers(1),
    Scenario("full_control", "control-only view (Envoy routes it alone since the sidecar's issue-5 work)", "full1",
             "header",
             webhooks.github_installation_view, 200, "control", floor="noop_headers", envoy="envoy_proxy"),
    *_with_workers(2),
)  # fmt: skip

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}

SWEEP = ("envoy_proxy", "noop_headers", "full_header", "noop_body", "full_slack", "full_store")
"""Scenarios drawn in the latency-against-offered-rate chart."""
SWEEP_FRACTIONS = (0.2, 0.4, 0.6, 0.75, 0.9, 1.0, 1.2)
"""Offered rates, as fractions of each scenario's own closed-loop rate in the same run."""
