"""Google (reference §3.14): everything is handled on control; no region routing.

Every path under the prefix, known or not, continues to control, which answers unknown paths
with its own 404.
"""

from __future__ import annotations

from sidecar.core.decision import Control
from sidecar.core.providers._spec import ProviderSpec, View

SPEC = ProviderSpec(
    name="google",
    views=(View("any", r".*"),),
    id_source="none",
    delivery="control only",
    unmatched=Control("control_only_provider"),
)
