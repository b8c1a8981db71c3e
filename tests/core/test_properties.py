"""Every parser, fed arbitrary paths, headers and bodies: no exception escapes, and every answer
is one of the documented ones (core rule 2)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.core import (
    Context,
    Control,
    FetchKey,
    Forward,
    Integration,
    Lookup,
    NeedBody,
    Organization,
    Reply,
    Request,
    Resolution,
    Secrets,
    ShedRule,
    Step,
    Store,
    plan,
)
from sidecar.core.providers import PROVIDERS

DOCUMENTED_STATUSES = {200, 202, 400, 401, 404, 429, 500}
PREFIXES = sorted({spec.prefix for spec in PROVIDERS.values()})
HEADER_NAMES = [
    "content-type", "x-github-event", "x-github-enterprise-host", "x-gitlab-token", "authorization",
    "x-slack-signature", "x-slack-request-timestamp", "x-signature-ed25519", "x-signature-timestamp",
    "webhook-installation-id", "webhook-event-type", "webhook-id", "webhook-timestamp", "webhook-signature",
]  # fmt: skip
SEGMENTS = st.sampled_from(
    ["webhook", "event", "action", "commands", "options-load", "interactions", "issue-updated", "issue",
     "organizations", "1", "-1", "99999999999999999999999", "github-com", "x", "", "..", "%2F", "🔥", "search"]
)  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
keyed_json = st.fixed_dictionaries(
    {},
    optional={
        "installation": st.fixed_dictionaries({"id": json_values}),
        "team_id": json_values,
        "guild_id": json_values,
        "type": st.integers(0, 6) | st.text(max_size=20),
        "changelog": json_values,
        "resourceContainers": json_values,
        "channelData": json_values,
        "issue": json_values,
        "payload": json_values,
        "object_kind": st.text(max_size=10),
    },
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=200),
    keyed_json.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.sampled_from(["payload", "team_id", "text", "token"]), st.text(max_size=30)).map(
        lambda form: "&".join(f"{k}={v}" for k, v in form.items()).encode()
    ),
)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    prefix = draw(st.sampled_from([*PREFIXES, "/extensions/", "/plugins/", "/"]))
    path = prefix + "/".join(draw(st.lists(SEGMENTS, max_size=5)))
    if draw(st.booleans()):
        path += "/"
    headers = draw(st.dictionaries(st.sampled_from(HEADER_NAMES), st.text(max_size=40), max_size=5))
    query = draw(st.sampled_from(["", "jwt=a.b.c", "x=1&jwt=", "a=%ZZ"]))
    return Request(draw(st.sampled_from(["GET", "POST"])), path, query, headers, draw(bodies))


resolutions = st.builds(
    Resolution,
    st.none() | st.builds(Integration, st.integers(1, 10**6), st.sampled_from(sorted(PROVIDERS)), st.text(max_size=8)),
    st.lists(st.builds(Organization, st.integers(1, 99), st.text(max_size=5), st.sampled_from(["us", "de", "xx"])),
             max_size=3).map(tuple),
)  # fmt: skip
CONTEXTS = [
    Context(now=1.7e9, secrets=Secrets(slack_signing_secret="s", discord_public_key="ab" * 32)),
    Context(now=0.0, regions=frozenset({"us", "de"}), shed=(ShedRule("github"), ShedRule("gitlab", 3))),
]


def check(decision: Any) -> None:
    assert isinstance(decision, Control | Forward | Store | Reply), decision
    if isinstance(decision, Reply):
        assert decision.status in DOCUMENTED_STATUSES, decision
    if isinstance(decision, Store):
        assert decision.regions and decision.reply_status in DOCUMENTED_STATUSES
    assert decision.reason and decision.reason.replace("_", "").isalnum()


def finish(step: Step, resolution: Resolution, key: str | None) -> None:
    for _ in range(4):
        if isinstance(step, Lookup):
            step = step.then(resolution)
        elif isinstance(step, FetchKey):
            step = step.then(key)
        else:
            break
    assert not isinstance(step, Lookup | FetchKey)
    if not isinstance(step, NeedBody):
        check(step)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), resolutions, st.sampled_from(CONTEXTS), st.none() | st.text(max_size=30))
def test_every_parser_answers_every_input_with_a_documented_answer(
    req: Request, resolution: Resolution, ctx: Context, key: str | None
) -> None:
    finish(plan(req, ctx), resolution, key)
    if req.body is None:  # the body phase too
        finish(plan(req.with_body(b""), ctx), resolution, key)
