"""``GraphSide``: what a number on Meta's SIP road still does over the Graph API: call
permissions (Meta's SIP documentation: business-initiated calls need them in SIP mode too),
and with ``sip.webhook_delivery`` the ``calls`` webhooks, handed to the SIP engine
(``on_calls``). Without the Graph settings the permission routes answer 404 and webhooks 401,
as on any engine without them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from ...config import EngineSettings
from ...errors import NotFound
from ...tasks import TaskSet
from ..base import EngineEvent, EngineStats
from .graph import GraphClient
from .permissions import CallPermissions
from .standing import NumberStanding
from .webhook import CallWebhook, WebhookInbox, call_events, verify


class GraphSide:
    """The Graph API beside SIP signalling (see the module docstring)."""

    def __init__(
        self, settings: EngineSettings, stats: EngineStats, events: asyncio.Queue[EngineEvent]
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.enabled = bool(settings.engine_token and settings.cloudapi_phone_number_id)
        number = settings.cloudapi_phone_number_id
        self.graph = GraphClient(settings.engine_url, settings.engine_token, number, stats)
        self._permissions = CallPermissions(self.graph, events)
        self.standing = NumberStanding(events, number)  # Meta's pauses apply on SIP too
        self.inbox = WebhookInbox(settings.cloudapi_app_secret, stats)
        self.on_calls: Callable[[list[CallWebhook]], None] | None = None
        """Who hears Meta's ``calls`` webhooks about SIP calls (the SIP engine)."""
        self._http: aiohttp.ClientSession | None = None

    async def start(self, tasks: TaskSet) -> None:
        if not self.enabled:
            return
        self._http = self.graph.http = aiohttp.ClientSession()
        tasks.spawn(self.inbox.run(self._on_body), "graph-webhooks")

    async def close(self) -> None:
        """After the owner's tasks (the webhook worker) have stopped."""
        if self._http is not None:
            await self._http.close()

    @property
    def permissions(self) -> CallPermissions:
        if not self.enabled:
            raise NotFound(
                "call permissions on a SIP number go through the Graph API: set "
                "BRIDGE_ENGINE_TOKEN and BRIDGE_CLOUDAPI_PHONE_NUMBER_ID (and, for the answers, "
                "BRIDGE_CLOUDAPI_APP_SECRET and BRIDGE_CLOUDAPI_VERIFY_TOKEN)"
            )
        return self._permissions

    def heard_from(self, phone: str) -> None:
        """A user called over SIP: their service window opens (as on Graph)."""
        self._permissions.heard_from(phone, called=True)

    def verify(self, query: Mapping[str, str]) -> str:
        return verify(query, self.settings.cloudapi_verify_token)

    async def _on_body(self, body: dict[str, Any]) -> None:
        calls, bad = call_events(body)  # with Meta's sip.webhook_delivery ENABLED
        if calls and self.on_calls is not None:
            self.on_calls(calls)
        self.stats.bad_messages += bad + self._permissions.heard(body) + self.standing.heard(body)
