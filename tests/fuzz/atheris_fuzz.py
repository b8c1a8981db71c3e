"""Coverage-guided fuzzing with atheris (libFuzzer for Python): the parsers, the ext_proc servicer
and the primitives, each target in its own process, with the same invariants as the hypothesis
suite. ``sidecar`` is instrumented, so libFuzzer keeps the inputs that reach new code.

    python tests/fuzz/atheris_fuzz.py                      # every target, default runs
    python tests/fuzz/atheris_fuzz.py --runs 20000 parsers # one target
    python tests/fuzz/atheris_fuzz.py --child parsers -runs=1000   # what the driver starts

Corpora persist in ``build/fuzz-corpus/<target>`` (a later run starts where the last one ended);
a crashing input lands in ``build/fuzz-crashes/`` and fails the run. Runs per target, time and
coverage go to ``build/reliability/fuzz-atheris.json``. Needs the ``fuzz`` extra (atheris).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
TARGETS = {"parsers": 400_000, "servicer": 120_000, "primitives": 250_000}
"""Default runs per target (``make fuzz``)."""


class FdpSource:
    """``fuzzkit.Source`` over atheris' FuzzedDataProvider: the fuzzer's bytes decide every choice."""

    def __init__(self, fdp: Any) -> None:
        self.fdp = fdp

    def integer(self, lo: int, hi: int) -> int:
        if hi - lo < 2**62:
            return int(self.fdp.ConsumeIntInRange(lo, hi))
        return lo + int.from_bytes(self.fdp.ConsumeBytes(9).ljust(9, b"\0"), "big") % (hi - lo + 1)

    def text(self, max_len: int) -> str:
        return str(self.fdp.ConsumeUnicode(self.fdp.ConsumeIntInRange(0, max_len)))

    def binary(self, max_len: int) -> bytes:
        return bytes(self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, max_len)))


def child(target: str, libfuzzer_args: list[str]) -> None:
    import warnings

    import atheris

    warnings.simplefilter("ignore")
    with atheris.instrument_imports(include=["sidecar"]):
        import sidecar.core
        import sidecar.core.jwt
        import sidecar.core.providers
        import sidecar.core.verify
        import sidecar.router
        import sidecar.wire.convert
        import sidecar.wire.servicer  # noqa: F401
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fuzzkit
    from test_fuzz_parsers import check_decision, run_edge_like, source_shape

    harness = fuzzkit.ServicerHarness() if target == "servicer" else None

    def parsers(data: bytes) -> None:
        src = FdpSource(atheris.FuzzedDataProvider(data))
        req = fuzzkit.source_request(src)
        ctx = fuzzkit.CONTEXTS[src.integer(0, len(fuzzkit.CONTEXTS) - 1)]
        shape = source_shape(src)  # type: ignore[arg-type]
        trace = run_edge_like(req, ctx, shape, src.text(40) or None)
        check_decision(trace, ctx)

    def servicer(data: bytes) -> None:
        assert harness is not None
        src = FdpSource(atheris.FuzzedDataProvider(data))
        messages = fuzzkit.source_messages(src)
        harness.check(messages, harness.run(messages, src.integer(0, 1)))

    def primitives(data: bytes) -> None:
        from sidecar.core import Request, jwt, verify
        from sidecar.core.classify import classify

        fdp = atheris.FuzzedDataProvider(data)
        token = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 300))
        secret = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 20))
        path = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 80))
        query = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 80))
        body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 400))
        jwt.peek(token)
        jwt.verify_hs256(token, secret, now=float(fdp.ConsumeIntInRange(0, 2**32)))
        jwt.verify_rs256(token, secret, now=0.0, audience="https://x")
        req = Request("POST", path, query, {"content-type": secret}, body)
        jwt.query_hash(req.method, req.path, req.query_params())
        req.json()
        req.form()
        classify(path)
        verify.slack_v0(secret or "k", 1.7e9, query, body, token)
        verify.discord_ed25519(fuzzkit.DISCORD_PUBLIC_HEX, query, body, token)
        verify.discord_ed25519(secret, query, body, token)

    functions = {"parsers": parsers, "servicer": servicer, "primitives": primitives}
    atheris.Setup([sys.argv[0], *libfuzzer_args], functions[target])
    atheris.Fuzz()


DONE = re.compile(r"Done (\d+) runs in (\d+) second")
COVERAGE = re.compile(r"cov: (\d+) ft: (\d+)")


def drive(targets: dict[str, int]) -> int:
    """Run each target in a child process; record runs, seconds and coverage; non-zero on a crash."""
    results: dict[str, Any] = {}
    failed = False
    for target, runs in targets.items():
        corpus = BUILD / "fuzz-corpus" / target
        crashes = BUILD / "fuzz-crashes"
        corpus.mkdir(parents=True, exist_ok=True)
        crashes.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        command = [
            sys.executable,
            __file__,
            "--child",
            target,
            f"-runs={runs}",
            f"-artifact_prefix={crashes}/{target}-",
            "-max_len=4096",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
            str(corpus),
        ]
        done = subprocess.run(command, capture_output=True, text=True, errors="replace", cwd=ROOT)
        seconds = time.monotonic() - started
        output = done.stderr + done.stdout
        found = DONE.search(output)
        coverage = COVERAGE.findall(output)
        ran = int(found.group(1)) if found else 0
        results[target] = {
            "runs": ran,
            "seconds": round(seconds, 1),
            "coverage_edges": int(coverage[-1][0]) if coverage else None,
            "features": int(coverage[-1][1]) if coverage else None,
            "exit": done.returncode,
        }
        status = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
        print(
            f"atheris {target:10} {ran:>9,} runs in {seconds:6.1f} s, cov {results[target]['coverage_edges']}: {status}"
        )
        if done.returncode != 0:
            failed = True
            print(output[-6000:], file=sys.stderr)
    total = sum(r["runs"] for r in results.values())
    print(f"atheris total     {total:>9,} runs")
    (BUILD / "reliability").mkdir(parents=True, exist_ok=True)
    record = {"total": total, "per_target": results}
    (BUILD / "reliability" / "fuzz-atheris.json").write_text(json.dumps(record, indent=2) + "\n")
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", choices=[*TARGETS, []], default=[])
    parser.add_argument("--runs", type=int, help="runs per target (default: each target's own)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the default runs")
    args = parser.parse_args()
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed (pip install -e '.[fuzz]'): skipping coverage-guided fuzzing")
        return 0
    chosen = args.targets or list(TARGETS)
    return drive({t: args.runs or max(1, int(TARGETS[t] * args.scale)) for t in chosen})


if __name__ == "__main__":
    sys.exit(main())
