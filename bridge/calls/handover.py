"""The receiving end of a move between workers (the state it carries: :mod:`.moved`; the worker
that lets the call go: :mod:`.letting_go`): the worker that carries a moved call on
(``cluster/handover.py`` decides when at a drain, :mod:`.recovery` after a crash).

A call on an engine whose calls can move (:class:`~bridge.engines.MovableCalls`: ZuckZapGo,
WADial) lives in the engine, not in our process: its media is a WebSocket any worker may open
again, and closing ours does not end the WhatsApp call. So a worker can take over a call —
owner, state, metadata, participants, mute and hold (its music too), and the attachments that
can move (a recording continues into its next segment) — open the engine media *before* the old
worker closes its own (the engine leg never drops), and the browser sends a new offer for the same
callID, which routing brings to the new owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..engines import OpensInBackground
from ..errors import BridgeError, NotOwner, Undecided
from ..tasks import wait_event
from .hangup import hang_up_quietly
from .letting_go import release_call
from .manager import CallManager
from .model import Call, CallState, EndReason
from .moved import MovedCall
from .runtime import CallRuntime
from .takeover import Claim, given_back, take

log = logging.getLogger(__name__)

MEDIA_OPEN_WAIT = 3.0
"""Seconds the new owner waits for the engine to accept its media socket before it answers
(the old worker keeps its own open meanwhile). An engine that refuses a second socket while
the first is open (its documentation does not promise either way) gets it again by the
channel's reconnects once the old one is closed: break-before-make, a longer gap."""

REOPEN_WAIT = 4.0
"""Seconds a handover's new owner waits for the call's forks and agents to open again before
it answers (with :data:`MEDIA_OPEN_WAIT`, well within the old worker's request timeout)."""

HANDOVER_USER = "handover"
"""The bus user that keeps a moved call's engine media open until a browser is back."""


ResumeRecording = Callable[[CallRuntime, dict[str, Any]], Awaitable[object]]
"""Continues a moved call's recording here (``RecordingService.resume``)."""
ResumeFork = Callable[[CallRuntime, dict[str, Any]], Awaitable[object]]
"""Opens a moved call's media fork again here (``ForkService.resume``)."""
ResumeMusic = Callable[[CallRuntime, str], Awaitable[object]]
"""Plays a held call's music (an audio asset id) on here (``Handover``'s, by the playbacks)."""


async def adopt_call(
    manager: CallManager,
    moved: MovedCall,
    claim: Claim,
    resume_recording: ResumeRecording | None = None,
    resume_fork: ResumeFork | None = None,
    resume_agent: ResumeFork | None = None,
    carried: Callable[[CallRuntime], None] | None = None,
    resume_music: ResumeMusic | None = None,
    resume_playback: ResumeFork | None = None,
) -> CallRuntime:
    """Carry on a moved call here: create it under this worker, take it over in the
    directory (``claim``: only while the old owner's offer stands; a call another worker won
    is let go of quietly, ``NotOwner``), and open its engine media (waiting, bounded, until the
    engine took the socket) before answering; a held call's music and the audio assets playing
    play on, a recording continues into its next segment.
    With ``carried`` (a crash adoption), ``carried(runtime)`` is called then and the forks and
    agents re-open as the call's own task, after this returns (their servers' set-up, seconds
    for a model that is away, must delay neither the crash's ``call.moved`` nor the dead
    worker's other calls); without (a handover), they are open before this returns, or
    :data:`REOPEN_WAIT` passed.
    Idempotent: a call already carried here is returned as it is."""
    known = manager.find_runtime(moved.call_id)
    if known is not None and known.call.live:
        return known
    call = Call.from_snapshot(moved.snapshot, moved.engine_call_id, moved.status_callback)
    previous = call.owner
    call.owner = manager.owner
    # The browsers' peer connections stay with the old worker: they offer here again.
    call.transport = None
    call.webrtc_state = None
    call.participants = []
    # Time limits count from the real answer (the duration) or, unanswered, creation (the
    # ring timeout: it rang on the old worker already).
    if call.answered_at is not None:
        call.mono_answered = time.monotonic() - max(0.0, time.time() - call.answered_at)
    else:
        call.mono_created = time.monotonic() - max(0.0, time.time() - call.created_at)
    runtime = manager.adopt_moved(call)  # mute and hold as they were (the call's controls)
    # Who carries it cannot be told (the directory did not answer): a survivor's recovery ends
    # the call it let go of; a handover's target ends it itself (the old owner lets go of it
    # if it finds this worker named, and ends what it keeps as it shuts down).
    otherwise = "letting go of it here" if carried is not None else "ending it here (failed)"
    taken = False
    try:
        await take(claim, call, previous, moved.token, otherwise)
        taken = True
        if call.state is CallState.ACTIVE:
            runtime.bus.add_user(HANDOVER_USER)
            await runtime.media.open()
            await _engine_media_open(runtime, MEDIA_OPEN_WAIT)
        if moved.music is not None and resume_music is not None and runtime.held:
            music = resume_music(runtime, moved.music)
            await _resumed(runtime, f"its hold music {moved.music}", music, "held in silence")
        for playback in moved.playbacks:
            if resume_playback is not None:
                what, ends = f"playback {playback.get('playbackId')}", "it ends, said by its event"
                await _resumed(runtime, what, resume_playback(runtime, playback), ends)
        if moved.recording is not None and resume_recording is not None:
            recording = resume_recording(runtime, moved.recording)
            ended = "the recording ends with the segment before; the call goes on"
            await _resumed(runtime, "its recording", recording, ended)
    except NotOwner as exc:  # the old owner gave up on this worker first: it carries the call
        log.info("call %s: not carried here (%s)", call.id, exc.message, extra={"call_id": call.id})
        await release_call(manager, call.id)
        raise
    except BaseException as exc:  # what costs only itself is said by _resumed; else, the move
        # A take-over that failed was given back by take() already (a cancellation excepted).
        if isinstance(exc, Undecided):
            back: bool | None = None
        elif not taken and isinstance(exc, Exception):
            back = True
        else:
            back = await given_back(claim, call, previous, moved.token, otherwise)
        if back is None and carried is None and isinstance(exc, Exception):
            await hang_up_quietly(manager.engine_of(call), call)
            await manager.end(call, EndReason.FAILED)
            raise
        if back is not False:
            await release_call(manager, call.id)
            raise
        log.warning(
            "call %s: its adoption failed after it was taken over here, and worker %s has let "
            "go of it meanwhile: it stays here as it is",
            call.id,
            previous or "?",
            extra={"call_id": call.id},
        )
        raise
    # What follows every call here by the settings follows this one too (speech events).
    manager.events.tell("call.carried", call)
    reopen = _reopen_attachments(runtime, moved, resume_fork, resume_agent)
    if carried is None:
        # A handover: the old owner keeps the forks and agents until the new one has them,
        # for at most REOPEN_WAIT (the old worker's request gives up past its timeout, and
        # then tries another worker); what is not open by then goes on as the call's task.
        reopened = asyncio.Event()

        async def reopen_then_say() -> None:
            try:
                await reopen
            finally:
                reopened.set()

        if runtime.closed:  # it ended meanwhile: nothing to open
            reopen.close()
            reopened.set()
        else:
            runtime.spawn(reopen_then_say(), "reopen-attachments")
        if not await wait_event(reopened, REOPEN_WAIT):
            log.info(
                "call %s: its forks and agents are not all open again within %g s; answering "
                "the handover, they go on opening here",
                call.id,
                REOPEN_WAIT,
                extra={"call_id": call.id},
            )
    else:
        # A crash adoption: the call is told where it is now, and its forks and agents re-open
        # as the call's own task — a model that is away (seconds each) must not hold the
        # reaper's place, which the dead worker's other calls wait for.
        carried(runtime)
        runtime.spawn(reopen, "reopen-attachments")
    log.info(
        "call %s: carried on here (from %s, %s)",
        call.id,
        previous or "?",
        moved.reason,
        extra={"call_id": call.id},
    )
    return runtime


async def _resumed(
    runtime: CallRuntime, what: str, resume: Awaitable[object], instead: str
) -> None:
    """Await one attachment opened again here (``what``: the hold music, the recording, a fork,
    an agent); one that cannot be (an asset deleted, a disk that refuses the next segment, an
    app or a model out of reach) costs only itself, said once at WARNING with its reason and
    what the call does ``instead`` — never the move."""
    try:
        await resume
    except BridgeError as exc:
        if runtime.closed or not runtime.call.live:
            return  # the call ended while it moved: its end closed what there was
        log.warning(
            "call %s: %s not resumed here: %s (%s)",
            runtime.call_id,
            what,
            exc.message,
            instead,
            extra={"call_id": runtime.call_id},
        )


async def _reopen_attachments(
    runtime: CallRuntime,
    moved: MovedCall,
    resume_fork: ResumeFork | None,
    resume_agent: ResumeFork | None,
) -> None:
    """Open a moved call's forks and agents again here; one that cannot be is left behind
    with a WARNING (the call goes on without it)."""
    without = "the call goes on without it"
    if resume_fork is not None:
        for fork in moved.forks:  # the app's server may be gone
            what = f"media fork {fork.get('streamId')}"
            await _resumed(runtime, what, resume_fork(runtime, fork), without)
    if resume_agent is not None:
        for agent in moved.agents:  # the model may be unreachable from here
            what = f"agent {agent.get('agentID')}"
            await _resumed(runtime, what, resume_agent(runtime, agent), without)


async def _engine_media_open(runtime: CallRuntime, timeout: float) -> None:
    channel = runtime.media.channel
    if not isinstance(channel, OpensInBackground):
        return  # opened at once, or failed (the runtime reported it)
    if not await channel.wait_connected(timeout):
        log.info(
            "call %s: the engine has not taken the new media socket yet; the old worker lets "
            "go of its own and the socket reconnects",
            runtime.call_id,
            extra={"call_id": runtime.call_id},
        )
