from __future__ import annotations

import json
from pathlib import Path

from sidecar import catalog
from sidecar.cli import main
from sidecar.core.providers import PROVIDERS

README = Path(__file__).parents[1] / "README.md"


def test_readme_provider_table_is_generated_from_the_parsers() -> None:
    text = README.read_text()
    assert catalog.BEGIN in text and catalog.END in text
    assert catalog.with_table(text) == text, "README provider table is stale: run `make providers-doc`"


def test_every_provider_and_plugins_is_listed() -> None:
    names = [row.provider for row in catalog.rows()]
    assert names == sorted(PROVIDERS)
    assert len(names) == 17  # sixteen integration parsers (reference §1.3, gitea, cursor_origin) + plugins
    assert "plugins" in names


def test_display_path_reads_like_a_url() -> None:
    github = PROVIDERS["github"]
    search = next(view for view in github.views if view.name == "search")
    assert catalog.display_path(github, search) == "/extensions/github/search/<organization>/<integration_id>/"


def test_cli_formats(capsys: object) -> None:
    import pytest

    assert isinstance(capsys, pytest.CaptureFixture)
    assert main(["providers", "--format", "json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert {row["provider"] for row in parsed} == set(PROVIDERS)
    assert main(["providers", "--format", "markdown"]) == 0
    assert capsys.readouterr().out == catalog.markdown(catalog.rows())
    assert main(["providers"]) == 0
    assert "github_enterprise" in capsys.readouterr().out
