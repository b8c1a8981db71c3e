"""Rule 1 of sidecar.core: nothing under core/ does I/O. Checked on the imports."""

from __future__ import annotations

import ast
from pathlib import Path

import sidecar.core

CORE = Path(sidecar.core.__file__).parent
ALLOWED_TOP = {
    "__future__", "base64", "binascii", "collections", "dataclasses", "enum", "functools", "hashlib", "hmac",
    "json", "math", "re", "string", "typing", "types", "urllib", "sidecar", "jwt", "cryptography", "itertools",
}  # fmt: skip
FORBIDDEN = {"grpc", "psycopg", "psycopg_pool", "socket", "asyncio", "httpx", "os", "time", "subprocess", "envoy"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_imports_nothing_that_does_io() -> None:
    offenders = {}
    for path in CORE.rglob("*.py"):
        tops = {name.split(".")[0] for name in imported_modules(path)}
        bad = (tops & FORBIDDEN) | (tops - ALLOWED_TOP)
        if bad:
            offenders[str(path.relative_to(CORE))] = sorted(bad)
        inner = {name for name in imported_modules(path) if name.startswith("sidecar.")}
        outside = {name for name in inner if not name.startswith("sidecar.core")}
        if outside:
            offenders[str(path.relative_to(CORE))] = sorted(outside)
    assert offenders == {}
