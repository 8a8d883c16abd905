"""``TrunkService``: the trunks at run time — the trunk user agent (UDP and TCP on
``BRIDGE_SIP_TRUNK_LISTEN``; without it, on an ephemeral loopback port, so trunks can still
be called out to), the SIP participants it carries, and the requests trunks send us.

The owner: it holds the user agent, the live SIP legs by dialog (so a PBX's ``BYE`` finds
its participant) and the tasks that run them, and closes them in that reverse order. The
address in our Contact and SDP is the listener's unless ``BRIDGE_PUBLIC_IP`` says otherwise.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from ..calls import CallManager
from ..calls.model import Call, Direction
from ..config import ConfigError, Settings
from ..errors import AtCapacity, BadRequest, BridgeError, CallStateError
from ..media import Role
from ..numbers.catalog import Catalog
from ..numbers.trunks import Trunk, parse_headers, parse_uri
from ..sip import Dialog, InviteServer, PeerPolicy, Request, UserAgent, client_context
from ..tasks import TaskSet
from .inbound import STRANGER, InboundDigests, PbxCall, identify
from .participant import SipParticipant, TrunkLine
from .refusals import ListenerRefusals, TrunkRefusals
from .reinvite import Plays, reinvited
from .replacing import replace
from .transfer import in_dialog
from .upkeep import Upkeep

if TYPE_CHECKING:
    from ..calls.runtime import CallRuntime

log = logging.getLogger(__name__)

MAX_LEGS = 256
"""SIP legs live at once on a worker, ringing ones too; more are refused (503)."""


class TrunkService:
    """Owns the trunk user agent, the SIP legs and their tasks (see the module docstring)."""

    def __init__(
        self, settings: Settings, catalog: Catalog, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.manager: CallManager | None = None
        """The calls SIP participants join (set before :meth:`start`)."""
        self.playback: Plays | None = None
        """Plays a trunk's ``holdMusic`` when a phone holds (``reinvite.py``)."""
        listen = settings.sip.trunk_listen
        self.bind_host, self.port = listen if listen is not None else ("127.0.0.1", 0)
        public = settings.ice.public_ip
        wildcard = self.bind_host in ("", "0.0.0.0", "::")
        self.media_host = public or ("127.0.0.1" if wildcard else self.bind_host)
        self.rtp_ports = settings.ice.rtp_ports
        self.legs: dict[tuple[str, str], SipParticipant] = {}  # both: TrunkLine's
        self.active: set[SipParticipant] = set()
        self.ua = self._user_agent()
        self.line = self._line()
        """What each SIP participant uses of the user agent (``participant.TrunkLine``)."""
        self.placing: dict[str, PbxCall] = {}
        """WhatsApp calls a PBX placed, by callID, until they end (a CANCEL finds its INVITE's
        here: the user agent keeps the INVITEs, this only the calls they placed)."""
        self.digests = InboundDigests(self.media_host)
        """What checks each trunk's INVITEs (``inbound.py``)."""
        self.upkeep = Upkeep(catalog, registry)
        """Each trunk's OPTIONS keep-alive and REGISTER."""
        if registry is not None:  # what the listener refused (bridge_sip_trunk_refused_total)
            registry.register(ListenerRefusals(lambda: self.ua))
        self._tasks = TaskSet("sip-trunks")
        self.refusals = TrunkRefusals(lambda: self.ua)
        """Trunk INVITEs refused before a call is placed: counted, each source said once."""

    def _user_agent(self) -> UserAgent:
        ua = UserAgent(
            hostname=self.media_host,
            number="",
            certs=None,
            # A transport=tls trunk: the PBX's certificate and name verified (system CAs and
            # BRIDGE_SIP_TRUNK_CA), no ALPN, as toward Meta.
            client_ctx=client_context(self.settings.sip.sip_trunk_ca, "BRIDGE_SIP_TRUNK_CA"),
            digest=None,
            handler=self,
            # Anyone may reach the trunk port: its connections are capped per source and must
            # speak at once, as on Meta's listener (the trunk's own rules are inbound.py's).
            policy=PeerPolicy(
                per_source=self.settings.sip.sip_max_connections_per_source,
                first_message_timeout=self.settings.sip.sip_first_message_timeout,
            ),
            udp=True,
        )
        ua.in_dialog_requests = lambda dialog, req: in_dialog(
            self.line, self.spawn, self.refusals, dialog, req
        )
        ua.supported = ("replaces",)  # RFC 3891: an INVITE may take a leg over (replacing.py)
        # hold from the PBX (RFC 3264 §8.4), its music as the trunk says when it comes
        ua.reinvites = lambda tx: reinvited(
            self.line, self.catalog, self.playback, self.refusals, tx
        )
        return ua

    def _line(self) -> TrunkLine:
        return TrunkLine(
            ua=self.ua,
            media_host=self.media_host,
            bind_host=self.bind_host,
            rtp_ports=self.rtp_ports,
            ring_timeout=self.settings.calls.ring_timeout,
            opus_passthrough=self.settings.media.opus_passthrough,
            legs=self.legs,
            active=self.active,
        )

    async def start(self) -> None:
        if self.manager is not None:
            self.manager.events.observe(self.observe)
        try:
            await self.ua.start(self.bind_host, self.port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:  # not ours, no such name, a privileged port
                await self.ua.close()
                listen = self.settings.sip.sip_trunk_listen
                raise ConfigError(
                    f"BRIDGE_SIP_TRUNK_LISTEN={listen!r}: the trunks' listener cannot start: "
                    f"{exc.strerror or exc}"
                ) from None
            # One process owns BRIDGE_SIP_TRUNK_LISTEN (the first worker to bind it); the
            # others call out to trunks from a port of their own.
            log.warning(
                "SIP trunks: %s:%d is taken (%s): this worker uses a port of its own",
                self.bind_host,
                self.port,
                exc.strerror or exc,
            )
            await self.ua.close()
            self.ua = self._user_agent()
            self.line = self._line()
            await self.ua.start(self.bind_host, 0)
        self.port = self.ua.port
        self.upkeep.start(self.ua)
        log.info("SIP trunks: listening on %s:%d (UDP and TCP)", self.bind_host, self.port)

    async def close(self) -> None:
        """The legs hung up (BYE or CANCEL) while the user agent still carries them, then
        their tasks, then the user agent. Together: each may wait 4 s for a PBX that no
        longer answers, and in turn N legs waited 4·N s."""
        legs = list(self.active)
        closed = await asyncio.gather(*(leg.close() for leg in legs), return_exceptions=True)
        for leg, outcome in zip(legs, closed, strict=True):
            if isinstance(outcome, Exception):
                log.warning("SIP participant %s: not hung up: %s", leg.participant_id, outcome)
        await self.upkeep.close()
        await self._tasks.close(timeout=5.0)
        await self.ua.close()

    # -- SIP participants
    def context_headers(self, call: Call) -> list[tuple[str, str]]:
        """The WhatsApp context a PBX can route on (docs/sip.md)."""
        number = self.catalog.number(call.number_id)
        whatsapp = call.metadata.get("whatsapp") if isinstance(call.metadata, dict) else None
        payload = ""
        if isinstance(whatsapp, dict):
            payload = str(whatsapp.get("ctaPayload") or whatsapp.get("deeplinkPayload") or "")
        out = [("X-WA-Call-ID", call.id), ("X-WA-Wacid", call.engine_call_id)]
        if number is not None and number.phone:
            out.append(("X-WA-Number", number.phone))
        if payload:
            out.append(("X-WA-Payload", payload))
        return [(k, _clean(v)) for k, v in out]

    def trunk_for(self, trunk_id: str | None, tenant_id: str) -> Trunk:
        """The trunk a participant is called through: named, else the tenant's only one."""
        mine = [t for t in self.catalog.trunks.values() if t.tenant_id == tenant_id]
        if trunk_id:
            trunk = self.catalog.trunks.get(trunk_id)
            if trunk is None or trunk.tenant_id != tenant_id:
                raise BadRequest(
                    f"field 'sip.trunkID': no trunk {trunk_id[:64]!r}", code="unknown_trunk"
                )
            return trunk
        if len(mine) != 1:
            raise BadRequest(
                "field 'sip.trunkID' is required: name the trunk to call through"
                if mine
                else "there is no trunk to call through: create one with POST /trunks",
                code="missing_field" if mine else "no_trunk",
            )
        return mine[0]

    async def add_participant(
        self,
        call_id: str,
        participant_id: str,
        role: Role,
        sip: dict[str, Any],
        *,
        rung_anew: bool = False,
    ) -> SipParticipant:
        """Call a SIP target into a live call (the answer comes as events); 409 ``moving``
        while the call moves to another worker. ``rung_anew``: a ring a move of the call ends
        here, for the worker carrying it on to ring anew (a desk route's); an app's phone keeps
        the call here from its INVITE on (``SipParticipant.keeps_call_here``)."""
        assert self.manager is not None
        call = self.manager.get(call_id)
        runtime = self.manager.find_runtime(call.id)
        if runtime is None or not call.live:
            raise CallStateError(f"call {call.id} has no media to join")
        runtime.check_staying()
        target = parse_uri(sip.get("uri"), "sip.uri")
        trunk = self.trunk_for(sip.get("trunkID"), call.tenant_id)
        headers = [*self.context_headers(call), *parse_headers(sip.get("headers"))]
        self._check_join(runtime, participant_id, role)
        leg = SipParticipant(self.line, runtime, trunk, participant_id, role, target, headers)
        leg.rung_anew = rung_anew
        runtime.attach(leg)
        self.active.add(leg)  # counted from now (its task may not have started yet)
        self._tasks.spawn(self._run(leg), f"sip-leg:{participant_id}")
        return leg

    def _check_join(self, runtime: CallRuntime, participant_id: str, role: Role) -> None:
        if len(self.active) >= MAX_LEGS or self._tasks.closed:  # ringing ones too
            raise AtCapacity("this worker carries as many SIP participants as it may")
        taken = {p.id for p in runtime.bus.conference.participants.values()}
        taken |= {a.participant_id for a in runtime.attached("sip")}
        if participant_id in taken or participant_id in runtime.participants.sessions:
            raise CallStateError(f"participant {participant_id!r} is on the call already")
        agent = runtime.bus.conference.agent
        if role is Role.AGENT and agent is not None:
            raise CallStateError(
                f"participant {agent.id!r} is the agent; a call has one (use another role)"
            )

    async def _run(self, leg: SipParticipant) -> None:
        self.active.add(leg)
        try:
            await leg.run()
        except Exception as exc:
            log.warning("SIP participant %s: the leg failed: %s", leg.participant_id, exc)
            await leg.remove()
        finally:
            if leg.state == "left":
                self.active.discard(leg)

    # -- answered straight into the PBX
    def observe(self, event: Any, call: Call | None) -> None:
        """A ringing inbound call on a number a trunk answers: answer it and call the PBX
        (``CallEvents.observe``: queues the work, never blocks)."""
        if call is None:
            return
        placed = self.placing.get(call.id)
        if placed is not None:
            placed.on_event(event.type, call)
            return
        if event.type != "call.ringing" or call.direction is not Direction.INBOUND:
            return
        trunk = self.answering(call)
        if trunk is not None and not self._tasks.closed:
            self._tasks.spawn(self._answer_into(trunk, call), f"answer-into:{call.id[:12]}")

    def answering(self, call: Call) -> Trunk | None:
        """The trunk that takes ``call``'s number's inbound calls, if one does."""
        return self.catalog.answering_trunk(call.number_id, call.tenant_id)

    async def _answer_into(self, trunk: Trunk, call: Call) -> None:
        assert self.manager is not None
        try:
            await self.manager.answer(call.id)
            for _ in range(100):  # the runtime follows the answer within a tick or two
                if self.manager.find_runtime(call.id) is not None or not call.live:
                    break
                await asyncio.sleep(0.01)
            sip = {"uri": trunk.answer_uri, "trunkID": trunk.trunk_id}
            leg = await self.add_participant(call.id, "pbx", Role.AGENT, sip)
        except BridgeError as exc:
            log.warning("call %s: cannot answer it into trunk %s: %s", call.id, trunk.trunk_id, exc)
            return
        leg.on_left = lambda reason: self.end_with(call, reason)

    def end_with(self, call: Call, reason: str) -> None:
        """The PBX's leg of a call answered into it (or placed by it) ended: so does the
        WhatsApp call."""
        if reason != "call_ended" and call.live and self.manager is not None:
            self.spawn(self.hang_up(call), f"pbx-left:{call.id[:12]}")

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``work`` as one of the service's tasks (dropped once it is closing)."""
        if self._tasks.closed:
            work.close()
            return
        self._tasks.spawn(work, name)

    async def hang_up(self, call: Call) -> None:
        assert self.manager is not None
        try:
            await self.manager.hangup(call.id)
        except BridgeError as exc:
            log.info("call %s: not hung up after the PBX left: %s", call.id, exc)

    # -- requests from trunks (CallHandler)
    async def invite(self, tx: InviteServer) -> None:
        """A trunk's INVITE: the PBX calls a WhatsApp user (:mod:`.inbound`)."""
        trunk, refused = identify(self.catalog.trunks.values(), self.digests.server_for, tx)
        if trunk is None:
            assert refused is not None
            stranger = refused[1] == STRANGER
            if stranger:  # (a wrong digest is counted and said by refusal_of)
                why = "in no trunk's inbound.allowFrom, and no trunk takes a digest (403)"
                self.refusals.refused(tx.conn.peer[0], "stranger", why)
            # A stranger's 403 once: its source may be forged (no reflector for scanners).
            await tx.respond(*refused[:2], extra=refused[2], once=stranger)
            return
        if tx.req.values("Replaces"):  # a phone taking a leg over, not a new call (RFC 3891)
            await replace(self.line, trunk, self.refusals, tx)
            return
        await PbxCall(self, tx, trunk).place()

    async def cancelled(self, tx: InviteServer) -> None:
        """The PBX cancelled its INVITE: the call it placed is hung up (one cancelled while
        the call was being placed is hung up by ``PbxCall.place`` once it is)."""
        for placed in list(self.placing.values()):
            if placed.tx is tx:
                await placed.cancelled()
                return

    async def acked(self, dialog: Dialog) -> None:
        """The PBX's ACK to our 200: nothing to do (the leg joined as it was sent)."""

    async def ack_timeout(self, dialog: Dialog) -> None:
        """The PBX never ACKed our 200 (§13.3.1.4): its leg is hung up (and the call with it)."""
        leg = self.legs.get(dialog.key)
        if leg is not None:
            await leg.remove()

    async def bye(self, dialog: Dialog, req: Request) -> None:
        leg = self.line.drop(dialog)
        if leg is not None:
            await leg.remote_bye()


def _clean(value: str) -> str:
    return re.sub(r"[^\x20-\x7e]", "", value)[:256]
