"""The servicer called directly with constructed ext_proc protos and the in-memory twins."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from sidecar.core import Context, Request
from sidecar.core.lookup import LookupKey, Resolution
from sidecar.directory.memory import InMemoryDirectory
from sidecar.outbox.memory import InMemoryOutbox
from sidecar.router import Router
from sidecar.wire.servicer import ExternalProcessor
from sidecar.wire.stream import MemoryStream

DIRECTORY = {
    "organizations": [{"id": 1, "slug": "acme", "region": "us"}, {"id": 2, "slug": "globex", "region": "de"}],
    "integrations": [
        {"id": 10, "provider": "github", "external_id": "4711", "status": "active", "organizations": [1, 2]},
    ],
}
PUSH = json.dumps({"installation": {"id": 4711}, "repository": {"id": 3}}).encode()
GITHUB_HEADERS = {"content-type": "application/json", "x-github-event": "push"}


def headers_message(method: str, path: str, headers: dict[str, str], end_of_stream: bool) -> ep.ProcessingRequest:
    message = ep.ProcessingRequest()
    fields = {":method": method, ":path": path, ":authority": "hooks.example", **headers}
    for key, value in fields.items():
        message.request_headers.headers.headers.append(base_pb2.HeaderValue(key=key, raw_value=value.encode()))
    message.request_headers.end_of_stream = end_of_stream
    return message


def body_message(body: bytes) -> ep.ProcessingRequest:
    message = ep.ProcessingRequest()
    message.request_body.body = body
    message.request_body.end_of_stream = True
    return message


def make(directory: Any = None, outbox: InMemoryOutbox | None = None) -> tuple[ExternalProcessor, InMemoryOutbox]:
    outbox = outbox or InMemoryOutbox()
    directory = directory or InMemoryDirectory.from_data(DIRECTORY)
    return ExternalProcessor(Router(directory, outbox, lambda: Context(now=1e9))), outbox


async def run(servicer: ExternalProcessor, messages: Sequence[ep.ProcessingRequest]) -> list[ep.ProcessingResponse]:
    stream = MemoryStream(messages)
    await servicer.Process(None, stream)
    return stream.written


async def test_body_view_continues_headers_then_stores_and_answers_202_in_the_body_phase() -> None:
    servicer, outbox = make()
    first, second = await run(
        servicer,
        [headers_message("POST", "/extensions/github/webhook/?a=1", GITHUB_HEADERS, False), body_message(PUSH)],
    )
    assert first.WhichOneof("response") == "request_headers"
    assert not first.request_headers.response.HasField("header_mutation")
    assert second.WhichOneof("response") == "immediate_response"
    assert second.immediate_response.status.code == 202
    assert second.immediate_response.details == "silo_stored"
    assert [(row.region_name, row.request_body, row.request_path) for row in outbox.rows] == [
        ("de", PUSH, "/extensions/github/webhook/?a=1"),
        ("us", PUSH, "/extensions/github/webhook/?a=1"),
    ]


async def test_outbox_down_answers_503_with_retry_after_and_stores_nothing() -> None:
    outbox = InMemoryOutbox()
    outbox.fail = True
    servicer, _ = make(outbox=outbox)
    _, answer = await run(
        servicer, [headers_message("POST", "/extensions/github/webhook/", GITHUB_HEADERS, False), body_message(PUSH)]
    )
    assert answer.immediate_response.status.code == 503
    assert answer.immediate_response.details == "silo_outbox_unavailable"
    retry = {h.header.key: h.header.raw_value for h in answer.immediate_response.headers.set_headers}
    assert retry == {"retry-after": b"5"}
    assert outbox.rows == []


async def test_directory_down_answers_503() -> None:
    directory = InMemoryDirectory.from_data(DIRECTORY)
    directory.fail = True
    servicer, outbox = make(directory=directory)
    _, answer = await run(
        servicer, [headers_message("POST", "/extensions/github/webhook/", GITHUB_HEADERS, False), body_message(PUSH)]
    )
    assert answer.immediate_response.status.code == 503
    assert outbox.rows == []


async def test_bodiless_request_on_a_body_view_is_decided_in_the_headers_phase() -> None:
    servicer, _ = make()
    [answer] = await run(servicer, [headers_message("POST", "/extensions/github/webhook/", GITHUB_HEADERS, True)])
    assert answer.immediate_response.status.code == 400  # an empty body is not a JSON object


async def test_control_decision_continues_without_any_mutation() -> None:
    servicer, _ = make()
    [answer] = await run(servicer, [headers_message("GET", "/extensions/github/installation/1/", {}, True)])
    assert answer.WhichOneof("response") == "request_headers"
    assert answer.request_headers.response.header_mutation.ByteSize() == 0


async def test_the_stream_ends_after_a_headers_decision_without_reading_on() -> None:
    # Envoy skips the filter for the rest of the request once the stream ends with status OK.
    servicer, _ = make()
    stream = MemoryStream([headers_message("POST", "/extensions/nonesuch/x/", {}, False), body_message(b"{}")])
    await servicer.Process(None, stream)
    assert [r.WhichOneof("response") for r in stream.written] == ["request_headers"]
    assert stream.read_count == 1


async def test_the_stream_ends_after_the_body_answer() -> None:
    servicer, _ = make()
    trailers = ep.ProcessingRequest()
    trailers.request_trailers.SetInParent()
    headers = headers_message("POST", "/extensions/github/webhook/", GITHUB_HEADERS, False)
    stream = MemoryStream([headers, body_message(PUSH), trailers])
    await servicer.Process(None, stream)
    assert [r.WhichOneof("response") for r in stream.written] == ["request_headers", "immediate_response"]
    assert stream.read_count == 2


class SlowDirectory:
    async def resolve(self, keys: tuple[LookupKey, ...]) -> Resolution:
        await asyncio.sleep(10)
        return Resolution()


async def test_a_hanging_directory_is_answered_503_within_the_budget() -> None:
    router = Router(SlowDirectory(), InMemoryOutbox(), lambda: Context(), budget_s=0.05)
    answer = await router.handle(Request.from_target("POST", "/extensions/github/webhook/", GITHUB_HEADERS, PUSH))
    assert (answer.status, answer.reason) == (503, "budget_exceeded")  # type: ignore[union-attr]


class BrokenDirectory:
    async def resolve(self, keys: tuple[LookupKey, ...]) -> Resolution:
        raise ZeroDivisionError


async def test_an_unexpected_error_still_produces_an_answer() -> None:
    router = Router(BrokenDirectory(), InMemoryOutbox(), lambda: Context())
    answer = await router.handle(Request.from_target("POST", "/extensions/github/webhook/", GITHUB_HEADERS, PUSH))
    assert (answer.status, answer.reason) == (500, "internal_error")  # type: ignore[union-attr]


async def test_forward_sets_the_route_header_as_raw_value_and_clears_the_route_cache() -> None:
    from sidecar.core import Forward
    from sidecar.wire.servicer import respond

    answer = respond(Forward("de", "first_region"), "request_body")
    common = answer.request_body.response
    assert common.clear_route_cache
    [mutation] = common.header_mutation.set_headers
    assert (mutation.header.key, mutation.header.raw_value, mutation.header.value) == ("x-silo-route", b"de", "")
