"""The sender's rules: which headers travel, where follow-ups may go, regions in static and xds mode."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from delivery_fakes import RecordingServer

from sidecar import config
from sidecar.config import DeliverySettings
from sidecar.outbox.base import Payload
from sidecar.outbox.sender import UNCONFIGURED_REGION, HttpSender, followup_url, forwarded_headers

S = DeliverySettings()


def test_hop_by_hop_and_connection_named_headers_do_not_travel() -> None:
    stored = {
        "Content-Type": "application/json",
        "connection": "keep-alive, X-Trace-Hop",
        "x-trace-hop": "1",
        "keep-alive": "timeout=5",
        "te": "trailers",
        "upgrade": "h2c",
        "host": "hooks.example.com",
        "content-length": "12",
        "content-encoding": "gzip",
        "x-forwarded-proto": "https",
        "expect": "100-continue",
        "x-silo-route": "us",
        "X-Envoy-Original-Path": "/x",
        "x-forwarded-for": "203.0.113.7",
        "x-hub-signature-256": "sha256=abc",
    }
    assert forwarded_headers(stored) == [
        ("Content-Type", "application/json"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-hub-signature-256", "sha256=abc"),
    ]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.slack.com/commands/T1/2/x", True),
        ("https://hooks.slack.com:443/commands/T1/2/x", True),
        ("https://HOOKS.SLACK.COM/commands/T1/2/x", True),
        ("http://hooks.slack.com/commands/T1/2/x", False),  # a host entry means https
        ("https://hooks.slack.com:8443/x", False),
        ("https://hooks.slack.com.evil.example/x", False),
        ("https://evil.example/hooks.slack.com", False),
        ("https://user:pw@hooks.slack.com/x", False),
        ("https://hooks.slack.com@evil.example/x", False),
        ("https://[::1/x", False),
        ("not a url", False),
    ],
)
def test_slack_response_urls_must_be_on_the_allow_list(url: str, allowed: bool) -> None:
    assert (followup_url("slack", url, S) == url) is allowed


def test_an_origin_entry_allows_plain_http_on_that_port_only() -> None:
    local = replace(S, slack_response_hosts=("http://127.0.0.1:8125",))
    assert followup_url("slack", "http://127.0.0.1:8125/a", local) == "http://127.0.0.1:8125/a"
    assert followup_url("slack", "http://127.0.0.1:8126/a", local) is None
    assert followup_url("slack", "https://hooks.slack.com/a", local) is None


def test_discord_paths_join_the_configured_base() -> None:
    assert followup_url("discord", "/api/v10/webhooks/1/t", S) == "https://discord.com/api/v10/webhooks/1/t"
    assert followup_url("discord", "https://evil.example/x", S) is None
    assert followup_url("teams", "/x", S) is None


@pytest.fixture
def egress() -> Iterator[RecordingServer]:
    server = RecordingServer().start()
    try:
        yield server
    finally:
        server.stop()


def payload(region: str) -> Payload:
    return Payload(1, "github:1", "github", region, 1, 0.0, 0.0, 0.0, 0, "POST", "/x", {}, b"{}")


def sender_for(egress: RecordingServer, mode: str) -> HttpSender:
    raw = {
        "regions": {"de": {"address": "de.internal:8000"}},
        "envoy": {"egress": f"127.0.0.1:{egress.port}", "mode": mode},
    }
    return HttpSender(config.from_mapping(raw, {}, Path.cwd()))


async def test_static_mode_sends_only_to_the_files_regions(egress: RecordingServer) -> None:
    sender = sender_for(egress, "static")
    try:
        assert (await sender.deliver(payload("mars"))).error == UNCONFIGURED_REGION
        assert (await sender.deliver(payload("de"))).status == 200
    finally:
        await sender.aclose()
    [seen] = egress.received()
    assert (seen.region, seen.headers["host"]) == ("de", "de.internal:8000")


async def test_xds_mode_leaves_regions_to_the_region_table(egress: RecordingServer) -> None:
    sender = sender_for(egress, "xds")
    try:
        sender.set_region_hosts({"mars": "mars.internal:9000"})
        assert (await sender.deliver(payload("mars"))).status == 200
    finally:
        await sender.aclose()
    [seen] = egress.received()
    assert (seen.region, seen.headers["host"]) == ("mars", "mars.internal:9000")
