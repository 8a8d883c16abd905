"""The ends a live call meets from below rather than by a request: its engine media lost for
good (the call fails, unless the engine reports its own end within a grace, which keeps the
end reason accurate) and a time limit run out (the watchdog's). Each hangs up on the engine
and ends the call through the manager, once: the runtime runs one end at a time."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .hangup import hang_up_quietly
from .model import CallState, EndReason
from .runtime import CallRuntime

if TYPE_CHECKING:
    from .control import EndsCalls

log = logging.getLogger(__name__)

RING_LIMITS = frozenset({EndReason.MISSED, EndReason.NO_ANSWER})
"""The ends of a call that rang too long (``BRIDGE_RING_TIMEOUT``)."""
MEDIA_LOST_GRACE = 2.0
"""Seconds to wait, after the engine media closed for good, for the engine's own report of
the call's end (so the end reason stays accurate) before failing the call."""


class Endings:
    """The manager's ends from below (``CallRuntime``'s ``on_media_lost``, the watchdog's)."""

    def __init__(self, manager: EndsCalls) -> None:
        self.manager = manager

    def media_lost(self, runtime: CallRuntime, exc: BaseException | None) -> None:
        """The engine media ended for good (after any reconnects the channel made): the call
        fails unless the engine reports its end within the grace."""
        manager, call = self.manager, runtime.call
        if not call.live or manager.shutting_down:
            return

        reason = "it closed" if exc is None else str(exc) or type(exc).__name__

        async def fail() -> None:  # said here, once, with the reason (the opening says INFO)
            log.warning(
                "call %s: engine media lost for good (%s), hanging up",
                call.id,
                reason,
                extra={"call_id": call.id},
            )
            await hang_up_quietly(manager.engine_of(call), call)
            await manager.end(call, EndReason.FAILED)

        runtime.end_soon(fail, "media-lost", after=MEDIA_LOST_GRACE)

    def time_limit(self, runtime: CallRuntime, reason: EndReason) -> None:
        """A time limit ran out: hang up on the engine and end the call. A ring limit's end
        and an answer are one at a time (the runtime's answering turn): an answer under way
        goes first, and the call it answered rings no more; one that comes while the call
        ends finds it ended (409). The call is missed or answered, never both."""
        manager, call = self.manager, runtime.call
        ring_limit = reason in RING_LIMITS

        async def end() -> None:
            async with runtime.answering:
                if ring_limit and call.state not in (CallState.CALLING, CallState.RINGING):
                    return  # answered (or ended) while the limit's end waited for its turn
                log.info("call %s: ending (%s)", call.id, reason, extra={"call_id": call.id})
                await hang_up_quietly(manager.engine_of(call), call)
                # Our outbound call answered by the callee as the engine took the hang-up:
                # an answered call we hung up, not one that rang unanswered.
                answered = ring_limit and call.state is CallState.ACTIVE
                await manager.end(call, EndReason.HANGUP if answered else reason)

        runtime.end_soon(end, "limit")
