"""Print the inputs the last ``make fuzz`` tried, per fuzzer and target, from build/reliability/."""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIGURES = Path(__file__).resolve().parents[2] / "build" / "reliability"


def main() -> int:
    total = 0
    rows: list[tuple[str, int, float | None]] = []
    hypothesis = FIGURES / "fuzz-hypothesis-fuzz.json"
    if hypothesis.exists():
        data = json.loads(hypothesis.read_text())
        for target, count in sorted(data["per_target"].items()):
            rows.append((f"hypothesis {target}", count, None))
        rows.append(("hypothesis (all, seconds)", data["total"], data["seconds"]))
        total += data["total"]
    atheris = FIGURES / "fuzz-atheris.json"
    if atheris.exists():
        data = json.loads(atheris.read_text())
        for target, result in data["per_target"].items():
            rows.append((f"atheris {target} (cov {result['coverage_edges']})", result["runs"], result["seconds"]))
        total += data["total"]
    for name, count, seconds in rows:
        print(f"{name:48} {count:>10,}" + (f"  {seconds:.0f} s" if seconds is not None else ""))
    print(f"{'inputs tried in all':48} {total:>10,}")
    return 0 if total else 1


if __name__ == "__main__":
    sys.exit(main())
