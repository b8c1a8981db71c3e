"""plan(request, context) → the next step; the edge performs lookups and stores.

Sequence, for the header phase and again for the body phase:

    step = plan(req, ctx)          # NeedBody | Lookup | Decision
    if isinstance(step, Lookup):
        decision = step.then(await directory.resolve(step.keys))

Shedding is applied here, once, to every Store: a shed webhook is never stored (reference §2.7).
"""

from __future__ import annotations

from sidecar.core.classify import Classification, IntegrationRoute, PassThrough, PluginRoute, classify
from sidecar.core.context import Context
from sidecar.core.decision import Control, Decision, FetchKey, Lookup, NeedBody, Reply, Step, Store
from sidecar.core.request import Request

RETRY_AFTER_SHED = (("retry-after", "60"),)


def plan(req: Request, ctx: Context, route: Classification | None = None) -> Step:
    """``route`` is ``classify(req.path)`` when the caller has it already (the router does)."""
    if route is None:
        route = classify(req.path)
    match route:
        case PassThrough(reason=reason):
            return Control(reason)
        case IntegrationRoute(spec=None):
            return Control("unknown_provider")
        case IntegrationRoute(spec=spec) | PluginRoute(spec=spec):
            assert spec is not None
            found = spec.match(req.path)
            if found is None:
                return spec.unmatched
            view = found.view
            if view.handler is None:
                return Control("control_only_view")
            if view.needs_body and req.body is None:
                return NeedBody()
            return _shed_checked(view.handler(req, found.params, ctx), ctx)
    raise AssertionError(route)  # pragma: no cover - the match above is exhaustive


def needs_body(req: Request) -> bool:
    """Would this request's view read the body? (Cheap: classification and one regex.)"""
    return isinstance(plan(req, Context()), NeedBody)


def _shed_checked(step: Step, ctx: Context) -> Step:
    if not ctx.shed:  # the usual case: no rule, nothing to wrap
        return step
    if isinstance(step, Lookup):
        inner = step.then
        return Lookup(step.keys, lambda resolution: _shed(inner(resolution), ctx))
    if isinstance(step, FetchKey):
        then = step.then
        return FetchKey(step.source, step.kid, lambda key: _shed_checked(then(key), ctx))
    if isinstance(step, NeedBody):
        return step
    return _shed(step, ctx)


def _shed(decision: Decision, ctx: Context) -> Decision:
    if isinstance(decision, Store) and ctx.sheds(decision.provider, decision.integration_id):
        return Reply(429, "shed", headers=RETRY_AFTER_SHED)
    return decision
