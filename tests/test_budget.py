"""Deadlines: asyncio.timeout's behaviour with one watchdog instead of a timer per scope."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.budget import Deadlines


async def test_work_within_the_budget_is_untouched() -> None:
    deadlines = Deadlines(1.0)
    async with deadlines.budget():
        await asyncio.sleep(0.01)
    assert not deadlines._scopes


async def test_an_overrun_raises_timeout_error_within_the_resolution() -> None:
    deadlines = Deadlines(0.05, resolution_s=0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with deadlines.budget():
            await asyncio.sleep(5)
    assert 0.05 <= loop.time() - started < 0.5
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_many_concurrent_scopes_expire_independently() -> None:
    deadlines = Deadlines(0.05, resolution_s=0.01)

    async def work(seconds: float) -> str:
        try:
            async with deadlines.budget():
                await asyncio.sleep(seconds)
        except TimeoutError:
            return "timeout"
        return "done"

    answers = await asyncio.gather(*(work(0.001 if n % 2 else 5) for n in range(20)))
    assert answers == ["timeout", "done"] * 10


async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    deadlines = Deadlines(5.0, resolution_s=0.01)

    async def work() -> None:
        async with deadlines.budget():
            await asyncio.sleep(5)

    task = asyncio.create_task(work())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
