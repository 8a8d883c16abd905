"""``CloudApiEngine``: WhatsApp Business Cloud API Calling (``BRIDGE_ENGINE=cloudapi``).

Signalling is Graph API requests (:mod:`.graph`) and signed webhooks (:mod:`.webhook`); the
WhatsApp side of each call is a media leg to Meta (:mod:`.media`), a ``CallLeg`` made at the
connect webhook or to dial (``engines/base.py``); a leg never handed over is closed here.

Inbound: connect webhook (offer) → answer → ``pre_accept`` → ``INCOMING``; ``answer`` →
``accept``; ``hangup`` → ``reject`` while ringing, else ``terminate``. Outbound: ``dial`` →
offer → ``connect`` (``biz_opaque_callback_data`` = our call id) → ``wacid``. Webhooks about a
dial that arrive before ``connect`` has answered are parked by their
``biz_opaque_callback_data`` and applied once the ``wacid`` is known; a terminate before its
connect keeps the late connect from ringing, on any worker (``EndsBeforeArrival``: a terminate
naming no call live here is told to every worker through the call directory, which a new
call's connect asks before it is pre-accepted); repeats change nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from ...config import Settings
from ...errors import (
    EngineCallNotFound,
    EngineError,
    MetaForbidden,
    MetaLimit,
    MetaRefused,
    NoCallPermission,
)
from ...tasks import TaskSet
from ..base import (
    CallsOver,
    EngineEvent,
    EngineEventKind,
    EngineHealth,
    EngineStats,
    Remembered,
    emit,
)
from ..hangups import PendingHangups
from .artifacts import MetaArtifacts
from .codes import CALL_STATUS, ended_by_meta, refused_event
from .graph import addressed, connected_call_id, strip
from .graph_side import CloudApiRoad, GraphSide
from .media import MediaLeg, new_leg
from .state import CloudCall, MetaCalls, Parked
from .webhook import CallWebhook, webhook_calls

log = logging.getLogger(__name__)


class CloudApiEngine(CloudApiRoad[CloudCall], MetaCalls):
    """Drives Meta's Cloud API Calling for one business number (a ``SignedWebhookEngine``:
    Meta signs its webhooks with X-Hub-Signature-256, so they need no API token; a
    ``LegEngine``: each call's peer connection goes to its runtime)."""

    def __init__(self, settings: Settings, http: aiohttp.ClientSession | None = None) -> None:
        self.settings = settings.engine
        self.ice = settings.ice
        """What its legs gather with."""
        self.events: asyncio.Queue[EngineEvent] = asyncio.Queue(maxsize=1000)
        self.stats = EngineStats()
        self.calls: dict[str, CloudCall] = {}
        self._dialling = Parked()  # webhooks about dials that Meta has not answered yet
        self._ended = Remembered()
        self._tasks = TaskSet("cloudapi")
        self.graph_side = side = GraphSide(self.settings, self.stats, self.events, http)
        """The number's Graph client, permissions, standing, settings and webhooks."""
        self.graph, self.standing, self.permissions = side.graph, side.standing, side.permissions
        self.calling_settings = side.calling_settings  # a SettingsEngine
        self.artifacts = MetaArtifacts(self.graph, self.events, self._tasks)  # an ArtifactsEngine
        side.artifacts, side.on_calls = self.artifacts, self._on_webhooks
        self.pending_hangups = PendingHangups("cloudapi", self._hang_up_again, asyncio.sleep)
        self.other_leg_codecs: Callable[[], tuple[str, ...]] = tuple  # LegCodecEngine's
        self.calls_over: Callable[[], CallsOver | None] = lambda: None
        """Where every worker finds the calls Meta ended before their connect came (an
        ``EndsBeforeArrival``'s: the switchboard sets it; ``None``: this worker alone)."""

    async def start(self) -> None:
        await self.graph_side.start(self._tasks)
        self._tasks.spawn(self.pending_hangups.run(), "pending-hangups")
        number, url = self.settings.cloudapi_phone_number_id, self.settings.engine_url
        log.info("Cloud API engine for number %s via %s; webhooks at /engine/webhook", number, url)

    def hangup_later(self, engine_call_id: str, why: str) -> None:  # once Graph answers again
        self.pending_hangups.add(engine_call_id, why)

    async def close(self) -> None:
        await self._tasks.close()
        for call in list(self.calls.values()):
            if not call.handed_over:  # the others are their runtimes' to close
                await call.leg.close()
        self.calls.clear()
        self._dialling.clear()
        await self.graph_side.close()

    @property
    def up(self) -> bool:
        return self.graph.reachable is not False

    async def health(self) -> EngineHealth:
        info: dict[str, object] = {
            "calls": len(self.calls),
            "webhooks": self.graph_side.inbox.accepted,
        }
        return EngineHealth(self.up, f"Graph API {self.graph.detail}", info)

    def _peer(self, label: str) -> MediaLeg:
        return new_leg(  # BRIDGE_CLOUDAPI_MEDIA: Graph signalling takes SDES too
            self.settings.cloudapi_media,
            label,
            self.ice,
            self.stats,
            on_dtmf=self.on_dtmf,
            on_media=self._on_media,
            on_closed=self.leg_closed,
        )

    def _on_media(self, peer: MediaLeg) -> None:
        call = self.calls.get(peer.wacid)
        if call is not None and call.direction == "outbound" and call.leg.answered:
            self._accepted(call)  # media on our answered call: up, even before ACCEPTED

    # -- call control
    async def _dial(self, phone: str, call_id: str, other_leg: tuple[str, ...]) -> str:
        peer = self._peer(f"cloudapi:dial:{call_id[:12]}")
        opaque = call_id[:512]
        self._dialling.open(opaque)
        try:
            session = {"sdp_type": "offer", "sdp": await peer.offer(other_leg)}
            fields = {**addressed(phone), "session": session, "biz_opaque_callback_data": opaque}
            fields.update(self.artifacts.fields(phone))  # Meta's recording, transcription
            self.permissions.forget(phone)  # a call changes the user's usage
            try:
                answer = await self.graph.call_action("connect", **strip(fields))
            except (MetaLimit, NoCallPermission) as exc:
                await self.permissions.call_refused(phone, exc)  # when next; why none
                raise
            except MetaForbidden as exc:
                self.standing.refused(exc)  # 138014: paused, say until when
                raise
            wacid = connected_call_id(answer)
        except BaseException:
            self._dialling.pop(opaque, None)
            await peer.close()  # (it runs to its end if this caller is cancelled)
            raise
        call = CloudCall(wacid, phone, "outbound", peer, state="calling", call_id=call_id)
        peer.wacid, peer.name = wacid, f"cloudapi:{wacid}"
        self.calls[wacid] = call
        # Webhooks sent before Meta's answer: now, in order (the manager registers it first).
        for ev in self._dialling.take(opaque, wacid):
            try:
                await self._on_webhook(ev)
            except Exception:
                log.exception("Cloud API call %s: an early webhook", wacid)
        return wacid

    async def answer(self, engine_call_id: str) -> None:
        call = self._live(engine_call_id)
        if call.direction != "inbound" or call.state != "ringing":
            raise EngineError(f"call {engine_call_id} is not ringing inbound")
        try:
            await self.graph.call_action(
                "accept",
                call_id=call.wacid,
                session={"sdp_type": "answer", "sdp": call.answer_sdp},
                **self.artifacts.fields(call.wacid),
            )
        except (MetaRefused, MetaLimit) as exc:  # e.g. 138007: the call ends with it too
            await self.forget(call)
            emit(self.events, refused_event(call.wacid, exc))
            raise
        call.state = "accepted"

    async def hangup(self, engine_call_id: str) -> None:
        call = self._live(engine_call_id)
        ringing = call.direction == "inbound" and call.state != "accepted"
        action = "reject" if ringing else "terminate"
        call.leg.expect_close()  # Meta closes its side when it takes this
        try:
            await self.graph.call_action(action, call_id=call.wacid)
        finally:
            await self.forget(call)
            self._ended.add(call.wacid, action)  # to send again if Meta did not take it

    async def _hang_up_again(self, wacid: str) -> None:
        """A hang-up Meta did not take, sent again (``pending_hangups``): the action sent for
        the call forgotten here, or the live call's hang-up. ``EngineCallNotFound`` once Meta
        has said the call is over (its terminate webhook): nothing is left to send."""
        if wacid in self.calls:
            await self.hangup(wacid)
        elif (action := self._ended.get(wacid)) is not None:
            await self.graph.call_action(action, call_id=wacid)
        else:
            raise EngineCallNotFound(f"Meta has ended call {wacid}")

    def drop(self, call: CloudCall) -> None:
        call.state = "ended"
        self.calls.pop(call.wacid, None)
        self._ended.add(call.wacid)

    def _accepted(self, call: CloudCall) -> None:
        if call.state in ("calling", "ringing"):
            call.state = "accepted"
            emit(self.events, EngineEvent(EngineEventKind.ANSWERED, call.wacid, call.jid))

    # -- webhooks (checked and queued by the Graph side)
    webhook_calls = staticmethod(webhook_calls)

    async def _on_webhooks(self, events: list[CallWebhook]) -> None:
        for event in events:
            await self._on_webhook(event)

    async def _on_webhook(self, ev: CallWebhook) -> None:
        if ev.wacid in self._ended:
            if ev.kind == "terminate":
                self._ended[ev.wacid] = None  # over at Meta too: no hang-up to send again
                await self.tell_over(ev.wacid)  # a repeat: told again (Redis back meanwhile?)
            return  # a late or repeated event about a call that has ended
        call = self.calls.get(ev.wacid)
        if call is None and self._dialling.park(ev):
            return  # our own dial, whose connect has not returned the wacid yet
        if ev.kind == "connect":
            if ev.new_call:
                if call is None:
                    self._inbound(ev)
            elif call is not None and ev.sdp_type == "answer" and "answer" not in call.seen:
                call.seen.add("answer")
                self._tasks.spawn(self._apply_answer(call, ev.sdp), f"answer:{call.wacid}")
        elif ev.kind == "terminate":
            if call is not None:
                await self._terminated(call, ev)
            else:  # over before its connect reached us: a late connect must not ring, here
                self._ended.add(ev.wacid)  # or on the worker it reaches
                await self.tell_over(ev.wacid)
        elif ev.kind == "status" and call is not None and ev.status not in call.seen:
            call.seen.add(ev.status)
            kind, reason = CALL_STATUS.get(ev.status, (None, ""))
            if kind is EngineEventKind.RINGING and call.state == "calling":
                call.state = "ringing"
                emit(self.events, EngineEvent(EngineEventKind.RINGING, call.wacid, call.jid))
            elif kind is EngineEventKind.ANSWERED:
                self._accepted(call)
            elif kind is EngineEventKind.ENDED:
                await self.forget(call)
                emit(self.events, EngineEvent(EngineEventKind.ENDED, call.wacid, reason=reason))

    def _inbound(self, ev: CallWebhook) -> None:
        peer = self._peer(f"cloudapi:{ev.wacid}")
        call = CloudCall(ev.wacid, ev.peer, "inbound", peer, metadata=ev.metadata)
        peer.wacid = ev.wacid
        self.permissions.heard_from(ev.peer, called=True)  # the window opens; a callback?
        self.calls[ev.wacid] = call
        self._tasks.spawn(self._pre_accept(call, ev.sdp), f"pre-accept:{ev.wacid}")

    async def _pre_accept(self, call: CloudCall, offer: str) -> None:
        if await self.over_elsewhere(call.wacid):  # its terminate came first, to another worker
            if call.state != "ended":  # (else its terminate came here too, meanwhile)
                log.info(
                    "Cloud API call %s: Meta ended it before its connect: not rung", call.wacid
                )
                await self.forget(call)  # Meta's race, no failure: nothing to send
            return
        try:
            call.answer_sdp = await call.leg.answer(offer, self.other_leg_codecs())
            if call.state == "ended":
                return  # Meta's terminate came meanwhile (the caller hung up): nothing to send
            await self.graph.call_action(
                "pre_accept",
                call_id=call.wacid,
                session={"sdp_type": "answer", "sdp": call.answer_sdp},
            )
        except Exception as exc:
            if call.state == "ended":
                return  # over meanwhile (its leg closed under the answer): no failure
            log.warning("Cloud API call %s: cannot pre-accept: %s", call.wacid, exc)
            await _give_up(self, call, "reject")
            return
        if call.state != "connecting":
            return  # terminated meanwhile
        call.state = "ringing"
        ringing = EngineEvent(EngineEventKind.INCOMING, call.wacid, call.jid, data=call.incoming)
        emit(self.events, ringing)

    async def _apply_answer(self, call: CloudCall, sdp: str) -> None:
        try:
            await call.leg.apply_answer(sdp)
        except Exception as exc:
            if call.state == "ended":
                return  # ended meanwhile (a terminate overtook it): nothing to undo
            log.warning("Cloud API call %s: Meta's answer cannot be applied: %s", call.wacid, exc)
            await _give_up(self, call, "terminate")
            emit(self.events, EngineEvent(EngineEventKind.ENDED, call.wacid, reason="failed"))

    async def _terminated(self, call: CloudCall, ev: CallWebhook) -> None:
        answered, outbound = call.state == "accepted", call.direction == "outbound"
        event = ended_by_meta(call.wacid, ev, answered=answered, outbound=outbound)
        was_ringing = call.state == "connecting"
        await self.forget(call)
        if not was_ringing:  # the manager never heard of a call still being pre-accepted
            emit(self.events, event)


async def _give_up(engine: CloudApiEngine, call: CloudCall, action: str) -> None:
    """End at Meta (``reject`` or ``terminate``, whatever it answers) and forget."""
    try:
        await engine.graph.call_action(action, call_id=call.wacid)
    except EngineError as again:
        log.info("Cloud API call %s: %s: %s", call.wacid, action, again)
    await engine.forget(call)
