"""``GraphSide``: what a Cloud API number does over the Graph API, on either road: its Graph
client, call permissions, standing (Meta's pauses, one call a user), calling settings and signed
webhooks, and the Meta artifacts of its calls. On Meta's SIP road it is what the number
still does over Graph (Meta's SIP documentation: business-initiated calls need permissions in
SIP mode too), and with ``sip.webhook_delivery`` the ``calls`` webhooks go to the SIP engine
(``on_calls``); without the Graph settings the permission routes answer 404 and webhooks 401,
as on any engine without them.

``CloudApiRoad`` is the engine API both roads answer alike, through their ``GraphSide``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import aiohttp

from ...config import EngineSettings
from ...errors import EngineCallNotFound, NotFound
from ...logs import Repeats
from ...tasks import TaskSet
from ..base import EngineEvent, EngineStats, RemoteCall
from .artifacts import MetaArtifacts
from .calling_settings import CallingSettings
from .channel import PeerChannel
from .graph import GraphClient
from .media import MediaLeg
from .permissions import CallPermissions
from .sdp import DEFAULT_BITRATE
from .standing import NumberStanding
from .state import MetaCall
from .webhook import (
    CallWebhook,
    WebhookInbox,
    call_events,
    for_number,
    verify,
    webhook_calls,
)

C = TypeVar("C", bound=MetaCall)
log = logging.getLogger(__name__)

UNREAD = {
    "calls": "a calls item with no id or an event the bridge does not know, or a status with "
    "no id or status",
    "messages": "a message, a permission reply or a user id change without its fields",
    "number": "an account_update or account_settings_update without its fields",
    "artifacts": "a recording or transcript announcement without its media",
}
"""What each kind of webhook item the bridge skipped lacked (Meta's documented shapes)."""


class GraphSide:
    """A number's Graph API (see the module docstring); ``http``: the app's session, else its
    own, made at ``start`` and closed at ``close``."""

    def __init__(
        self,
        settings: EngineSettings,
        stats: EngineStats,
        events: asyncio.Queue[EngineEvent],
        http: aiohttp.ClientSession | None = None,
        *,
        sip: bool = False,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.enabled = bool(settings.engine_token and settings.cloudapi_phone_number_id)
        number = settings.cloudapi_phone_number_id
        self.graph = GraphClient(settings.engine_url, settings.engine_token, number, stats)
        self.permissions = CallPermissions(self.graph, events)
        self.standing = NumberStanding(events, number)  # Meta's pauses apply on SIP too
        self.calling_settings = CallingSettings(
            self.graph, str(settings.cloudapi_media), sip=sip, on_read=self.standing.settings_read
        )
        """Meta's calling settings of the number (a SettingsEngine's; ``…/sip/rotate`` too)."""
        self.inbox = WebhookInbox(settings.cloudapi_app_secret, stats)
        self.artifacts: MetaArtifacts | None = None
        """Meta's recordings, transcriptions and voicemails, whose webhooks come here too (the
        engine's, on either road)."""
        self.on_calls: Callable[[list[CallWebhook]], Awaitable[None]] | None = None
        """Who hears Meta's ``calls`` webhooks (the engine)."""
        self.unread = Repeats()
        """Runs of skipped webhook items, by kind: each run said once (:meth:`_skipped`)."""
        self._http, self._own_http = http, http is None

    async def start(self, tasks: TaskSet) -> None:
        if not self.enabled:
            return
        if self._http is None:
            self._http = aiohttp.ClientSession()
        self.graph.http = self._http
        tasks.spawn(self.inbox.run(self._on_body), "webhooks")

    async def close(self) -> None:
        """After the owner's tasks (the webhook worker) have stopped."""
        if self._http is not None and self._own_http:
            await self._http.close()

    def usable_permissions(self) -> CallPermissions:
        """The call permissions, or :class:`NotFound` without the Graph settings (SIP road)."""
        if not self.enabled:
            raise NotFound(
                "call permissions on a SIP number go through the Graph API: set "
                "BRIDGE_ENGINE_TOKEN and BRIDGE_CLOUDAPI_PHONE_NUMBER_ID (and, for the answers, "
                "BRIDGE_CLOUDAPI_APP_SECRET and BRIDGE_CLOUDAPI_VERIFY_TOKEN)"
            )
        return self.permissions

    async def _on_body(self, body: dict[str, Any]) -> None:
        body = for_number(body, self.settings.cloudapi_phone_number_id)  # others' are theirs
        calls, bad = call_events(body)
        skipped = {
            "calls": bad,
            "messages": self.permissions.heard(body),
            "number": self.standing.heard(body),
            "artifacts": self.artifacts.heard(body) if self.artifacts is not None else 0,
        }
        self.stats.bad_messages += sum(skipped.values())
        for kind, count in skipped.items():
            self._skipped(kind, count, bool(calls) if kind == "calls" else False)
        if calls and self.on_calls is not None:
            await self.on_calls(calls)

    def _skipped(self, kind: str, count: int, read: bool) -> None:
        """Items of ``kind`` Meta sent that the bridge cannot read are skipped and counted
        (``bridge_engine_bad_messages_total``), each run of them said once at WARNING, not
        an item at a time (Meta resends and changes shapes); a calls item read again ends
        the run, said too."""
        if count and self.unread.seen(kind) == 1:
            log.warning(
                "number %s: Meta's webhook %s skipped (%s): a user's call or notice in it is "
                "lost; later ones counted in bridge_engine_bad_messages_total, not said",
                self.settings.cloudapi_phone_number_id,
                "items" if count > 1 else "item",
                UNREAD[kind],
            )
        elif not count and read and (before := self.unread.ended(kind)):
            log.info(
                "number %s: Meta's %s items read again, after %d webhook(s) with some skipped",
                self.settings.cloudapi_phone_number_id,
                kind,
                before,
            )


class CloudApiRoad(Generic[C]):
    """What both roads' engines answer alike (``CloudApiEngine``, ``SipEngine``): a live call
    found, its media opened, a dial guarded by the number's standing, the calls' legs to their
    runtimes, and the number's Graph side (permissions, webhooks, pauses)."""

    name = "cloudapi"
    media_before_answer = False
    opus_bitrate = DEFAULT_BITRATE
    """Meta asks for at most 20 kbit/s (its fmtp's ``maxaveragebitrate``)."""
    billing_pulse_s = 6  # Meta bills business-initiated calls in 6 s pulses (a BilledEngine)

    calls: Mapping[str, C]
    graph_side: GraphSide
    _dial: Callable[[str, str, tuple[str, ...]], Awaitable[str]]
    """The road's own dial (its ``_dial`` method): the engine call id of the call it placed."""

    def _live(self, engine_call_id: str) -> C:
        if (call := self.calls.get(engine_call_id)) is None or call.state == "ended":
            raise EngineCallNotFound(f"the Cloud API engine has no live call {engine_call_id}")
        return call

    async def open_media(self, engine_call_id: str) -> PeerChannel:
        return self._live(engine_call_id).leg.open_channel()

    async def dial(self, phone: str, *, call_id: str = "", other_leg: tuple[str, ...] = ()) -> str:
        users = [(c.peer_wa, c.state) for c in self.calls.values()]
        with self.graph_side.standing.dialling(phone, users):  # paused? one call a user
            return await self._dial(phone, call_id, other_leg)

    def take_leg(self, engine_call_id: str) -> MediaLeg | None:
        """The call's leg, for its runtime to own and close (``None``: ended, or taken)."""
        call = self.calls.get(engine_call_id)
        if call is None or call.state == "ended" or call.handed_over:
            return None  # ended, or already some runtime's: one owner
        call.handed_over = True
        return call.leg

    async def startup_calls(self) -> list[RemoteCall]:  # Meta lists no live calls to sweep
        return []

    def calling_pause(self) -> dict[str, Any] | None:  # a StandingEngine
        return self.graph_side.standing.pause_view()

    # -- call permissions (a PermissionEngine), Meta's signed webhooks
    async def request_permission(
        self, phone: str, template: Mapping[str, str] | None, text: str = ""
    ) -> str:
        return await self.graph_side.usable_permissions().request(phone, template, text)

    async def read_permission(self, phone: str) -> dict[str, Any]:  # cached briefly
        return await self.graph_side.usable_permissions().read(phone)

    async def send_call_button(self, phone: str, button: Mapping[str, Any]) -> str:
        """Meta's call button (a CallButtonEngine's): a Graph message, on the SIP road too."""
        return await self.graph_side.usable_permissions().send_call_button(phone, button)

    def verify_subscription(self, query: Mapping[str, str]) -> str:  # GET /engine/webhook
        return verify(query, self.graph_side.settings.cloudapi_verify_token)

    def carries_call_in(self, raw: bytes) -> bool:  # a SignedWebhookEngine's
        named = (self._by_webhook(wacid) for wacid in webhook_calls(raw).engine_call_ids)
        return any(call is not None and call.state != "ended" for call in named)

    def _by_webhook(self, wacid: str) -> C | None:
        """The call Meta's ``calls`` webhooks name by ``wacid`` (the SIP road keys its own
        dials otherwise)."""
        return self.calls.get(wacid)

    def also_signed_with(self, secret: Callable[[], str]) -> None:  # a SignedWebhookEngine's
        self.graph_side.inbox.also = secret

    def receive_webhook(self, raw: bytes, headers: Mapping[str, str]) -> bool:  # checked, queued
        self.graph_side.inbox.receive(raw, headers)
        return True
