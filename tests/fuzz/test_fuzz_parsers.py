"""Every parser under fuzzed provider traffic, run as the edge runs it (headers phase, then the body
phase when asked, then every effect), against a directory that answers whatever the fuzzer drew.

Invariants, beyond "never raises" (core rule 2):

* the chain of effects ends, in a decision with a documented status and a stable reason code;
* a Forward or a Store names only regions the directory returned *and* the edge knows: a region
  never comes from the request (rule 4), so neither ever happens without a lookup;
* a Store's mailbox name is built from ids and fixed event names only;
* the same request and answers always give the same decision (purity).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fuzzkit import (
    CONTEXTS,
    JIRA_SERVER_SECRET,
    JIRA_SHARED_SECRET,
    REGIONS,
    RandomSource,
    budget,
    pick,
    source_request,
    tried,
    webhook_requests,
)
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core import (
    ByExternalId,
    ByIntegrationId,
    ByOrganization,
    Context,
    Control,
    FetchKey,
    Forward,
    Integration,
    Lookup,
    LookupKey,
    NeedBody,
    Organization,
    Reply,
    Request,
    Resolution,
    Step,
    Store,
    plan,
)

DOCUMENTED_STATUSES = {200, 202, 400, 401, 404, 429, 500}
REASON = re.compile(r"[a-z0-9_]+")
MAILBOX = re.compile(r"[a-z_]+:[0-9]+(:[0-9]+)?(:[a-z_]+)?")
MAX_EFFECTS = 8


@dataclass(frozen=True)
class Shape:
    """What the directory answers, whatever it is asked."""

    found: bool
    status: str
    integration_id: int
    organizations: tuple[tuple[int, str], ...]
    metadata: dict[str, Any]

    def answer(self, keys: tuple[LookupKey, ...]) -> Resolution:
        if not self.found or not keys:
            return Resolution()
        orgs = tuple(Organization(org_id, f"org{org_id}", region) for org_id, region in self.organizations)
        match keys[0]:
            case ByOrganization(organization_id=org_id):
                region = self.organizations[0][1] if self.organizations else "us"
                return Resolution(None, (Organization(org_id, "org", region), *orgs[1:]))
            case ByExternalId(provider=provider, external_id=external_id, active_only=active_only):
                if active_only and self.status != "active":
                    return Resolution()
                return Resolution(
                    Integration(self.integration_id, provider, external_id, self.status, self.metadata), orgs
                )
            case ByIntegrationId(integration_id=integration_id, provider=provider):
                org_ids = tuple(Organization(o.id, o.slug, o.region) for o in orgs)
                name = provider or "gitea"
                return Resolution(Integration(integration_id, name, "x", self.status, self.metadata), org_ids)
        return Resolution()


shapes = st.builds(
    Shape,
    found=st.booleans(),
    status=st.sampled_from(["active", "active", "disabled", "pending_deletion"]),
    integration_id=st.integers(1, 2**40),
    organizations=st.lists(
        st.tuples(st.integers(1, 5), st.sampled_from(["us", "de", "us", "zz"])), max_size=3, unique_by=lambda o: o[0]
    ).map(tuple),
    metadata=st.sampled_from(
        [{"shared_secret": JIRA_SHARED_SECRET, "webhook_secret": JIRA_SERVER_SECRET}, {}, {"shared_secret": 5}]
    ),
)


@dataclass
class Trace:
    decision: Any
    lookups: list[Resolution]


def run_edge_like(req: Request, ctx: Context, shape: Shape, key: str | None) -> Trace:
    """Both phases and every effect, as ``Router.decide`` and the servicer do."""
    step: Step = plan(req if req.body is None else Request(req.method, req.path, req.query, req.headers), ctx)
    if isinstance(step, NeedBody):
        step = plan(req.with_body(req.body if req.body is not None else b""), ctx)
    resolutions: list[Resolution] = []
    for _ in range(MAX_EFFECTS):
        if isinstance(step, Lookup):
            resolution = shape.answer(step.keys)
            resolutions.append(resolution)
            step = step.then(resolution)
        elif isinstance(step, FetchKey):
            step = step.then(key)
        else:
            break
    assert not isinstance(step, Lookup | FetchKey), "effects did not end"
    return Trace(step, resolutions)


def check_decision(trace: Trace, ctx: Context) -> None:
    decision = trace.decision
    assert isinstance(decision, Control | Forward | Store | Reply | NeedBody), decision
    if isinstance(decision, NeedBody):
        raise AssertionError("NeedBody after the body phase")
    assert REASON.fullmatch(decision.reason), decision.reason
    known = ctx.regions if ctx.regions is not None else REGIONS
    directory_regions = {r for resolution in trace.lookups for r in resolution.regions}
    match decision:
        case Reply(status=status):
            assert status in DOCUMENTED_STATUSES, decision
        case Forward(region=region):
            assert trace.lookups, "a Forward without a directory lookup: the request chose its region"
            assert region in directory_regions and region in known, (region, directory_regions)
        case Store(regions=regions, mailbox=mailbox, integration_id=integration_id, reply_status=status):
            assert trace.lookups, "a Store without a directory lookup"
            assert regions and set(regions) <= directory_regions & known, (regions, directory_regions)
            assert list(regions) == sorted(set(regions)), regions
            assert MAILBOX.fullmatch(mailbox.name()) and MAILBOX.fullmatch(mailbox.name(over_volume=True)), mailbox
            assert status in DOCUMENTED_STATUSES
            ids = {r.integration.id for r in trace.lookups if r.integration is not None}
            assert integration_id is None or integration_id in ids


@budget(10_000)
@given(webhook_requests(), shapes, st.sampled_from(CONTEXTS), st.none() | st.text(max_size=20))
def test_fuzz_every_parser_with_provider_shaped_traffic(
    req: Request, shape: Shape, ctx: Context, key: str | None
) -> None:
    tried("parsers/provider-shaped")
    first = run_edge_like(req, ctx, shape, key)
    check_decision(first, ctx)
    assert run_edge_like(req, ctx, shape, key).decision == first.decision, "not deterministic"


anything = st.text(max_size=40)


@st.composite
def arbitrary_requests(draw: st.DrawFn) -> Request:
    path = draw(
        st.one_of(
            st.text(max_size=60),
            st.sampled_from(["/extensions/", "/plugins/", "/extensions/x/", "/"]).flatmap(
                lambda p: st.text(max_size=50).map(lambda rest: p + rest)
            ),
        )
    )
    headers = draw(st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=6))
    body = draw(st.none() | st.binary(max_size=300))
    return Request(draw(anything), path, draw(anything), headers, body)


@budget(5_000)
@given(arbitrary_requests(), shapes, st.sampled_from(CONTEXTS))
def test_fuzz_arbitrary_requests_never_break_the_core(req: Request, shape: Shape, ctx: Context) -> None:
    tried("parsers/arbitrary")
    check_decision(run_edge_like(req, ctx, shape, None), ctx)


def source_shape(src: RandomSource) -> Shape:
    orgs = tuple((n, pick(src, ["us", "de", "us", "zz"])) for n in range(1, src.integer(0, 3) + 1))
    return Shape(
        found=src.integer(0, 3) > 0,
        status=pick(src, ["active", "active", "disabled"]),
        integration_id=src.integer(1, 2**40),
        organizations=orgs,
        metadata=pick(src, [{"shared_secret": JIRA_SHARED_SECRET, "webhook_secret": JIRA_SERVER_SECRET}, {}]),
    )


@budget(40_000)
@given(st.integers(0, 2**64))
def test_fuzz_every_parser_with_seeded_traffic(seed: int) -> None:
    """Volume: one draw per example, the request built from a seeded PRNG (failures print the seed)."""
    tried("parsers/seeded")
    src = RandomSource(seed)
    req = source_request(src)
    ctx = CONTEXTS[seed % len(CONTEXTS)]
    shape = source_shape(src)
    trace = run_edge_like(req, ctx, shape, None)
    check_decision(trace, ctx)
    assert run_edge_like(req, ctx, shape, None).decision == trace.decision
