"""silo-router: the ext_proc sidecar that routes provider webhooks to the region that owns them."""

__all__ = ["__version__"]
__version__ = "0.1.0"
