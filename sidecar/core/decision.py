"""What the sidecar does with a request: the four outcomes, plus the two "I need X" steps.

Every outcome carries ``reason``: a short, stable code (never an id or a path) that becomes a
metric label, a log field and the answer of ``silo-router explain``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sidecar.core.lookup import LookupKey, Resolution
from sidecar.core.mailbox import Mailbox


@dataclass(frozen=True, slots=True)
class Control:
    """Continue to the control upstream unchanged (Sentry's "control silo response")."""

    reason: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Route the request, unchanged, to one region."""

    region: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    """Where the delivery worker posts a region's answer to a stored interaction (reference §3.1
    step 6, §3.3): the provider got an immediate reply and expects the real one later."""

    kind: Literal["slack", "discord"]
    url: str
    """slack: the payload's ``response_url``; discord: the interaction webhook's path
    (``/api/v10/webhooks/<application_id>/<token>``), joined to the configured Discord base URL."""


@dataclass(frozen=True, slots=True)
class Store:
    """Store one copy per region durably, then answer ``reply`` (202 unless a provider says otherwise)."""

    provider: str
    regions: tuple[str, ...]
    mailbox: Mailbox
    integration_id: int | None
    reason: str
    reply_status: int = 202
    reply_body: bytes = b""
    reply_headers: tuple[tuple[str, str], ...] = ()
    reply_to: ReplyTarget | None = None
    """Set for async replies: once the regions were tried, the worker posts the answer here."""


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the provider directly; nothing reaches an upstream."""

    status: int
    reason: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


Decision = Control | Forward | Store | Reply


@dataclass(frozen=True, slots=True)
class NeedBody:
    """The decision depends on the body: ask Envoy for it (the route must be BUFFERED)."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """Ask the directory, then call ``then`` with what it found.

    ``keys`` are tried in order and the first one that finds an integration (or organization)
    wins: MS Teams, for one, identifies by integration id, then team id, then tenant id.
    """

    keys: tuple[LookupKey, ...]
    then: Callable[[Resolution], Decision]


@dataclass(frozen=True, slots=True)
class FetchKey:
    """Ask the key source for a public key (PEM text) by key id, then call ``then`` with it
    (None when the source has no such key). Atlassian Connect tokens with a ``kid`` need it."""

    source: str
    kid: str
    then: Callable[[str | None], Step]


Step = NeedBody | Lookup | FetchKey | Control | Forward | Store | Reply
