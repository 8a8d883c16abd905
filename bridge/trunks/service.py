"""``TrunkService``: the trunks' side of the bridge at run time (see the package docstring)."""

from __future__ import annotations

import logging
from typing import Any

from ..calls import CallManager
from ..config import Settings
from ..numbers.catalog import Catalog

log = logging.getLogger(__name__)


class TrunkService:
    """Owns the trunk user agent and what runs on it."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.manager: CallManager | None = None
        """The calls SIP participants join and trunks' INVITEs place (set before start)."""

    def state_of(self, trunk_id: str) -> dict[str, Any]:
        """What ``GET /trunks/{id}`` shows beside the record (registration)."""
        return {"registration": None}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass
