"""``RouteRun``: a route's steps running on one inbound call, an attachment of the call's runtime
(closed with the call, so nothing of a call outlives it).

A ring step rings its agents by rounds (all at once, or one after another), each round with
one claim in the store: the first ``accept`` of the round wins it; when the round times out,
or everyone rung declined or dropped, the run claims it itself (``timeout``), and a hang-up
claims it too (``ended``) — so an accept in flight and the end of a ring never both act.

Where the run is (its step, its round, who is rung, who won) is kept in the store — Redis in a
cluster — so that when the call's owner dies, the survivor that adopts the call resumes the
route where it was (:meth:`RouteRun.resume`), and one that ends it tells the agents it rang.
The worker a drain hands the call to resumes it the same way; the run here acts in turns
(``turns.py``) and stands still from the move's start, so one worker acts on the ring at a
time: an accept landing as the call moves is taken once, by whichever carries the call on.
Which list of its route's steps the call runs — for opening hours or for closed ones — is
looked at once, as the route begins, and kept with the ring: a move does not change it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from ..attachments import PlaybackService, RecordingService
from ..calls import CallManager
from ..calls.model import CallState
from ..errors import BridgeError
from . import bridged, steps, wire
from .routes import Route, Step
from .store import AgentKey, AgentRecord, DeskStore, _key, agent_of
from .turns import Turns

if TYPE_CHECKING:
    from ..calls.runtime import CallRuntime

log = logging.getLogger(__name__)

INBOX = 64
"""Accepts and declines waiting for the run (a round rings at most a hundred agents)."""
EARLY_EVENTS = 32
"""A moved call's events kept while its run reads the store, before it knows the call's agent
(a mute, a hold, a participant: a few at most in a read or two), the oldest dropped beyond."""
CHECK = 0.25
"""Seconds between looks at whether anyone rung is still connected."""
ALL_AGENTS = Step("ring", {"strategy": "simultaneous", "timeoutS": 60.0})
"""The step a call runs when it has no route but agents are connected: ring them all."""


class RouteDesk(Protocol):
    """What a route's run uses of the desk (``Desk`` is one): the store its ring is kept and
    claimed in, the agents it rings and tells, the calls it answers and hangs up, what its
    steps play, record or ring beyond the desk (``bridged.py``), and the desk's tasks."""

    store: DeskStore
    manager: CallManager
    playback: PlaybackService
    recordings: RecordingService
    trunks: bridged.Trunks | None
    models: bridged.Models | None
    clock: Callable[[], float]

    async def candidates(
        self, tenant_id: str | None, ring: dict[str, Any]
    ) -> list[AgentRecord]: ...

    async def reachable(self, keys: set[AgentKey]) -> bool: ...

    async def send(self, key: AgentKey, message: dict[str, Any], round_no: int = 0) -> None: ...

    async def set_state(self, key: AgentKey, state: str, call_id: str | None = None) -> None: ...

    async def free(self, key: AgentKey, call_id: str) -> None: ...

    async def lend_leg(self, key: AgentKey, runtime: CallRuntime) -> bool: ...

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None: ...


class RouteRun:
    """See the module docstring."""

    kind = "route"
    wants_media = False

    def __init__(self, desk: RouteDesk, runtime: CallRuntime, route: Route | None) -> None:
        self.id = f"route-{runtime.call_id[:12]}"
        self.desk = desk
        self.runtime = runtime
        self.call = runtime.call
        self.route = route
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(INBOX)
        self.rung: set[AgentKey] = set()
        self.winner: AgentKey | None = None
        self.round = 0
        self.step = 0
        self.handing_off = False
        self.handed_from: AgentKey | None = None
        """The agent on the call while a transfer to a group rings (told if the call ends)."""
        self.handing_to: str | None = None
        """The group that transfer rings."""
        self.voicemail: Any = None
        """The voicemail's recorder while it records (told even if the caller hangs up)."""
        self.doing: dict[str, Any] | None = None
        """What a step that plays or records is doing (``steps.py``), kept with the run."""
        self.accepted_at: float | None = None
        self.leg_lent = False
        """Whether the winner's connected leg joined the call (``False``: its app offers)."""
        self.dialing: str | None = None
        """The participant a ``sip`` step is ringing (its events come to :meth:`offer`)."""
        self.turns = Turns()
        """Its acts, one at a time, held while the call moves to another worker."""
        self.in_hours: bool | None = None
        """Whether the call runs its route's steps, not those for closed hours: the opening
        hours as its route began, the call's for good — kept with its ring, so a worker the
        call moves to runs the same list (``None``: looked at as the route begins)."""
        self.reading = False
        """Its first turn still reading the store — its call's route, or the ring a moved call
        left (``starting.read_first``): a move of the call meanwhile waits for the read, and
        saves the run only if it runs."""
        self.early_events: deque[dict[str, Any]] = deque(maxlen=EARLY_EVENTS)
        """The call's events while it read, its agent not known yet (told then:
        ``handoffs.tell_early_events``)."""
        self._presence = asyncio.Lock()
        """Orders a winner's ``busy`` (:meth:`mark_busy`) and the free at the call's end: an
        accept racing the hang-up never lands ``busy`` after the end freed the agent."""

    # -- the attachment
    def offer(self, message: dict[str, Any]) -> None:
        try:
            self.inbox.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("call %s: route inbox full, an answer dropped", self.call.id)

    def call_state(self, state: str, end_reason: str | None) -> None:
        if state != "ended":
            return
        # Terminate always wins: the round's claim goes to the hang-up if nobody holds it.
        round_key, audience = f"{self.call.id}:{self.round}", set(self.rung)
        winner = self.winner or self.handed_from  # mid-transfer: the agent the call still has
        ended = {"type": "call.ended", "callID": self.call.id, "endReason": end_reason}
        self.rung.clear()

        async def tell() -> None:
            await self.desk.store.claim(round_key, "ended")
            await self.desk.store.drop_ring(self.call.id)
            for key in audience | ({winner} if winner else set()):
                await self.desk.send(key, ended)
            async with self._presence:  # after a busy in flight; none is marked from now
                # The winner now too: an accept that won the round as the call ended (it
                # was among the rung, who heard the end above).
                for key in {k for k in (winner, self.winner) if k is not None}:
                    await self.desk.free(key, self.call.id)

        self.desk.spawn(tell(), f"ended:{self.call.id}")

    async def stand_still(self) -> None:
        """The call moves to another worker (``ActsOnItsOwn``): the act under way finishes,
        no other begins, and the run is saved as it stands (a transfer just asked too), which
        the worker that carries the call on starts from (``handoffs.resume_route``). An accept
        landing meanwhile won its round's claim: that worker finds it there, or this one
        once it goes on. A run still reading the store is saved as it is once read (nothing,
        when it runs no route)."""
        await self.turns.stand_still()
        if self.call.live and not self.reading:
            await self.save()

    def go_on(self) -> None:
        self.turns.go_on()

    async def close(self) -> None:
        # The caller hung up before maxS: what was said. Closed with the call live, it moved
        # on: the worker that carries it on records on and joins every segment at its end (a
        # join here, in this worker's index, was overwritten by that one, and told nobody).
        if not self.call.live:
            await steps.recorded(self)
        self.runtime.detach(self)

    # -- where the run is, in the store
    async def save(self) -> None:
        ring: dict[str, Any] = {
            "route": self.route.route_id if self.route is not None else None,
            "step": self.step,
            "round": self.round,
            "rung": sorted(_key(*k) for k in self.rung),
            "winner": _key(*self.winner) if self.winner is not None else None,
            "leg": self.leg_lent,
        }
        if self.in_hours is not None:
            ring["hours"] = "open" if self.in_hours else "closed"
        if self.doing is not None:  # a playback playing, a voicemail recording: the new owner's
            ring["doing"] = self.doing
        if self.handing_to is not None:  # a transfer to a group: who had the call, the group
            handed = _key(*self.handed_from) if self.handed_from is not None else None
            ring["transfer"] = {"from": handed, "group": self.handing_to}
        try:
            await self.desk.store.put_ring(self.call.id, ring)
        except Exception as exc:  # the store's own errors (Redis's are not OSError)
            log.warning("call %s: its ring not saved in the store: %s", self.call.id, exc)

    async def resume(self, ring: dict[str, Any]) -> None:
        """Carry on the ring another worker left in the store: an accept that won its last
        round meanwhile takes the call; else its step runs again, from a new round. The run is
        at the ring's step and round, its agents rung, from here: a move meanwhile saves them."""
        self.round, self.step = int(ring.get("round") or 0), int(ring.get("step") or 0)
        self.rung = {agent_of(w) for w in ring.get("rung", ())}
        if not await self.retake(ring):
            await self.run(self.step)

    async def retake(self, ring: dict[str, Any]) -> bool:
        """Close the last round of a ring another worker left (``ring``: its record): whether
        an accept that won it took the call here; else those it rang hear it stopped."""
        async with self.turns.turn():
            self.round = int(ring.get("round") or 0)
            holder = await self.desk.store.claim(f"{self.call.id}:{self.round}", "timeout")
            named = [*ring.get("rung", ()), *([ring["winner"]] if ring.get("winner") else [])]
            rung = [agent_of(w) for w in named]
            stopped = {"type": "ringing.stopped", "callID": self.call.id}
            for key in rung:
                if holder == _key(*key):
                    self.rung = set(rung)
                    return await self._take(key, self.round)
            for key in rung:
                await self.desk.send(key, stopped)
            self.rung = set()
        return False

    # -- the steps
    def steps(self) -> tuple[Step, ...]:
        """The list of steps the call runs (:attr:`in_hours`, looked at the first time)."""
        if self.route is None:
            return (ALL_AGENTS,)
        if self.in_hours is None:  # the route begins (or an older worker's ring said nothing)
            self.in_hours = self.route.open_at(self.desk.clock())
        return self.route.steps if self.in_hours else self.route.closed

    async def run(self, start: int = 0) -> None:
        for index, step in enumerate(self.steps()):
            if index < start:
                continue
            async with self.turns.turn():
                if not self.call.live or self.winner is not None:
                    return
                self.step, self.doing = index, None
                await self.save()
            log.info(
                "call %s: route step %d %s",
                self.call.id,
                index,
                step.kind,
                extra={"call_id": self.call.id},
            )
            try:
                if await getattr(self, f"_{step.kind}")(step):
                    return
            except BridgeError as exc:
                log.warning("call %s: route step %s failed: %s", self.call.id, step.kind, exc)

    async def _ring(self, step: Step) -> bool:
        return await self.ring_agents(step)

    async def ring_agents(self, step: Step) -> bool:
        """Ring a step's agents by rounds (a transfer's too, ``handoffs.hand_off``): whether
        one took the call, or it ended."""
        ring = step.body
        agents = await self.desk.candidates(self.call.tenant_id or None, ring)
        if not agents:
            return False
        keys = [(a.tenant_id, a.agent_id) for a in agents]
        rounds = (
            [keys]
            if ring.get("strategy", "simultaneous") == "simultaneous"
            else [[k] for k in keys]
        )
        for batch in rounds:
            if await self._ring_round(set(batch), step.timeout_s):
                return True
            if not self.call.live:
                return True
        return False

    async def _ring_round(self, batch: set[AgentKey], timeout: float) -> bool:
        async with self.turns.turn():
            self.round += 1
            round_no, snapshot = self.round, self.call.snapshot()
            self.rung = set(batch)
            await self.save()
            for key in batch:
                await self.desk.send(key, wire.ringing(snapshot), round_no)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.rung and self.call.live:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(min(left, CHECK)):
                    message = await self.inbox.get()
            except TimeoutError:
                if not await self.desk.reachable(self.rung):
                    break  # everyone rung dropped: on within the grace
                continue
            if message.get("round") != round_no:
                continue
            key = (message.get("tenant"), str(message.get("agent")))
            async with self.turns.turn():
                if message.get("op") == "declined":
                    self.rung.discard(key)
                elif message.get("op") == "accepted":
                    return await self._take(key, round_no)
        async with self.turns.turn():
            return await self._close_round(batch, round_no)

    async def _close_round(self, batch: set[AgentKey], round_no: int) -> bool:
        """Close the round: an accept that won the claim meanwhile still takes the call."""
        holder = await self.desk.store.claim(f"{self.call.id}:{round_no}", "timeout")
        stopped = {"type": "ringing.stopped", "callID": self.call.id}
        for key in self.rung:
            if holder == f"{key[0] or ''}/{key[1]}":
                return await self._take(key, round_no)
        for key in batch:  # those who declined too: their app shows the ring ended
            await self.desk.send(key, stopped)
        self.rung = set()
        return False

    async def _take(self, key: AgentKey, round_no: int) -> bool:
        self.accepted_at = time.monotonic()
        others, self.rung = self.rung - {key}, set()
        # The winner first: it hears "accepted", then the call's own events (call.active).
        self.winner = key
        await self.save()
        # Its connected leg joins the call now, before the answer: the first audio needs no
        # offer, ICE or DTLS — lent across workers when its socket is on another ("leg":
        # false: none usable, the app sends the per-call offer).
        leg = self.leg_lent = await self.desk.lend_leg(key, self.runtime)
        await self.desk.send(
            key,
            {"type": "accepted", "callID": self.call.id, "call": self.call.snapshot(), "leg": leg},
        )
        for other in others:
            await self.desk.send(other, wire.taken(self.call.id))
        await self.mark_busy(key)
        if self.call.state is CallState.RINGING:
            try:
                await self.desk.manager.answer(self.call.id)
            except BridgeError as exc:  # ended meanwhile: the winner hears call.ended
                log.warning(
                    "call %s: agent %s accepted, answer failed: %s", self.call.id, key[1], exc
                )
        return True

    async def mark_busy(self, key: AgentKey) -> bool:
        """The agent is busy on this call (``False``: the call ended first, it stays free).
        Ordered with the free at the call's end (:meth:`call_state`)."""
        async with self._presence:
            if not self.call.live:
                return False
            await self.desk.set_state(key, "busy", self.call.id)
            return True

    async def ensure_answered(self) -> None:
        if self.call.state is CallState.RINGING:
            await self.desk.manager.answer(self.call.id)

    async def _sip(self, step: Step) -> bool:
        return await bridged.sip(self, step, self.desk.trunks)

    async def _agent(self, step: Step) -> bool:
        return await bridged.agent(self, step, self.desk.models)

    async def _play(self, step: Step) -> bool:
        return await steps.play(self, step)

    async def _voicemail(self, step: Step) -> bool:
        return await steps.voicemail(self, step)

    async def _hangup(self, step: Step) -> bool:
        await self.desk.manager.hangup(self.call.id)
        return True
