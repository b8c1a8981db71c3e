"""Drop cached directory answers when the directory tables change (LISTEN silo_directory).

One dedicated autocommit connection, outside the pool: a pooled connection would be handed to
requests, and a notification only arrives on the connection that listens. Notifications sent
while that connection is down are lost, so every (re)connect flushes the cache once LISTEN is in
place. While the database is down the cache keeps answering (cached routes keep working through a
PostgreSQL restart); the cache TTL bounds how stale they can get.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Protocol

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "silo_directory"
APPLICATION_NAME = "silo-router-listen"


class Invalidates(Protocol):
    def invalidate_all(self) -> None: ...


async def listen_for_changes(
    dsn: str,
    cache: Invalidates,
    stop: asyncio.Event,
    *,
    poll_s: float = 1.0,
    backoff_s: float = 0.5,
    max_backoff_s: float = 30.0,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Invalidate ``cache`` on every directory change until ``stop`` is set; reconnect with backoff.

    ``poll_s`` bounds how long a set ``stop`` goes unnoticed. ``on_listening`` runs after each
    successful LISTEN (tests and health checks use it).
    """
    delay = backoff_s

    def listening() -> None:
        nonlocal delay
        delay = backoff_s  # connected again: the next outage starts over from the short delay
        if on_listening is not None:
            on_listening()

    while not stop.is_set():
        try:
            await _listen(dsn, cache, stop, poll_s, listening)
        except (psycopg.Error, OSError) as exc:
            log.warning("directory listener disconnected (%s); reconnecting in %.1fs", exc, delay)
        except Exception:
            # A bug must not end invalidation for the life of the process: log it and start over.
            log.exception("directory listener failed; restarting in %.1fs", delay)
        else:
            continue
        await _sleep_unless(stop, delay * random.uniform(0.8, 1.2))
        delay = min(delay * 2, max_backoff_s)


async def _listen(
    dsn: str, cache: Invalidates, stop: asyncio.Event, poll_s: float, on_listening: Callable[[], None]
) -> None:
    conn = await psycopg.AsyncConnection.connect(
        dsn,
        autocommit=True,
        application_name=APPLICATION_NAME,
        connect_timeout=10,
        # A silently dead TCP peer would otherwise leave us listening to nothing (ignored on unix sockets).
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )
    async with conn:
        await conn.execute("LISTEN silo_directory")  # = CHANNEL; LISTEN takes no parameters
        cache.invalidate_all()
        log.info("directory listener: LISTEN %s", CHANNEL)
        on_listening()
        while not stop.is_set():
            async for _ in conn.notifies(timeout=poll_s):
                # Any change drops everything: cheap, and always right, whatever the payload says.
                cache.invalidate_all()
                if stop.is_set():
                    break


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
