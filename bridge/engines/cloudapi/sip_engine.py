"""``SipEngine``: the Cloud API engine on Meta's SIP road (``BRIDGE_ENGINE=cloudapi`` with
``BRIDGE_CLOUDAPI_SIGNALLING=sip``): SIP over TLS signalling (:mod:`bridge.sip`), the media
leg :func:`.media.new_leg` makes (``BRIDGE_CLOUDAPI_MEDIA``: DTLS or SDES).

The engine is the signalling: the user agent's lifecycle, the Graph side (:mod:`.graph_side`),
and the engine API. Its calls and their dialogs are :class:`~.sip_dialogs.SipDialogs`'; the
steps both ways are docs/engines/cloudapi.md, *Meta's SIP road, step by step*. ``hangup`` is
``486`` while ringing, ``CANCEL`` before Meta answers our INVITE, else ``BYE``.

Meta accepts no re-INVITE, UPDATE or REFER: hold, transfer and the rest are done in the
bridge's media, never signalled. Calls do not move, so a draining worker serves them to the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import ssl
import time
from collections.abc import Callable

import aiohttp

from ...config import ConfigError, IceSettings, Settings, SipSettings
from ...errors import EngineError, NoCallPermission
from ...sip import (
    DigestServer,
    Doors,
    FrontDoor,
    InviteClient,
    KeyLocked,
    Line,
    PeerPolicy,
    UserAgent,
    client_context,
)
from ...sip.message import Response
from ...tasks import TaskSet
from ..base import (
    CallsOver,
    EngineEvent,
    EngineEventKind,
    EngineHealth,
    EngineStats,
    emit,
)
from ..webhooks import WebhookCalls
from .artifacts import MetaArtifacts
from .graph import NO_CALL_PERMISSION
from .graph_side import CloudApiRoad, GraphSide
from .media import MediaLeg, new_leg
from .sip_calls import SipCall, bic_failure, meta_code, meta_wacid
from .sip_dialogs import SipDialogs
from .webhook import CallWebhook
from .webhook import webhook_calls as calls_named

log = logging.getLogger(__name__)

REALM = "wa.meta.vc"
"""The digest realm of Meta's SIP interface (both ways)."""


def listener_refused(sip: SipSettings, exc: OSError | ssl.SSLError) -> ConfigError:
    """Why the SIP listener cannot start, naming the setting to change: a certificate or key
    file that does not load, or an address it cannot listen on."""
    if isinstance(exc, KeyLocked):
        what = "is not its passphrase" if exc.given else "is not set"
        return ConfigError(
            f"BRIDGE_SIP_KEY={exc.filename!r} is an encrypted private key and "
            f"BRIDGE_SIP_KEY_PASSWORD {what} (the bridge never prompts for one)"
        )
    if isinstance(exc, ssl.SSLError) or getattr(exc, "filename", None):
        names = {sip.sip_cert: "BRIDGE_SIP_CERT", sip.sip_key: "BRIDGE_SIP_KEY"}
        named = names.get(getattr(exc, "filename", None) or "")
        which = [named] if named else ["BRIDGE_SIP_CERT", "BRIDGE_SIP_KEY"]
        shown = ", ".join(f"{n}={getattr(sip, n.lower().removeprefix('bridge_'))!r}" for n in which)
        return ConfigError(f"{shown}: not a certificate and its key that load ({exc})")
    why = exc.strerror or str(exc)
    return ConfigError(f"BRIDGE_SIP_LISTEN={sip.sip_listen}: the SIP listener cannot start: {why}")


class SipEngine(CloudApiRoad[SipCall]):
    """Meta's SIP road for one business number (see the module docstring)."""

    def __init__(self, settings: Settings, http: aiohttp.ClientSession | None = None) -> None:
        self.settings = settings
        self.sip = settings.sip
        self.media = settings.engine.cloudapi_media
        self.ice: IceSettings = settings.ice
        self.events: asyncio.Queue[EngineEvent] = asyncio.Queue(maxsize=1000)
        self.stats = EngineStats()
        self._tasks = TaskSet("cloudapi-sip")
        self.ua: UserAgent | None = None
        """The worker's shared SIP user agent (:class:`~bridge.sip.FrontDoor`'s)."""
        self.door: FrontDoor | None = None
        self.doors = Doors()
        """Where the SIP listener is shared: the switchboard gives every SIP engine its own
        (a :class:`~bridge.engines.SipLineEngine`)."""
        self.password_required = False
        """A number made at run time: without a password its INVITEs are refused (403), not
        taken unchallenged as the settings' number's are (set by the switchboard)."""
        self.line: Line | None = None
        self.graph_side = GraphSide(settings.engine, self.stats, self.events, http, sip=True)
        """Call permissions and Meta's signed webhooks, over Graph (:mod:`.graph_side`)."""
        self.calling_settings = self.graph_side.calling_settings  # a SettingsEngine
        self.artifacts = MetaArtifacts(self.graph_side.graph, self.events, self._tasks)
        """Meta's voicemail of the number's calls (a ``messages`` webhook, over Graph as on the
        Graph road); Meta's recordings are asked on Graph calls only (the API says so)."""
        self.graph_side.artifacts = self.artifacts
        self.other_leg_codecs: Callable[[], tuple[str, ...]] = tuple
        """Where the number's inbound calls go, by codec (a ``LegCodecEngine``: the
        switchboard sets it): Meta's G.711 offer is answered in kind for a G.711 PBX phone."""
        self.calls_over: Callable[[], CallsOver | None] = lambda: None
        """Where every worker finds the calls Meta ended before their INVITE came (an
        ``EndsBeforeArrival``'s: the switchboard sets it; ``None``: this worker alone)."""
        self.dialogs = SipDialogs(
            self.events,
            self.graph_side,
            self._leg,
            lambda: self.other_leg_codecs(),
            lambda: self.calls_over(),
        )
        """The calls and their dialogs; the UA's ``CallHandler`` (:mod:`.sip_dialogs`)."""
        self.calls: dict[str, SipCall] = self.dialogs.calls  # the same dict
        self.graph_side.on_calls = self._meta_call_webhooks

    def use_password(self, password: str) -> None:
        if password == self.sip.sip_password:
            return
        self.sip = dataclasses.replace(self.sip, sip_password=password)
        if self.line is not None:  # the next INVITE is challenged with it, the next call out too
            number = self.sip.sip_number
            self.line.digest = DigestServer(REALM, number, password) if password else None
            self.line.locked = not password and self.password_required
        if password:
            log.info("SIP number %s: a new SIP password is in use", self.sip.sip_number)
        else:  # removed (``null``): as the start without one says
            log.warning(
                "SIP number %s has no SIP password: Meta's INVITEs are not challenged",
                self.sip.sip_number,
            )

    def take_no_new_calls(self) -> None:  # a SipLineEngine's: retired by the switchboard
        if self.door is not None and self.line is not None:
            self.door.retire(self.line)

    # -- lifecycle
    async def start(self) -> None:
        sip = self.sip
        digest = DigestServer(REALM, sip.sip_number, sip.sip_password) if sip.sip_password else None
        if digest is None and not self.password_required:
            log.warning(
                "SIP number %s has no SIP password: Meta's INVITEs are not challenged",
                sip.sip_number,
            )
        self.line = Line(
            sip.sip_number,
            sip.sip_hostname,
            self.dialogs,
            digest,
            sip.sip_cert,
            sip.sip_key,
            self._counted,
            locked=digest is None and self.password_required,
            key_password=sip.sip_key_password,
        )
        await self.graph_side.start(self._tasks)
        host, port = sip.listen
        client_ctx = client_context(sip.sip_ca, "BRIDGE_SIP_CA")
        try:
            self.door = await self.doors.join(
                host,
                port,
                self.line,
                client_ca=sip.sip_ca if sip.sip_verify_client else None,
                client_ctx=client_ctx,
                policy=PeerPolicy(
                    sip.trusted_networks,
                    sip.sip_verify_client,
                    sip.sip_max_connections_per_source,
                    sip.sip_first_message_timeout,
                ),
            )
        except (OSError, ssl.SSLError) as exc:
            raise listener_refused(sip, exc) from None
        self.ua = self.door.ua
        self.dialogs.ua = self.ua
        log.info(
            "Cloud API over SIP: number %s, listening on %s:%d (TLS) as %s; Meta at %s; media %s",
            sip.sip_number,
            host or "*",
            self.dialogs.user_agent().port,
            sip.sip_hostname,
            sip.sip_meta_uri,
            self.media,
        )

    def _counted(self, what: str) -> None:
        if what == "bad":  # malformed SIP: bridge_engine_bad_messages_total
            self.stats.bad_messages += 1

    async def close(self) -> None:
        await self._tasks.close()
        for call in list(self.calls.values()):
            self.dialogs.drop(call)  # out of the shared UA's dialogs too
            if not call.handed_over:
                await call.leg.close()
        if self.door is not None and self.line is not None:
            await self.door.leave(self.line)
        await self.graph_side.close()

    # -- Meta's signed webhooks (checked and queued by the Graph side)
    async def _meta_call_webhooks(self, events: list[CallWebhook]) -> None:
        # Meta's sip.webhook_delivery: a terminate is the backstop for a BYE lost on the way,
        # or comes before the INVITE (sip_dialogs: refused then, by whichever worker it
        # reaches: the directory remembers it for them); connects and statuses add
        # nothing to the INVITE and its answers. (The call id is Meta's wacid on calls Meta
        # placed; our own INVITEs' are ours, found by the wacid Meta's answer named.)
        for event in events:
            if event.kind == "terminate" and await self.dialogs.terminated(event.wacid):
                self._tasks.spawn(
                    self.dialogs.terminated_by_meta(event),
                    f"terminate:{event.wacid[:24]}",
                )

    def webhook_calls(self, raw: bytes) -> WebhookCalls:
        # The calls Meta's ``calls`` items name by wacid (a cluster's router sends them to the
        # worker that carries the call: its SIP dialog); never a new call: the INVITE is.
        return dataclasses.replace(calls_named(raw), new_call=False)

    def _by_webhook(self, wacid: str) -> SipCall | None:
        # Ours are keyed by our Call-ID (a retired engine is found by the wacid Meta named)
        return self.dialogs.by_webhook(wacid)

    @property
    def up(self) -> bool:
        door = self.door
        return (
            self.ua is not None
            and not self.ua.tasks.closed
            and door is not None
            and (self.line in door.members)
        )

    async def health(self) -> EngineHealth:
        ua = self.ua
        listening = f"SIP listener on port {ua.port}" if ua is not None else "SIP not started"
        info: dict[str, object] = {"calls": len(self.calls), "signalling": "sip"}
        if ua is not None:
            info["connections"] = len(ua.transport.connections)
            info["refused_connections"] = dict(ua.transport.places.refused)
            info["sip"] = dict(ua.counts)
        return EngineHealth(up=self.up, detail=listening, info=info)

    def hangup_later(self, engine_call_id: str, why: str) -> None:
        # Meta ends a call whose media stops (30 s): nothing to retry on this road.
        log.warning(
            "SIP call %s: hang-up failed (%s); Meta ends it when media stops", engine_call_id, why
        )

    # -- legs
    def _leg(self, label: str) -> MediaLeg:
        return new_leg(
            self.media,
            label,
            self.ice,
            self.stats,
            on_dtmf=self.dialogs.on_dtmf,
            on_media=lambda leg: None,
            on_closed=self.dialogs.leg_closed,
        )

    # -- call control
    async def answer(self, engine_call_id: str) -> None:
        call = self._live(engine_call_id)
        tx = call.tx
        if call.direction != "inbound" or call.state != "ringing" or tx is None:
            raise EngineError(f"call {engine_call_id} is not ringing inbound")
        self.dialogs.confirmed(call, tx.dialog)
        if not await tx.respond(200, "OK", body=call.answer_sdp.encode()):
            raise EngineError(f"SIP call {engine_call_id}: the 200 OK could not be sent")
        call.state = "accepted"

    async def hangup(self, engine_call_id: str) -> None:
        call = self._live(engine_call_id)
        state = call.state
        await self.dialogs.forget(call)
        if call.tx is not None and state != "accepted":
            await call.tx.respond(486, "Busy Here")
        elif call.uac is not None and call.dialog is None:
            await call.uac.cancel()
        elif call.dialog is not None:
            resp = await self.dialogs.user_agent().in_dialog(call.dialog, "BYE")
            if resp.status >= 300 and resp.status != 481:
                raise EngineError(f"SIP call {engine_call_id}: BYE got {resp.status} {resp.reason}")

    # -- business-initiated calls
    async def _dial(self, phone: str, call_id: str, other_leg: tuple[str, ...]) -> str:
        ua = self.dialogs.user_agent()
        sip = self.sip
        cid = f"bridge.{call_id[:32] or secrets.token_hex(8)}.{secrets.token_hex(4)}"
        leg = self._leg(f"cloudapi-sip:dial:{call_id[:12]}")
        leg.wacid = cid
        try:
            offer = await leg.offer(other_leg)
            uac = InviteClient(
                ua,
                meta_uri=sip.sip_meta_uri,
                callee=phone,
                sdp=offer.encode(),
                username=sip.sip_number,
                password=sip.sip_password,
                call_id=cid,
                number=sip.sip_number,
                hostname=sip.sip_hostname,
            )
            await ua.connection_to(uac.meta)  # fail here, not later, when Meta is unreachable
        except Exception as exc:
            await leg.close()  # (it runs to its end if this caller is cancelled)
            raise EngineError(
                f"SIP: cannot call {phone} through {sip.sip_meta_uri}: {exc}"
            ) from exc
        call = SipCall(cid, phone, "outbound", leg, state="calling", uac=uac)
        self.calls[cid] = call
        self._tasks.spawn(self._run_dial(call, uac), f"dial:{cid[:24]}")
        return cid

    async def _run_dial(self, call: SipCall, uac: InviteClient) -> None:
        def progress(resp: Response) -> None:
            self.dialogs.named(call, meta_wacid(resp))
            if call.state == "calling":
                call.state = "ringing"
                ringing = EngineEventKind.RINGING
                aka = call.meta_wacid  # Meta's webhooks name the call by it: found by it too
                emit(self.events, EngineEvent(ringing, call.wacid, call.jid, webhook_call_id=aka))

        final = await uac.run(progress)
        self.dialogs.named(call, meta_wacid(final))
        if call.state == "ended":  # hung up meanwhile
            if uac.dialog is not None:  # a 200 crossed our CANCEL: end it (§9.1)
                await self.dialogs.user_agent().in_dialog(uac.dialog, "BYE")
            return
        if uac.dialog is None:
            reason, why = bic_failure(
                final, self.sip.sip_hostname, self.sip.sip_number, uac.auth_failure
            )
            log.warning("SIP call %s to %s: %s", call.wacid, call.peer_wa, why)
            await self.dialogs.forget(call)
            known, detail = meta_code(final)
            data: dict[str, object] = {}
            if known is not None and known.code == NO_CALL_PERMISSION:
                # As on Graph: a user who called lately from a companion device granted none.
                refusal = NoCallPermission(detail)
                self.graph_side.permissions.call_forbidden(call.peer_wa, refusal)
                detail, data = refusal.message, refusal.details
            detail = detail or f"SIP {final.status}: {final.reason}"
            self.dialogs.ended(call, reason, detail, sipStatus=final.status, sipReason=why, **data)
            return
        self.dialogs.confirmed(call, uac.dialog)
        call.confirmed_at = time.monotonic()
        try:
            await call.leg.apply_answer(final.body.decode("utf-8", "replace"))
        except Exception as exc:
            log.warning("SIP call %s: Meta's answer cannot be applied: %s", call.wacid, exc)
            await self.dialogs.user_agent().in_dialog(uac.dialog, "BYE")
            await self.dialogs.forget(call)
            self.dialogs.ended(call, "failed", sipReason=f"answer not applied: {exc}")
            return
        call.state = "accepted"
        answered, aka = EngineEventKind.ANSWERED, call.meta_wacid
        emit(self.events, EngineEvent(answered, call.wacid, call.jid, webhook_call_id=aka))
