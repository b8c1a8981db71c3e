"""Turn a run's results into the Markdown table, the target verdicts, the chart and the JSON file."""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.run import Results, Summary, median_ratio
from bench.scenarios import BY_NAME


@dataclass(frozen=True, slots=True)
class Target:
    label: str
    measured: float
    limit: float
    at_least: bool
    """True: measured must be ≥ limit; False: ≤ limit."""

    @property
    def met(self) -> bool:
        return self.measured >= self.limit if self.at_least else self.measured <= self.limit


def _ratio(results: Results, name: str, other: str | None, attribute: str = "rps") -> float | None:
    """The median over rounds of ``name`` / ``other`` measured in the same round (the two ran back
    to back); the ratio of medians when the rounds do not pair up."""
    if other is None or name not in results.summaries or other not in results.summaries:
        return None
    runs, below_runs = results.summaries[name].runs, results.summaries[other].runs
    if len(runs) == len(below_runs) and runs:
        return median_ratio([getattr(a, attribute) for a in runs], [getattr(b, attribute) for b in below_runs])
    below = results.summaries[other].median(attribute)
    return results.summaries[name].median(attribute) / below if below > 0 else None


def targets(results: Results) -> list[Target]:
    """The issue's targets, for one worker and for two."""
    found = []
    at_equal_load = {point.scenario: point for point in results.equal_load}
    for suffix, workers in (("", "1 worker"), ("_2w", "2 workers")):
        pairs = (
            (f"full_header{suffix}", "header-decided rps ≥ 0.9 × no-op", "rps", 0.9, True),
            (f"full_slack{suffix}", "body-decided rps ≥ 0.85 × no-op", "rps", 0.85, True),
            (f"full_header{suffix}", "header-decided CPU/req ≤ 1.1 × no-op", "sidecar_us", 1.1, False),
            (f"full_slack{suffix}", "body-decided CPU/req ≤ 1.1 × no-op", "sidecar_us", 1.1, False),
        )
        for name, label, attribute, limit, at_least in pairs:
            ratio = _ratio(results, name, BY_NAME[name].floor, attribute)
            if ratio is not None:
                found.append(Target(f"{label} ({workers})", ratio, limit, at_least))
        for name in (f"full_header{suffix}", f"full_slack{suffix}"):
            point = at_equal_load.get(name)
            if point is not None and point.ratio is not None:
                label = f"{BY_NAME[name].kind}-decided CPU/req ≤ 1.1 × no-op at equal load ({point.rate:.0f}/s"
                found.append(Target(f"{label}, {workers})", point.ratio, 1.1, False))
        store = f"full_store{suffix}"
        ratio = _ratio(results, store, BY_NAME[store].routed)
        if ratio is not None:
            found.append(Target(f"store-and-202 rps ≥ 0.7 × routed ({workers})", ratio, 0.7, True))
        for name in (f"noop_headers{suffix}", f"full_header{suffix}"):
            if suffix and name in results.summaries and results.summaries[name].split():
                smallest = min(results.summaries[name].split())
                found.append(Target(f"{name}: smaller worker's CPU share ≥ 0.4 (even split)", smallest, 0.4, True))
    return found


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(results: Results) -> str:
    rows = [
        "| scenario | workers | req/s (runs) | p50 ms | p99 ms | sidecar µs/req (split) | envoy µs/req | db µs/req "
        "| × no-op rps | × no-op CPU | × Envoy alone | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, summary in results.summaries.items():
        scenario = BY_NAME[name]
        runs = ", ".join(f"{run.rps:.0f}" for run in summary.runs)
        split = summary.split()
        sidecar = f"{summary.median('sidecar_us'):.0f}" if scenario.kind not in ("limit", "envoy") else "–"
        if split:
            sidecar += " (" + "/".join(f"{share * 100:.0f}%" for share in split) + ")"
        db_us = _db(summary)
        rows.append(
            f"| {name} — {summary.title} | {BY_NAME[name].variant[-1]} | **{summary.median('rps'):.0f}** ({runs}) "
            f"| {summary.median('p50_ms'):.2f} | {summary.median('p99_ms'):.2f} | {sidecar} "
            f"| {summary.median('envoy_us'):.0f} | {_fmt(db_us, 0)} "
            f"| {_fmt(_ratio(results, name, scenario.floor))} "
            f"| {_fmt(_ratio(results, name, scenario.floor, 'sidecar_us'))} "
            f"| {_fmt(_ratio(results, name, scenario.envoy))} | {int(summary.median('errors'))} |"
        )
    return "\n".join(rows)


def _db(summary: Summary) -> float | None:
    values = [run.db_us for run in summary.runs if run.db_us is not None]
    return sorted(values)[len(values) // 2] if values else None


def target_table(results: Results) -> str:
    rows = ["| target | measured | limit | met |", "|---|---|---|---|"]
    for target in targets(results):
        sign = "≥" if target.at_least else "≤"
        rows.append(f"| {target.label} | {target.measured:.2f} | {sign} {target.limit:.2f} | "
                    f"{'yes' if target.met else '**no**'} |")  # fmt: skip
    return "\n".join(rows)


def sweep_table(results: Results) -> str:
    if not results.sweep:
        return ""
    rows = ["| scenario | offered req/s | achieved req/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for point in results.sweep:
        rows.append(f"| {point.scenario} | {point.offered:.0f} | {point.achieved:.0f} | {point.p50_ms:.2f} "
                    f"| {point.p99_ms:.2f} |")  # fmt: skip
    return "\n".join(rows)


def equal_load_table(results: Results) -> str:
    if not results.equal_load:
        return ""
    rows = [
        "| scenario | no-op | offered req/s | no-op µs/req (runs) | sidecar µs/req (runs) | added µs | × no-op CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in results.equal_load:
        full, floor = statistics.median(p.sidecar_us), statistics.median(p.floor_us)
        rows.append(f"| {p.scenario} | {p.floor} | {p.rate:.0f} | {floor:.0f} ({_runs(p.floor_us)}) "
                    f"| {full:.0f} ({_runs(p.sidecar_us)}) | {full - floor:.0f} | {_fmt(p.ratio)} |")  # fmt: skip
    return "\n".join(rows)


def _runs(values: list[float]) -> str:
    return ", ".join(f"{value:.0f}" for value in values)


def directory_table(results: Results) -> str:
    if not results.directory:
        return ""
    rows = [
        "| integrations | load s | lookups | cold p50 µs | cold p99 µs | cold mean µs | warm p50 µs | warm p99 µs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in results.directory:
        rows.append(f"| {p.integrations:,} | {p.load_s:.1f} | {p.lookups} | {p.cold_p50_us:.0f} | {p.cold_p99_us:.0f} "
                    f"| {p.cold_mean_us:.0f} | {p.warm_p50_us:.1f} | {p.warm_p99_us:.1f} |")  # fmt: skip
    return "\n".join(rows)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"kernel": platform.release(), "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    info["cores"] = os.cpu_count()
    wrk = shutil.which("wrk")
    if wrk:
        done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
        info["wrk"] = (done.stdout or done.stderr).split("[")[0].strip()
    try:
        from sidecar.xds.envoy_binary import envoy_binary

        done = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, check=False)
        info["envoy"] = done.stdout.strip().rsplit("version: ", 1)[-1]
    except Exception:  # informational only
        pass
    import grpc

    info["grpcio"] = grpc.__version__
    return info


def markdown(results: Results, info: dict[str, Any], chart: Path | None) -> str:
    s = results.settings
    parts = [
        f"# silo-router benchmark, {results.started}",
        "",
        f"Machine: {info.get('cpu', '?')}, {info.get('cores')} cores, kernel {info.get('kernel')}; "
        f"Python {info.get('python')}, grpcio {info.get('grpcio')}, Envoy {info.get('envoy', '?')}, "
        f"{info.get('wrk', 'wrk')}.",
        f"Closed loop: wrk -t1 -c{s['connections']}, {s['rounds']} rounds × {s['duration_s']:.0f} s per scenario, "
        "medians. A ratio is the median of the per-round ratios of two scenarios measured back to back.",
        "",
        table(results),
        "",
        "## Targets",
        "",
        target_table(results),
    ]
    if results.equal_load:
        parts += [
            "",
            "## Sidecar CPU at equal offered load",
            "",
            f"Each scenario and its no-op paced (open loop) at the same rate, half the slower one's closed-loop "
            f"rate, {s['equal_load_s']:.0f} s each, back to back, {s['rounds']} rounds; the ratio is the median "
            "of the per-round ratios. At saturation the faster process also handles more streams per loop "
            "wakeup, which lowers its CPU per request: at one rate below both knees only the work differs.",
            "",
            equal_load_table(results),
        ]
    if results.sweep:
        parts += ["", "## Latency against offered rate (open loop)", ""]
        if chart is not None:
            parts += [f"![latency against offered rate]({chart.name})", ""]
        parts.append(sweep_table(results))
    if results.directory:
        parts += ["", "## Directory lookup against directory size", "", directory_table(results)]
    return "\n".join(parts) + "\n"


def chart(results: Results, path: Path) -> Path | None:
    if not results.sweep:
        return None
    try:
        import matplotlib
    except ImportError:
        print("no chart: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    names = list(dict.fromkeys(point.scenario for point in results.sweep))
    for axis, (attribute, label) in zip(axes, (("p50_ms", "p50"), ("p99_ms", "p99")), strict=True):
        for name in names:
            points = [p for p in results.sweep if p.scenario == name]
            axis.plot([p.offered for p in points], [getattr(p, attribute) for p in points], marker="o", label=name)
        axis.set_yscale("log")
        axis.set_xlabel("offered rate, requests/s (open loop)")
        axis.set_title(f"{label} latency")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ms (from scheduled start)")
    axes[1].legend(fontsize=8)
    figure.suptitle("silo-router: latency against offered rate (wrk, paced)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write(results: Results, folder: Path) -> tuple[Path, Path, str]:
    """``<timestamp>.json``, ``latest.md`` (+ ``latest.png``); returns (json, md, markdown text)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = results.started.replace(":", "").replace("-", "")[:15]
    info = machine()
    png = chart(results, folder / "latest.png")
    if png is not None:
        (folder / f"{stamp}.png").write_bytes(png.read_bytes())
    text = markdown(results, info, png)
    data = results.to_json() | {
        "machine": info,
        "targets": [
            {"label": t.label, "measured": t.measured, "limit": t.limit, "at_least": t.at_least, "met": t.met}
            for t in targets(results)
        ],
    }
    json_path = folder / f"{stamp}.json"
    json_path.write_text(json.dumps(data, indent=2))
    md_path = folder / "latest.md"
    md_path.write_text(text)
    return json_path, md_path, text
