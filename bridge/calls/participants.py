"""The browsers on a call: one WebRTC session per participant, their roles, and hand-offs.

Owned by the call's runtime (:mod:`.runtime`), which closes it after the attachments. Who hears
whom is the bus's conference (:mod:`bridge.media.conference`); this module keeps the sessions,
answers offers (a new offer replaces that participant's session), changes roles live and hands
the call from one agent to another (its child :class:`~.roles.Roles`). It shows the participants
in the call's record and tells the runtime (``on_change``) when the set of sessions changed, so
the runtime can recompute what depends on it (transport, pass-through, engine media).

A participant that is not a browser (a SIP phone, ``trunks/participant.py``) registers itself
while it is on the call (:meth:`Participants.add_other`): roles, transfer and leaving then work
the same for both kinds, so a call goes from a browser to a phone and back (issue 48).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import CallStateError
from ..media import CallBus, Role
from ..metrics import Metrics
from ..rtc import ConnectedLeg, WebRTCSession
from .forwarding import PhonePackets
from .model import Call
from .roles import OtherParticipant, Roles

Emit = Callable[..., None]


class Participants:
    """The call's browser sessions by participant id. See the module docstring."""

    def __init__(
        self,
        call: Call,
        bus: CallBus,
        metrics: Metrics,
        emit: Emit,
        on_change: Callable[[], None],
        on_key: Callable[[str, Role, str, int], None],
        receive_bitrate: int | None = None,
    ) -> None:
        self.call = call
        self.bus = bus
        self.metrics = metrics
        self.emit = emit
        self.on_change = on_change
        self.on_key = on_key
        """A key pressed in a participant's browser: ``(participant, role, digit, ms)``."""
        self.receive_bitrate = receive_bitrate
        """What the browsers are asked to send (the WhatsApp side's Opus bit rate), if set."""
        self.sessions: dict[str, WebRTCSession] = {}
        self.others: dict[str, dict[str, Any]] = {}
        """Participants that are not browsers (a SIP phone: ``trunks/participant.py``), as the
        call's record shows them, by participant id."""
        self.other_legs: dict[str, OtherParticipant] = {}
        """Those of them on the call now (joined), by participant id: what roles and hand-offs
        act on."""
        self._joined: set[str] = set()
        """The browsers whose ``participant.joined`` was said and not yet their ``left``: an
        offer replaced before it was answered, or closed under it, says neither. One whose
        browser went without a close (shown until someone joins) has not left: its app
        offers again to recover (``web/bridge-client.js`` stops at a ``left`` of its own)."""
        self._closed = False
        self.roles = Roles(self)
        """Who has which role, changed live, and the hand-offs (:mod:`.roles`)."""

    @property
    def agent(self) -> WebRTCSession | None:
        """The agent's session (or the only one): the call's ``webrtc`` in its snapshot."""
        agent = next((s for s in self.sessions.values() if s.role is Role.AGENT), None)
        return agent or next(iter(self.sessions.values()), None)

    @property
    def closed(self) -> bool:
        """The call's end closed them: nothing more is said."""
        return self._closed

    @property
    def connected(self) -> bool:
        """Some peer connection is up (the call's transport is ``webrtc``)."""
        return any(s.state not in ("closed", "failed") for s in self.sessions.values())

    def show(self) -> None:
        self.call.participants = [
            {"participantID": pid, "role": str(s.role), "webrtc": {"state": s.state}}
            for pid, s in self.sessions.items()
        ] + list(self.others.values())
        agent = self.agent
        self.call.webrtc_state = agent.state if agent is not None else self.call.webrtc_state

    def show_other(self, participant_id: str, entry: dict[str, Any] | None) -> None:
        """Show (``None``: stop showing) a participant that is not a browser."""
        if entry is None:
            self.others.pop(participant_id, None)
        else:
            self.others[participant_id] = entry
        self.show()

    def add_other(self, leg: OtherParticipant) -> None:
        """A participant that is not a browser joined (see the module docstring)."""
        self.other_legs[leg.participant_id] = leg
        self.on_change()  # pass-through may now go to it

    def drop_other(self, leg: OtherParticipant) -> None:
        """It left (only that leg: a newer one under the same id stays)."""
        if self.other_legs.get(leg.participant_id) is leg:
            del self.other_legs[leg.participant_id]
            self.on_change()

    def lone_phone(self, codec: str) -> PhonePackets | None:
        """The RTP of the one participant when it is a phone speaking ``codec`` (the
        WhatsApp leg's) and nobody else is on the call (pass-through toward it,
        ``forwarding.py``)."""
        if self.sessions or len(self.other_legs) != 1:
            return None
        return next(iter(self.other_legs.values())).packets_in(codec)

    def agent_id(self) -> str | None:
        """Whoever holds the agent role now, browser or not."""
        agent = self.agent
        if agent is not None and agent.role is Role.AGENT:
            return agent.participant_id
        return next((p for p, o in self.other_legs.items() if o.role is Role.AGENT), None)

    def role_of(self, participant_id: str) -> Role | None:
        """The role ``participant_id`` has on the call now (``None``: not on it)."""
        session = self.sessions.get(participant_id)
        if session is not None:
            return session.role
        other = self.other_legs.get(participant_id)
        return other.role if other is not None else None

    def live(self) -> dict[str, WebRTCSession]:
        """The sessions not gone (a browser that closed its connection, or whose connection
        failed, is shown until someone joins, and counts for nothing)."""
        return {p: s for p, s in self.sessions.items() if s.state not in ("closed", "failed")}

    def check_join(self, participant_id: str, role: Role, max_participants: int) -> None:
        """Refuse a participant the call cannot take (409): too many, or a second agent."""
        live = self.live()
        if participant_id not in live and len(live) >= max_participants:
            raise CallStateError(f"a call takes at most {max_participants} participants")
        if role is Role.AGENT:  # the agent: a browser still there, else a phone
            agents = [p for p, s in live.items() if s.role is Role.AGENT]
            agents += [p for p, o in self.other_legs.items() if o.role is Role.AGENT]
            if agents and agents[0] != participant_id:
                raise CallStateError(
                    f"participant {agents[0]!r} is the agent; a call has one "
                    "(use /call/transfer or a role change)"
                )

    async def replace(self, session: WebRTCSession, sdp: str) -> str:
        """Answer ``sdp`` with ``session`` for its participant, replacing that participant's
        previous session (closed first); returns the answer."""
        pid = session.participant_id
        old = self.sessions.pop(pid, None)
        if old is not None:
            self.metrics.ended_totals.absorb_downlink(old.downlink_sink)
            await old.close()
        for gone in [p for p in self.sessions if p not in self.live()]:  # make room for us
            dead = self.sessions.pop(gone, None)  # (None: another offer made room already)
            if dead is not None:
                self.metrics.ended_totals.absorb_downlink(dead.downlink_sink)
                await dead.close()  # (closing already: shares that teardown)
                if not self._closed:
                    self._left(gone, dead.role)  # off the call now (it rejoins as anyone)
        self.sessions[pid] = session
        if self.receive_bitrate is not None:  # ask the browser for what WhatsApp takes
            session.receive_bitrate = self.receive_bitrate
        try:
            answer = await session.accept_offer(sdp)
        except BaseException:
            if self.sessions.get(pid) is session:
                del self.sessions[pid]
                if session.role is Role.AGENT:
                    self.call.webrtc_state = None
                self.show()
                self.on_change()
            await session.close()  # (to its end also when the request is cancelled)
            raise
        if self._closed or not self.call.live or self.sessions.get(pid) is not session:
            # The call ended, or another offer replaced us, while we gathered.
            await session.close()
            raise CallStateError(f"call {self.call.id} changed while the offer was answered")
        self.show()
        self.on_change()
        self.emit("webrtc.offer", participantID=pid)
        self._join(pid, session.role)
        return answer

    async def adopt(self, leg: ConnectedLeg, participant_id: str = "agent") -> None:
        """Lend an agent's connected leg (``rtc/connected.py``: up already, no offer) to this
        call as the agent ``participant_id``, replacing that participant's session if any."""
        if self._closed or not self.call.live:
            raise CallStateError(f"call {self.call.id} has ended")
        old = self.sessions.pop(participant_id, None)
        if old is not None and old is not leg:
            self.metrics.ended_totals.absorb_downlink(old.downlink_sink)
            await old.close()
            if self._closed:  # the call ended meanwhile: its close passed over the new leg
                raise CallStateError(f"call {self.call.id} has ended")
        leg.attach(self.call.id, self.bus, self.on_state, self.on_dtmf, participant_id)
        self.sessions[participant_id] = leg
        self.show()
        self.on_change()
        self.emit("webrtc.state", participantID=participant_id)
        self._join(participant_id, leg.role)

    def _join(self, participant_id: str, role: Role) -> None:
        """``participant.joined``, once until the participant leaves."""
        if participant_id not in self._joined:
            self._joined.add(participant_id)
            self.emit("participant.joined", participantID=participant_id, role=str(role))

    def _left(self, participant_id: str, role: Role) -> None:
        """``participant.left``, for a participant that joined only."""
        if participant_id in self._joined:
            self._joined.discard(participant_id)
            self.emit("participant.left", participantID=participant_id, role=str(role))

    def on_state(self, session: WebRTCSession, state: str) -> None:
        """A session's state changed (its callback; a replaced session's last words are ignored)."""
        pid = session.participant_id
        if self.sessions.get(pid) is not session or self._closed:
            return
        self.metrics.webrtc_states.labels(state).inc()
        if state == "connected" and session.connected_at is not None:
            self.metrics.offer_to_connected.observe(session.connected_at - session.offered_at)
        self.show()
        if state in ("failed", "closed"):
            self.on_change()
        data: dict[str, Any] = {"participantID": pid}
        reason = session.failure_reason if state == "failed" else None
        if reason:
            data["reason"] = reason
        self.emit("webrtc.state", **data)

    def on_dtmf(self, session: WebRTCSession, digit: str, duration_ms: int) -> None:
        """A session's ``RTCDTMFSender`` pressed a key (a replaced session's are ignored)."""
        pid = session.participant_id
        if not self._closed and self.sessions.get(pid) is session:
            self.on_key(pid, session.role, digit, duration_ms)

    async def leave(self, participant_id: str = "agent") -> None:
        """Close a participant's peer connection (or hang up its phone) if any (idempotent);
        the call stays up."""
        session = self.sessions.pop(participant_id, None)
        if session is None:
            other = self.other_legs.pop(participant_id, None)
            if other is not None:
                await other.remove()
            return
        self.metrics.ended_totals.absorb_downlink(session.downlink_sink)
        await session.close()
        if session.role is Role.AGENT or not self.sessions:
            self.call.webrtc_state = "closed"
        if self._closed:
            return  # the call ended as it closed: nothing more to say after its call.ended
        self.show()
        self.emit("webrtc.state", participantID=participant_id)
        self._left(participant_id, session.role)
        self.on_change()

    def retire_counters(self) -> None:
        """Move the sessions' downlink counters into the ended totals."""
        for session in self.sessions.values():
            self.metrics.ended_totals.absorb_downlink(session.downlink_sink)

    async def close(self) -> None:
        """Close every session, newest first (idempotent); the call's ``webrtc`` says closed."""
        self._closed = True
        agent = self.agent
        for session in reversed(list(self.sessions.values())):
            await session.close()
        self.show()  # as they are now: the call's end shows them closed
        if agent is not None:
            self.call.webrtc_state = "closed"

    def forget(self) -> None:
        """Drop the closed sessions: they call back into the call, and nothing of it should
        wait for the cyclic garbage collector (their codec threads included)."""
        self.sessions.clear()
