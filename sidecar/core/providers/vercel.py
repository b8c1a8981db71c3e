"""Vercel (reference §3.13): everything is handled on control; no region routing.

Vercel's webhooks and configuration views act on control-silo rows (the integration itself),
so every path under the prefix, known or not, continues to control, which answers unknown
paths with its own 404.
"""

from __future__ import annotations

from sidecar.core.decision import Control
from sidecar.core.providers._spec import ProviderSpec, View

SPEC = ProviderSpec(
    name="vercel",
    views=(View("any", r".*"),),
    id_source="none",
    delivery="control only",
    unmatched=Control("control_only_provider"),
)
