"""The desk's hand-offs beyond a route's first ring (issue 49): a transfer to a group later in
the call (:func:`transfer`, rung by :func:`hand_off`; the agent on the call asks for it on its
socket with :func:`from_agent`, as it hangs up there too), and a ring that outlives its worker — the
worker a ringing call moves to (a drain's handover, a survivor's adoption) resumes its route
from the ring the store kept (:func:`resume_route`); a survivor that ends it
(``worker_lost``) tells the agents it rang (:func:`tell_lost`)."""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any, Protocol

from ..attachments import PlaybackService
from ..calls import CallManager
from ..calls.model import Call, CallState
from ..calls.runtime import CallRuntime
from ..errors import BridgeError, CallStateError
from . import wire
from .lending import Lending
from .routes import Route, Step, route_from_stored
from .runner import RouteRun
from .store import AgentKey, AgentRecord, DeskStore

log = logging.getLogger(__name__)


class HandsOff(Protocol):
    """What a hand-off uses of the desk (``Desk`` is one): the call's route run (a new one
    when it has none), the agents it may ring and tells, the store the ring is kept in, the
    calls it hangs up, the hold music, and whether calls run on other workers."""

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
    except BaseException:
        run.handing_off = False
        raise
    runtime.spawn(hand_off(run, ring, music), "transfer")


async def hand_off(run: RouteRun, ring: dict[str, Any], music: Any) -> None:
    """A transfer to a group later in the call: the caller is held (``music``: starts the
    hold music) while the group rings the same way; the first to accept takes the call
    (its leg replaces the agent's), the previous agent is let go. Nobody: the call comes
    back off hold to the agent it had."""
    previous, run.winner = run.winner, None
    run.handed_from = previous
    taken = False
    try:
        await run.runtime.hold.set(True, music)  # a failure here too ends the hand-off
        taken = await run.ring_agents(Step("ring", ring))
    except CallStateError:  # the call ended as it was handed off: no one's failure
        log.info("call %s: ended during its transfer to a group", run.call.id)
    except Exception as exc:  # the store's own errors too (Redis's are not OSError)
        log.warning("call %s: transfer to a group failed: %s", run.call.id, exc)
    finally:
        run.handing_off, run.handed_from = False, None
        if not taken or run.winner is None:  # nobody took it: still the agent's call
            taken, run.winner = False, previous
        if run.call.live:
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
        group=ring.get("group"),
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


async def resume_route(desk: HandsOff, call: Call) -> None:
    ring = await desk.store.ring(call.id)
    runtime = desk.manager.find_runtime(call.id)
    if ring is None or runtime is None or runtime.attached("route"):
        return
    body = await desk.store.route(ring["route"]) if ring.get("route") else None
    run = desk.new_run(runtime, route_from_stored(body) if body else None)
    log.info(  # why it moved is said where it moved (a drain's handover, a crash's recovery)
        "call %s: carried on here while ringing; its route resumes at step %s",
        call.id,
        ring.get("step"),
        extra={"call_id": call.id},
    )
    await run.resume(ring)


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
    for entry in {*ring.get("rung", ()), *([ring["winner"]] if ring.get("winner") else [])}:
        tenant, _, agent = str(entry).partition("/")
        key = (tenant or None, agent)
        await desk.send(key, ended)
        await desk.free(key, call_id)
