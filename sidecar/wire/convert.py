"""The only place that knows the ext_proc protos: ProcessingRequest → Request, answers → ProcessingResponse.

Envoy 1.40 facts this relies on (shared/docs/envoy-notes.md §6): header values arrive in
``raw_value`` (``value`` is empty) and mutations must set ``raw_value`` or the header becomes "";
a routing header only re-routes with ``clear_route_cache`` in the same response as the mutation.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from sidecar.core.request import Request

ROUTE_HEADER = "x-silo-route"
Phase = str  # "request_headers" | "request_body": the oneof field a response must answer in


def to_request(headers: ep.HttpHeaders) -> Request:
    """Headers phase → Request. The body is ``b""`` when Envoy says none follows, else None."""
    # Envoy 1.40 fills raw_value; older ones (and an empty value) leave it empty: then value.
    fields = {h.key: h.raw_value.decode("latin-1") or h.value for h in headers.headers.headers}
    target = fields.get(":path", "/")
    path, _, query = target.partition("?")
    method = fields.get(":method", "GET")
    return Request(method, path, query, fields, b"" if headers.end_of_stream else None)


# Answers are built once per distinct value and shared: nothing mutates a response after it is
# built (gRPC only serialises it), and building one costs ~5 µs against a dict lookup.
ANSWER_CACHE = 1024


@functools.lru_cache(maxsize=ANSWER_CACHE)
def proceed(phase: Phase) -> ep.ProcessingResponse:
    """Continue unchanged: the answer for control decisions and for phases we have nothing for."""
    response = ep.ProcessingResponse()
    getattr(response, phase).SetInParent()
    return response


@functools.lru_cache(maxsize=ANSWER_CACHE)
def route_to(region: str, phase: Phase) -> ep.ProcessingResponse:
    response = ep.ProcessingResponse()
    common = getattr(response, phase).response
    common.header_mutation.set_headers.add(
        header=base_pb2.HeaderValue(key=ROUTE_HEADER, raw_value=region.encode("ascii"))
    )
    common.clear_route_cache = True
    return response


def immediate(
    status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = (), details: str = ""
) -> ep.ProcessingResponse:
    return _immediate(status, body, tuple(headers), details)


@functools.lru_cache(maxsize=ANSWER_CACHE)
def _immediate(status: int, body: bytes, headers: tuple[tuple[str, str], ...], details: str) -> ep.ProcessingResponse:
    response = ep.ProcessingResponse()
    answer = response.immediate_response
    answer.status.code = status  # an open enum: any HTTP status is accepted
    answer.body = body
    for key, value in headers:
        answer.headers.set_headers.add(header=base_pb2.HeaderValue(key=key, raw_value=value.encode("latin-1")))
    # %RESPONSE_CODE_DETAILS% in Envoy's access log shows this.
    answer.details = details
    return response
