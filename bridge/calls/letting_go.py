"""The sending end of a move between workers (the state it carries: :mod:`.moved`; the worker
that carries the call on: :mod:`.handover`): whether a call can move at all, what acts on it
by itself standing still while it moves, the state exported, the browser relayed through the
new owner until it is there, and the call let go of without hanging it up
(``cluster/handover.py`` decides when at a drain, :mod:`.recovery` after a crash).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from ..attachments.base import ActsOnItsOwn, KeepsCallHere
from ..engines import MediaChannel, MovableCalls
from ..errors import BridgeError
from .events import CallEvents
from .manager import CallManager
from .model import Call
from .moved import MovedCall
from .runtime import CallRuntime

log = logging.getLogger(__name__)


def can_move(manager: CallManager, call: Call) -> bool:
    """Whether another worker could carry this call on: its engine can move it, and no leg of
    it lives only in this worker (``KeepsCallHere``: a trunk's phone ringing or answered, its
    SIP dialog and RTP socket this worker's — but a desk route's ring, rung anew by the new
    owner); a browser offers again to the new owner."""
    engine = manager.engine_of(call)
    if not (isinstance(engine, MovableCalls) and engine.can_move(call.engine_call_id)):
        return False
    runtime = manager.find_runtime(call.id)
    attachments = [] if runtime is None else list(runtime.attachments.values())
    return not any(isinstance(a, KeepsCallHere) and a.keeps_call_here for a in attachments)


@asynccontextmanager
async def standing_still(runtime: CallRuntime) -> AsyncIterator[None]:
    """While the call moves away: what acts on it by itself stands still (``ActsOnItsOwn``: a
    desk route's run), what it had begun done first, so that the state exported is the last
    it acts on here and only the worker carrying the call on acts from then on; nothing new
    begins on it meanwhile (``CallRuntime.check_staying``: a phone rung now would be left
    behind). Whatever stays here (a move that failed) goes on."""
    runtime.moving = True
    still = [a for a in list(runtime.attachments.values()) if isinstance(a, ActsOnItsOwn)]
    try:
        for attachment in still:
            await attachment.stand_still()
        yield
    finally:
        runtime.moving = False
        if not runtime.closed:
            for attachment in still:
                attachment.go_on()


ExportRecording = Callable[[CallRuntime], dict[str, Any] | None]
"""The recording of a runtime as another worker continues it (``RecordingService.export``)."""


def export_attachments(
    runtime: CallRuntime, recording: ExportRecording | None = None
) -> dict[str, Any]:
    """The attachments another worker re-opens: ``{recording, forks, agents, music,
    playbacks}`` (the fields of :class:`MovedCall` of those names; ``music``: the hold's, which
    ``playbacks`` leaves out). Agents that failed or stopped stay behind; so do playbacks of
    audio given as bytes or a URL (:func:`hand_over_playbacks` ends them)."""
    return {
        "recording": recording(runtime) if recording is not None else None,
        "forks": [fork.export() for fork in runtime.attached("fork")],
        "agents": [
            agent.export()
            for agent in runtime.attached("agent")
            if agent.state not in ("failed", "stopped")
        ],
        "music": runtime.hold.music_asset,
        "playbacks": [
            moved
            for playback in runtime.attached("playback")
            if playback is not runtime.hold.music and (moved := playback.export()) is not None
        ],
    }


def export_call(
    runtime: CallRuntime, reason: str, recording: ExportRecording | None = None
) -> MovedCall:
    """The state another worker needs to carry ``runtime``'s call on."""
    call = runtime.call
    return MovedCall(
        snapshot=call.snapshot(),
        engine_call_id=call.engine_call_id,
        reason=reason,
        status_callback=call.status_callback,
        **export_attachments(runtime, recording),
    )


OpenRelay = Callable[[str, str, str], Awaitable[MediaChannel]]
"""``open(worker url, worker id, call id)``: the call's PCM stream on its new owner
(``GET /call/{callID}/stream``), as a media channel (``api/internal.py``)."""

RELAY_WAIT = 10.0
"""Seconds a worker that handed a call over keeps relaying its browser through the new owner
while the browser offers to the new owner (make-before-break); then it lets go anyway."""


async def relay_until_moved(
    runtime: CallRuntime,
    open_relay: OpenRelay,
    url: str,
    worker: str,
    browser_moved: Callable[[], Awaitable[bool]],
) -> bool:
    """Make-before-break for the browser: the old worker swaps its engine media for the new
    owner's PCM stream of the call (the engine socket is the new owner's already) and keeps
    the browser's peer connection until ``browser_moved()`` (the browser's new connection is
    up on the new owner), at most :data:`RELAY_WAIT`. ``False``: no relay (no browser here,
    or the stream could not be opened): the caller lets go at once."""
    if not runtime.participants.sessions:
        return False
    try:
        async with asyncio.timeout(3.0):
            channel = await open_relay(url, worker, runtime.call_id)
    except (OSError, TimeoutError, BridgeError) as exc:
        log.info(
            "call %s: no relay through the new owner (%s); letting go at once",
            runtime.call_id,
            str(exc) or type(exc).__name__,
            extra={"call_id": runtime.call_id},
        )
        return False
    await runtime.media.swap(channel)
    deadline = time.monotonic() + RELAY_WAIT
    while time.monotonic() < deadline:
        if await browser_moved():
            return True
        await asyncio.sleep(0.05)
    log.info(
        "call %s: the browser did not reach the new owner within %g s; letting go",
        runtime.call_id,
        RELAY_WAIT,
        extra={"call_id": runtime.call_id},
    )
    return True


async def release_call(manager: CallManager, call_id: str, *, moved: bool = True) -> None:
    """Let go of a call another worker carries on now (``moved``: its media forks leave
    without ``stop``, the new owner resumes them): forget it and close its runtime without
    hanging up and without a word (its events are the new owner's now) — except the
    recording's segment written here, announced here (``recording.ready``): the new owner
    records into a segment of its own and cannot tell of this one."""
    runtime = manager.release_moved(call_id)
    if runtime is None:
        return
    for recorder in runtime.attached("recorder"):
        await runtime.close_attachment(recorder)
    # A playback another worker can carry does (the new owner, or this one if that failed);
    # one it cannot ends here, said.
    hand_over_playbacks(runtime, [p.id for p in runtime.attached("playback") if p.export()])
    runtime.events = CallEvents()  # nobody listens: attachments' last events go nowhere
    if moved:
        for fork in runtime.attached("fork"):
            await fork.leave()
    await asyncio.shield(runtime.close())


def hand_over_playbacks(runtime: CallRuntime, carried: Iterable[str]) -> None:
    """Stop the call's playbacks here as it moves: those another worker plays on (their ids
    ``carried``) without a word, the others with ``playback.finished {reason: "moved"}`` (its
    hold music too: the new owner plays it anew). At once, not after the relay: through the
    relay the WhatsApp user would hear both workers' copies."""
    going_on = set(carried)
    for playback in runtime.attached("playback"):
        if playback.id in going_on:
            playback.leave()
        else:
            playback.ended_by = "moved"
            runtime.bus.remove_source(playback)


def announce_move(manager: CallManager, call: Call, to: str, reason: str) -> None:
    """Emit ``call.moved {from, to, reason}``: the browser offers again, to the new owner."""
    previous = call.owner
    call.owner = to
    manager.events.publish("call.moved", call, **{"from": previous, "to": to, "reason": reason})
