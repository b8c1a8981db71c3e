"""Hostile-input fixtures: one edge (real Envoy, sidecar, PostgreSQL, upstreams) for the session,
fail-closed, with every provider's secrets configured and the security directory loaded."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from harness import Edge, running_edge
from hostile import SECRETS, SECURITY_DIRECTORY, SENT

from sidecar import db
from sidecar.directory.loader import load_directory


@pytest.fixture(scope="session")
def security_database(server_url: str) -> Iterator[str]:
    """A schema of its own, migrated, with SECURITY_DIRECTORY loaded."""
    schema = f"silo_security_{os.getpid()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    url = make_conninfo(server_url, options=f"-c search_path={schema}")

    async def prepare() -> None:
        await db.migrate(url)
        await load_directory(url, SECURITY_DIRECTORY)

    try:
        asyncio.run(prepare())
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="session")
def hostile_edge(tmp_path_factory: pytest.TempPathFactory, security_database: str) -> Iterator[Edge]:
    with running_edge(tmp_path_factory.mktemp("hostile"), security_database, secrets=SECRETS) as edge:
        yield edge


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many hostile requests the suite sent (every one of them checked for misroutes)."""
    if not SENT["requests"]:
        return
    passed = len(terminalreporter.stats.get("passed", []))
    failed = len(terminalreporter.stats.get("failed", []))
    terminalreporter.section("hostile input")
    terminalreporter.write_line(f"{SENT['requests']:,} hostile requests sent to the real edge")
    figures = Path(__file__).resolve().parents[2] / "build" / "reliability"
    figures.mkdir(parents=True, exist_ok=True)
    record = {"requests": SENT["requests"], "tests_passed": passed, "tests_failed": failed}
    (figures / "security.json").write_text(json.dumps(record, indent=2) + "\n")
