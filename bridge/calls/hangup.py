"""Hang-ups, the user's and those the bridge decides itself (time limits, lost media, shutdown,
a busy refusal, a dead worker's calls): bounded, and never lost — one the engine could not
take is handed to the engine layer (``Engine.hangup_later``, :mod:`bridge.engines.hangups`),
which sends it once the engine is back."""

from __future__ import annotations

import asyncio
import logging

from ..engines import Engine
from ..errors import EngineCallNotFound, EngineError
from .model import Call

log = logging.getLogger(__name__)

HANGUP_TIMEOUT = 2.0
"""Seconds the bridge waits for the engine to take a hang-up (a user's ``/call/hangup``
answers within it); past it the hang-up is retried in the background."""


async def hang_up_quietly(engine: Engine, call: Call) -> None:
    """Hang ``call`` up on the engine, waiting at most :data:`HANGUP_TIMEOUT`; a failure is
    retried later (:func:`hang_up_later`), an engine that no longer knows the call is fine."""
    try:
        async with asyncio.timeout(HANGUP_TIMEOUT):
            await engine.hangup(call.engine_call_id)
    except EngineCallNotFound:
        log.info("call %s: engine no longer knew it", call.id, extra={"call_id": call.id})
    except (EngineError, TimeoutError, ConnectionError) as exc:
        hang_up_later(engine, call, exc)


def hang_up_later(engine: Engine, call: Call, exc: BaseException) -> None:
    """The engine did not take our hang-up: the engine layer retries it once it is back."""
    why = str(exc) or type(exc).__name__
    log.warning(
        "call %s: could not hang up engine call %s (%s); retrying until the engine is back",
        call.id,
        call.engine_call_id,
        why,
        extra={"call_id": call.id},
    )
    engine.hangup_later(call.engine_call_id, why)
