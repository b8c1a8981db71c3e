"""Vercel (reference §3.13): every path under the prefix is handled on control.

https://vercel.com/docs/webhooks
"""

from __future__ import annotations

import pytest
from helpers_b import run
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core import Context, Control, Request, needs_body, plan

PREFIX = "/extensions/vercel/"


@pytest.mark.parametrize("rest", ["webhook/", "delete/", "configure/", "ui-hook/", "", "no/such/view/", "webhook"])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_every_view_goes_to_control_in_the_header_phase_without_lookup(method: str, rest: str) -> None:
    req = Request.from_target(
        method, PREFIX + rest + "?configurationId=icfg_1", {"content-type": "application/json"}, b"{}"
    )
    result = run(req)
    assert result.header_phase == Control("control_only_view")
    assert result.lookups == []
    assert not needs_body(req)


def test_the_bare_provider_path_goes_to_control_too() -> None:
    assert plan(Request.from_target("POST", PREFIX.rstrip("/")), Context()) == Control("control_only_provider")


@given(rest=st.text(st.characters(blacklist_characters="?#\n", blacklist_categories=["Cs"]), max_size=40))
def test_any_path_goes_to_control(rest: str) -> None:
    assert isinstance(plan(Request("POST", PREFIX + rest, "", {}, None), Context()), Control)
