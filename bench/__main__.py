"""``python -m bench`` (``make bench``): see ``bench/__init__.py`` and docs/performance.md."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench import report
from bench.run import run
from bench.scenarios import BY_NAME, SCENARIOS, SWEEP, SWEEP_FRACTIONS
from sidecar.wire.server import DEFAULT_LOOP, LOOPS

DIRECTORY_SIZES = (10_000, 100_000, 1_000_000)


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="silo-router side-by-side benchmark")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per closed-loop run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per scenario (the median is reported)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    parser.add_argument(
        "--sweep-fractions",
        default=",".join(map(str, SWEEP_FRACTIONS)),
        help="offered rates as fractions of each scenario's closed-loop rate; '' skips the sweep",
    )
    parser.add_argument("--sweep-rates", default="", help="absolute offered rates instead of fractions")
    parser.add_argument("--sweep-duration", type=float, default=3.0)
    parser.add_argument(
        "--equal-load-duration",
        type=float,
        default=3.0,
        help="seconds per paced run comparing each scenario's CPU with its no-op's at one rate; 0 skips",
    )
    parser.add_argument("--sweep", default=",".join(SWEEP), help="scenarios in the latency chart")
    parser.add_argument("--directory-sizes", default=",".join(map(str, DIRECTORY_SIZES)), help="'' skips")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load per scenario first")
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default=DEFAULT_LOOP,
        help="event loop of every sidecar, no-op and real alike (default: the product's)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 s, a short sweep, 10k/100k only")
    parser.add_argument("--list", action="store_true", help="print the scenario names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(scenario.name for scenario in SCENARIOS))
        return 0
    if args.quick:
        args.duration, args.rounds, args.sweep_duration = 3.0, 2, 2.0
        args.sweep_fractions, args.directory_sizes = "0.25,0.5,0.75,1.0", "10000,100000"
        args.equal_load_duration = 2.0
    names = [name for name in args.only.split(",") if name]
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    scenarios = [s for s in SCENARIOS if not names or s.name in names]
    sweep_names = [name for name in args.sweep.split(",") if name]
    with tempfile.TemporaryDirectory(prefix="silo-bench-") as workdir:
        results = run(
            Path(workdir),
            scenarios=scenarios,
            duration_s=args.duration,
            rounds=args.rounds,
            connections=args.connections,
            sweep_names=sweep_names,
            sweep_rates=_floats(args.sweep_rates),
            sweep_fractions=_floats(args.sweep_fractions),
            sweep_duration_s=args.sweep_duration,
            equal_load_s=args.equal_load_duration,
            directory_sizes=_numbers(args.directory_sizes),
            warmup_s=args.warmup,
            loop=args.loop,
        )
    json_path, md_path, text = report.write(results, args.out)
    print()
    print(text)
    print(f"results: {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
