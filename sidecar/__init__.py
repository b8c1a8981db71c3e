"""silo-router: the ext_proc sidecar that routes provider webhooks to the region that owns them."""

import os

__all__ = ["GRPC_EXPERIMENTS", "__version__"]
__version__ = "0.1.0"

GRPC_EXPERIMENTS = "-event_engine_listener,-event_engine_for_all_other_endpoints,-event_engine_client"
"""gRPC's own TCP code (iomgr) instead of its EventEngine threads, for every socket of the process.

With EventEngine, each read from Envoy's connection is handed from an EventEngine thread to the
thread polling the completion queue, then to the event loop: three threads per event. With iomgr
the polling thread reads the socket itself. Measured A/B with the ``make bench`` harness on 2
vCPUs (docs/performance.md, fourth round): Jira route 487/429 → 353/349 µs of sidecar CPU per
request at saturation, −15…23 % at equal load for the no-op and the real sidecar alike. gRPC
reads the variable once, when ``grpc`` is first imported, so it is set here, before any module of
this package imports it. A value already in the environment wins (an empty one restores gRPC's
defaults); a gRPC without these experiments logs "Unknown experiment" and runs with its defaults.
"""

os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
