"""One registry line per provider module, and a test file per provider (STYLE convention 2)."""

from __future__ import annotations

from pathlib import Path

from sidecar.core.providers import PROVIDERS

PROVIDER_DIR = Path(__file__).parents[2] / "sidecar" / "core" / "providers"
TEST_DIR = Path(__file__).parent / "providers"


def provider_modules() -> set[str]:
    return {p.stem for p in PROVIDER_DIR.glob("*.py") if not p.stem.startswith("_")}


def test_every_provider_module_is_registered_under_its_module_name() -> None:
    assert set(PROVIDERS) == provider_modules()


def test_every_provider_has_a_test_file() -> None:
    missing = {name for name in PROVIDERS if not (TEST_DIR / f"test_{name}.py").exists()}
    assert missing == set()


def test_prefix_follows_the_slug() -> None:
    for name, spec in PROVIDERS.items():
        if name != "plugins":
            assert spec.prefix == f"/extensions/{name.replace('_', '-')}/"
