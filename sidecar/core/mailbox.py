"""Mailbox names: ``provider:identifier[:bucket][:event_type]`` (reference §2.5–2.6).

Rows of one mailbox are delivered strictly in order, so the name decides what may overtake
what. Buckets split a busy integration's mailbox; the event type keeps e.g. GitHub pushes from
waiting behind a slow issue comment.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BUCKET_COUNT = 100


@dataclass(frozen=True, slots=True)
class Mailbox:
    provider: str
    identifier: str
    bucket_key: int | None = None
    event_type: str | None = None
    bucket_count: int = DEFAULT_BUCKET_COUNT
    always_bucket: bool = False
    """Bucket regardless of volume (GitHub does, reference §3.4 [L])."""

    def name(self, over_volume: bool = False) -> str:
        """The rendered name. ``over_volume`` is the volume gate's verdict, counted outside the core."""
        parts = [self.provider, self.identifier]
        if self.bucket_key is not None and (self.always_bucket or over_volume):
            parts.append(str(self.bucket_key % self.bucket_count))
        if self.event_type:
            parts.append(self.event_type)
        return ":".join(parts)
