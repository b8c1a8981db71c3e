"""HTTP for the delivery worker: stored webhooks to the Envoy egress listener, follow-ups to providers.

A stored webhook is re-sent as it arrived, so the provider's signature still verifies in the
region (reference §5.5): the stored method, the path with its query, the exact body bytes, and the
headers minus those that describe the old connection (hop-by-hop, Host, Content-Length,
Content-Encoding, X-Forwarded-Proto) and our own ``x-silo-*``. ``x-silo-route: <region>`` tells
Envoy's egress listener which region cluster to use; region addresses, TLS and circuit breaking
stay in Envoy. The Host header names the region, as Sentry's region client does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from sidecar.config import Address, DeliverySettings, Settings
from sidecar.outbox.base import Payload

ROUTE_HEADER = "x-silo-route"
INTERNAL_PREFIXES = ("x-silo-", "x-envoy-")
"""Ours, and Envoy's internal headers: a loopback client is "internal" to Envoy, which would obey them."""
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
     "trailer", "trailers", "transfer-encoding", "upgrade"}
)  # fmt: skip
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "content-encoding", "x-forwarded-proto", "expect"}
"""``expect``: a 100-continue handshake belonged to the provider's connection, not to ours."""

EGRESS_UNKNOWN_REGION_BODY = b"unknown region"
"""The egress listener's direct response for a region it has no route to (``xds/bootstrap.py``)."""
UPSTREAM_TIME_HEADER = "x-envoy-upstream-service-time"
"""Envoy adds it to answers that came from an upstream; its own direct responses lack it."""

# Stable error codes (metric labels, ``last_error`` prefixes).
EGRESS_UNREACHABLE = "egress_unreachable"
EGRESS_UNKNOWN_REGION = "egress_unknown_region"
UNCONFIGURED_REGION = "unconfigured_region"
TIMEOUT = "timeout"
ABANDONED = "abandoned"
CONNECTION_RESET = "connection_reset"
TRANSPORT_ERROR = "transport_error"
CONNECT_ERROR = "connect_error"


@dataclass(frozen=True, slots=True)
class Sent:
    """What came back: a status (None when no answer came) and the first bytes of the body."""

    status: int | None
    error: str | None = None
    retry_after: str | None = None
    body: bytes = b""
    egress_down: bool = False
    """The local egress listener refused the connection: nothing reached a region, and it is not
    the row's fault (no attempt is counted)."""
    envoy_local: bool = False
    """No upstream answered: Envoy did (a direct response, or a 503 for an unreachable region)."""


class Sender(Protocol):
    async def deliver(self, payload: Payload) -> Sent: ...

    async def follow_up(self, url: str, body: bytes) -> Sent: ...

    async def aclose(self) -> None: ...


def forwarded_headers(stored: Mapping[str, str]) -> list[tuple[str, str]]:
    """The stored headers that still mean something on a new connection, in stored order."""
    named_by_connection = {
        token.strip().lower() for token in stored.get("connection", "").split(",") if token.strip()
    }  # RFC 9110 §7.6.1: "Connection: x-foo" makes x-foo hop-by-hop too
    kept = []
    for name, value in stored.items():
        lower = name.lower()
        if lower in NOT_FORWARDED or lower in named_by_connection or lower.startswith(INTERNAL_PREFIXES):
            continue
        kept.append((name, value))
    return kept


def request_headers(payload: Payload, region_host: str | None) -> list[tuple[bytes, bytes]]:
    """Headers for the egress request, as bytes: the sidecar read them from Envoy as latin-1."""
    stored = forwarded_headers(payload.request_headers)
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in stored]
    if region_host is not None:
        headers.append((b"host", region_host.encode("latin-1")))
    headers.append((ROUTE_HEADER.encode(), payload.region_name.encode("latin-1")))
    return headers


def followup_url(kind: str, url: str, settings: DeliverySettings) -> str | None:
    """Where a follow-up may be posted, or None when it must not be.

    Slack's ``response_url`` comes from the (signed) payload; the allow-list still stands between
    a payload and an arbitrary POST from inside our network. An entry is a host (https only) or an
    origin (``http://127.0.0.1:8125``, for tests and local fakes). Discord's is a path of ours.
    """
    if kind == "discord":
        return settings.discord_base_url.rstrip("/") + url if url.startswith("/") else None
    if kind != "slack":
        return None
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if host is None or parts.username is not None or parts.password is not None:
        return None
    origin = f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    for allowed in settings.slack_response_hosts:
        if "://" in allowed:
            if origin == allowed.rstrip("/").lower():
                return url
        elif parts.scheme == "https" and port in (None, 443) and host == allowed.lower():
            return url
    return None


def _dialable_host(address: Address) -> str:
    host = address.host.strip("[]")
    return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host


def _bare_client(timeout_s: float, trust_env: bool) -> httpx.AsyncClient:
    client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=trust_env)
    # httpx adds Accept, Accept-Encoding, Connection and User-Agent to every request; a replayed
    # webhook carries the provider's own, and nothing else.
    for name in list(client.headers):
        del client.headers[name]
    return client


class HttpSender:
    """``Sender`` over httpx: one pooled client for the egress listener, one for the providers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.delivery
        egress = settings.envoy.egress
        self._egress = (_dialable_host(egress), egress.port)
        self._region_hosts = {name: str(address) for name, address in settings.regions.items()}
        # Static mode: Envoy routes exactly the file's regions, so another one cannot be delivered.
        # xds mode: the region table decides (set_region_hosts); Envoy's 404 covers the unknown.
        self._only_known_regions = settings.envoy.mode == "static"
        # The egress listener is on loopback: proxy variables from the environment must not apply.
        self._to_egress = _bare_client(self.settings.timeout_s, trust_env=False)
        self._to_providers = _bare_client(self.settings.timeout_s, trust_env=True)

    def set_region_hosts(self, hosts: Mapping[str, str]) -> None:
        """Region name → ``host:port``, the Host header a region is sent (xds mode: the region table)."""
        self._region_hosts = dict(hosts)

    async def deliver(self, payload: Payload) -> Sent:
        if self._only_known_regions and self._region_hosts and payload.region_name not in self._region_hosts:
            return Sent(None, UNCONFIGURED_REGION)
        host, port = self._egress
        try:
            url = httpx.URL(scheme="http", host=host, port=port, raw_path=payload.request_path.encode("latin-1"))
        except (UnicodeEncodeError, httpx.InvalidURL):
            return Sent(None, "bad_request_path")
        request = self._to_egress.build_request(
            payload.request_method,
            url,
            headers=request_headers(payload, self._region_hosts.get(payload.region_name)),
            content=payload.request_body,
        )
        sent = await self._send(self._to_egress, request)
        if sent.status == 404 and sent.envoy_local and sent.body == EGRESS_UNKNOWN_REGION_BODY:
            return Sent(None, EGRESS_UNKNOWN_REGION)
        return sent

    async def follow_up(self, url: str, body: bytes) -> Sent:
        request = self._to_providers.build_request(
            "POST", url, headers={"content-type": "application/json", "user-agent": "silo-router"}, content=body
        )
        return await self._send(self._to_providers, request)

    async def _send(self, client: httpx.AsyncClient, request: httpx.Request) -> Sent:
        try:
            async with asyncio.timeout(self.settings.send_deadline_s):
                response = await client.send(request, stream=True)
                try:
                    body = await _read_limited(response.aiter_bytes(), self.settings.response_limit_bytes)
                finally:
                    await response.aclose()
        except httpx.ConnectError:
            if client is self._to_egress:
                return Sent(None, EGRESS_UNREACHABLE, egress_down=True)
            return Sent(None, CONNECT_ERROR)
        except httpx.TimeoutException:
            return Sent(None, TIMEOUT)
        except TimeoutError:
            return Sent(None, ABANDONED)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            return Sent(None, CONNECTION_RESET)
        except httpx.HTTPError as exc:
            return Sent(None, f"{TRANSPORT_ERROR}: {exc.__class__.__name__}")
        local = response.headers.get(UPSTREAM_TIME_HEADER) is None
        return Sent(response.status_code, None, response.headers.get("retry-after"), body, envoy_local=local)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._to_egress.aclose()
        with contextlib.suppress(Exception):
            await self._to_providers.aclose()


async def _read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The body up to ``limit`` bytes; the rest is read and dropped so the connection can be reused."""
    kept = bytearray()
    async for chunk in chunks:
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    return bytes(kept)
