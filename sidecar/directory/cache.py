"""An in-process cache in front of a directory: bounded (LRU), TTL, negative entries, coalesced misses.

Rules:
1. Entries are per lookup key; ``resolve(keys)`` walks the keys in order like the inner directory.
2. A not-found answer is cached too, for ``negative_ttl_s`` (shorter: a new installation must start
   routing soon), so a flood of webhooks for an unknown id does not reach the database each time.
3. Errors are never cached: the next request asks the database again.
4. Concurrent misses for one key share one inner call.
5. ``invalidate_all`` also orphans in-flight calls: an answer read before the invalidation is
   handed to its waiters but never stored.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sidecar.core.lookup import NOT_FOUND, LookupKey, Resolution
from sidecar.directory.base import Directory

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class _Entry:
    resolution: Resolution
    expires_at: float


def _found(resolution: Resolution) -> bool:
    return resolution.integration is not None or bool(resolution.organizations)


CacheEvent = Literal["hit", "negative_hit", "miss", "error"]


def _ignore(event: CacheEvent) -> None:
    pass


class CachedDirectory:
    """``Directory`` that remembers the answers of ``inner``. Counters are plain attributes."""

    def __init__(
        self,
        inner: Directory,
        max_entries: int = 100_000,
        ttl_s: float = 60.0,
        negative_ttl_s: float = 10.0,
        clock: Clock = time.monotonic,
        observe: Callable[[CacheEvent], None] | None = None,
    ) -> None:
        """``observe`` is told every hit, negative hit, miss and error (the metrics hook)."""
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.inner = inner
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self._clock = clock
        self._observe = observe or _ignore
        self._entries: OrderedDict[LookupKey, _Entry] = OrderedDict()
        self._inflight: dict[LookupKey, asyncio.Task[Resolution]] = {}
        self._generation = 0
        self.hits = 0
        self.negative_hits = 0
        """Hits on a cached not-found (also counted in ``hits``)."""
        self.misses = 0
        self.coalesced = 0
        """Misses that joined another caller's inner call (also counted in ``misses``)."""
        self.evictions = 0
        self.invalidations = 0
        self.errors = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def resolve(self, keys: tuple[LookupKey, ...]) -> Resolution:
        """Each key from the cache or, on a miss, from ``inner``; the first key that finds something wins."""
        for key in keys:
            resolution = await self._resolve_one(key)
            if _found(resolution):
                return resolution
        return NOT_FOUND

    def cached(self, keys: tuple[LookupKey, ...]) -> Resolution | None:
        """``resolve(keys)`` when the cache alone can answer it (no I/O, nothing awaited), else None.

        The hot path: a warm webhook is decided without a coroutine. Entries are only checked
        first, so a lookup that then needs the database has not counted its hits twice."""
        if len(keys) == 1:  # most parsers look up one key: one pass
            resolution = self._lookup(keys[0])
            return resolution if resolution is None or _found(resolution) else NOT_FOUND
        now = self._clock()
        for key in keys:
            entry = self._entries.get(key)
            if entry is None or entry.expires_at <= now:
                return None
            if _found(entry.resolution):
                break
        for key in keys:
            resolution = self._lookup(key)
            if resolution is None:  # expired between the two passes (a clock tick): ask again
                return None
            if _found(resolution):
                return resolution
        return NOT_FOUND

    def invalidate_all(self) -> None:
        """Forget every entry (a directory table changed)."""
        self._entries.clear()
        self._inflight.clear()
        self._generation += 1
        self.invalidations += 1

    async def _resolve_one(self, key: LookupKey) -> Resolution:
        cached = self._lookup(key)
        if cached is not None:
            return cached
        self.misses += 1
        self._observe("miss")
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key, self._generation))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        else:
            self.coalesced += 1
        # Shielded: one caller giving up (its request timed out) must not cancel the call the others wait on.
        return await asyncio.shield(task)

    def _lookup(self, key: LookupKey) -> Resolution | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        if _found(entry.resolution):
            self._observe("hit")
        else:
            self.negative_hits += 1
            self._observe("negative_hit")
        return entry.resolution

    async def _fetch(self, key: LookupKey, generation: int) -> Resolution:
        try:
            resolution = await self.inner.resolve((key,))
        except Exception:
            self.errors += 1
            self._observe("error")
            raise
        if generation == self._generation:
            self._store(key, resolution)
        return resolution

    def _store(self, key: LookupKey, resolution: Resolution) -> None:
        ttl = self.ttl_s if _found(resolution) else self.negative_ttl_s
        if ttl <= 0:
            return
        self._entries[key] = _Entry(resolution, self._clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1

    def _finished(self, key: LookupKey, task: asyncio.Task[Resolution]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            # Retrieve the exception so a failure nobody awaited any more is not reported as "never retrieved".
            task.exception()
