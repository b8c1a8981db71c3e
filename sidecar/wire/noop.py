"""A no-op ExternalProcessor: CONTINUE to every message. The protocol's own cost, for benchmarks.

Everything the real sidecar adds (parsing, lookups, decisions, the outbox) is measured against
this: same gRPC server settings (``sidecar.wire.server``), same streams from Envoy, no routing.
Envoy then sends every request down its un-rerouted route (control).

    python -m sidecar.wire.noop --grpc 127.0.0.1:50051 [--loop uvloop]

Start it N times on one port for N worker processes (SO_REUSEPORT), as with ``silo-router serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sidecar.wire import server as wire_server
from sidecar.wire.stream import END, Stream


def _continue(phase: str) -> ep.ProcessingResponse:
    response = ep.ProcessingResponse()
    getattr(response, phase).SetInParent()
    return response


CONTINUE: Mapping[str, ep.ProcessingResponse] = MappingProxyType(
    {
        phase: _continue(phase)
        for phase in (
            "request_headers",
            "request_body",
            "request_trailers",
            "response_headers",
            "response_body",
            "response_trailers",
        )
    }
)
"""One prebuilt answer per phase; a response must name the phase it answers."""


REQUEST_PHASES = frozenset({"request_headers", "request_body"})
"""The phases whose ``end_of_stream`` says the request is whole (trailers carry no such flag)."""


class NoopProcessor(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    async def Process(self, requests: object, context: Stream) -> None:
        read, write = context.read, context.write
        while (message := await read()) is not END:
            assert isinstance(message, ep.ProcessingRequest)
            phase = message.WhichOneof("request")
            if phase is not None:
                await write(CONTINUE[phase])
                if phase in REQUEST_PHASES and getattr(message, phase).end_of_stream:
                    return  # the request is whole: end the stream, as the real servicer does


async def serve(address: str, stop: asyncio.Event | None = None, max_message_bytes: int = 2 << 20) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM when none is given)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    server = wire_server.new_server(max_message_bytes)
    ep_grpc.add_ExternalProcessorServicer_to_server(NoopProcessor(), server)
    status = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(status, server)
    wire_server.listen(server, address)
    await server.start()
    await status.set("", health_pb2.HealthCheckResponse.SERVING)
    await status.set(wire_server.EXT_PROC_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    try:
        await stop.wait()
    finally:
        await server.stop(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.wire.noop", description=__doc__.splitlines()[0])
    parser.add_argument("--grpc", default="127.0.0.1:50051", help="host:port to listen on")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default=wire_server.DEFAULT_LOOP)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        wire_server.run(serve(args.grpc), loop=args.loop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
