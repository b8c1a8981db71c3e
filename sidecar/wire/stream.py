"""One ext_proc stream as the servicers see it: read a message, write an answer.

The servicers use gRPC's reader/writer API (``context.read()`` / ``context.write()``) rather than
an async generator over an async iterator. grpc.aio wraps the generator style in two more
generator layers per message each way; reading and writing the context directly measured −3…10 %
sidecar CPU per request for the no-op on headers-only streams, and no change beyond noise on
buffered ones (docs/performance.md, fourth round).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Protocol

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

END: Final[object] = grpc.aio.EOF
"""What ``read()`` returns once Envoy has closed its side of the stream."""


class Stream(Protocol):
    """The part of ``grpc.aio.ServicerContext`` a servicer uses."""

    async def read(self) -> ep.ProcessingRequest | object: ...

    async def write(self, message: ep.ProcessingResponse) -> None: ...


class MemoryStream:
    """The in-memory twin: Envoy's messages in order, then ``END``; what was written, and how
    much was read (a servicer that ends its stream must stop reading)."""

    def __init__(self, messages: Iterable[ep.ProcessingRequest]) -> None:
        self.messages = list(messages)
        self.read_count = 0
        self.written: list[ep.ProcessingResponse] = []

    async def read(self) -> ep.ProcessingRequest | object:
        if self.read_count == len(self.messages):
            return END
        self.read_count += 1
        return self.messages[self.read_count - 1]

    async def write(self, message: ep.ProcessingResponse) -> None:
        self.written.append(message)
