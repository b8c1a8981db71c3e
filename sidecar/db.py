"""PostgreSQL plumbing: where the database is, the connection pool, and the schema migrations.

With no ``database_url`` the database is a private PostgreSQL from the ``pgserver`` wheel, kept in
``<data_dir>/pg``. pgserver shares one running server per data folder between processes: it
reads ``postmaster.pid`` and reuses the live server, keeps the pids of the processes using it in
``.handle_pids.json`` (under a machine-wide file lock), and the last of them to exit stops it. So
``silo-router migrate`` run beside ``silo-router up`` reaches the server ``up`` started, and leaves it
running when it exits.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
import weakref
from collections.abc import Callable
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Protocol, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from sidecar.config import Settings

log = logging.getLogger(__name__)

Pool: TypeAlias = AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]

MIGRATION_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")
MIGRATION_LOCK = 0x5110_0001
"""Advisory lock key held while migrating, so two processes never apply the same file twice."""
CHECK_IDLE_S = 1.0
"""A pooled connection handed out less than this long ago is handed out again without a test."""


class EmbeddedServer(Protocol):
    def get_uri(self, database: str | None = None) -> str: ...

    def cleanup(self) -> None: ...


def database_url(settings: Settings) -> str:
    """``settings.database_url``, else the URL of the embedded server in ``data_dir/pg`` (started if needed).

    Blocking (it may run initdb and pg_ctl): call it through ``asyncio.to_thread`` from async code.
    """
    if settings.database_url:
        return settings.database_url
    return embedded_server(settings.data_dir / "pg").get_uri()


def embedded_server(pgdata: Path, *, stop_at_exit: bool = True) -> EmbeddedServer:
    """The pgserver instance for ``pgdata``, started unless another process already runs it.

    ``stop_at_exit``: stop the server when the last process using it exits.
    """
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers); it falls back to /tmp.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server
    pg_log = logging.getLogger("pgserver")
    if pg_log.level == logging.NOTSET:
        # Its INFO lines replay every initdb / pg_ctl output: noise in the banner of `up`.
        pg_log.setLevel(logging.WARNING)
    _forget_dead_users(pgdata)
    server: EmbeddedServer = get_server(pgdata, cleanup_mode="stop" if stop_at_exit else None)
    return server


def _forget_dead_users(pgdata: Path) -> None:
    # pgserver stops the server when the last pid in .handle_pids.json exits; a process killed with
    # SIGKILL never removes its pid, and the server would then outlive every later run.
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    from pgserver.postgres_server import PostgresServer

    try:
        with PostgresServer._lock:
            pids = json.loads(handles.read_text())
            alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
            if alive != pids:
                handles.write_text(json.dumps(alive))
    except (OSError, ValueError) as exc:
        log.warning("cannot tidy %s: %s", handles, exc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def redact(dsn: str) -> str:
    """``dsn`` without its password, for logs and banners."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable database url>"
    if not params.get("password"):
        return dsn
    parts = urlsplit(dsn)
    user, at, host = parts.netloc.rpartition("@")
    if parts.scheme and at and ":" in user:
        return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))
    params["password"] = "***"
    return make_conninfo("", **params)


class CheckWhenIdle:
    """The pool's ``check``: test a connection (an empty query, one round trip) only when it was
    last handed out more than ``idle_s`` seconds ago, or is known to be broken.

    Testing on every checkout cost a round trip per transaction: ~170 µs of sidecar CPU per outbox
    batch (``python -m bench.outbox_cpu``), a third of a one-webhook batch's. What the test
    catches is a connection that died while it sat unused: the server restarted, a proxy or
    ``idle_session_timeout`` closed it. One in steady use is tested by its own statements; if it
    broke since, that statement fails as any statement can when the server goes away (the caller
    answers 503, the provider retries) and the pool drops the connection when it comes back.
    """

    def __init__(self, idle_s: float = CHECK_IDLE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self._clock = clock
        # Weak keys: the pool alone decides how long a connection lives.
        self._handed_out: weakref.WeakKeyDictionary[psycopg.AsyncConnection[TupleRow], float]
        self._handed_out = weakref.WeakKeyDictionary()

    async def __call__(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        now = self._clock()
        last = self._handed_out.get(conn)
        if last is None or now - last > self.idle_s or conn.broken:
            await AsyncConnectionPool.check_connection(conn)  # raises: the pool drops it, tries another
        self._handed_out[conn] = now


# `timeout` configures the pool (also the wait for a free connection); it is not this call's deadline.
async def open_pool(
    dsn: str,
    max_size: int = 8,
    timeout: float = 5.0,  # noqa: ASYNC109
    *,
    min_size: int = 2,
    check: bool = True,
    check_idle_s: float = CHECK_IDLE_S,
) -> Pool:
    """An open pool holding ``min_size`` working connections; ``PoolTimeout`` after ``timeout`` seconds.

    ``timeout`` also bounds how long a request waits for a free connection. Connections are in
    autocommit: a single statement is its own transaction and costs one round trip (no BEGIN /
    COMMIT); code that needs more opens ``conn.transaction()``. ``check`` tests a connection
    before handing it out (one more round trip) when it was last handed out more than
    ``check_idle_s`` seconds ago (``0``: every time; see ``CheckWhenIdle``); a caller that
    retries failures anyway may skip it.
    """
    pool: Pool = AsyncConnectionPool(
        dsn,
        min_size=min(min_size, max_size),
        max_size=max_size,
        timeout=timeout,
        open=False,
        check=CheckWhenIdle(check_idle_s) if check else None,
        kwargs={"autocommit": True, "application_name": "silo-router"},
        name="silo-router",
    )
    try:
        await pool.open(wait=True, timeout=timeout)
    except BaseException:
        await pool.close()
        raise
    return pool


def migration_files() -> list[tuple[str, Traversable]]:
    """The ``sidecar/sql/NNNN_name.sql`` files in order, as (version, file); version = file stem."""
    folder = resources.files("sidecar").joinpath("sql")
    found = [(entry.name.removesuffix(".sql"), entry) for entry in folder.iterdir() if MIGRATION_NAME.match(entry.name)]
    numbers = [version[:4] for version, _ in found]
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicates:
        raise RuntimeError(f"two migrations share a number: {', '.join(duplicates)}")
    return sorted(found)


async def migrate(dsn: str) -> list[str]:
    """Apply the migrations not yet recorded in ``schema_migrations``, each in its own transaction.

    Returns the versions applied now (empty when the schema is up to date). Safe to run from
    several processes at once: they queue on an advisory lock and the later ones find nothing to do.
    """
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            return await _apply_pending(conn)
        finally:
            if not conn.closed:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


async def _apply_pending(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    cur = await conn.execute("SELECT version FROM schema_migrations")
    done = {row[0] for row in await cur.fetchall()}
    applied = []
    for version, file in migration_files():
        if version in done:
            continue
        async with conn.transaction():
            # Bytes and no parameters: psycopg sends the file as one simple query, several statements allowed.
            await conn.execute(file.read_bytes())
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        log.info("applied migration %s", version)
        applied.append(version)
    return applied
