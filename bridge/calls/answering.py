"""Answering a ringing inbound call: one answer at a time reaches the engine (the call's
runtime holds the turn, ``CallRuntime.answering``), and answers that come meanwhile share its
outcome, so a double click or the desk and an app answering at once send the engine one answer.
A call that ended as it was answered (the caller hung up, a hang-up or the ring timeout here)
is a 409, whatever the engine said of it; the engine reports the end itself, with its reason."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import CallStateError, EngineCallNotFound, EngineError
from .model import Call, CallState, Direction

if TYPE_CHECKING:
    from .control import AnswersCalls


async def answer(manager: AnswersCalls, call_id: str, status_callback: str | None) -> Call:
    """Answer ``call_id`` (see the module docstring); ``status_callback`` (already checked)
    receives its events once the answer is taken (``call.active`` on): an answer that fails
    leaves the call's callback as it was."""
    call = manager.get(call_id)
    check_answerable(call)
    runtime = manager.runtime(call.id)
    async with runtime.answering:
        if call.state is CallState.ACTIVE:  # answered by the answer this one waited for
            if status_callback is not None:
                call.status_callback = status_callback
            return call
        check_answerable(call)
        try:
            await manager.engine_of(call).answer(call.engine_call_id)
        except EngineError as exc:
            if call.live and not isinstance(exc, EngineCallNotFound):
                raise
            # The caller hung up as we answered: no call to answer any more, not "no such
            # call" (the engine's 404).
            raise CallStateError(
                f"call {call.id} ended before it was answered (the caller hung up)"
            ) from None
        if call.state is CallState.RINGING:
            if status_callback is not None:
                call.status_callback = status_callback
            manager.activate(call)
    if not call.live:  # hung up, or out of time, while the engine took the answer
        raise CallStateError(f"call {call.id} ended ({call.end_reason}) as it was answered")
    return call


def check_answerable(call: Call) -> None:
    """Only a ringing inbound call can be answered (409 for any other)."""
    if call.direction is not Direction.INBOUND or call.state is not CallState.RINGING:
        raise CallStateError(
            f"call {call.id} is {call.direction} and {call.state}; only a ringing inbound "
            "call can be answered"
        )
