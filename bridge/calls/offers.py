"""A browser's offer for a call (``POST /call/{callID}/webrtc``): checked before any socket
exists, turned down when the bridge carries its maximum of WebRTC sessions, answered by a new
session that replaces the participant's previous one, and counted by result in
``bridge_webrtc_offers_total`` (with the offer-to-answer time)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ..errors import AtCapacity, BadOffer, CallNotFound, CallStateError, ShuttingDown
from ..media import Role
from ..rtc import ConnectedLeg
from ..rtc.browser_sdp import validate_offer

if TYPE_CHECKING:
    from .manager import CallManager
    from .runtime import CallRuntime


def offer_result(exc: BaseException) -> str:
    """A bounded label for a failed offer."""
    if isinstance(exc, BadOffer):
        return "bad_offer"
    if isinstance(exc, CallNotFound):
        return "not_found"
    if isinstance(exc, CallStateError):
        return "conflict"
    if isinstance(exc, AtCapacity | ShuttingDown):
        return "capacity"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"


async def answer_offer(
    manager: CallManager, call_id: str, sdp: str, participant_id: str, role: Role | None
) -> str:
    """The SDP answer to a browser's offer for a call, counted by result. ``role`` ``None``:
    the participant's role on the call (a re-offer that names none keeps it), else agent."""
    started = time.monotonic()
    try:
        answer = await _answer(manager, call_id, sdp, participant_id, role)
    except BaseException as exc:
        manager.metrics.offers.labels(offer_result(exc)).inc()
        raise
    manager.metrics.offers.labels("answered").inc()
    manager.metrics.offer_to_answer.observe(time.monotonic() - started)
    return answer


async def _answer(
    manager: CallManager, call_id: str, sdp: str, participant_id: str, role: Role | None
) -> str:
    call = manager.get(call_id)
    if not call.live:
        raise CallStateError(f"call {call.id} has ended; start a new call")
    validate_offer(sdp)  # before any socket or peer connection exists
    runtime = manager.runtime(call.id)
    if role is None:
        role = runtime.participants.role_of(participant_id) or Role.AGENT
    _admit(manager, runtime, participant_id, role)
    session = await manager.sessions.create(
        call.id,
        runtime.bus,
        runtime.participants.on_state,
        participant_id=participant_id,
        role=role,
        on_dtmf=runtime.participants.on_dtmf,
    )
    try:  # again: another offer may have joined while the session was made (a TURN grant)
        _admit(manager, runtime, participant_id, role)
    except BaseException:
        await session.close()
        raise
    return await runtime.participants.replace(session, sdp)


def _admit(manager: CallManager, runtime: CallRuntime, participant_id: str, role: Role) -> None:
    """Refuse a participant the call cannot take (409) or a first session the bridge has no
    room for (503)."""
    settings = manager.settings
    runtime.participants.check_join(participant_id, role, settings.max_participants)
    if not runtime.participants.sessions:
        if manager.shutting_down:
            raise ShuttingDown("the bridge is shutting down")
        sessions = sum(1 for r in manager.live_runtimes() if r.participants.sessions)
        if sessions >= settings.max_calls:
            raise AtCapacity("the bridge carries its maximum of WebRTC sessions")


async def answer_agent_offer(manager: CallManager, name: str, sdp: str) -> tuple[ConnectedLeg, str]:
    """An agent's always-connected leg for its offer (``rtc/connected.py``) and the answer,
    counted with the calls' offers."""
    started = time.monotonic()
    try:
        validate_offer(sdp)
        if manager.shutting_down:
            raise ShuttingDown("the bridge is shutting down")
        leg = await manager.sessions.connected(name)
        answer = await leg.accept_offer(sdp)  # closes the leg when it fails
    except BaseException as exc:
        manager.metrics.offers.labels(offer_result(exc)).inc()
        raise
    manager.metrics.offers.labels("answered").inc()
    manager.metrics.offer_to_answer.observe(time.monotonic() - started)
    return leg, answer
