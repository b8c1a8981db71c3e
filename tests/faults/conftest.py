"""Fault suite fixtures: a restartable PostgreSQL with the fault directory, and the figures summary.

Knobs (``faultkit``): ``SILO_FAULT_PHASE_S`` (seconds per phase under load) and
``SILO_FAULT_ROUNDS`` (faults per scenario); ``make faults`` raises both.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from faultkit import FAULT_DIRECTORY, WRITTEN, RestartablePostgres

from sidecar import db
from sidecar.directory.loader import load_directory


def prepare(url: str) -> None:
    async def run() -> None:
        await db.migrate(url)
        await load_directory(url, FAULT_DIRECTORY)

    asyncio.run(run())


@pytest.fixture
def restartable_pg() -> Iterator[RestartablePostgres]:
    """A PostgreSQL of the test's own that it may stop and start, migrated, fault directory loaded."""
    server = RestartablePostgres()
    try:
        prepare(server.url)
        yield server
    finally:
        server.cleanup()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures written by the fault scenarios that ran in this session."""
    if not WRITTEN:
        return
    terminalreporter.section("fault figures")
    for data in WRITTEN:
        timings = ", ".join(f"{k}={v:.2f}s" for k, v in data["timings_s"].items())
        terminalreporter.write_line(
            f"{data['scenario']}: faults {data['faults_survived']}/{data['faults_injected']}, "
            f"requests {data['requests']}, misrouted {data['misrouted']}, lost {data['lost']}, "
            f"unanswered {data['unanswered']}, duplicates {data['duplicates']}; {timings}"
        )
