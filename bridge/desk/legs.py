"""Agents' always-connected media legs on the desk (issue 49): offered once on the agent socket
(``offer {sdp}`` → ``answer {sdp}``), owned by the agent's :class:`~.session.AgentSession`,
lent to each call the agent takes — a ring it accepts (:meth:`AgentLegs.lend`) or a call it
places (:meth:`AgentLegs.place`) — and given back when the call lets it go.

A new offer on the same socket replaces the leg: the client's way back after its leg was lost.
``BridgeAgent`` sends it as an ICE restart on the same ``RTCPeerConnection`` (RFC 8445 §9:
new ICE credentials, its tracks kept), and on a socket that opened again after a drop. aiortc
cannot restart its own ICE agent (an ``RTCIceTransport`` starts once, and aioice's
``Connection`` keeps the credentials it was made with), so the bridge answers from a fresh
peer: new ICE credentials, as an answerer to a restart must give (RFC 8839 §4.4.1.1.2), and
a new DTLS fingerprint, which makes the client run a new DTLS handshake on its same connection
(RFC 8842 §5; Chromium and libwebrtc do). When the agent is on a call here (the leg it
replaces was lent to it, or, after a socket drop, the call its presence names and it won),
the new leg joins that call as soon as it is up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ..calls import CallManager, CallRuntime
from ..calls.offers import answer_agent_offer
from ..errors import AtCapacity, BridgeError, CallStateError
from . import wire
from .routes import Route
from .runner import RouteRun
from .session import AgentSession
from .store import AgentKey, DeskStore

log = logging.getLogger(__name__)

UP_WAIT = 10.0
"""Seconds a replacing leg may take to come up before it joins the agent's call."""


class LegsDesk(Protocol):
    """What the agents' legs use of the desk (``Desk`` is one): the agents' sessions on this
    worker, their presence in the store, the calls their legs join, and the route run that
    stands for the call an agent is on."""

    store: DeskStore
    manager: CallManager

    def sessions(self) -> list[AgentSession]: ...

    def session(self, key: AgentKey) -> AgentSession | None: ...

    def run_of(self, call_id: str) -> RouteRun | None: ...

    def new_run(self, runtime: CallRuntime, route: Route | None) -> RouteRun: ...


class AgentLegs:
    """See the module docstring."""

    def __init__(self, desk: LegsDesk) -> None:
        self.desk = desk

    def _count(self) -> int:
        return sum(1 for s in self.desk.sessions() if s.leg is not None and not s.leg.closed)

    async def offer(self, session: AgentSession, sdp: str) -> None:
        """The agent's ``offer``: answer it with a new leg (replacing its previous one)."""
        name = f"{session.key[0] or ''}/{session.key[1]}"
        manager = self.desk.manager
        try:
            if session.leg is None and self._count() >= manager.settings.max_calls:
                raise AtCapacity("the bridge carries its maximum of connected legs")
            leg, answer = await answer_agent_offer(manager, name, sdp)
        except BridgeError as exc:
            log.warning("agent %s: connected leg refused: %s", name, exc)
            session.send(wire.error(exc.code, str(exc)))
            return
        if session.closed:
            await leg.shutdown()
            return
        old, session.leg = session.leg, leg
        call_id = old.attached_to if old is not None else await self._on_call(session)
        if old is not None:
            await old.shutdown()
        session.send({"type": "answer", "sdp": answer})
        runtime = manager.find_runtime(call_id) if call_id else None
        if runtime is not None:
            session.spawn(self._rejoin(session, runtime), f"rejoin:{call_id}")

    async def _on_call(self, session: AgentSession) -> str | None:
        """The call this agent is on here, for a session that opened after a drop (its
        previous session's leg stays with the call until a new one replaces it)."""
        record = await self.desk.store.agent(*session.key)
        if record is None or record.state != "busy" or not record.call_id:
            return None
        run = self.desk.run_of(record.call_id)
        return record.call_id if run is not None and run.winner == session.key else None

    async def _rejoin(self, session: AgentSession, runtime: CallRuntime) -> None:
        leg = session.leg
        if leg is None:
            return
        try:
            async with asyncio.timeout(UP_WAIT):
                await leg.up.wait()
            await runtime.participants.adopt(leg)
        except (TimeoutError, BridgeError) as exc:
            log.warning("call %s: the agent's new leg did not join: %s", runtime.call_id, exc)

    async def lend(self, key: AgentKey, runtime: CallRuntime) -> bool:
        """Lend the agent's idle leg to the call it took; ``False`` when it has none here
        (its app then sends the per-call offer)."""
        session = self.desk.session(key)
        leg = session.leg if session is not None else None
        if leg is None or not leg.usable:
            return False
        try:
            await runtime.participants.adopt(leg)
        except BridgeError as exc:
            log.warning("call %s: the agent's leg not attached: %s", runtime.call_id, exc)
            return False
        return True

    def ready(self, key: AgentKey) -> None:
        """Refuse (409) a call placed for an agent without an idle leg on this worker."""
        session = self.desk.session(key)
        if session is None or session.leg is None or not session.leg.usable:
            raise CallStateError(
                f"agent {key[1]!r} has no connected leg here (connected, offered, idle)",
                code="agent_not_ready",
            )

    async def place(self, key: AgentKey, runtime: CallRuntime) -> None:
        """A call the agent placed: its leg is the call's agent from now (so the first packet
        leaves when WhatsApp answers), the agent busy and told the call's events until the
        end. The run stands for a ring the agent already won (no steps run)."""
        run = self.desk.new_run(runtime, None)
        run.winner = key
        if not await self.lend(key, runtime):
            raise CallStateError(
                f"agent {key[1]!r}: the connected leg went", code="agent_not_ready"
            )
        await run.mark_busy(key)
