"""Who has which role on a call, changed live, and the hand-offs between agents.

A child of the call's :class:`~.participants.Participants`, which keeps the participants
(browsers and phones); this module changes their roles — a supervisor barging, a whisperer
taking over (a warm hand-off) — and hands the call from one agent to another (the cold
hand-off, ``POST /call/transfer``). A call has one agent; a role is said
(``participant.role``, ``call.transferred``) when it changes, never when it stays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..errors import CallStateError
from ..media import CallBus, Role
from ..rtc import WebRTCSession
from .forwarding import PhonePackets
from .model import Call
from .samples import LegSources


class OtherParticipant(Protocol):
    """A participant that is not a browser session (a SIP phone) as roles and hand-offs see it.
    Its leg lives in this worker: while it is on the call, the call cannot move to another
    (``attachments/base.py`` ``KeepsCallHere``, ``letting_go.py`` ``can_move``)."""

    participant_id: str
    role: Role

    def set_role(self, role: Role) -> None:
        """Take ``role`` in the conference from the next tick (and show it)."""

    async def remove(self, reason: str = "removed") -> None:
        """Leave the call (hang up), ``participant.left {reason}``; the call stays."""

    def packets_in(self, codec: str) -> PhonePackets | None:
        """Its RTP, when it speaks ``codec`` (the WhatsApp leg's: Opus, or Meta's G.711) and
        its packets may be forwarded untouched (``forwarding.py``)."""

    def timeline_sources(self) -> tuple[float, LegSources] | None:
        """When its media was offered and where its counters are, for the call's timeline
        (``live_report.py``); ``None`` while it has no media."""


class Cast(Protocol):
    """The call's participants as their roles see them (``Participants``)."""

    call: Call
    bus: CallBus
    sessions: dict[str, WebRTCSession]
    other_legs: dict[str, OtherParticipant]
    emit: Callable[..., None]
    on_change: Callable[[], None]

    @property
    def closed(self) -> bool: ...
    def live(self) -> dict[str, WebRTCSession]: ...
    def role_of(self, participant_id: str) -> Role | None: ...
    def agent_id(self) -> str | None: ...
    def show(self) -> None: ...
    async def leave(self, participant_id: str = "agent") -> None: ...


class Roles:
    """The roles of one call's participants. See the module docstring."""

    def __init__(self, participants: Cast) -> None:
        self._of = participants

    def _check_on_call(self, participant_id: str) -> None:
        """409 for a participant not on the call, or whose browser left (shown until someone
        joins; gone from the conference: as the agent, the one it replaced would go and
        WhatsApp would hear nobody)."""
        session = self._of.sessions.get(participant_id)
        if session is None and participant_id not in self._of.other_legs:
            raise CallStateError(f"no participant {participant_id[:64]!r} on this call")
        if session is not None and participant_id not in self._of.live():
            raise CallStateError(
                f"participant {participant_id[:64]!r} has left (its connection is "
                f"{session.state}); it can take no role"
            )

    def set(self, participant_id: str, role: Role) -> None:
        """Change a participant's role live (a supervisor barging, a whisperer taking over);
        a new agent makes the previous one a listener: a call has one agent. The role it has
        already changes nothing and says nothing (as a repeated mute or hold)."""
        self._check_on_call(participant_id)
        if self._of.role_of(participant_id) is role:
            return
        previous = self._of.agent_id()
        if role is Role.AGENT and previous is not None and previous != participant_id:
            self._assign(previous, Role.LISTEN)  # taking over (a warm hand-off)
        self._assign(participant_id, role)
        self._of.on_change()

    def _assign(self, participant_id: str, role: Role) -> None:
        of = self._of
        session = of.sessions.get(participant_id)
        if session is not None:
            session.role = role
            # In the conference only while its browser is (a gone agent demoted; one whose
            # offer is being taken joins with its role).
            if participant_id in of.bus.conference.participants:
                of.bus.conference.set_role(participant_id, role)
            of.show()
        else:
            of.other_legs[participant_id].set_role(role)  # it shows itself
        of.emit("participant.role", participantID=participant_id, role=str(role))

    async def transfer(self, to: str) -> None:
        """Cold hand-off: ``to`` (a browser or a phone) becomes the agent and the old agent
        leaves (its connection dropped, its phone hung up). 409 ``already_agent`` when ``to``
        has the call already: nothing is handed off, nothing said."""
        of = self._of
        if to not in of.sessions and to not in of.other_legs:
            raise CallStateError(f"no participant {to[:64]!r} on this call to transfer to")
        old = of.agent_id()
        if old == to:
            self._check_on_call(to)  # a gone agent has left: said so, as for anyone
            raise CallStateError(
                f"participant {to[:64]!r} is the agent already: nothing to transfer",
                code="already_agent",
            )
        # The new agent is heard at once (the old one demoted), then the old one leaves: the
        # mixer never has a tick without an agent.
        self.set(to, Role.AGENT)
        if old in of.sessions:
            await of.leave(old)
        elif old is not None and old in of.other_legs:
            await of.other_legs.pop(old).remove("transferred")
        if of.closed:
            raise CallStateError(f"call {of.call.id} ended as it was transferred")
        of.show()
        of.emit("call.transferred", participantID=to, fromParticipantID=old)
