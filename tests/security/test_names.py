"""Names that end up in headers and Envoy's config must be plain ASCII tokens.

Regressions for two validation gaps this suite found:

* ``config.py`` accepted any region name ``str.isalnum`` likes, "zürich" included. The sidecar
  sets the route header as ASCII bytes, so every webhook owned by such a region made the servicer
  raise (gRPC error, Envoy's 503) instead of routing.
* ``directory/loader.py`` matched region names with ``^…$``, and ``$`` also matches before a
  trailing newline: a directory file could load the region "us\\n".
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sidecar import config
from sidecar.core import Context, Forward, Request
from sidecar.directory.loader import DirectoryFileError, parse_directory
from sidecar.directory.memory import InMemoryDirectory
from sidecar.errors import ConfigError
from sidecar.outbox.memory import InMemoryOutbox
from sidecar.router import Router
from sidecar.wire.servicer import respond

pytestmark = [pytest.mark.security]


@pytest.mark.parametrize("name", ["zürich", "ｕｓ", "us\n", "us eu", "", "de/1", "٣"])
def test_region_names_in_the_settings_file_must_be_ascii_tokens(name: str) -> None:
    raw = {"regions": {name: {"address": "127.0.0.1:9001"}}}
    with pytest.raises(ConfigError, match="bad region name"):
        config.from_mapping(raw, {}, Path("."))


@pytest.mark.parametrize("name", ["us", "eu-west_1", "DE"])
def test_plain_region_names_still_load(name: str) -> None:
    settings = config.from_mapping({"regions": {name: {"address": "127.0.0.1:9001"}}}, {}, Path("."))
    assert settings.region_names == {name}


@pytest.mark.parametrize("name", ["us\n", "zürich", "us\r"])
def test_the_directory_loader_refuses_region_names_with_a_trailing_newline_or_non_ascii(name: str) -> None:
    with pytest.raises(DirectoryFileError, match="bad region name"):
        parse_directory({"organizations": [{"id": 1, "slug": "acme", "region": name}]})
    with pytest.raises(DirectoryFileError, match="bad region name"):
        parse_directory({"regions": [{"name": name}]})


def test_why_it_matters_the_servicer_cannot_route_to_a_non_ascii_region() -> None:
    """What the config check prevents: the route header is ASCII, so the answer cannot be built."""
    with pytest.raises(UnicodeEncodeError):
        respond(Forward("zürich", "first_region"), "request_headers")


def test_a_directory_naming_an_unconfigured_region_is_a_500_never_a_route() -> None:
    """The other half: a region the edge does not know (e.g. from a stale directory row) is the
    documented 500, not a route header Envoy has no route for."""
    directory = InMemoryDirectory.from_data(
        {
            "organizations": [{"id": 1, "slug": "acme", "region": "mars"}],
            "integrations": [{"id": 10, "provider": "github", "external_id": "1", "organizations": [1]}],
        }
    )
    router = Router(directory, InMemoryOutbox(), lambda: Context(regions=frozenset({"us", "de"})))
    body = b'{"installation": {"id": 1}, "repository": {"id": 2}}'
    req = Request.from_target(
        "POST", "/extensions/github/webhook/", {"content-type": "application/json", "x-github-event": "push"}, body
    )
    answer = asyncio.run(router.handle(req, "body"))
    assert (getattr(answer, "status", None), getattr(answer, "reason", None)) == (500, "unknown_region")
