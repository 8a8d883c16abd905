"""The desk's hand-offs beyond a route's first ring (issue 49): a transfer to a group later in
the call (:func:`transfer`, rung by :func:`hand_off`; the agent on the call asks for it on its
socket with :func:`from_agent`, as it hangs up there too), and a ring that outlives its worker — the
worker a ringing call moves to (a drain's handover, a survivor's adoption) resumes its route
from the ring the store kept (:func:`resume_route`); a survivor that ends it
(``worker_lost``) tells the agents it rang (:func:`tell_lost`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from contextlib import suppress
from typing import Any, Protocol

from ..attachments import PlaybackService
from ..calls import CallManager
from ..calls.model import Call, CallState
from ..calls.runtime import CallRuntime
from ..errors import BridgeError, CallStateError
from . import starting, steps, wire
from .lending import Lending
from .routes import Route, Step, route_from_stored
from .runner import RouteRun
from .store import AgentKey, AgentRecord, DeskStore, agent_of

log = logging.getLogger(__name__)

LEG_LOOK = 0.25
"""Seconds between looks at whether a moved call's agent's leg is idle to join it here."""
LEG_WAIT = 15.0
"""Seconds it is looked for: past the old worker's relay of it (``RELAY_WAIT``, 10 s)."""


class HandsOff(Protocol):
    """What a hand-off uses of the desk (``Desk`` is one): the call's route run (a new one
    when it has none), the agents it may ring and tells, the store the ring is kept in, the
    calls it hangs up, the hold music, whether calls run on other workers, and its tasks."""

    store: DeskStore
    manager: CallManager
    playback: PlaybackService
    lending: Lending | None

    def run_of(self, call_id: str) -> RouteRun | None: ...

    def new_run(self, runtime: CallRuntime, route: Route | None) -> RouteRun: ...

    async def candidates(
        self, tenant_id: str | None, ring: dict[str, Any]
    ) -> list[AgentRecord]: ...

    async def send(self, key: AgentKey, message: dict[str, Any], round_no: int = 0) -> None: ...

    async def free(self, key: AgentKey, call_id: str) -> None: ...

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None: ...


async def transfer(
    desk: HandsOff, runtime: CallRuntime, group: str, timeout: float, music: Any = None
) -> None:
    """``/call/transfer`` to a group: ring its available agents (not the one on the call)
    while the caller hears ``music``; the first to accept takes the call (409
    ``nobody_available`` when nobody can be rung, ``not_active`` before the answer)."""
    call = runtime.call
    if call.state is not CallState.ACTIVE:
        raise CallStateError(f"call {call.id} is not active", code="not_active")
    run = desk.run_of(call.id) or desk.new_run(runtime, None)
    if run.rung or run.handing_off:
        raise CallStateError(f"call {call.id} is already ringing agents", code="ringing")
    # Taken before the first await (the store's look-up): one transfer at a time, until its
    # ring ends; a second one meanwhile is 409 ringing.
    run.handing_off = True
    ring: dict[str, Any] = {"group": group, "strategy": "simultaneous", "timeoutS": timeout}
    ring["exclude"] = [run.winner[1]] if run.winner is not None else []
    try:
        if not await desk.candidates(call.tenant_id or None, ring):
            raise CallStateError(
                f"nobody in group {group[:64]!r} is available", code="nobody_available"
            )
        runtime.check_staying()  # looked at last: nothing awaited between it and the start
    except BaseException:
        run.handing_off = False
        raise
    # The transfer begins: what the run is now is what a move of the call saves.
    run.handed_from, run.winner, run.handing_to = run.winner, None, group
    runtime.spawn(hand_off(run, ring, music), "transfer")


async def hand_off(run: RouteRun, ring: dict[str, Any], music: Any) -> None:
    """A transfer to a group later in the call: the caller is held (``music``: starts the
    hold music) while the group rings the same way; the first to accept takes the call
    (its leg replaces the agent's), the previous agent is let go. Nobody: the call comes
    back off hold to the agent it had. While the call moves to another worker it stands
    still; the worker carrying the call on ends it (:func:`carry_on`)."""
    previous = run.handed_from
    taken = False
    try:
        async with run.turns.turn():
            await run.runtime.hold.set(True, music)  # a failure here too ends the hand-off
        taken = await run.ring_agents(Step("ring", ring))
    except CallStateError:  # the call ended as it was handed off: no one's failure
        log.info("call %s: ended during its transfer to a group", run.call.id)
    except Exception as exc:  # the store's own errors too (Redis's are not OSError)
        log.warning("call %s: transfer to a group failed: %s", run.call.id, exc)
    await finish_transfer(run, previous, taken)


async def finish_transfer(run: RouteRun, previous: AgentKey | None, taken: bool) -> None:
    """The end of a transfer's ring (``taken``: an agent of the group took the call), in one
    turn of the run: the call off hold; the agent who had it told ``transfer.failed`` and
    keeping it, or ``transferred`` and let go."""
    async with run.turns.turn():
        group, run.handing_off, run.handed_from, run.handing_to = run.handing_to, False, None, None
        if not taken or run.winner is None:  # nobody took it: still the agent's call
            taken, run.winner = False, previous
        if not run.call.live:
            taken = False
        else:
            await run.save()  # the transfer is over: a move from now carries the call's agent
            with suppress(CallStateError):  # it ended while the resume waited its turn
                await run.runtime.hold.set(False)
        if not taken or run.winner is None:
            if previous is not None:
                failed = {"type": "transfer.failed", "callID": run.call.id}
                await run.desk.send(previous, failed)
            return
        if previous is not None and previous != run.winner:
            if not run.leg_lent:  # no leg replaced the previous agent's: it leaves (parks)
                await run.runtime.participants.leave("agent")
            await run.desk.send(
                previous, {"type": "transferred", "callID": run.call.id, "to": run.winner[1]}
            )
            await run.desk.free(previous, run.call.id)
        run.runtime.emit(
            "call.transferred",
            participantID="agent",
            fromParticipantID="agent",
            group=group,
            agentID=run.winner[1],
        )


async def from_agent(
    desk: HandsOff, key: AgentKey, message: wire.AgentMessage, *, relayed: bool = False
) -> None:
    """``transfer {callID, group, music?, timeoutS?}`` or ``hangup {callID}`` on an agent's
    socket: only for the call the agent is on; done by the worker carrying the call (the
    agent's worker passes it on when the call's run is not here: ``relayed`` there); a
    refusal is an ``error`` message naming the call."""
    call_id = str(message.call_id)
    run = desk.run_of(call_id)
    if run is None and not relayed and desk.lending is not None:  # on another worker?
        await desk.store.publish({"op": "control", **wire.control(message, key)})
        return
    try:
        if run is None or key not in (run.winner, run.handed_from):  # its transfer ringing
            raise CallStateError("you are not on this call here", code="not_on_call")
        if message.type == "hangup":
            await desk.manager.hangup(call_id)
            return
        music = message.music
        if music is not None:
            await desk.playback.assets.find(music, run.call.tenant_id or None)  # or 404

        async def start_music() -> Any:
            return await desk.playback.start(run.runtime, {"assetId": music, "loop": True})

        assert message.group is not None
        await transfer(
            desk, run.runtime, message.group, message.timeout_s, start_music if music else None
        )
    except BridgeError as exc:
        await desk.send(key, wire.error(exc.code, str(exc), call_id))


def follow(desk: HandsOff, type_: str, call: Call) -> bool:
    """Whether this change of a call (``Desk`` hands it each) is a hand-off's: ``call.carried``
    — moved here (a drain's handover, or adopted from a dead worker), told by this worker as
    it takes the call over (its ``call.moved`` is the old worker's in a drain, so only a
    crash's would reach this desk): its route's run carries on here (:func:`resume_route`);
    a call ended ``worker_lost`` that nobody carries on: the agents it rang, or the one on
    it, hear it ended (:func:`tell_lost`)."""
    if type_ == "call.carried":
        runtime = desk.manager.find_runtime(call.id)
        if runtime is not None and call.live and not runtime.attached("route"):
            runtime.spawn(resume_route(desk, call), "route")
        return True
    if type_ == "call.ended" and call.end_detail == "worker_lost" and not desk.run_of(call.id):
        desk.spawn(tell_lost(desk, call.id, call.end_reason), f"lost:{call.id}")
        return True
    return False


async def resume_route(desk: HandsOff, call: Call) -> None:
    """A call moved here (a drain's handover, a crash's adoption): its route's run carries on
    from the record the old worker left — a ringing call's ring resumes, an answered call's
    agent stays on it (:func:`carry_on`). The run is on the call before the record is read,
    the reads its first turn (``starting.read_first``): the call moving on meanwhile (the
    next worker drains too) waits for them, and the run saves the ring it carries on."""
    runtime = desk.manager.find_runtime(call.id)
    if runtime is None or runtime.attached("route"):
        return
    left: dict[str, Any] = {}

    async def read(run: RouteRun) -> bool:
        ring = await desk.store.ring(call.id)
        if ring is None or not call.live:
            return False
        body = await desk.store.route(ring["route"]) if ring.get("route") else None
        run.route = route_from_stored(body) if body else None
        run.in_hours = {"open": True, "closed": False}.get(str(ring.get("hours")))  # its list
        left.update(ring)
        return True

    run = await starting.read_first(desk, runtime, read)
    if run is None:
        return
    if call.state is not CallState.RINGING:
        await carry_on(run, left)
        return
    log.info(  # why it moved is said where it moved (a drain's handover, a crash's recovery)
        "call %s: carried on here while ringing; its route resumes at step %s",
        call.id,
        left.get("step"),
        extra={"call_id": call.id},
    )
    await run.resume(left)


async def carry_on(run: RouteRun, ring: dict[str, Any]) -> None:
    """An answered call's run where another worker left it (``ring``: its record): the agent
    it names stays on the call (told its events, freed at its end); a step that was playing
    or recording goes on from where it was (``steps.carry_on``). A transfer to a group
    that rang cannot ring on from here (its rounds' rings went out from there): an accept
    that won its last round takes the call, as does one that took it before the move;
    else it fails — the group hears ``ringing.stopped``, the agent ``transfer.failed``."""
    call, transfer = run.call, ring.get("transfer")
    run.round, run.step = int(ring.get("round") or 0), int(ring.get("step") or 0)
    winner = agent_of(ring["winner"]) if ring.get("winner") else None
    on_it = winner[1] if winner else (transfer or {}).get("from")
    log.info(
        "call %s: carried on here answered; %s%s",
        call.id,
        f"its agent {on_it} stays on it" if on_it else "no agent on it",
        ", its transfer to a group ends here" if isinstance(transfer, dict) else "",
        extra={"call_id": call.id},
    )
    if isinstance(transfer, dict):
        run.handing_off, run.handing_to = True, transfer.get("group")
        previous = run.handed_from = agent_of(transfer["from"]) if transfer.get("from") else None
        run.winner = winner  # an agent of the group took it before the move: its events now
        tell_early_events(run)
        if winner is None:
            taken = await run.retake(ring)
            await finish_transfer(run, previous, taken)
            if taken:  # by an agent of the group, here: its leg was lent as it took it
                return
            winner = previous  # still the agent's call
        else:  # an agent of the group took it before the move: what followed the take, here
            await finish_transfer(run, previous, True)
    run.winner = winner
    tell_early_events(run)
    if winner is not None and ring.get("leg"):
        run.runtime.spawn(leg_back(run, winner), "agent-leg")
    doing = ring.get("doing")  # a play step's playback, a voicemail's greeting or recording
    if isinstance(doing, dict) and run.route is not None and call.live:
        listed = run.steps()
        if run.step < len(listed):
            await steps.carry_on(run, listed[run.step], run.step, doing)


def tell_early_events(run: RouteRun) -> None:
    """The call's events that came while the run read the record it carries on (its agent not
    known then: ``Desk._call_event``), to that agent now, in their order, before any later."""
    to = run.winner or run.handed_from
    while run.early_events:
        event = run.early_events.popleft()
        if to is not None:
            run.desk.spawn(run.desk.send(to, event), "forward")


async def leg_back(run: RouteRun, key: AgentKey) -> None:
    """The connected leg of the agent on a call moved here joins it here once the worker the
    call left lets go of it (which relays it through here meanwhile, as it does a browser)
    and it is idle again: looked for every :data:`LEG_LOOK` s, for at most :data:`LEG_WAIT`
    s; else said once (the app offers again to have it back). Each look is a turn of the run:
    a move of the call waits for it and saves the run with the leg on it or not, and no leg
    joins while it stands still (it would be left out of what the next owner is told)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LEG_WAIT
    while run.call.live and run.winner == key:
        async with run.turns.turn():
            if not (run.call.live and run.winner == key):
                return
            if await run.desk.lend_leg(key, run.runtime):
                run.leg_lent = True
                return
        if loop.time() > deadline:
            log.warning(
                "call %s: agent %s's connected leg did not join the call here within %g s "
                "of its move (its app brings it back by offering again)",
                run.call.id,
                key[1],
                LEG_WAIT,
                extra={"call_id": run.call.id},
            )
            return
        await asyncio.sleep(LEG_LOOK)


async def tell_lost(desk: HandsOff, call_id: str, end_reason: Any) -> None:
    ring = await desk.store.ring(call_id)
    if ring is None:
        return
    await desk.store.drop_ring(call_id)
    ended = {
        "type": "call.ended",
        "callID": call_id,
        "endReason": str(end_reason) if end_reason else None,
        "endDetail": "worker_lost",
    }
    handed = (ring.get("transfer") or {}).get("from")  # on it while its transfer rang
    on_it = [e for e in (ring.get("winner"), handed) if e]
    for entry in {*ring.get("rung", ()), *on_it}:
        key = agent_of(entry)
        await desk.send(key, ended)
        await desk.free(key, call_id)
