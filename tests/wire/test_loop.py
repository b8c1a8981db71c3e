"""The event loop ``silo-router serve`` / ``up`` run on: uvloop by default, asyncio as the fallback."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest

from sidecar.wire import server


def test_loop_from_env_defaults_to_uvloop_and_accepts_asyncio() -> None:
    assert server.DEFAULT_LOOP == "uvloop"
    assert server.loop_from_env({}) == "uvloop"
    assert server.loop_from_env({server.LOOP_ENV: ""}) == "uvloop"
    assert server.loop_from_env({server.LOOP_ENV: "asyncio"}) == "asyncio"
    with pytest.raises(ValueError, match=server.LOOP_ENV):
        server.loop_from_env({server.LOOP_ENV: "trio"})


def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_run_uses_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    seen: list[str] = []

    async def main() -> None:
        seen.append(_loop_module())

    server.run(main(), loop="uvloop")
    assert seen and seen[0].startswith("uvloop")


def test_run_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def without_uvloop(name: str, *args: Any) -> Any:
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real(name, *args)

    monkeypatch.setattr(server.importlib, "import_module", without_uvloop)
    seen: list[str] = []

    async def main() -> None:
        seen.append(_loop_module())

    server.run(main(), loop="uvloop")
    assert seen and seen[0].startswith("asyncio")
