"""Fuzz suite: the profile comes from HYPOTHESIS_PROFILE (ci by default, fuzz for ``make fuzz``);
the inputs each test actually ran are counted and written to build/reliability/fuzz.json."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzkit


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.fuzz)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not fuzzkit.COUNTS:
        return
    total = sum(fuzzkit.COUNTS.values())
    elapsed = time.monotonic() - fuzzkit.STARTED
    terminalreporter.section(f"fuzz inputs ({fuzzkit.PROFILE} profile)")
    for name, count in sorted(fuzzkit.COUNTS.items()):
        terminalreporter.write_line(f"{name:45} {count:>9,}")
    terminalreporter.write_line(f"{'total':45} {total:>9,}  in {elapsed:.0f} s")
    fuzzkit.FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    record = {
        "profile": fuzzkit.PROFILE,
        "total": total,
        "seconds": round(elapsed, 1),
        "per_target": dict(fuzzkit.COUNTS),
    }
    (fuzzkit.FIGURES_DIR / f"fuzz-hypothesis-{fuzzkit.PROFILE}.json").write_text(json.dumps(record, indent=2) + "\n")
