"""The ext_proc servicer: a pump from Envoy's stream to the Router and back.

One gRPC stream per HTTP request (envoy-notes §6.15). The headers message is always first; a
body message follows only on BUFFERED routes, and then only when the request has a body.

Once the answer is final the servicer ends the stream (gRPC status OK) instead of waiting for
Envoy's half-close. Envoy then ignores the stream for the rest of the request (a successful close
in its ext_proc filter), which is all it would have done: no response phase is ever sent
(``response_header_mode: SKIP``). Envoy 1.40 half-closes by itself after the last answer on
header-only routes, but on BUFFERED routes it keeps the stream open until the upstream has
answered. Ending it here saves a read and a wakeup per request (docs/performance.md, fourth
round); the no-op floor (``wire.noop``) does the same.
"""

from __future__ import annotations

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from sidecar.core import Control, Forward, NeedBody, Reply, Request
from sidecar.router import Outcome, Router
from sidecar.wire import convert
from sidecar.wire.stream import END, Stream


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, router: Router) -> None:
        self.router = router

    async def Process(self, requests: object, context: Stream) -> None:
        """Answer each message of one stream. ``requests`` (gRPC's iterator over the same reads)
        is not used: the context is read directly (``wire.stream``)."""
        read, write = context.read, context.write
        waiting: Request | None = None  # headers seen, decision needs the body
        while (message := await read()) is not END:
            assert isinstance(message, ep.ProcessingRequest)
            phase = message.WhichOneof("request")
            if phase == "request_headers":
                request = convert.to_request(message.request_headers)
                answer = await self.router.handle(request, "headers")
                if not isinstance(answer, NeedBody):
                    await write(respond(answer, phase))
                    return
                waiting = request
                await write(convert.proceed(phase))
            elif phase == "request_body" and waiting is not None and message.request_body.end_of_stream:
                request, waiting = waiting.with_body(message.request_body.body), None
                answer = await self.router.handle(request, "body")
                # NeedBody again cannot happen with a body; continuing is the safe reading of it.
                await write(respond(answer, phase) if not isinstance(answer, NeedBody) else convert.proceed(phase))
                return
            elif phase is not None:
                await write(convert.proceed(phase))


def respond(outcome: Outcome, phase: str) -> ep.ProcessingResponse:
    match outcome:
        case Forward(region=region):
            return convert.route_to(region, phase)
        case Reply(status=status, body=body, headers=headers, reason=reason):
            return convert.immediate(status, body, headers, f"silo_{reason}")
        case Control():
            return convert.proceed(phase)
    raise AssertionError(outcome)  # pragma: no cover
