"""The no-op floor: CONTINUE to every phase, and the stream ends once the request is whole."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from sidecar.wire.noop import CONTINUE, NoopProcessor
from sidecar.wire.stream import MemoryStream


def message(phase: str, end_of_stream: bool | None = None) -> ep.ProcessingRequest:
    request = ep.ProcessingRequest()
    getattr(request, phase).SetInParent()
    if end_of_stream is not None:
        getattr(request, phase).end_of_stream = end_of_stream
    return request


async def answers(messages: Sequence[ep.ProcessingRequest]) -> tuple[list[ep.ProcessingResponse], int]:
    stream = MemoryStream(messages)
    await NoopProcessor().Process(None, stream)
    return stream.written, stream.read_count


async def test_a_bodiless_request_ends_the_stream_after_its_headers() -> None:
    responses, read = await answers([message("request_headers", True), message("request_trailers")])
    assert responses == [CONTINUE["request_headers"]]
    assert read == 1


async def test_a_buffered_body_ends_the_stream_after_the_body() -> None:
    sent = [message("request_headers", False), message("request_body", True), message("request_trailers")]
    responses, read = await answers(sent)
    assert responses == [CONTINUE["request_headers"], CONTINUE["request_body"]]
    assert read == 2


async def test_streamed_chunks_are_each_continued_until_the_last() -> None:
    sent = [message("request_headers", False), message("request_body", False), message("request_body", True)]
    responses, read = await answers(sent)
    assert [r.WhichOneof("response") for r in responses] == ["request_headers", "request_body", "request_body"]
    assert read == 3
