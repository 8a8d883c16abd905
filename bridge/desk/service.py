"""``Desk``: the people who answer calls — their sockets on this worker, their presence as every
worker sees it, the routes, and the messages that ring them and tell who took a call.

The desk holds what is per agent (sessions, presence through its store) and per route; what is
per call — the route running on it, who was rung, who won — is the call's own
:class:`~.runner.RouteRun`, an attachment of the call's runtime, closed with the call.

Messages between workers (``store.publish``), each handled where it belongs:

- ``send {tenant, agent, message, round?}`` — the worker holding the agent's socket writes it;
- ``accepted`` / ``declined {callID, tenant, agent, round}`` — the worker owning the call hands
  it to the call's ``RouteRun``;
- ``lend`` / ``lent`` / ``unlend`` — an agent's leg lent to a call on another worker
  (``lending.py``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from ..attachments import PlaybackService, RecordingService
from ..calls import Call, CallManager, CallRuntime
from ..calls.events import CallEvent
from ..calls.model import CallState, Direction
from ..tasks import TaskSet
from . import handoffs, starting, wire
from .bridged import Models, Trunks
from .lease import PresenceLease
from .legs import AgentLegs
from .lending import Lending
from .presence import AgentPresence
from .route_book import RouteBook
from .routes import Route
from .runner import RouteRun
from .session import AgentSession
from .store import GRACE, AgentKey, AgentRecord, DeskStore
from .tokens import AgentTokens

log = logging.getLogger(__name__)


def who(key: AgentKey) -> str:
    return f"{key[0] or ''}/{key[1]}"


class Desk:
    """See the module docstring."""

    def __init__(
        self,
        store: DeskStore,
        tokens: AgentTokens,
        manager: CallManager,
        recordings: RecordingService,
        playback: PlaybackService,
        *,
        worker_id: str,
        grace: float = GRACE,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.manager = manager
        self.recordings = recordings
        self.playback = playback
        self.worker_id = worker_id
        self.grace = grace
        self.clock: Callable[[], float] = time.time
        """What time it is for opening hours (tests fix it)."""
        self.answered_elsewhere: Callable[[Call], bool] = lambda call: False
        """Whether another part takes this ringing call (a SIP trunk's ``answer``): then no
        route runs and no agent is rung for it."""
        self.trunks: Trunks | None = None
        self.models: Models | None = None
        """SIP trunks and model agents for ``sip`` and ``agent`` steps (``bridged.py``): bound by
        the app, which owns them (``None``: such a step moves on, logged)."""
        self._sessions: dict[AgentKey, AgentSession] = {}
        self.presence = AgentPresence(
            store, worker_id, grace, lambda call_id: self.manager.registry.get(call_id)
        )
        """The writes of agents' records (``presence.py``), which ``lease`` renews."""
        self.lease = PresenceLease(
            store, worker_id, grace, lambda: self._sessions, lambda: self._tasks.closed
        )
        self._tasks = TaskSet("desk")
        self.legs = AgentLegs(self)
        """The agents' always-connected media legs (``legs.py``)."""
        self.lending: Lending | None = None
        """Legs lent to calls on other workers (``lending.py``): in a cluster only."""
        self.routes = RouteBook(store)
        """The routes in the store, and each ringing call's (``route_book.py``)."""

    async def start(self) -> None:
        await self.store.start(self._on_bus)
        self._tasks.spawn(self.lease.renew_forever(), "presence-lease")
        self.manager.events.listen(self._call_changed)
        self.manager.events.observe(self._call_event)

    async def close(self) -> None:
        for session in list(self._sessions.values()):
            await session.close()
        self._sessions.clear()
        await self._tasks.close()
        await self.store.close()

    # -- agents on this worker
    async def connect(self, session: AgentSession) -> AgentRecord:
        """An agent's socket opened here (a second socket of the same agent replaces the first)."""
        old = self._sessions.pop(session.key, None)
        if old is not None:
            old.send(wire.error("replaced", "this agent connected again elsewhere"))
            self._tasks.spawn(old.close(), "replaced")
        self._sessions[session.key] = session
        self.lease.holding(True)
        session.start()
        record = await self.presence.connected(session.claims)
        # The hello first, though the bus may have brought the agent messages meanwhile (a
        # call's events: an agent reconnecting on a live call of another worker).
        claims = session.claims
        hello = {"agentID": claims.agent_id, "groups": list(claims.groups), "state": record.state}
        session.greet({"type": "hello", **hello})
        return record

    async def disconnect(self, session: AgentSession) -> None:
        """Its socket closed: no more renewals, so it is ``away`` within the grace."""
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
            self.lease.holding(bool(self._sessions))
        # aiohttp cancels the socket's handler once its connection is gone, often while this
        # runs: the session's close runs to its end all the same, so its leg is always let go
        # (parked legs closed, a leg on a call left to the call).
        await session.close()

    def session(self, key: AgentKey) -> AgentSession | None:
        """The agent's socket on this worker, if it is here."""
        return self._sessions.get(key)

    def sessions(self) -> list[AgentSession]:
        return list(self._sessions.values())

    async def set_state(self, key: AgentKey, state: str, call_id: str | None = None) -> None:
        """The bridge sets the agent's state (``busy`` on ``call_id``), which it is told."""
        if await self.presence.mark(key, state, call_id):
            await self.send(key, {"type": "presence", "state": state})

    async def free(self, key: AgentKey, call_id: str) -> None:
        """The agent is off ``call_id`` (its end, a transfer to another): back to the presence
        it chose, told if it was on it (``AgentPresence.free``)."""
        state = await self.presence.free(key, call_id)
        if state is not None:
            await self.send(key, {"type": "presence", "state": state})

    async def handle(self, session: AgentSession, message: wire.AgentMessage) -> None:
        """One message from an agent's socket."""
        if message.type == "ping":
            session.send({"type": "pong"})
        elif message.type == "presence":
            assert message.state is not None
            await self.presence.chose(session.key, message.state)
        elif message.type == "offer":
            assert message.sdp is not None
            await self.legs.offer(session, message.sdp)
        elif message.type in ("transfer", "hangup"):
            await handoffs.from_agent(self, session.key, message)
        elif message.call_id is not None:
            await self._answer_ring(session, message.type, message.call_id)

    async def _answer_ring(self, session: AgentSession, kind: str, call_id: str) -> None:
        round_no = session.rings.get(call_id)
        if round_no is None:
            session.send(wire.error("not_ringing", "this call is not ringing you", call_id))
            return
        base = {"callID": call_id, "tenant": session.key[0], "agent": session.key[1]}
        if kind == "decline":
            session.rings.pop(call_id, None)
            await self.store.publish({"op": "declined", "round": round_no, **base})
            return
        # One atomic claim per ring round: the first accept wins it, a hang-up or the ring's
        # timeout claims it too ("ended", "timeout"), so exactly one of them acts.
        winner = await self.store.claim(f"{call_id}:{round_no}", who(session.key))
        session.rings.pop(call_id, None)
        if winner == who(session.key):
            await self.store.publish({"op": "accepted", "round": round_no, **base})
        else:
            session.send(wire.taken(call_id))

    async def send(self, key: AgentKey, message: dict[str, Any], round_no: int = 0) -> None:
        """Write to an agent wherever its socket is."""
        session = self._sessions.get(key)
        if session is not None:  # here: no round trip through the store
            self._deliver(session, message, round_no)
            return
        await self.store.publish(
            {"op": "send", "tenant": key[0], "agent": key[1], "message": message, "round": round_no}
        )

    def _deliver(self, session: AgentSession, message: dict[str, Any], round_no: int) -> None:
        if message.get("type") == "ringing":
            session.rung(str(message["callID"]), round_no)
        elif message.get("type") == "transferred" and self.lending is not None:
            self.lending.let_go(session.key, str(message.get("callID")))
        session.send(message)

    def _on_bus(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "send":
            session = self._sessions.get((message.get("tenant"), str(message.get("agent"))))
            if session is not None and isinstance(message.get("message"), dict):
                self._deliver(session, message["message"], int(message.get("round") or 0))
        elif op in ("accepted", "declined"):
            run = self.run_of(str(message.get("callID")))
            if run is not None:
                run.offer(message)
        elif op == "lent" and self.lending is not None:
            self.lending.answered(message)
        elif op == "control" and self.run_of(str(message.get("callID"))) is not None:
            key = (message.get("tenant"), str(message.get("agent")))
            control = wire.from_control(message)
            self.spawn(handoffs.from_agent(self, key, control, relayed=True), "control")
        elif op == "lend" and self.lending is not None:
            session = self._sessions.get((message.get("tenant"), str(message.get("agent"))))
            if session is not None:
                self.lending.asked(session, message)
        elif op == "unlend" and self.lending is not None:
            key = (message.get("tenant"), str(message.get("agent")))
            self.lending.let_go(key, str(message.get("callID")), str(message.get("request")))

    def run_of(self, call_id: str) -> RouteRun | None:
        runtime = self.manager.find_runtime(call_id)
        runs = runtime.attached("route") if runtime is not None else []
        return runs[0] if runs else None

    def new_run(self, runtime: CallRuntime, route: Route | None) -> RouteRun:
        """A route's run on the call, attached to its runtime (closed with the call)."""
        run = RouteRun(self, runtime, route)
        runtime.attach(run)
        return run

    async def lend_leg(self, key: AgentKey, runtime: CallRuntime) -> bool:
        """Lend the agent's connected leg to the call it took: its idle leg here, else (its
        socket on another worker) that worker's; ``False`` when none is usable."""
        if await self.legs.lend(key, runtime):
            return True
        return self.lending is not None and await self.lending.ask(key, runtime.call_id)

    # -- presence, as every worker sees it
    async def agents(self, tenant_id: str | None, every: bool = False) -> list[AgentRecord]:
        return sorted(
            await self.store.agents(tenant_id, every=every),
            key=lambda a: (a.tenant_id or "", a.agent_id),
        )

    async def candidates(self, tenant_id: str | None, ring: dict[str, Any]) -> list[AgentRecord]:
        """The available agents a ring step rings, in the order its strategy rings them."""
        now = time.time()
        every = {a.agent_id: a for a in await self.store.agents(tenant_id)}
        if "agents" in ring:
            listed = [every[a] for a in ring["agents"] if a in every]
        else:
            listed = sorted(
                (a for a in every.values() if ring.get("group") in (None, *a.groups)),
                key=lambda a: a.agent_id,
            )
        ready = [
            a
            for a in listed
            if a.effective(now) == "available" and a.agent_id not in ring.get("exclude", ())
        ]
        if ring.get("strategy") == "longest-idle":
            ready.sort(key=lambda a: a.since)
        return ready

    async def reachable(self, keys: set[AgentKey]) -> bool:
        """Whether any of these agents is still connected (not ``away``)."""
        now = time.time()
        for key in keys:
            record = await self.store.agent(*key)
            if record is not None and record.effective(now) != "away":
                return True
        return False

    def _call_changed(self, type_: str, call: Call) -> None:
        if handoffs.follow(self, type_, call):  # moved here, or lost with its worker
            return
        if call.direction is not Direction.INBOUND or type_ != "call.ringing":
            return
        runtime = self.manager.find_runtime(call.id)
        if runtime is not None and call.state is CallState.RINGING:
            runtime.spawn(starting.start_route(self, call), "route")

    def _call_event(self, event: CallEvent, call: Call | None) -> None:
        """The call's events to the agent who took it (``call.ended`` is the run's own), and
        its participants' to a ``sip`` step ringing a phone."""
        if call is None or event.type == "call.ended":
            return
        run = self.run_of(call.id)
        if run is not None and run.dialing is not None and event.type.startswith("participant."):
            run.offer({"op": event.type, **event.data})  # the phone a sip step rings
        to = run.winner or run.handed_from if run is not None else None  # mid-transfer: its agent
        if to is not None:
            self.spawn(self.send(to, json.loads(event.to_json())), "forward")
        elif run is not None and run.reading:  # a moved call's agent, not read yet: told then
            run.early_events.append(json.loads(event.to_json()))

    def spawn(self, work: Any, name: str) -> None:
        if not self._tasks.closed:
            self._tasks.spawn(work, name)
        else:
            work.close()
