"""The route steps that hand an inbound call to something other than a person's app (issue 49):

- ``sip {uri, trunkID?, timeoutS?, headers?}`` rings a SIP target through a trunk while the
  WhatsApp call keeps ringing; the phone's ``200`` answers the WhatsApp call into it (the phone
  is the call's agent, and its hang-up ends the call). A busy phone, a refusal, or nobody
  within ``timeoutS`` (a ``CANCEL``) moves the route on. Each outcome is the event
  ``route.sip {participantID, uri, outcome, sipCode?}`` (``outcome``: ``answered``, ``busy``,
  ``no_answer``, ``rejected``, ``failed``; ``sipCode`` the phone's final response).
- ``agent {provider, url?, session?, bridgeTools?}`` answers the call and puts a realtime model
  agent on it, as ``POST /call/{callID}/agents`` does; a model that cannot be reached moves
  the route on (the call answered).

The desk reaches trunks and model agents only through what the app binds on it
(:attr:`Desk.trunks <.service.Desk.trunks>`, :attr:`Desk.models <.service.Desk.models>`), handed
to each step by the route's run: those layers sit above the desk.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from ..calls.model import Call
from ..errors import CallStateError
from ..media import Role

if TYPE_CHECKING:
    from ..attachments.base import AttachmentHost
    from ..calls.runtime import CallRuntime
    from .routes import Step
    from .turns import Turns

log = logging.getLogger(__name__)

SIP_PARTICIPANT = "sip"
"""The participant id of the phone a ``sip`` step rings (the call's agent once it answers)."""
LOOK = 0.25
"""Seconds between looks at whether the call still rings while the phone does."""
FINAL_LOOKS = 50
"""Looks, 20 ms apart, for the final response a CANCEL brings."""
MOVING = "moving"
"""A ring's outcome when the call begins to move to another worker (not told: no outcome)."""


class SipLeg(Protocol):
    """What a ``sip`` step uses of the trunks' SIP participant (``trunks/participant.py``)."""

    on_left: Any
    dialer: Any

    async def remove(self) -> None: ...


class Trunks(Protocol):
    """What a ``sip`` step uses of the trunks (``TrunkService``): the same call as ``POST
    /call/participants {"sip": …}``, and the end of a call whose PBX leg went."""

    async def add_participant(
        self,
        call_id: str,
        participant_id: str,
        role: Role,
        sip: dict[str, Any],
        *,
        rung_anew: bool = False,
    ) -> Any: ...

    def end_with(self, call: Call, reason: str) -> None: ...


class Models(Protocol):
    """What an ``agent`` step uses of the model agents (``AgentService``)."""

    async def start(self, host: AttachmentHost, body: dict[str, Any]) -> Any: ...


class StepRun(Protocol):
    """What a step uses of the route's run on the call (``runner.RouteRun``)."""

    call: Call
    runtime: CallRuntime
    inbox: asyncio.Queue[dict[str, Any]]
    dialing: str | None
    turns: Turns

    async def ensure_answered(self) -> None: ...


async def sip(run: StepRun, step: Step, trunks: Trunks | None) -> bool:
    """See the module docstring; ``True`` when the call is taken (or gone).

    The phone rings in one turn of the run. A leg through a trunk cannot move to another
    worker (its dialog and media are this worker's), so a move of the ringing call ends the
    ring here before the call's state leaves (a ``CANCEL``), and the worker carrying the call
    on rings the phone anew from this step: the phone is rung by one worker at a time. If the
    call stays here after all (its move failed), it is rung again here."""
    call = run.call
    if trunks is None:
        raise CallStateError("this worker has no SIP trunks to ring through")
    target: dict[str, Any] = {
        k: step.body[k] for k in ("uri", "trunkID", "headers") if k in step.body
    }
    while True:
        async with run.turns.turn():
            if not call.live:
                return True
            taken = await _ring(run, step, trunks, target)
        if taken is not None:
            return taken


async def _ring(run: StepRun, step: Step, trunks: Trunks, target: dict[str, Any]) -> bool | None:
    """Ring the phone once: whether the call is taken (or gone); ``None`` when the call began
    to move to another worker (its ring ended here)."""
    call = run.call
    _forget_earlier_legs(run)
    run.dialing = SIP_PARTICIPANT
    try:
        leg: SipLeg = await trunks.add_participant(
            call.id, SIP_PARTICIPANT, Role.AGENT, target, rung_anew=True
        )
        outcome, code = await _outcome(run, step.timeout_s)
    finally:
        run.dialing = None  # from here, this leg's events are not the next step's
    if outcome is None or outcome == MOVING:  # no answer in time, or moving: CANCEL (§9.1)
        await leg.remove()
        final = await _final_status(leg)
        if outcome == MOVING:
            log.info(
                "call %s: its phone's ring ends here as the call moves (its answer to the "
                "CANCEL: %s); the worker that carries the call on rings it anew",
                call.id,
                final,
                extra={"call_id": call.id},
            )
            return None
        outcome, code = "no_answer", final
    shown: dict[str, Any] = {"participantID": SIP_PARTICIPANT, "uri": step.body["uri"]}
    if code is not None:
        shown["sipCode"] = code
    run.runtime.emit("route.sip", outcome=outcome, **shown)
    if outcome != "answered":
        return not call.live
    leg.on_left = lambda reason: trunks.end_with(call, reason)
    await run.ensure_answered()
    return True


def _forget_earlier_legs(run: StepRun) -> None:
    """Drop what an earlier step's phone said that is still waiting in the run's inbox (the
    participant id is the same for every ``sip`` step's phone)."""
    kept = []
    while not run.inbox.empty():
        message = run.inbox.get_nowait()
        if not str(message.get("op", "")).startswith("participant."):
            kept.append(message)
    for message in kept:
        run.inbox.put_nowait(message)


async def _outcome(run: StepRun, timeout: float) -> tuple[str | None, int | None]:
    """The phone's answer as its participant events say (``Desk`` hands them to the run):
    ``("answered", 200)``, ``(reason, sipCode)`` when it left, ``(None, None)`` on time out,
    ``(MOVING, None)`` as the run stands still for a move of the call."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while run.call.live:
        if run.turns.still:  # the call moves to another worker
            return MOVING, None
        left = deadline - loop.time()
        if left <= 0:
            return None, None
        try:
            async with asyncio.timeout(min(left, LOOK)):
                message = await run.inbox.get()
        except TimeoutError:
            continue
        if message.get("participantID") != SIP_PARTICIPANT:
            continue
        if message.get("op") == "participant.joined":
            return "answered", 200
        if message.get("op") == "participant.left":
            code = message.get("sipCode")
            return str(message.get("reason")), code if isinstance(code, int) else None
    return "call_ended", None


async def _final_status(leg: SipLeg) -> int | None:
    """The phone's final response to our INVITE after its CANCEL (``487``, RFC 3261 §9.2): it
    follows the CANCEL's own ``200`` by a datagram or so; looked for up to a second."""
    for _ in range(FINAL_LOOKS):
        final = getattr(leg.dialer, "final", None)
        if final is not None:
            return int(final.status)
        await asyncio.sleep(0.02)
    return None


async def agent(run: StepRun, step: Step, models: Models | None) -> bool:
    """See the module docstring."""
    if models is None:
        raise CallStateError("this worker runs no model agents")
    async with run.turns.turn():  # a move of the call waits for both: the agent moves too
        await run.ensure_answered()
        await models.start(run.runtime, dict(step.body))
    return True
