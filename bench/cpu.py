"""CPU time of processes from /proc: utime + stime, all threads, in seconds."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def process_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of ``pid`` (and of its reaped children when ``children``); 0 when gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the name: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17), numbered from 1.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def tree_seconds(root: int) -> float:
    """A server and its worker processes (PostgreSQL's postmaster and backends): live children
    count directly, exited ones through the parent's cutime/cstime."""
    return process_seconds(root, children=True) + sum(process_seconds(pid) for pid in children_of(root))


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return float(sum(values) - idle), float(sum(values))


@dataclass(frozen=True, slots=True)
class Sample:
    """CPU seconds per named group of processes, plus the machine counters, at one moment."""

    groups: Mapping[str, tuple[float, ...]]
    busy: float
    total: float


def sample(groups: Mapping[str, Iterable[int]], trees: Mapping[str, int] | None = None) -> Sample:
    taken = {name: tuple(process_seconds(pid) for pid in pids) for name, pids in groups.items()}
    for name, root in (trees or {}).items():
        taken[name] = (tree_seconds(root),)
    busy, total = machine_busy()
    return Sample(taken, busy, total)


def delta(before: Sample, after: Sample) -> dict[str, tuple[float, ...]]:
    return {
        name: tuple(b - a for a, b in zip(before.groups[name], values, strict=True))
        for name, values in after.groups.items()
    }


def busy_share(before: Sample, after: Sample) -> float:
    """Share of the whole machine (all cores) that was busy between the samples, 0..1."""
    total = after.total - before.total
    return (after.busy - before.busy) / total if total > 0 else 0.0
