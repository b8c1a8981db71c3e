"""The gRPC server the ext_proc services run in: one place for its options and its event loop.

The real sidecar (``app.sidecar_server``) and the no-op floor (``wire.noop``) both build their
server here, so a benchmark ratio between them measures routing work only.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
from collections.abc import Coroutine, Mapping
from typing import Any, Final, Literal

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from sidecar.errors import ConfigError

EXT_PROC_SERVICE: Final[str] = ep.DESCRIPTOR.services_by_name["ExternalProcessor"].full_name
"""``envoy.service.ext_proc.v3.ExternalProcessor``: also the gRPC health service name Envoy checks."""

Loop = Literal["asyncio", "uvloop"]
LOOPS: Final[tuple[Loop, ...]] = ("asyncio", "uvloop")
DEFAULT_LOOP: Final[Loop] = "uvloop"
"""uvloop when it is installed (a main dependency): −11…13 % sidecar CPU per request measured side
by side with ``make bench`` (docs/performance.md); ``run`` falls back to asyncio without it."""
LOOP_ENV: Final = "SILO_ROUTER_LOOP"
"""``asyncio`` or ``uvloop``: the loop ``silo-router serve`` / ``up`` run on (unset: ``DEFAULT_LOOP``)."""


def loop_from_env(environ: Mapping[str, str] = os.environ) -> Loop:
    value = environ.get(LOOP_ENV) or DEFAULT_LOOP
    if value not in LOOPS:
        raise ValueError(f"{LOOP_ENV} must be one of {', '.join(LOOPS)}, not {value!r}")
    return "uvloop" if value == "uvloop" else "asyncio"


def options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        # One process per port (sidecar.processes): a second process started on a port already
        # served must fail at start, not share it, since the kernel would hash Envoy's few
        # connections over the two unevenly (docs/performance.md, fourth round).
        ("grpc.so_reuseport", 0),
        # BUFFERED bodies arrive in one message: the default 4 MiB cap would fail them with 500.
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def new_server(max_message_bytes: int) -> grpc.aio.Server:
    """The server, built last at startup: everything imported and set up so far is frozen out of
    the garbage collector first (see ``freeze_heap``)."""
    freeze_heap()
    return grpc.aio.server(options=options(max_message_bytes))


def listen(server: grpc.aio.Server, address: str) -> None:
    """Listen on ``address`` (``host:port``), or say which setting names a port already taken."""
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc.aio: "Failed to bind to address ..."
        raise ConfigError(
            f"cannot listen on {address} ({exc}): is another process serving it? With sidecar.processes "
            "each process needs its own `serve --process K`"
        ) from None


def freeze_heap() -> None:
    """Move every object alive now into the collector's permanent generation.

    The real sidecar holds ~110k objects after its imports (envoy-data-plane, pydantic, psycopg);
    each full collection walked them all (~70 ms here) and in-flight requests promoted into the
    old generation trigger one every few seconds under load. Frozen, those collections only see
    what was created since. Objects are never freed by freezing, only no longer scanned.
    """
    gc.collect()
    gc.freeze()


def run(main: Coroutine[Any, Any, None], loop: Loop = DEFAULT_LOOP) -> None:
    """``asyncio.run(main)`` on the chosen event loop; asyncio's own when uvloop cannot be imported
    (a platform without a uvloop wheel, e.g. Windows)."""
    if loop == "uvloop":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            uvloop = None
        if uvloop is not None:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main)
            return
    asyncio.run(main)
