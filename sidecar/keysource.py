"""Public keys by key id, for the core's ``FetchKey`` effect (Atlassian Connect install tokens).

Atlassian signs its install/uninstall callbacks with RS256 and publishes each public key, as
PEM text, at ``https://connect-install-keys.atlassian.com/<kid>``
(https://developer.atlassian.com/cloud/jira/platform/understanding-jwt-for-connect-apps/, "asymmetric JWT token").
Keys never change under a kid, so a found key is cached for a long time; "no such key" briefly,
so a key published late is picked up.

Answers: the PEM text, ``None`` ("no such key": the token is refused), or ``KeySourceUnavailable``
(503 with Retry-After: the provider retries; never a guess either way).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from sidecar.errors import ConfigError, SiloError

if TYPE_CHECKING:
    from sidecar.config import Settings

ATLASSIAN_CONNECT = "atlassian_connect"
DEFAULT_BASE_URLS: Mapping[str, str] = {ATLASSIAN_CONNECT: "https://connect-install-keys.atlassian.com/"}

KID = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""Atlassian kids are UUIDs. The kid comes from an unverified token and becomes a URL path: no
``/``, ``.``, ``%`` or ``?`` can get through, so it cannot leave the base URL's directory."""
MAX_KEY_BYTES = 16_384
"""A 4096-bit RSA PEM is under 1 KiB; a larger answer is not a key."""
PEM_HEADER = b"-----BEGIN PUBLIC KEY-----"


class KeySourceUnavailable(SiloError):
    """The key source could not answer (network error, timeout, 5xx…): 503, the provider retries."""

    code = "key_source_unavailable"
    status = 503
    retry_after = 5


class KeySource(Protocol):
    async def public_key(self, source: str, kid: str) -> str | None:
        """The PEM text of key ``kid`` from ``source``; None when there is no such key.
        Raises ``KeySourceUnavailable`` when the source cannot answer."""
        ...


class InMemoryKeySource:
    """The twin for tests and offline ``explain``: a fixed table, and a log of what was asked."""

    def __init__(self, keys: Mapping[tuple[str, str], str] | None = None) -> None:
        self.keys = dict(keys or {})
        self.asked: list[tuple[str, str]] = []

    async def public_key(self, source: str, kid: str) -> str | None:
        self.asked.append((source, kid))
        return self.keys.get((source, kid))


_Entry = tuple[float, str | None]
"""(expires at, PEM or None for "no such key")."""


class HttpKeySource:
    """Fetches keys over HTTP(S) with a bounded TTL cache and one request per key in flight."""

    def __init__(
        self,
        base_urls: Mapping[str, str] = DEFAULT_BASE_URLS,
        ttl_s: float = 3600.0,
        timeout_s: float = 2.0,
        *,
        negative_ttl_s: float = 60.0,
        max_entries: int = 1024,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for source, url in base_urls.items():
            if not url.startswith(("https://", "http://")):
                raise ConfigError(f"key source {source!r}: expected an http(s) base URL, got {url!r}")
        self.base_urls = dict(base_urls)
        self.ttl_s = ttl_s
        self.negative_ttl_s = min(negative_ttl_s, ttl_s)
        self.timeout_s = timeout_s
        self.max_entries = max_entries
        self._transport = transport
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._inflight: dict[tuple[str, str], asyncio.Future[str | None]] = {}
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpKeySource:
        """From the optional ``key_sources`` section: ``{urls: {atlassian_connect: …}, ttl_s,
        negative_ttl_s, timeout_s}``; Atlassian's public endpoint by default."""
        raw: Any = settings.raw.get("key_sources")
        raw = {} if raw is None else raw
        if not isinstance(raw, Mapping):
            raise ConfigError("key_sources: expected a mapping")
        urls = raw.get("urls")
        urls = {} if urls is None else urls
        if not isinstance(urls, Mapping):
            raise ConfigError("key_sources.urls: expected a mapping of source → base URL")
        try:
            return cls(
                {**DEFAULT_BASE_URLS, **{str(k): str(v) for k, v in urls.items()}},
                ttl_s=float(raw.get("ttl_s", 3600.0)),
                timeout_s=float(raw.get("timeout_s", 2.0)),
                negative_ttl_s=float(raw.get("negative_ttl_s", 60.0)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"key_sources: {exc}") from None

    async def public_key(self, source: str, kid: str) -> str | None:
        base = self.base_urls.get(source)
        if base is None or not KID.fullmatch(kid):
            return None
        key = (source, kid)
        cached = self._cached(key)
        if cached is not None:
            return cached[1]
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(key, f"{base.rstrip('/')}/{kid}"))
            self._inflight[key] = pending
            pending.add_done_callback(lambda done: self._settled(key, done))
        # shield: one caller giving up (its request timed out) must not cancel the others' fetch.
        return await asyncio.shield(pending)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> HttpKeySource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- internals ---------------------------------------------------------------------------

    def _cached(self, key: tuple[str, str]) -> _Entry | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return entry

    def _remember(self, key: tuple[str, str], pem: str | None) -> None:
        ttl = self.ttl_s if pem is not None else self.negative_ttl_s
        self._cache[key] = (self._clock() + ttl, pem)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def _settled(self, key: tuple[str, str], done: asyncio.Future[str | None]) -> None:
        self._inflight.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone, and asyncio would log it

    async def _fetch(self, key: tuple[str, str], url: str) -> str | None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, transport=self._transport)
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code in (404, 410):
                    pem = None
                elif response.status_code != 200:
                    raise KeySourceUnavailable(f"{key[0]} key source answered {response.status_code}")
                else:
                    pem = _pem(await _read_bounded(response))
        except httpx.HTTPError as exc:
            raise KeySourceUnavailable(f"{key[0]} key source unreachable: {type(exc).__name__}") from exc
        self._remember(key, pem)
        return pem


async def _read_bounded(response: httpx.Response) -> bytes | None:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_KEY_BYTES:
            return None
    return bytes(body)


def _pem(body: bytes | None) -> str | None:
    """The body when it is a PEM public key; a 200 with anything else is no key (the core would
    refuse it anyway, but it must not sit in the cache as one)."""
    if body is None or not body.strip().startswith(PEM_HEADER):
        return None
    try:
        return body.decode("ascii")
    except UnicodeDecodeError:
        return None
