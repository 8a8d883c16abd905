"""``CallingSettings``: a number's calling settings read and written through the Graph API
(``GET``/``POST /{PHONE_NUMBER_ID}/settings``; the wire is :mod:`.settings_wire`).

A change is checked against Meta's rules first (400 ``invalid_settings`` naming the field),
then sent; Meta's own refusal comes back as 400 ``settings_refused`` with Meta's code and
message in ``details`` and a hint (logged once, at WARNING, by the Graph client); the settings
are then read back, so the answer is what Meta keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import GraphApiError, MetaSettingsRefused
from .graph import GraphClient
from .settings_wire import from_meta, to_meta

HINT = (
    "check the field Meta names against Meta Cloud API Calling's call settings (calling must "
    "be enabled, which needs a messaging limit of at least 2 000, before its other settings)"
)


class CallingSettings:
    """One number's calling settings at Meta."""

    def __init__(self, graph: GraphClient) -> None:
        self.graph = graph

    async def read(self) -> dict[str, Any]:
        """Meta's settings as the bridge shows them (no SIP password)."""
        return from_meta(await self.graph.request("GET", "settings", "read settings"))

    async def write(self, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``patch`` (the bridge's names) at Meta; the settings Meta then keeps."""
        calling = to_meta(patch)
        try:
            await self.graph.request("POST", "settings", "settings", {"calling": calling})
        except GraphApiError as exc:
            meta = exc.details.get("metaMessage") or exc.message
            code = exc.details.get("metaCode")
            raise MetaSettingsRefused(
                f"Meta refused the settings: {code}: {meta}. {HINT}", details=exc.details
            ) from None
        return await self.read()
