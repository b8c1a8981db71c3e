"""The directory contract every implementation (Postgres, cache, in-memory) fulfils."""

from __future__ import annotations

from typing import Protocol

from sidecar.core.lookup import LookupKey, Resolution


class Directory(Protocol):
    async def resolve(self, keys: tuple[LookupKey, ...]) -> Resolution:
        """Try ``keys`` in order; the first that finds an integration (or organization mapping)
        wins. Nothing found: ``Resolution()``. Raises ``DirectoryUnavailable`` when the
        database cannot answer (never an empty answer: that would read as "unknown")."""
        ...
