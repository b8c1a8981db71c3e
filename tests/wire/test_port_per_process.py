"""One sidecar process per port: a second one on a taken port fails at start with a clear error."""

from __future__ import annotations

import socket

import pytest

from sidecar import metrics
from sidecar.errors import ConfigError
from sidecar.wire import server


async def test_a_second_server_on_a_served_port_is_refused() -> None:
    first = server.new_server(1 << 20)
    port = first.add_insecure_port("127.0.0.1:0")
    await first.start()
    try:
        second = server.new_server(1 << 20)
        # Without SO_REUSEPORT: the kernel would otherwise split Envoy's connections between them.
        with pytest.raises(ConfigError, match=rf"cannot listen on 127.0.0.1:{port} .*--process K"):
            server.listen(second, f"127.0.0.1:{port}")
    finally:
        await first.stop(None)


def test_a_metrics_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"cannot serve metrics on 127.0.0.1:{port}: Address already in use"):
            metrics.start_exporter(f"127.0.0.1:{port}")
