"""``asyncio.timeout`` for many short tasks: one periodic check instead of one timer per request.

Every routed message used to arm its own ``asyncio.timeout``: a timer handle pushed on the event
loop's heap and cancelled a few hundred microseconds later, twice per body-routed webhook. In the
running sidecar that cost ~230 µs of CPU per webhook (docs/performance.md, "what helped"). Here
each ``budget()`` scope only records its deadline in a set; one watchdog task per loop wakes every
``resolution_s`` and cancels the tasks past theirs, which then see ``TimeoutError`` exactly as
with ``asyncio.timeout`` (same cancel/uncancel bookkeeping, so an outside cancellation is never
mistaken for an expired budget). A budget may overrun by up to ``resolution_s``.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

IDLE_LINGER_S = 1.0
"""The watchdog stays this long after the last scope, so steady traffic never restarts it."""


class Deadlines:
    def __init__(self, seconds: float, resolution_s: float | None = None) -> None:
        self.seconds = seconds
        self.resolution_s = resolution_s if resolution_s is not None else min(0.05, max(seconds / 10, 0.001))
        self._scopes: set[_Scope] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def budget(self, seconds: float | None = None) -> _Scope:
        """``async with deadlines.budget():`` raises ``TimeoutError`` once ``seconds`` (default: the
        one given to the constructor) have passed."""
        return _Scope(self, self.seconds if seconds is None else seconds)

    def _enter(self, scope: _Scope, loop: asyncio.AbstractEventLoop) -> None:
        self._scopes.add(scope)
        watchdog = self._watchdog
        if watchdog is None or watchdog.done() or watchdog.get_loop() is not loop:
            self._watchdog = loop.create_task(self._watch(), name="silo-budget-watchdog")

    def _exit(self, scope: _Scope) -> None:
        self._scopes.discard(scope)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        idle_since: float | None = None
        while True:
            await asyncio.sleep(self.resolution_s)
            now = loop.time()
            if not self._scopes:
                idle_since = now if idle_since is None else idle_since
                if now - idle_since >= IDLE_LINGER_S:
                    return
                continue
            idle_since = None
            for scope in [s for s in self._scopes if s.deadline <= now and not s.expired]:
                scope.expire()


class _Scope:
    __slots__ = ("_cancelling", "_owner", "_seconds", "_task", "deadline", "expired")

    def __init__(self, owner: Deadlines, seconds: float) -> None:
        self._owner = owner
        self._seconds = seconds
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self.deadline = 0.0
        self.expired = False

    async def __aenter__(self) -> _Scope:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a budget needs a running task")
        loop = task.get_loop()
        self._task = task
        self._cancelling = task.cancelling()
        self.deadline = loop.time() + self._seconds
        self._owner._enter(self, loop)
        return self

    def expire(self) -> None:
        self.expired = True
        if self._task is not None:
            self._task.cancel()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._owner._exit(self)
        # As asyncio.timeout: ours was the only cancellation pending, so it is a timeout.
        ours = self.expired and self._task is not None and self._task.uncancel() <= self._cancelling
        if ours and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
