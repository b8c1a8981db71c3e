"""``silo-router explain``: where would this webhook go, and why? Nothing is stored.

The answer comes from the same code that routes: ``Router.decide`` runs the core and performs its
effects (directory lookups, key fetches) against twins of the real directory and key source that
record what was asked and what came back. Only the outbox is never touched: a ``Store`` decision
is described, not enqueued. What the core decides from the path alone (classification, provider,
view) is read from the same pure functions ``plan`` uses.

Two phases, as Envoy drives the sidecar: a view that reads the body is first asked with the
headers only (and answers ``NeedBody``), then again with the body; any other view decides on the
headers alone, and never sees the body even when the pasted request has one.

Request header values are never printed: signatures and tokens travel in them.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import h11

from sidecar import db
from sidecar.config import Settings
from sidecar.core import (
    ByExternalId,
    ByIntegrationId,
    ByOrganization,
    Context,
    Control,
    Decision,
    Forward,
    LookupKey,
    NeedBody,
    Reply,
    Request,
    Resolution,
    Store,
)
from sidecar.core.classify import IntegrationRoute, PassThrough, PluginRoute, classify
from sidecar.core.lookup import NOT_FOUND
from sidecar.directory.base import Directory
from sidecar.directory.loader import read_directory_file
from sidecar.directory.memory import InMemoryDirectory
from sidecar.directory.postgres import PostgresDirectory
from sidecar.errors import SiloError
from sidecar.keysource import HttpKeySource, KeySource
from sidecar.outbox.store import gated
from sidecar.router import Router, failure

Kind = Literal["control", "forward", "store", "reply"]
Stage = Literal[
    "request", "classification", "provider", "view", "body", "key_fetch", "lookup", "decision", "mailbox", "error"
]


@dataclass(frozen=True, slots=True)
class Step:
    stage: Stage
    text: str


@dataclass(frozen=True, slots=True)
class Explanation:
    kind: Kind
    reason: str
    status: int | None
    """What the sidecar answers itself (store, reply); None when an upstream answers."""
    regions: tuple[str, ...]
    mailbox: str | None
    steps: tuple[Step, ...]
    decision: Decision = field(compare=False)
    """The core's decision as the sidecar would perform it (a Store is not performed here)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "status": self.status,
            "regions": list(self.regions),
            "mailbox": self.mailbox,
            "steps": [{"stage": step.stage, "text": step.text} for step in self.steps],
        }


@dataclass(frozen=True, slots=True)
class Parts:
    """What explain needs of a router, for callers without one (the CLI)."""

    directory: Directory
    context: Callable[[], Context]
    keys: KeySource | None = None
    keys_note: str = "no key source configured"
    """Why there is no key source, when there is none (shown on a key fetch)."""
    budget_s: float | None = None


# --- parsing a raw request -------------------------------------------------------------------


class HttpRequestError(SiloError):
    """The input is not one complete HTTP/1.1 request."""

    code = "bad_http_request"
    status = 400


def parse_http_request(raw: bytes) -> Request:
    """One HTTP/1.1 request (Content-Length or chunked body), as pasted or from ``curl --trace``.

    Lenient where pasting loses nothing: bare LF line ends, a missing blank line after the headers
    of a request without a body, whitespace after the body. Strict where routing depends on it:
    the body must be exactly as long as the request says, since signatures cover its bytes.
    """
    if CURL_TRACE.search(raw):
        raw = _from_curl_trace(raw)
    if not raw.strip():
        raise HttpRequestError("no request: the input is empty")
    if not BLANK_LINE.search(raw):
        raw = raw.rstrip(b"\r\n") + b"\r\n\r\n"
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    conn.receive_data(b"")  # end of input: an incomplete request is an error, not a wait
    head: h11.Request | None = None
    body = bytearray()
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # ConnectionClosed or NEED_DATA after the end of input
                raise HttpRequestError("not a complete HTTP/1.1 request")
    except h11.RemoteProtocolError as exc:
        raise HttpRequestError(_h11_problem(str(exc), raw)) from None
    assert head is not None  # h11 yields Request before any Data or EndOfMessage
    extra = conn.trailing_data[0]
    if extra.strip():
        raise HttpRequestError(_extra_data_problem(head, len(body), len(extra)))
    return _to_request(head, bytes(body))


BLANK_LINE = re.compile(rb"\r?\n\r?\n")
CURL_TRACE = re.compile(rb"^(?:[0-9:.]+ )?=> Send header", re.MULTILINE)


def _to_request(head: h11.Request, body: bytes) -> Request:
    target = head.target.decode("ascii")
    if not target.startswith("/"):
        # absolute-form (``POST http://host/path``, as a proxy sees it): the sidecar gets the path.
        parts = urlsplit(target)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # Last value wins for a repeated name, as the sidecar reads Envoy's header list (wire.convert).
    headers = {name.decode("ascii"): value.decode("latin-1") for name, value in head.headers}
    return Request.from_target(head.method.decode("ascii"), target, headers, body)


def _h11_problem(message: str, raw: bytes) -> str:
    short = re.search(r"received (\d+) bytes, expected (\d+)", message)
    if short:
        return f"the body ends after {short[1]} bytes, but Content-Length says {short[2]}"
    if "incomplete chunked read" in message:
        return "the chunked body ends before its last chunk (a line '0' and a blank line)"
    if "Missing mandatory Host" in message:
        return "an HTTP/1.1 request needs a Host header (any value: silo-router routes on the path)"
    if "illegal request line" in message:
        first = raw.split(b"\n", 1)[0].strip()[:80].decode("latin-1")
        return f"the first line must be 'METHOD /path HTTP/1.1', got {first!r}"
    return f"not a valid HTTP/1.1 request: {message}"


def _extra_data_problem(head: h11.Request, body_length: int, extra: int) -> str:
    names = {name for name, _ in head.headers}
    if b"content-length" in names or b"transfer-encoding" in names:
        return f"{extra} bytes follow the end of the body ({body_length} bytes as the request declares it)"
    return (
        f"{extra} bytes follow the headers, but the request declares no body;"
        f" if they are the body, add 'Content-Length: {extra}' (or capture the request with curl --trace)"
    )


# curl --trace writes each block as "=> Send header, 187 bytes (0xbb)" and then lines of
# "0000: 50 4f 53 54 … POST /exten…": an offset, 16 hex bytes, their text. The hex is exact;
# --trace-ascii drops line ends and masks bytes, so it cannot give back a signed body.
_TRACE_BLOCK = re.compile(rb"^(?:[0-9:.]+ )?(=>|<=|==) ([^,\r\n]+)(?:, (\d+) bytes)?", re.MULTILINE)
_TRACE_LINE = re.compile(rb"^(?:[0-9:.]+ )?[0-9a-f]{4,}: (.*)$")
_HEX_WIDTH = 16 * 3


def _from_curl_trace(trace: bytes) -> bytes:
    """The bytes curl sent for its first request: its header block and the data blocks after it."""
    blocks = list(_TRACE_BLOCK.finditer(trace))
    sent = bytearray()
    seen_header = False
    for index, block in enumerate(blocks):
        label = block[2].strip()
        if label == b"Send header":
            if seen_header:
                break  # a second request (a redirect, --next): explain the first
            seen_header = True
        elif label != b"Send data" or not seen_header:
            continue
        end = blocks[index + 1].start() if index + 1 < len(blocks) else len(trace)
        data = _trace_bytes(trace[block.end() : end])
        declared = int(block[3]) if block[3] else len(data)
        if len(data) != declared:
            raise HttpRequestError(f"curl trace: a {label.decode()} block holds {len(data)} of its {declared} bytes")
        sent += _as_http11(data) if label == b"Send header" else data
    return bytes(sent)


def _trace_bytes(lines: bytes) -> bytes:
    data = bytearray()
    for line in lines.splitlines():
        found = _TRACE_LINE.match(line)
        if found is None:
            continue
        tokens = found[1][:_HEX_WIDTH].split()
        if not all(re.fullmatch(rb"[0-9a-f]{2}", token) for token in tokens):
            raise HttpRequestError(
                "this looks like curl --trace-ascii output, which does not keep the exact bytes;"
                " capture the request with curl --trace FILE instead"
            )
        data += bytes.fromhex(b"".join(tokens).decode("ascii"))
    return bytes(data)


def _as_http11(header: bytes) -> bytes:
    """curl shows an HTTP/2 or /3 request with an HTTP/1-style head; the sidecar sees the same fields."""
    first, sep, rest = header.partition(b"\r\n")
    return re.sub(rb" HTTP/[23](?:\.0)?$", b" HTTP/1.1", first) + sep + rest


# --- tracing the effects ---------------------------------------------------------------------


def _found(resolution: Resolution) -> bool:
    return resolution.integration is not None or bool(resolution.organizations)


class TracingDirectory:
    """``Directory`` that asks ``inner`` one key at a time and records what each key found.

    Same answer as ``inner.resolve(keys)``: keys in order, the first that finds something wins.
    """

    def __init__(self, inner: Directory, steps: list[Step]) -> None:
        self.inner = inner
        self.steps = steps

    async def resolve(self, keys: tuple[LookupKey, ...]) -> Resolution:
        for key in keys:
            try:
                resolution = await self.inner.resolve((key,))
            except SiloError as exc:
                self.steps.append(Step("lookup", f"{describe_key(key)}: failed ({exc.code}: {exc})"))
                raise
            self.steps.append(Step("lookup", f"{describe_key(key)}: {describe_resolution(resolution)}"))
            if _found(resolution):
                return resolution
        return NOT_FOUND


class TracingKeySource:
    """``KeySource`` that records every fetch; without ``inner`` every key is missing, as in the Router."""

    def __init__(self, inner: KeySource | None, steps: list[Step], note: str) -> None:
        self.inner = inner
        self.steps = steps
        self.note = note

    async def public_key(self, source: str, kid: str) -> str | None:
        what = f"public key {kid!r} from {source}"
        if self.inner is None:
            self.steps.append(Step("key_fetch", f"{what}: not asked ({self.note}), so no such key"))
            return None
        try:
            pem = await self.inner.public_key(source, kid)
        except SiloError as exc:
            self.steps.append(Step("key_fetch", f"{what}: failed ({exc.code}: {exc})"))
            raise
        found = f"found ({len(pem)} bytes of PEM)" if pem is not None else "no such key"
        self.steps.append(Step("key_fetch", f"{what}: {found}"))
        return pem


class _NoOutbox:
    """The Router's outbox while explaining: ``decide`` never calls it, and nothing else may."""

    async def enqueue(self, decision: Store, request: Request) -> list[int]:
        raise AssertionError("explain never stores")


# --- explaining ------------------------------------------------------------------------------


async def explain(source: Router | Parts, req: Request) -> Explanation:
    """Decide ``req`` as the sidecar would right now, performing lookups and key fetches but no store."""
    parts = _parts(source)
    steps: list[Step] = [Step("request", describe_request(req))]
    steps += describe_route(req)
    router = Router(
        TracingDirectory(parts.directory, steps),
        _NoOutbox(),
        parts.context,
        keys=TracingKeySource(parts.keys, steps, parts.keys_note),
    )
    body = req.body or b""
    # Envoy sends a request without a body as headers with end_of_stream: the body is known empty.
    headers_only = Request(req.method, req.path, req.query, req.headers, None if body else b"")
    try:
        async with asyncio.timeout(parts.budget_s):
            decided = await router.decide(headers_only)
            if isinstance(decided, NeedBody):
                steps.append(Step("body", f"the view reads the body: Envoy buffers it ({len(body)} bytes)"))
                decided = await router.decide(headers_only.with_body(body))
            elif body:
                steps.append(Step("body", "decided on the headers: the body is not read"))
    except SiloError as exc:
        steps.append(Step("error", f"{exc.code}: {exc}"))
        decided = failure(exc.status, exc.code, exc.retry_after)
    except TimeoutError:
        steps.append(Step("error", f"no answer within the sidecar's budget of {parts.budget_s:g} s"))
        decided = failure(503, "budget_exceeded", 5)
    except Exception as exc:  # the sidecar answers a bug with 500; explain also says which bug
        steps.append(Step("error", f"{type(exc).__name__}: {exc}"))
        decided = failure(500, "internal_error", None)
    if isinstance(decided, NeedBody):  # cannot happen with a body; the wire continues, and so do we
        decided = Control("need_body_twice")
    return _conclude(decided, steps)


def _parts(source: Router | Parts) -> Parts:
    if isinstance(source, Parts):
        return source
    return Parts(source.directory, source.context, source.keys, budget_s=source.budget_s)


def _conclude(decision: Decision, steps: list[Step]) -> Explanation:
    match decision:
        case Control(reason=reason):
            steps.append(Step("decision", f"continue to control unchanged ({reason})"))
            return Explanation("control", reason, None, (), None, tuple(steps), decision)
        case Forward(region=region, reason=reason):
            steps.append(Step("decision", f"route unchanged to region {region} ({reason})"))
            return Explanation("forward", reason, None, (region,), None, tuple(steps), decision)
        case Reply(status=status, reason=reason, headers=headers):
            extra = "".join(f"; {name}: {value}" for name, value in headers)
            steps.append(Step("decision", f"answer {status} ({reason}){extra}; nothing reaches an upstream"))
            return Explanation("reply", reason, status, (), None, tuple(steps), decision)
        case Store(regions=()):
            # As Router.perform: a store for no region is a plain answer.
            steps.append(Step("decision", f"nothing to store (no region); answer {decision.reply_status}"))
            return Explanation("reply", "nothing_to_store", decision.reply_status, (), None, tuple(steps), decision)
        case Store():
            return _stored(decision, steps)
    raise AssertionError(decision)  # pragma: no cover - the match above is exhaustive


def _stored(decision: Store, steps: list[Step]) -> Explanation:
    copies = f"a copy for region {decision.regions[0]}"
    if len(decision.regions) > 1:
        copies = f"one copy per region ({', '.join(decision.regions)})"
    steps.append(
        Step(
            "decision",
            f"store {copies} in the outbox, then answer {decision.reply_status} ({decision.reason});"
            " the delivery worker sends the stored request on",
        )
    )
    mailbox = decision.mailbox.name(over_volume=False)
    note = ""
    if gated(decision):
        note = f"; while the integration is over the volume threshold: {decision.mailbox.name(over_volume=True)}"
    steps.append(Step("mailbox", f"{mailbox} (delivered in order within it){note}"))
    if decision.reply_to is not None:
        host = urlsplit(decision.reply_to.url).hostname or decision.reply_to.kind
        # The URL itself carries a token: only where it points is shown.
        kind = decision.reply_to.kind
        steps.append(Step("mailbox", f"the regions' answer is then posted to the {kind} reply URL ({host})"))
    return Explanation(
        "store", decision.reason, decision.reply_status, decision.regions, mailbox, tuple(steps), decision
    )


# --- describing ------------------------------------------------------------------------------

_PASS_THROUGH = {
    "setup_or_link_view": "a setup or link view under /extensions/: control serves it",
    "no_provider_segment": "under /extensions/ without a provider segment: control serves it",
    "not_a_webhook_path": "not under /extensions/ or /plugins/: not a webhook, control serves it",
}


def describe_request(req: Request) -> str:
    body = f"{len(req.body)}-byte body" if req.body else "no body"
    names = ", ".join(sorted(name for name in req.headers if not name.startswith(":"))) or "none"
    return f"{req.method} {req.full_path} ({body}; headers: {names})"


def describe_route(req: Request) -> list[Step]:
    """Classification, provider and view: what ``plan`` reads from the path before any handler runs."""
    route = classify(req.path)
    match route:
        case PassThrough(reason=reason):
            return [Step("classification", _PASS_THROUGH.get(reason, reason))]
        case IntegrationRoute(provider=provider, spec=None):
            unknown = f"integration path of provider {provider!r}, which silo-router does not know"
            return [Step("classification", unknown)]
        case IntegrationRoute(spec=spec) | PluginRoute(spec=spec):
            assert spec is not None
            what = "plugin path" if isinstance(route, PluginRoute) else f"integration path of provider {spec.name}"
            steps = [
                Step("classification", what),
                Step("provider", f"{spec.name}: identified by {spec.id_source}; {spec.delivery}"),
            ]
            found = spec.match(req.path)
            if found is None:
                steps.append(Step("view", f"no view of {spec.name} matches the path"))
            else:
                view = found.view
                pattern = spec.path_regex(view)
                if view.control_only:
                    steps.append(Step("view", f"{view.name} ({pattern}): control-only"))
                else:
                    reads = "reads the body" if view.needs_body else "decides on the headers"
                    steps.append(Step("view", f"{view.name} ({pattern}): {reads}"))
            return steps
    raise AssertionError(route)  # pragma: no cover


def describe_key(key: LookupKey) -> str:
    active = " (active only)" if getattr(key, "active_only", False) else ""
    match key:
        case ByExternalId(provider=provider, external_id=external_id):
            return f"{provider} integration with external id {external_id!r}{active}"
        case ByIntegrationId(integration_id=integration_id, provider=provider):
            of = f" of provider {provider}" if provider else ""
            return f"integration id {integration_id}{of}{active}"
        case ByOrganization(organization_id=organization_id):
            return f"organization id {organization_id}"
    raise AssertionError(key)  # pragma: no cover


def describe_resolution(resolution: Resolution) -> str:
    orgs = ", ".join(f"organization {o.slug} (id {o.id}) in region {o.region}" for o in resolution.organizations)
    integration = resolution.integration
    if integration is None:
        return orgs or "nothing found"
    found = f"integration {integration.id} ({integration.provider} {integration.external_id!r}, {integration.status})"
    return f"{found} → {orgs}" if orgs else f"{found}, but no organization with an active link"


# --- as the configured sidecar --------------------------------------------------------------


def read_request(source: str) -> Request:
    """The raw request in file ``source`` (``-``: standard input), parsed."""
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise HttpRequestError(f"{source}: cannot read: {exc.strerror}") from None
    return parse_http_request(raw)


async def explain_with_settings(settings: Settings, req: Request, offline: Path | None = None) -> Explanation:
    """Explain as the sidecar configured by ``settings`` would decide: its secrets, regions, shed rules
    and key sources, and its database (embedded included), or with ``offline`` a directory file
    read into memory (no database, no key fetches)."""
    # Imported here: app imports the admin service, which imports this module.
    from sidecar.app import LiveSettings

    if offline is not None:
        directory = InMemoryDirectory.from_data(read_directory_file(offline))
        context = LiveSettings(settings).context
        return await explain(Parts(directory, context, None, keys_note="offline: no key fetches"), req)
    dsn = await asyncio.to_thread(db.database_url, settings)
    pool = await db.open_pool(dsn, max_size=1, min_size=1, timeout=settings.sidecar.db_connect_timeout_s)
    try:
        context = LiveSettings(settings, regions=await _table_regions(settings, pool)).context
        async with HttpKeySource.from_settings(settings) as keys:
            return await explain(Parts(PostgresDirectory(pool), context, keys), req)
    finally:
        await pool.close()


async def _table_regions(settings: Settings, pool: db.Pool) -> Callable[[], frozenset[str]] | None:
    """In xds mode the sidecar knows the regions of the region table that Envoy routes, not the
    settings file's: here, the table's usable rows (the snapshot the sidecar would serve)."""
    if settings.envoy.mode != "xds":
        return None
    from sidecar.regions import list_regions
    from sidecar.xds.snapshot import usable_regions

    usable, _ = usable_regions(await list_regions(pool))
    names = frozenset(usable)
    return lambda: names


# --- output ----------------------------------------------------------------------------------


def format_explanation(explanation: Explanation, fmt: Literal["text", "json"] = "text") -> str:
    """For the terminal (text) or for tools (JSON, the fields of the Explain RPC)."""
    if fmt == "json":
        return json.dumps(explanation.to_dict(), indent=2, ensure_ascii=False) + "\n"
    lines = [f"decision  {_headline(explanation)}", f"reason    {explanation.reason}"]
    if explanation.mailbox:
        lines.append(f"mailbox   {explanation.mailbox}")
    lines.append("")
    width = max(len(step.stage) for step in explanation.steps)
    lines += [f"  {step.stage:<{width}}  {step.text}" for step in explanation.steps]
    return "\n".join(lines) + "\n"


def _headline(e: Explanation) -> str:
    match e.kind:
        case "control":
            return "control (passed on unchanged)"
        case "forward":
            return f"forward to {e.regions[0]}"
        case "store":
            return f"store for {', '.join(e.regions)}, answer {e.status}"
        case "reply":
            return f"reply {e.status}"
