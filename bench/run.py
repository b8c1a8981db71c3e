"""One benchmark run: start the stack, check every scenario answers as it should, then measure.

Rounds: every scenario runs once per round, for ``duration`` seconds, next to the no-op it is
compared with (the order reversed every other round); the reported figure is the median over
rounds, and a ratio is the median of the ratios measured within each round. On a 2-core machine shared by
wrk, Envoy, the sidecar and PostgreSQL, runs vary by ±10–40 %: side by side in one run, ratios
are far steadier than absolute numbers.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import cpu, load
from bench.directory_scale import DirectoryPoint, directory_scale
from bench.load import WrkResult
from bench.scenarios import BY_NAME, SCENARIOS, SWEEP, Scenario
from bench.stack import Stack, Variant
from bench.webhooks import HttpRequest
from sidecar.wire.server import DEFAULT_LOOP

Say = Callable[[str], None]
Drive = Callable[[str, HttpRequest], WrkResult]
"""Load one edge (its base URL) with one request: closed loop or paced."""


@dataclass(frozen=True, slots=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    sidecar_us: float
    """Sidecar CPU (all its processes) per request, µs."""
    sidecar_split: tuple[float, ...]
    """Each worker's share of the sidecar CPU, 0..1."""
    envoy_us: float
    db_us: float | None
    machine_busy: float


@dataclass
class Summary:
    scenario: str
    title: str
    variant: str
    kind: str
    runs: list[Run] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(float(getattr(run, attribute)) for run in self.runs)

    def split(self) -> tuple[float, ...]:
        if not self.runs or not self.runs[0].sidecar_split:
            return ()
        width = len(self.runs[0].sidecar_split)
        return tuple(statistics.median(run.sidecar_split[i] for run in self.runs) for i in range(width))


@dataclass(frozen=True, slots=True)
class SweepPoint:
    scenario: str
    offered: float
    achieved: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True, slots=True)
class EqualLoad:
    """Sidecar CPU per request of a scenario and of its no-op, both paced at the same offered rate.

    At saturation (the closed loop) a process that handles more requests per second also handles
    more streams per loop wakeup, and its CPU per request falls (the no-op's most, being fastest):
    the closed-loop CPU ratio mixes the added work with that. At one offered rate below both
    knees, both see the same arrivals and the ratio is the work alone.
    """

    scenario: str
    floor: str
    rate: float
    sidecar_us: list[float]
    """The scenario's sidecar CPU per request, one per round."""
    floor_us: list[float]
    """The no-op's, measured back to back with it in the same round."""

    @property
    def ratio(self) -> float | None:
        return median_ratio(self.sidecar_us, self.floor_us)


def median_ratio(values: Sequence[float], below: Sequence[float]) -> float | None:
    """The median of ``values[i] / below[i]``, each pair measured in the same round; None when no
    pair has a denominator."""
    ratios = [a / b for a, b in zip(values, below, strict=True) if b > 0]
    return statistics.median(ratios) if ratios else None


@dataclass
class Results:
    started: str
    settings: dict[str, Any]
    summaries: dict[str, Summary] = field(default_factory=dict)
    sweep: list[SweepPoint] = field(default_factory=list)
    directory: list[DirectoryPoint] = field(default_factory=list)
    equal_load: list[EqualLoad] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "settings": self.settings,
            "scenarios": {
                name: {
                    "title": s.title,
                    "variant": s.variant,
                    "kind": s.kind,
                    "median": {
                        key: s.median(key)
                        for key in ("rps", "p50_ms", "p99_ms", "sidecar_us", "envoy_us", "errors", "machine_busy")
                    }
                    | {"sidecar_split": s.split(), "db_us": _median_or_none(s, "db_us")},
                    "runs": [asdict(run) for run in s.runs],
                }
                for name, s in self.summaries.items()
            },
            "sweep": [asdict(point) for point in self.sweep],
            "directory": [asdict(point) for point in self.directory],
            "equal_load": [asdict(point) | {"ratio": point.ratio} for point in self.equal_load],
        }


def _median_or_none(summary: Summary, attribute: str) -> float | None:
    values = [getattr(run, attribute) for run in summary.runs if getattr(run, attribute) is not None]
    return statistics.median(values) if values else None


def check(stack: Stack, scenario: Scenario) -> None:
    """One request by hand: the status and the upstream that answered must be the expected ones."""
    edge = stack.edges[scenario.variant]
    request = scenario.build()
    answer = httpx.request(
        request.method, edge.url + request.path, headers=dict(request.headers), content=request.body, timeout=10
    )
    body_ok = scenario.expect_body is None or answer.text == scenario.expect_body
    if answer.status_code != scenario.expect_status or not body_ok:
        raise RuntimeError(
            f"{scenario.name}: expected {scenario.expect_status} from {scenario.expect_body or 'the sidecar'}, "
            f"got {answer.status_code} {answer.text[:200]!r}"
        )


def measure(stack: Stack, scenario: Scenario, drive: Drive) -> Run:
    edge = stack.edges[scenario.variant]
    assert stack.db is not None and stack.upstream is not None
    sidecar_pids = [child.pid for child in edge.sidecars]
    groups = {"sidecar": sidecar_pids, "envoy": [edge.envoy.pid]}
    trees = {"db": stack.db.postmaster} if stack.db.postmaster is not None else {}
    before = cpu.sample(groups, trees)
    result = drive(edge.url, scenario.build())
    after = cpu.sample(groups, trees)
    used = cpu.delta(before, after)
    requests = max(result.requests, 1)
    sidecar_total = sum(used["sidecar"])
    split = tuple(value / sidecar_total if sidecar_total > 0 else 0.0 for value in used["sidecar"])
    return Run(
        rps=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors,
        requests=result.requests,
        sidecar_us=sidecar_total / requests * 1e6,
        sidecar_split=split if len(split) > 1 else (),
        envoy_us=used["envoy"][0] / requests * 1e6,
        db_us=used["db"][0] / requests * 1e6 if "db" in used else None,
        machine_busy=cpu.busy_share(before, after),
    )


def sweep(
    stack: Stack, names: Sequence[str], rates: Callable[[str], Sequence[float]], duration_s: float, say: Say
) -> list[SweepPoint]:
    """Latency against offered rate, each scenario up to its first saturated rate."""
    points = []
    for name in names:
        scenario = BY_NAME[name]
        edge = stack.edges[scenario.variant]
        for rate in rates(name):
            result = load.paced(edge.url, scenario.build(), rate, duration_s)
            point = SweepPoint(name, rate, result.rps, result.p50_ms, result.p99_ms, result.errors)
            points.append(point)
            say(f"  sweep {name:<16} offered {rate:>6.0f}/s  got {result.rps:>7.0f}/s  "
                f"p50 {result.p50_ms:>8.2f} ms  p99 {result.p99_ms:>8.2f} ms")  # fmt: skip
            if result.rps < 0.9 * rate:
                break  # saturated: past here latency only grows with the queue
    return points


def equal_load(
    stack: Stack, results: Results, names: Sequence[str], duration_s: float, rounds: int, say: Say
) -> list[EqualLoad]:
    """Each compared scenario and its no-op, paced at half the slower one's closed-loop rate
    (below both knees: no queue, the same arrivals), back to back, the order swapped each round."""
    points = []
    for name in names:
        scenario = BY_NAME[name]
        floor = BY_NAME[scenario.floor] if scenario.floor is not None else None
        if floor is None or floor.name not in results.summaries or not results.summaries[name].runs:
            continue
        slower = min(results.summaries[name].median("rps"), results.summaries[floor.name].median("rps"))
        rate = round(slower / 2, -1) or 10.0

        def drive(url: str, request: HttpRequest, rate: float = rate) -> WrkResult:
            return load.paced(url, request, rate, duration_s)

        measured: dict[str, list[float]] = {name: [], floor.name: []}
        for round_index in range(rounds):
            for each in (scenario, floor) if round_index % 2 == 0 else (floor, scenario):
                measured[each.name].append(measure(stack, each, drive).sidecar_us)
        point = EqualLoad(name, floor.name, rate, measured[name], measured[floor.name])
        points.append(point)
        say(f"  equal load {name:<16} vs {floor.name:<16} at {rate:>6.0f}/s: sidecar "
            f"{statistics.median(point.sidecar_us):5.0f} vs {statistics.median(point.floor_us):5.0f} µs/req "
            f"(× {point.ratio or 0:.2f})")  # fmt: skip
    return points


def paired_order(scenarios: Sequence[Scenario]) -> list[Scenario]:
    """Each scenario next to the no-op it is compared with: ``noop_body, full_slack, full_store``."""
    group_of = {s.name: s.floor or s.name for s in scenarios}
    groups: dict[str, list[Scenario]] = {}
    for scenario in scenarios:
        groups.setdefault(group_of[scenario.name], []).append(scenario)
    return [scenario for group in groups.values() for scenario in sorted(group, key=lambda s: s.floor is not None)]


def run(
    workdir: Path,
    *,
    scenarios: Sequence[Scenario] = SCENARIOS,
    duration_s: float = 5.0,
    rounds: int = 3,
    connections: int = 32,
    sweep_names: Sequence[str] = SWEEP,
    sweep_rates: Sequence[float] = (),
    sweep_fractions: Sequence[float] = (),
    sweep_duration_s: float = 3.0,
    equal_load_s: float = 3.0,
    directory_sizes: Sequence[int] = (),
    warmup_s: float = 1.0,
    loop: str = DEFAULT_LOOP,
    say: Say = print,
) -> Results:
    sweeping = bool(sweep_rates or sweep_fractions)
    needed = sorted({s.variant for s in scenarios} | {BY_NAME[n].variant for n in sweep_names if sweeping})
    from bench.scenarios import VARIANTS

    variants: list[Variant] = [v for v in VARIANTS if v.name in needed]
    results = Results(
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        settings={
            "duration_s": duration_s,
            "rounds": rounds,
            "connections": connections,
            "sweep_rates": list(sweep_rates),
            "sweep_fractions": list(sweep_fractions),
            "sweep_duration_s": sweep_duration_s,
            "equal_load_s": equal_load_s,
            "directory_sizes": list(directory_sizes),
            "warmup_s": warmup_s,
            "python": sys.version.split()[0],
            "loop": loop,
        },
    )
    say(f"starting PostgreSQL, the upstream and {len(variants)} edges in {workdir}")
    with Stack(workdir, variants, loop=loop) as stack:
        for scenario in scenarios:
            check(stack, scenario)
            results.summaries[scenario.name] = Summary(scenario.name, scenario.title, scenario.variant, scenario.kind)
        say("every scenario answers as expected; warming up")
        for scenario in scenarios if warmup_s > 0 else ():
            load.closed_loop(stack.edges[scenario.variant].url, scenario.build(), warmup_s, connections)
        paired = paired_order(scenarios)

        def closed(url: str, request: HttpRequest) -> WrkResult:
            return load.closed_loop(url, request, duration_s, connections)

        for round_index in range(rounds):
            # Compared scenarios run back to back, first one then the other first (A B, B A, ...):
            # the machine's load drifts over minutes, and a pair measured seconds apart sees the same.
            order = paired if round_index % 2 == 0 else paired[::-1]
            for scenario in order:
                measured = measure(stack, scenario, closed)
                results.summaries[scenario.name].runs.append(measured)
                say(f"  round {round_index + 1}/{rounds} {scenario.name:<18} {measured.rps:>8.0f}/s  "
                    f"p50 {measured.p50_ms:6.2f} ms  p99 {measured.p99_ms:7.2f} ms  "
                    f"sidecar {measured.sidecar_us:6.0f} µs/req")  # fmt: skip
        if equal_load_s > 0:
            say("sidecar CPU at equal offered load (paced, no-op and sidecar back to back)")
            compared = [s.name for s in scenarios if s.floor is not None]
            results.equal_load = equal_load(stack, results, compared, equal_load_s, rounds, say)
        if sweeping:
            say("open-loop sweep (latency against offered rate)")

            def rates(name: str) -> Sequence[float]:
                # Fractions of the scenario's own closed-loop rate, so every curve shows its knee.
                measured = results.summaries.get(name)
                if sweep_rates or measured is None or not measured.runs:
                    return sweep_rates or [100 * f for f in sweep_fractions]
                return [round(measured.median("rps") * f, -1) or 10 for f in sweep_fractions]

            results.sweep = sweep(stack, sweep_names, rates, sweep_duration_s, say)
        if directory_sizes:
            say("directory lookup cost against directory size")
            assert stack.db is not None
            results.directory = asyncio.run(directory_scale(stack.db.url, directory_sizes, say))
    return results
