"""Hostile-input fixtures: one edge (real Envoy, sidecar, PostgreSQL, upstreams) for the session,
fail-closed, with every provider's secrets configured and the security directory loaded."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from harness import Edge, loaded_schema, running_edge
from hostile import SECRETS, SECURITY_DIRECTORY, SENT


@pytest.fixture(scope="session")
def security_database(server_url: str) -> Iterator[str]:
    """A schema of its own, migrated and loaded with SECURITY_DIRECTORY."""
    with loaded_schema(server_url, "security", SECURITY_DIRECTORY) as url:
        yield url


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
