"""``silo-router providers``: the provider table, read from the parser modules themselves.

The README's provider table is this module's Markdown output (a test compares them), so the
documentation cannot drift from the code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from sidecar.core.providers import PROVIDERS, ProviderSpec
from sidecar.core.providers._spec import View

_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?:[^()]|\([^()]*\))*\)")
_OPTIONAL_GROUP = re.compile(r"\(\?:(?P<body>[^()]*)\)\?")


@dataclass(frozen=True, slots=True)
class ProviderRow:
    provider: str
    paths: list[str]
    id_source: str
    control_only: list[str]
    decision: str


def display_path(spec: ProviderSpec, view: View) -> str:
    """``webhook/(?P<x>[^/]+)/`` → ``/extensions/p/webhook/<x>/``: the regex as a person reads it."""
    text = _GROUP.sub(lambda found: f"<{found.group('name')}>", view.pattern)
    text = _OPTIONAL_GROUP.sub(lambda found: f"[{found.group('body')}]", text)
    text = text.replace(".*", "…").replace("\\", "")
    return spec.prefix + text


def rows(providers: Mapping[str, ProviderSpec] = PROVIDERS) -> list[ProviderRow]:
    return [
        ProviderRow(
            provider=name,
            paths=[display_path(spec, view) for view in spec.views if not view.control_only],
            id_source=spec.id_source,
            control_only=[display_path(spec, view) for view in spec.views if view.control_only],
            decision=spec.delivery,
        )
        for name, spec in sorted(providers.items())
    ]


HEADERS = ("provider", "routed paths", "identified by", "control-only views", "decision")


def _cells(row: ProviderRow, joiner: str, quote: str = "") -> tuple[str, ...]:
    def paths(items: list[str]) -> str:
        return joiner.join(f"{quote}{item}{quote}" for item in items) or "—"

    return (row.provider, paths(row.paths), row.id_source, paths(row.control_only), row.decision)


def markdown(table: list[ProviderRow]) -> str:
    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    out = [line(HEADERS), line(tuple("---" for _ in HEADERS))]
    # Paths in backticks: a bare <organization_id> would be read as an HTML tag.
    out += [line(_cells(row, "<br>", "`")) for row in table]
    return "\n".join(out) + "\n"


def as_json(table: list[ProviderRow]) -> str:
    return json.dumps([asdict(row) for row in table], indent=2) + "\n"


def terminal(table: list[ProviderRow], width: int = 40) -> str:
    """One block per provider: wide cells do not fit a terminal table on one line."""
    out = []
    for row in table:
        out.append(row.provider)
        for label, cell in zip(HEADERS[1:], _cells(row, "\n" + " " * 24)[1:], strict=True):
            out.append(f"  {label + ':':<21} {cell}")
        out.append("")
    return "\n".join(out)


FORMATS = {"table": terminal, "markdown": markdown, "json": as_json}


BEGIN, END = "<!-- providers:begin -->\n", "<!-- providers:end -->"


def with_table(document: str) -> str:
    """``document`` with the Markdown table between the provider markers replaced by a fresh one."""
    head, _, rest = document.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + BEGIN + markdown(rows()) + END + tail


if __name__ == "__main__":  # make providers-doc
    import sys
    from pathlib import Path

    readme = Path(sys.argv[1])
    readme.write_text(with_table(readme.read_text()))
