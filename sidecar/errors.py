"""Errors at the I/O edges, each with a stable code (the ``reason`` label of error metrics).

The wire maps every one of them to an answer Envoy can send; nothing escapes a stream.
"""

from __future__ import annotations


class SiloError(Exception):
    code = "internal_error"
    status = 500
    retry_after: int | None = None


class ConfigError(SiloError):
    code = "config_error"


class DirectoryUnavailable(SiloError):
    """The directory database could not answer: 503 with Retry-After, never a guess."""

    code = "directory_unavailable"
    status = 503
    retry_after = 5


class OutboxUnavailable(SiloError):
    """The outbox could not commit: 503 with Retry-After, never a 202 (the provider retries)."""

    code = "outbox_unavailable"
    status = 503
    retry_after = 5
