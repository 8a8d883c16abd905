"""``CallRuntime``: the one owner of everything a live call has in this process.

A runtime is created with its call and closed when the call ends. It owns, in the order they
come to life:

1. the call's :class:`~bridge.media.CallBus` (16 kHz mono PCM, both directions);
2. the engine's leg of the call, when the engine has one in this process (an
   :class:`~bridge.engines.LegEngine`: the Cloud API's WhatsApp-side peer connection, made
   by the engine before the call existed and taken over here);
3. the browsers' WebRTC sessions, one per participant (a new offer replaces that
   participant's; who hears whom is the bus's conference);
4. the engine media pump (opened once the call is active and something uses the bus);
5. the attachments: playbacks, the recorder, media forks, PCM sockets;

and the call's DTMF (:mod:`.dtmf`): the in-band tone source it adds to the bus when key
presses go out on a PCM engine, the in-band detector on the downlink of a PCM engine, and
:meth:`CallRuntime.on_whatsapp_dtmf`, the one way in for the WhatsApp user's key presses
(in-band tones, or the engine's ``DTMF`` events on a leg that carries RFC 4733).

It also holds the call's per-call state that is not the call's public record: mute and hold
(what the bus and the conference act on; the ``Call`` reads them from here), and the task
that ends the call when the bridge decides so (:meth:`CallRuntime.end_soon`: one at a time,
so a call is ended once).

Everything is attached and detached through the runtime, which is also where ``transport``
is computed. :meth:`close` is idempotent and tears the children down in reverse order, the
way aiortc's ``RTCPeerConnection.close`` closes its transceivers, transports and SCTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..attachments.base import Attachment
from ..engines import CallLeg, DtmfLeg, Engine, EnginePump, LegEngine, WebRTCLeg
from ..engines.base import MediaChannel, MediaClosed, OpusEngine
from ..errors import CallStateError, EngineError
from ..media import CallBus, Role
from ..metrics import Metrics
from ..rtc import WebRTCSession
from ..tasks import TaskSet
from .dtmf import DtmfTones, InbandDtmf
from .events import CallEvents
from .model import Call, CallState, Controls

log = logging.getLogger(__name__)

MediaLost = Callable[["CallRuntime", BaseException | None], None]
"""Told when the engine media ended by itself (the manager decides what the call does)."""

EndCall = Callable[[], Coroutine[Any, Any, None]]
"""The manager's decision to end a call (hang up on the engine, then end it), run by
:meth:`CallRuntime.end_soon`."""


class CallRuntime:
    """The media runtime of one live call. See the module docstring."""

    def __init__(
        self,
        call: Call,
        engine: Engine,
        events: CallEvents,
        metrics: Metrics,
        on_media_lost: MediaLost,
    ) -> None:
        self.call = call
        self.engine = engine
        self.events = events
        self.metrics = metrics
        self.quality_bands: dict[str, str] = {}
        self._forwarding_to: WebRTCSession | None = None
        """The browser session WhatsApp's packets are forwarded to (``update_pass_through``)."""
        """Each leg's last quality band (``calls/quality.py``), to report only changes."""
        self._on_media_lost = on_media_lost
        self.bus = CallBus(call.id)
        # The call's controls as they were (a new call: neither), kept from now on by the bus
        # and the conference; the call reads them back through this runtime.
        self.bus.muted = call.muted
        if call.held:
            self.bus.conference.set_held(True)
        call.controls = self
        self.leg: CallLeg | None = (
            engine.take_leg(call.engine_call_id) if isinstance(engine, LegEngine) else None
        )
        """The engine's own per-call resource, owned from now on (closed after the pump)."""
        self.sessions: dict[str, WebRTCSession] = {}
        """The browsers on the call, by participant id (see :mod:`bridge.media.conference`)."""
        self.hold_music: str | None = None
        """The id of the playback WhatsApp hears while the call is held."""
        self.pump: EnginePump | None = None
        self.attachments: dict[str, Attachment] = {}
        self.final_stats: dict[str, Any] | None = None
        """The media numbers as the call ended (set by :meth:`close`)."""
        self._tones: DtmfTones | None = None
        self._dtmf_in: InbandDtmf | None = None
        self._pump_lock = asyncio.Lock()
        self._tasks = TaskSet(f"call[{call.id[:12]}]")
        self._end_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def call_id(self) -> str:
        return self.call.id

    @property
    def closed(self) -> bool:
        return self._closed

    def emit(self, type_: str, **data: Any) -> None:
        """Publish an event about this call (attachments use it through ``AttachmentHost``)."""
        self.events.publish(type_, self.call, **data)

    # -- attachments
    def attach(self, attachment: Attachment) -> None:
        """Adopt an attachment; it is closed with the call unless it detaches first."""
        if self._closed or not self.call.live:
            raise CallStateError(f"call {self.call.id} has ended")
        self.attachments[attachment.id] = attachment
        self.update_transport()
        if attachment.wants_media:
            self.wake_engine_media()

    def detach(self, attachment: Attachment) -> None:
        """An attachment ended (by itself or stopped); forget it."""
        if self.attachments.pop(attachment.id, None) is not None:
            self.update_transport()

    def attached(self, kind: str) -> list[Any]:
        """This call's attachments of one kind, oldest first."""
        return [a for a in self.attachments.values() if a.kind == kind]

    def state_changed(self) -> None:
        """The call changed state: tell the attachments that follow it (PCM sockets)."""
        for attachment in list(self.attachments.values()):
            attachment.call_state(str(self.call.state), self._end_reason())

    def _end_reason(self) -> str | None:
        return str(self.call.end_reason) if self.call.end_reason else None

    # -- transport
    @property
    def transport(self) -> str | None:
        """``webrtc`` while a peer connection is up, else ``websocket`` while a PCM socket is."""
        if any(s.state not in ("closed", "failed") for s in self.sessions.values()):
            return "webrtc"
        if self.attached("socket"):
            return "websocket"
        return None

    def update_transport(self) -> None:
        transport = self.transport
        if transport != self.call.transport:
            self.call.transport = transport
            self.emit("call.transport")

    # -- the browsers' WebRTC sessions: one per participant
    @property
    def session(self) -> WebRTCSession | None:
        """The agent's session (or the only one): the call's ``webrtc`` in its snapshot."""
        agent = next((s for s in self.sessions.values() if s.role is Role.AGENT), None)
        return agent or next(iter(self.sessions.values()), None)

    def _show_participants(self) -> None:
        self.call.participants = [
            {"participantID": pid, "role": str(s.role), "webrtc": {"state": s.state}}
            for pid, s in self.sessions.items()
        ]
        agent = self.session
        self.call.webrtc_state = agent.state if agent is not None else self.call.webrtc_state

    def check_join(self, participant_id: str, role: Role, max_participants: int) -> None:
        """Refuse a participant the call cannot take (409): too many, or a second agent."""
        if participant_id not in self.sessions and len(self.sessions) >= max_participants:
            raise CallStateError(f"a call takes at most {max_participants} participants")
        if role is Role.AGENT:
            agent = self.session
            if (
                agent is not None
                and agent.role is Role.AGENT
                and agent.participant_id != participant_id
            ):
                raise CallStateError(
                    f"participant {agent.participant_id!r} is the agent; a call has one "
                    "(use /call/transfer or a role change)"
                )

    async def replace_session(self, session: WebRTCSession, sdp: str) -> str:
        """Answer ``sdp`` with ``session`` for its participant, replacing that participant's
        previous session (closed first); returns the answer."""
        pid = session.participant_id
        old = self.sessions.pop(pid, None)
        joined = old is None
        if old is not None:
            self.metrics.ended_totals.absorb_downlink(old.downlink_sink)
            await old.close()
        self.sessions[pid] = session
        if isinstance(self.engine, OpusEngine):  # ask the browser for what WhatsApp takes
            session.receive_bitrate = self.engine.opus_bitrate
        try:
            answer = await session.accept_offer(sdp)
        except BaseException:
            if self.sessions.get(pid) is session:
                del self.sessions[pid]
                if session.role is Role.AGENT:
                    self.call.webrtc_state = None
                self._show_participants()
                self.update_transport()
            await asyncio.shield(session.close())  # also when the request is cancelled
            raise
        if self._closed or not self.call.live or self.sessions.get(pid) is not session:
            # The call ended, or another offer replaced us, while we gathered.
            await session.close()
            raise CallStateError(f"call {self.call.id} changed while the offer was answered")
        self._show_participants()
        self.update_transport()
        self.update_pass_through()
        self.emit("webrtc.offer", participantID=pid)
        if joined:
            self.emit("participant.joined", participantID=pid, role=str(session.role))
        self.wake_engine_media()
        return answer

    def on_session_state(self, session: WebRTCSession, state: str) -> None:
        """A session's state changed (its callback; a replaced session's last words are ignored)."""
        pid = session.participant_id
        if self.sessions.get(pid) is not session or self._closed:
            return
        self.metrics.webrtc_states.labels(state).inc()
        if state == "connected" and session.connected_at is not None:
            self.metrics.offer_to_connected.observe(session.connected_at - session.offered_at)
        self._show_participants()
        if state in ("failed", "closed"):
            self.update_transport()
        data: dict[str, Any] = {"participantID": pid}
        reason = session.failure_reason if state == "failed" else None
        if reason:
            data["reason"] = reason
        self.emit("webrtc.state", **data)

    async def close_session(self, participant_id: str = "agent") -> None:
        """Close a participant's peer connection if any (idempotent); the call stays up."""
        session = self.sessions.pop(participant_id, None)
        if session is None:
            return
        self.metrics.ended_totals.absorb_downlink(session.downlink_sink)
        await session.close()
        if session.role is Role.AGENT or not self.sessions:
            self.call.webrtc_state = "closed"
        self._show_participants()
        self.emit("webrtc.state", participantID=participant_id)
        self.emit("participant.left", participantID=participant_id, role=str(session.role))
        self.update_transport()
        self.update_pass_through()

    def set_role(self, participant_id: str, role: Role) -> None:
        """Change a participant's role live (a supervisor barging, a whisperer taking over)."""
        session = self.sessions.get(participant_id)
        if session is None:
            raise CallStateError(f"no participant {participant_id[:64]!r} on this call")
        previous = self.session
        if role is Role.AGENT and previous is not None and previous is not session:
            if previous.role is Role.AGENT:  # taking over (a warm hand-off): one agent only
                self._assign(previous, Role.LISTEN)
        self._assign(session, role)
        self.update_pass_through()

    def _assign(self, session: WebRTCSession, role: Role) -> None:
        session.role = role
        self.bus.conference.set_role(session.participant_id, role)
        self._show_participants()
        self.emit("participant.role", participantID=session.participant_id, role=str(role))

    async def transfer(self, to: str) -> None:
        """Cold hand-off: ``to`` becomes the agent and the old agent's connection is dropped."""
        new = self.sessions.get(to)
        if new is None:
            raise CallStateError(f"no participant {to[:64]!r} on this call to transfer to")
        old = self.session if self.session is not new else None
        if old is not None and old.role is not Role.AGENT:
            old = None
        # The new agent is heard at once (the old one demoted), then the old one hangs up:
        # the mixer never has a tick without an agent.
        self.set_role(to, Role.AGENT)
        if old is not None:
            await self.close_session(old.participant_id)
        self._show_participants()
        self.emit(
            "call.transferred",
            participantID=to,
            fromParticipantID=old.participant_id if old is not None else None,
        )

    # -- mute and hold (the one copy of each: the bus and the conference act on them)
    @property
    def muted(self) -> bool:
        return self.bus.muted

    @property
    def held(self) -> bool:
        return self.bus.conference.held

    def set_muted(self, muted: bool) -> None:
        """Mute or unmute what the browsers send WhatsApp (``call.muted`` / ``call.unmuted``)."""
        self.bus.muted = muted
        self.emit("call.muted" if muted else "call.unmuted")

    def set_held(self, held: bool) -> None:
        """Hold or resume the WhatsApp peer (``call.held`` / ``call.unheld`` on a change)."""
        if held == self.held:
            return
        self.bus.conference.set_held(held)
        self.emit("call.held" if held else "call.unheld")

    # -- DTMF
    async def send_dtmf(
        self, digits: str, duration_ms: int = 100, gap_ms: int = 60, source: str = "api"
    ) -> str:
        """Send key presses to the WhatsApp peer: RFC 4733 on a leg that carries it (cloudapi),
        else in-band tones mixed into the uplink. Returns ``rfc4733`` or ``inband``;
        ``call.dtmf.sent`` follows once the last press (and its gap) went out."""
        if self._closed or self.call.state is not CallState.ACTIVE:
            raise CallStateError(f"call {self.call.id} is {self.call.state}, not active")
        if self.pump is None:  # nobody used the bus yet: the key presses do
            self.bus.add_user("dtmf")
            await self._open_engine_media()
        if self._closed or not self.call.live:
            raise CallStateError(f"call {self.call.id} has ended")
        channel = self.pump.channel if self.pump is not None else None
        data = {"digits": digits, "durationMs": duration_ms, "gapMs": gap_ms, "source": source}

        def sent(method: str) -> Callable[[], None]:
            def done() -> None:
                if not self._closed:
                    self.emit("call.dtmf.sent", **data, method=method)

            return done

        try:
            if isinstance(channel, DtmfLeg):
                channel.send_dtmf(digits, duration_ms, gap_ms, sent("rfc4733"))
                method = "rfc4733"
            else:
                if self._tones is None:
                    self._tones = DtmfTones(self.bus)
                self._tones.add(digits, duration_ms, gap_ms, sent("inband"))
                method = "inband"
        except ValueError as exc:
            raise CallStateError(f"call {self.call.id}: {exc}") from None
        except MediaClosed as exc:
            raise CallStateError(f"call {self.call.id}: the WhatsApp leg is down ({exc})") from None
        self.metrics.dtmf.labels("sent", source).inc(len(digits))
        return method

    def on_session_dtmf(self, session: WebRTCSession, digit: str, duration_ms: int) -> None:
        """A browser pressed a key (its ``RTCDTMFSender``): tell everyone and, from a
        participant WhatsApp hears (agent, barge), pass it on like ``POST /call/dtmf``."""
        pid = session.participant_id
        if self._closed or self.sessions.get(pid) is not session or not self.call.live:
            return
        self.metrics.dtmf.labels("received", "agent").inc()
        self.emit(
            "call.dtmf", digit=digit, durationMs=duration_ms, source="agent", participantID=pid
        )
        if session.role not in (Role.AGENT, Role.BARGE) or self.held:
            return
        duration = max(40, min(2000, duration_ms))
        self._tasks.spawn(self._pass_on(digit, duration), "dtmf-agent")

    async def _pass_on(self, digit: str, duration_ms: int) -> None:
        try:
            await self.send_dtmf(digit, duration_ms, 60, source="agent")
        except CallStateError as exc:
            log.info("call %s: agent's key press not passed on: %s", self.call.id, exc.message)

    def on_whatsapp_dtmf(self, digit: str, duration_ms: int) -> None:
        """The WhatsApp user pressed a key: the one way in, whether the press was heard as
        tones on a PCM engine's downlink (:class:`~.dtmf.InbandDtmf`) or reported by the
        engine (an RFC 4733 ``DTMF`` event on the Cloud API leg)."""
        if self._closed or not self.call.live:
            return
        self.metrics.dtmf.labels("received", "whatsapp").inc()
        self.emit("call.dtmf", digit=digit, durationMs=duration_ms, source="whatsapp")

    # -- the engine media
    def _wants_engine_media(self) -> bool:
        users = self.bus.users or any(a.wants_media for a in self.attachments.values())
        if self._closed or not users:
            return False
        # Engines whose media socket also carries call state (WADial) open it as soon as the
        # call exists; the others once it is answered.
        if self.engine.media_before_answer:
            return self.call.live
        return self.call.state is CallState.ACTIVE

    def wake_engine_media(self) -> None:
        """Open the engine media in the background if it is due (idempotent)."""
        if self._wants_engine_media() and self.pump is None and not self._tasks.closed:
            self._tasks.spawn(self._open_engine_media(), "engine-media")

    async def _open_engine_media(self) -> None:
        async with self._pump_lock:
            if self.pump is not None or not self._wants_engine_media():
                return
            call = self.call
            try:
                channel = await self.engine.open_media(call.engine_call_id)
            except (EngineError, ConnectionError) as exc:
                log.warning(
                    "call %s: cannot open engine media: %s",
                    call.id,
                    exc,
                    extra={"call_id": call.id},
                )
                self._on_media_lost(self, exc)  # a call that cannot carry audio is failed
                return
            if not self._wants_engine_media():
                await channel.close()
                return
            self.pump = EnginePump(self.bus, channel, on_closed=self._pump_closed)
            if self._dtmf_in is None and not isinstance(channel, WebRTCLeg):
                # A PCM engine: the WhatsApp user's key presses are tones in its audio.
                self._dtmf_in = InbandDtmf(self.bus, self.on_whatsapp_dtmf)
            self.pump.start()
            self.update_pass_through()

    async def swap_engine_media(self, channel: MediaChannel) -> None:
        """Carry the engine audio over ``channel`` from now on, the current one closed (a
        worker that handed the call over relays its browser through the new owner)."""
        async with self._pump_lock:
            old, self.pump = self.pump, None
            if old is not None:
                await old.close()
            self.pump = EnginePump(self.bus, channel, on_closed=self._pump_closed)
            self.pump.start()

    async def open_engine_media_now(self, user: str) -> None:
        """Open the engine media at once for ``user`` of the bus and wait for it (a call
        moved here: the engine leg is taken before the old worker lets go of it)."""
        self.bus.add_user(user)
        await self._open_engine_media()

    def update_pass_through(self) -> None:
        """On a call whose WhatsApp side is a WebRTC leg, forward Opus packets untouched
        between it and the agent's browser while nothing else is mixed in
        (``rtc/passthrough.py``): towards the browser while it hears only the WhatsApp user
        (one participant, no hold, nothing played to it); towards WhatsApp while it hears
        only the agent (not muted, nothing played, no key tones). Each sender checks that per
        packet (a yes is kept for 20 ms: ``PassThrough.permitted``), so mixing can start and
        stop mid-call."""
        leg = self.webrtc_leg
        session = self.session
        if leg is None:
            return
        if session is self._forwarding_to and session is not None:
            return
        if self._forwarding_to is not None:
            self._forwarding_to.forward_uplink(None)
            self._forwarding_to.report_loss_beyond(None)
        self._forwarding_to = None
        if session is None or not session.media.opus_passthrough:
            leg.forward_to(None)
            return
        bus, conference, sessions = self.bus, self.bus.conference, self.sessions
        down = session.forward_downlink(lambda: len(sessions) == 1 and not conference.mixed)
        leg.forward_to(down.offer if down is not None else None)

        def agent_only() -> bool:
            return (
                len(sessions) == 1
                and not conference.mixed
                and not bus.muted
                and not bus.has_sources
            )

        up = leg.forward_from(agent_only)
        session.forward_uplink(up.offer if up is not None else None)
        if up is not None:
            # The browser's packets reach WhatsApp as they are: its FEC must cover the loss on
            # the WhatsApp leg too (the larger of the two in the reports it gets).
            session.report_loss_beyond(lambda: leg.far_end_loss if agent_only() else 0.0)
        self._forwarding_to = session

    def _pump_closed(self, exc: BaseException | None) -> None:
        log.info(
            "call %s: engine media closed (%s)", self.call.id, exc, extra={"call_id": self.call.id}
        )
        if not self._closed:
            self._on_media_lost(self, exc)

    # -- stats
    def stats_json(self) -> dict[str, Any]:
        """This call's media numbers (``GET /call/{callID}/stats``)."""
        b = self.bus.stats
        session = self.session
        return {
            "callID": self.call.id,
            "state": str(self.call.state),
            "webrtc": session.stats_json() if session is not None else None,
            "bus": b.as_json(),
            "leg": self._leg_json(),
        }

    def _leg_json(self) -> dict[str, Any]:
        leg: dict[str, Any] = {
            "engine": self.engine.name,
            "open": self.pump is not None and not self._closed,
        }
        channel = self.webrtc_leg
        if channel is not None:
            leg["webrtc"] = channel.leg_json()  # the WhatsApp side's own peer connection
        return leg

    @property
    def webrtc_leg(self) -> WebRTCLeg | None:
        """The engine media channel when it is a WebRTC peer connection (cloudapi)."""
        channel = self.pump.channel if self.pump is not None else None
        return channel if isinstance(channel, WebRTCLeg) else None

    # -- teardown
    def retire_counters(self) -> None:
        """Move this call's counters into the ended totals (when the call leaves the live set,
        before teardown, so no scrape misses them)."""
        self.metrics.ended_totals.add_bus(self.bus.stats)
        if self.webrtc_leg is not None:
            self.metrics.ended_totals.receive["whatsapp"].merge(self.webrtc_leg.receive_stats)
        for session in self.sessions.values():
            self.metrics.ended_totals.absorb_downlink(session.downlink_sink)

    # -- ending
    @property
    def ending(self) -> bool:
        """The bridge is ending this call (its end task runs)."""
        return self._end_task is not None

    def end_soon(self, end: EndCall, name: str, *, after: float = 0.0) -> None:
        """Run ``end`` — the manager's decision to hang up and end this call (a time limit, lost
        media) — as this call's end task, after ``after`` seconds (a grace for the engine's
        own report; the call is not :attr:`ending` meanwhile). One end at a time: while one
        runs, others are ignored; nothing runs once the call ended or the runtime closed."""
        if self._closed or self._tasks.closed or not self.call.live:
            return
        if after > 0:
            self._tasks.spawn(self._end_after(end, name, after), f"{name}:grace")
        elif self._end_task is None:
            self._end_task = self._tasks.spawn(self._run_end(end), name)

    async def _end_after(self, end: EndCall, name: str, after: float) -> None:
        await asyncio.sleep(after)
        self.end_soon(end, name)

    async def _run_end(self, end: EndCall) -> None:
        try:
            await end()
        finally:
            self._end_task = None

    async def close(self) -> None:
        """Close every child in reverse order of creation (idempotent): attachments,
        sessions, tasks, the pump, the engine's leg, the bus. The teardown runs to completion
        even if the caller is cancelled meanwhile; it cancels the runtime's tasks, the end task
        too unless the end task is what closes the runtime."""
        if self._closed:
            return
        self._closed = True
        if asyncio.current_task() is self._end_task:
            await self._teardown()  # a task set never cancels the task it is closed from
        else:
            await asyncio.shield(self._teardown())

    async def _teardown(self) -> None:
        started = time.monotonic()
        self.state_changed()  # sockets say "ended" before they go
        try:
            for attachment in reversed(list(self.attachments.values())):
                try:
                    await attachment.close()
                except Exception:
                    log.exception("call %s: closing %s", self.call.id, attachment.kind)
            self.attachments.clear()
            agent = self.session
            for session in reversed(list(self.sessions.values())):
                await session.close()
            if agent is not None:
                self.call.webrtc_state = "closed"
            await self._tasks.close()
            if self._tones is not None:
                self._tones.close()
            if self._dtmf_in is not None:
                self._dtmf_in.close()
            if self.pump is not None:
                await self.pump.close()
        finally:
            if self.leg is not None:
                try:
                    await self.leg.close()
                except Exception:
                    log.exception("call %s: closing the engine's leg", self.call.id)
            await self.bus.aclose()
            self.final_stats = self.stats_json()
            # The call keeps its controls as they were, not this runtime.
            self.call.controls = Controls(muted=self.muted, held=self.held)
            # The sessions and the pump call back into this runtime: drop them, so nothing of
            # the call waits for the cyclic garbage collector (their codec threads included).
            self.sessions.clear()
            self.pump = None
        log.debug("call %s: runtime closed in %.3f s", self.call.id, time.monotonic() - started)
