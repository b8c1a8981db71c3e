"""CachedDirectory: pure tests with a fake clock and a scripted inner directory."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.core.lookup import (
    NOT_FOUND,
    ByExternalId,
    ByIntegrationId,
    ByOrganization,
    Integration,
    LookupKey,
    Resolution,
)
from sidecar.directory.cache import CachedDirectory
from sidecar.errors import DirectoryUnavailable

GH = Resolution(Integration(10, "github", "4711"))
KEY = ByIntegrationId(10)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Inner:
    """Answers from a dict; counts calls; can block (gate) or fail."""

    def __init__(self, answers: dict[LookupKey, Resolution] | None = None) -> None:
        self.answers: dict[LookupKey, Resolution] = answers if answers is not None else {KEY: GH}
        self.calls: list[LookupKey] = []
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def resolve(self, keys: tuple[LookupKey, ...]) -> Resolution:
        assert len(keys) == 1, "the cache asks one key at a time"
        self.calls.append(keys[0])
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise DirectoryUnavailable("down")
        return self.answers.get(keys[0], NOT_FOUND)


def make(inner: Inner, **kwargs: float) -> tuple[CachedDirectory, Clock]:
    clock = Clock()
    options = {"max_entries": 100, "ttl_s": 60.0, "negative_ttl_s": 10.0, **kwargs}
    return CachedDirectory(inner, clock=clock, **options), clock  # type: ignore[arg-type]


async def test_second_lookup_is_a_hit() -> None:
    inner = Inner()
    cache, _ = make(inner)
    assert await cache.resolve((KEY,)) == GH
    assert await cache.resolve((KEY,)) == GH
    assert inner.calls == [KEY]
    assert (cache.hits, cache.misses) == (1, 1)


async def test_entry_expires_after_ttl() -> None:
    inner = Inner()
    cache, clock = make(inner)
    await cache.resolve((KEY,))
    clock.now += 59.9
    await cache.resolve((KEY,))
    assert len(inner.calls) == 1
    clock.now += 0.1
    await cache.resolve((KEY,))
    assert len(inner.calls) == 2


async def test_not_found_is_cached_for_the_shorter_ttl() -> None:
    inner = Inner()
    cache, clock = make(inner)
    missing = ByExternalId("github", "nope")
    assert await cache.resolve((missing,)) == NOT_FOUND
    clock.now += 9
    assert await cache.resolve((missing,)) == NOT_FOUND
    assert (len(inner.calls), cache.negative_hits) == (1, 1)
    clock.now += 1
    await cache.resolve((missing,))
    assert len(inner.calls) == 2


async def test_zero_negative_ttl_disables_negative_entries() -> None:
    inner = Inner()
    cache, _ = make(inner, negative_ttl_s=0)
    await cache.resolve((ByOrganization(5),))
    await cache.resolve((ByOrganization(5),))
    assert len(inner.calls) == 2
    assert len(cache) == 0


async def test_errors_are_not_cached() -> None:
    inner = Inner()
    inner.fail = True
    cache, _ = make(inner)
    with pytest.raises(DirectoryUnavailable):
        await cache.resolve((KEY,))
    inner.fail = False
    assert await cache.resolve((KEY,)) == GH
    assert (len(inner.calls), cache.errors) == (2, 1)


async def test_concurrent_misses_share_one_inner_call() -> None:
    inner = Inner()
    inner.gate = asyncio.Event()
    cache, _ = make(inner)
    waiters = [asyncio.create_task(cache.resolve((KEY,))) for _ in range(10)]
    await asyncio.sleep(0)
    inner.gate.set()
    assert await asyncio.gather(*waiters) == [GH] * 10
    assert inner.calls == [KEY]
    assert (cache.misses, cache.coalesced) == (10, 9)
    assert await cache.resolve((KEY,)) == GH and cache.hits == 1


async def test_a_shared_failure_reaches_every_waiter_and_is_not_cached() -> None:
    inner = Inner()
    inner.gate = asyncio.Event()
    inner.fail = True
    cache, _ = make(inner)
    waiters = [asyncio.create_task(cache.resolve((KEY,))) for _ in range(3)]
    await asyncio.sleep(0)
    inner.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, DirectoryUnavailable) for r in results)
    assert len(inner.calls) == 1 and len(cache) == 0


async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    inner = Inner()
    inner.gate = asyncio.Event()
    cache, _ = make(inner)
    first = asyncio.create_task(cache.resolve((KEY,)))
    second = asyncio.create_task(cache.resolve((KEY,)))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    inner.gate.set()
    assert await second == GH
    assert first.cancelled()
    assert len(cache) == 1


async def test_lru_bound_evicts_the_least_recently_used() -> None:
    a, b, c = ByIntegrationId(1), ByIntegrationId(2), ByIntegrationId(3)
    answers: dict[LookupKey, Resolution] = {
        k: Resolution(Integration(k.integration_id, "x", str(k.integration_id))) for k in (a, b, c)
    }
    inner = Inner(answers)
    cache, _ = make(inner, max_entries=2)
    await cache.resolve((a,))
    await cache.resolve((b,))
    await cache.resolve((a,))  # a is now the most recent
    await cache.resolve((c,))  # evicts b
    assert (len(cache), cache.evictions) == (2, 1)
    inner.calls.clear()
    await cache.resolve((a,))
    await cache.resolve((b,))
    assert inner.calls == [b]


async def test_keys_in_order_first_found_wins_and_each_key_is_cached() -> None:
    inner = Inner()
    cache, _ = make(inner)
    missing = ByIntegrationId(404)
    assert await cache.resolve((missing, KEY, ByOrganization(1))) == GH
    assert inner.calls == [missing, KEY]
    assert await cache.resolve((missing, KEY)) == GH
    assert inner.calls == [missing, KEY]
    assert cache.hits == 2


async def test_invalidate_all_forgets_everything() -> None:
    inner = Inner()
    cache, _ = make(inner)
    await cache.resolve((KEY,))
    cache.invalidate_all()
    assert len(cache) == 0 and cache.invalidations == 1
    await cache.resolve((KEY,))
    assert len(inner.calls) == 2


async def test_an_answer_read_before_an_invalidation_is_not_stored() -> None:
    inner = Inner()
    inner.gate = asyncio.Event()
    cache, _ = make(inner)
    stale = asyncio.create_task(cache.resolve((KEY,)))
    await asyncio.sleep(0)
    cache.invalidate_all()  # the row changed while the query was running
    inner.gate.set()
    assert await stale == GH  # its caller still gets an answer…
    assert len(cache) == 0  # …but the next caller asks again
    await cache.resolve((KEY,))
    assert len(inner.calls) == 2


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CachedDirectory(Inner(), max_entries=0)


async def test_cached_answers_warm_lookups_only_and_counts_each_hit_once() -> None:
    other = ByExternalId("github", "1")
    inner = Inner({KEY: GH})
    cache, clock = make(inner)
    assert cache.cached((KEY,)) is None  # cold: the caller must await resolve
    assert (cache.hits, cache.misses) == (0, 0)
    await cache.resolve((other,))  # a cached "not found"
    await cache.resolve((KEY,))
    assert cache.cached((other, KEY)) == GH  # negative first key, found second: both from the cache
    assert cache.cached((other,)) == NOT_FOUND
    assert (cache.hits, cache.negative_hits) == (3, 2)
    clock.now += 10.0  # the negative entry expired: the pair needs the database again
    assert cache.cached((other, KEY)) is None
    assert (cache.hits, cache.negative_hits) == (3, 2)  # nothing counted for a lookup it could not answer
    assert len(inner.calls) == 2
