"""sidecar.keysource: the key source edge behind the core's FetchKey effect.

Served by httpx's MockTransport for the protocol cases and by a real ``http.server`` on
127.0.0.1 for the network path (connection, refusal), as Atlassian's key CDN would answer.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sidecar.config import from_mapping
from sidecar.core import (
    ByExternalId,
    Context,
    FetchKey,
    Integration,
    Lookup,
    Mailbox,
    Organization,
    Resolution,
    Store,
    plan,
)
from sidecar.core.jwt import query_hash
from sidecar.errors import ConfigError, SiloError
from sidecar.keysource import (
    ATLASSIAN_CONNECT,
    DEFAULT_BASE_URLS,
    MAX_KEY_BYTES,
    HttpKeySource,
    InMemoryKeySource,
    KeySource,
    KeySourceUnavailable,
)

KID = "0e50fccb-239d-4991-a5db-dc850ba3f236"
BASE = "https://keys.test/"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = (
    KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Server:
    """A MockTransport handler: answers from ``routes`` (path → status, body) and logs every URL."""

    routes: dict[str, tuple[int, bytes]] = field(default_factory=lambda: {f"/{KID}": (200, PEM.encode())})
    seen: list[str] = field(default_factory=list)
    fail: Callable[[httpx.Request], None] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(str(request.url))
        if self.fail is not None:
            self.fail(request)
        status, body = self.routes.get(request.url.path, (404, b"<Error><Code>NoSuchKey</Code></Error>"))
        return httpx.Response(status, content=body)


def source(server: Server, clock: Clock | None = None, **kw: Any) -> HttpKeySource:
    return HttpKeySource({ATLASSIAN_CONNECT: BASE}, transport=httpx.MockTransport(server), clock=clock or Clock(), **kw)


def test_the_protocol_is_met_by_both_implementations() -> None:
    implementations: list[KeySource] = [InMemoryKeySource(), HttpKeySource()]
    assert len(implementations) == 2
    assert DEFAULT_BASE_URLS[ATLASSIAN_CONNECT] == "https://connect-install-keys.atlassian.com/"


async def test_in_memory_answers_from_its_table_and_logs_questions() -> None:
    keys = InMemoryKeySource({(ATLASSIAN_CONNECT, KID): PEM})
    assert await keys.public_key(ATLASSIAN_CONNECT, KID) == PEM
    assert await keys.public_key(ATLASSIAN_CONNECT, "other") is None
    assert keys.asked == [(ATLASSIAN_CONNECT, KID), (ATLASSIAN_CONNECT, "other")]


async def test_a_key_is_fetched_once_and_cached_for_the_ttl() -> None:
    server, clock = Server(), Clock()
    async with source(server, clock, ttl_s=600) as keys:
        assert await keys.public_key(ATLASSIAN_CONNECT, KID) == PEM
        assert await keys.public_key(ATLASSIAN_CONNECT, KID) == PEM
        assert server.seen == [f"https://keys.test/{KID}"]
        clock.now += 601
        assert await keys.public_key(ATLASSIAN_CONNECT, KID) == PEM
        assert len(server.seen) == 2


@pytest.mark.parametrize("status", [404, 410])
async def test_no_such_key_is_none_and_cached_briefly(status: int) -> None:
    server, clock = Server(routes={f"/{KID}": (status, b"gone")}), Clock()
    async with source(server, clock, negative_ttl_s=30) as keys:
        assert await keys.public_key(ATLASSIAN_CONNECT, KID) is None
        assert await keys.public_key(ATLASSIAN_CONNECT, KID) is None
        assert len(server.seen) == 1
        clock.now += 31
        server.routes[f"/{KID}"] = (200, PEM.encode())
        assert await keys.public_key(ATLASSIAN_CONNECT, KID) == PEM


@pytest.mark.parametrize("status", [500, 503, 403, 429, 302])
async def test_any_other_status_is_unavailable_and_not_cached(status: int) -> None:
    server = Server(routes={f"/{KID}": (status, b"")})
    async with source(server) as keys:
        for _ in range(2):
            with pytest.raises(KeySourceUnavailable) as raised:
                await keys.public_key(ATLASSIAN_CONNECT, KID)
        assert len(server.seen) == 2
    assert isinstance(raised.value, SiloError)
    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (503, "key_source_unavailable", 5)


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError])
async def test_network_errors_are_unavailable(error: type[httpx.TransportError]) -> None:
    def fail(request: httpx.Request) -> None:
        raise error("boom", request=request)

    async with source(Server(fail=fail)) as keys:
        with pytest.raises(KeySourceUnavailable):
            await keys.public_key(ATLASSIAN_CONNECT, KID)


@pytest.mark.parametrize("kid", ["", "../admin", "a/b", "a.b", "%2e%2e", "k?x=1", "k#f", "ключ", "x" * 129, "a b"])
async def test_a_kid_outside_the_strict_pattern_is_never_put_in_a_url(kid: str) -> None:
    server = Server()
    async with source(server) as keys:
        assert await keys.public_key(ATLASSIAN_CONNECT, kid) is None
    assert server.seen == []


async def test_an_unconfigured_source_has_no_keys() -> None:
    server = Server()
    async with source(server) as keys:
        assert await keys.public_key("some_other_vendor", KID) is None
    assert server.seen == []


@pytest.mark.parametrize(
    "body",
    [
        b"<html>Access Denied</html>",
        b"",
        b"-----BEGIN PUBLIC KEY-----" + b"A" * MAX_KEY_BYTES,
        b"-----BEGIN PUBLIC KEY-----\xff",
    ],
)
async def test_a_200_that_is_not_a_pem_key_is_no_key(body: bytes) -> None:
    async with source(Server(routes={f"/{KID}": (200, body)})) as keys:
        assert await keys.public_key(ATLASSIAN_CONNECT, KID) is None


@pytest.mark.parametrize("base", ["https://keys.test", "https://keys.test/", "https://keys.test/v1/"])
async def test_the_kid_is_appended_to_the_base_url(base: str) -> None:
    server = Server(routes={f"/{KID}": (200, PEM.encode()), f"/v1/{KID}": (200, PEM.encode())})
    async with HttpKeySource({ATLASSIAN_CONNECT: base}, transport=httpx.MockTransport(server)) as keys:
        assert await keys.public_key(ATLASSIAN_CONNECT, KID) == PEM
    assert server.seen == [base.rstrip("/") + "/" + KID]


async def test_the_cache_is_bounded_least_recently_used_first() -> None:
    kids = ["k1", "k2", "k3"]
    server = Server(routes={f"/{k}": (200, PEM.encode()) for k in kids})
    async with source(server, max_entries=2) as keys:
        for kid in ["k1", "k2", "k1", "k3", "k1", "k2"]:
            await keys.public_key(ATLASSIAN_CONNECT, kid)
    # k2 was evicted by k3 (k1 had just been used), then fetched again.
    assert [url.rsplit("/", 1)[1] for url in server.seen] == ["k1", "k2", "k3", "k2"]


async def test_concurrent_asks_share_one_request_and_survive_a_cancelled_asker() -> None:
    release = asyncio.Event()
    seen: list[str] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        await release.wait()
        return httpx.Response(200, content=PEM.encode())

    async with HttpKeySource({ATLASSIAN_CONNECT: BASE}, transport=httpx.MockTransport(slow)) as keys:
        tasks = [asyncio.create_task(keys.public_key(ATLASSIAN_CONNECT, KID)) for _ in range(3)]
        await asyncio.sleep(0.01)
        tasks[0].cancel()
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == [PEM, PEM]
    assert len(seen) == 1


def test_a_base_url_must_be_http() -> None:
    with pytest.raises(ConfigError):
        HttpKeySource({ATLASSIAN_CONNECT: "file:///etc/keys/"})


def test_from_settings_reads_the_optional_key_sources_section() -> None:
    default = HttpKeySource.from_settings(from_mapping({}, {}, Path.cwd()))
    assert default.base_urls == dict(DEFAULT_BASE_URLS)
    raw = {"key_sources": {"urls": {ATLASSIAN_CONNECT: "http://127.0.0.1:8099/"}, "ttl_s": 60, "timeout_s": 0.5}}
    configured = HttpKeySource.from_settings(from_mapping(raw, {}, Path.cwd()))
    assert (configured.base_urls[ATLASSIAN_CONNECT], configured.ttl_s, configured.timeout_s) == (
        "http://127.0.0.1:8099/",
        60,
        0.5,
    )


@pytest.mark.parametrize("section", [[], {"urls": ["x"]}, {"ttl_s": "soon"}, {"urls": {ATLASSIAN_CONNECT: "ftp://x/"}}])
def test_from_settings_refuses_a_malformed_section(section: Any) -> None:
    with pytest.raises(ConfigError):
        HttpKeySource.from_settings(from_mapping({"key_sources": section}, {}, Path.cwd()))


# --- over a real socket --------------------------------------------------------------------------


class _KeyHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == f"/keys/{KID}":
            body, status = PEM.encode(), 200
        else:
            body, status = b"not found", 404
        self.send_response(status)
        self.send_header("Content-Type", "application/x-pem-file")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def key_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_keys_are_fetched_from_a_local_http_server(key_server: http.server.ThreadingHTTPServer) -> None:
    port = key_server.server_address[1]
    async with HttpKeySource({ATLASSIAN_CONNECT: f"http://127.0.0.1:{port}/keys/"}, timeout_s=5) as keys:
        assert await keys.public_key(ATLASSIAN_CONNECT, KID) == PEM
        assert await keys.public_key(ATLASSIAN_CONNECT, "unknown-kid") is None


async def test_a_refused_connection_is_unavailable() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeyHandler)
    port = server.server_address[1]
    server.server_close()  # nothing listens there any more
    async with HttpKeySource({ATLASSIAN_CONNECT: f"http://127.0.0.1:{port}/"}, timeout_s=2) as keys:
        with pytest.raises(KeySourceUnavailable):
            await keys.public_key(ATLASSIAN_CONNECT, KID)


async def test_the_core_and_the_key_source_verify_an_atlassian_install_token_end_to_end(
    key_server: http.server.ThreadingHTTPServer,
) -> None:
    """Jira's ``issue-updated`` with a kid-signed token, as the edge runs it: FetchKey, then Lookup."""
    now, audience, client_key = 1_700_000_000, "https://sentry.example.com", "a4b3c2d1"
    qsh = query_hash("POST", "/extensions/jira/issue-updated/", [])
    claims = {"iss": client_key, "aud": audience, "iat": now, "exp": now + 180, "qsh": qsh}
    token = pyjwt.encode(claims, KEY, algorithm="RS256", headers={"kid": KID})
    body = json.dumps({"webhookEvent": "jira:issue_updated", "issue": {"id": "10002"}, "changelog": {"items": []}})
    from sidecar.core import Request

    req = Request.from_target(
        "POST", "/extensions/jira/issue-updated/", {"Authorization": f"JWT {token}"}, body.encode()
    )
    integration = Integration(30, "jira", client_key)
    port = key_server.server_address[1]
    async with HttpKeySource({ATLASSIAN_CONNECT: f"http://127.0.0.1:{port}/keys/"}) as keys:
        step = plan(req, Context(now=now, jira_audience=audience))
        assert isinstance(step, FetchKey)
        looked_up = step.then(await keys.public_key(step.source, step.kid))
    assert isinstance(looked_up, Lookup)
    assert looked_up.keys == (ByExternalId("jira", client_key),)
    decision = looked_up.then(Resolution(integration, (Organization(1, "acme", "us"),)))
    assert decision == Store("jira", ("us",), Mailbox("jira", "30", bucket_key=10002, bucket_count=10), 30, "stored")
