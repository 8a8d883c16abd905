"""The route steps that play to the caller and record it: ``play {assetId}`` and ``voicemail
{greeting?, maxS?}`` (issue 49), and their carrying on by the worker their call moves to.

Each begins in one turn of the route's run (``turns.py``): the answer and the start of what it
plays or records, so that a move of the call waits for them and the run the store keeps names
what is under way (its ``doing``: ``{"playing": playbackId}`` or ``{"voicemail": until}``,
the wall-clock end of the recording). The worker the call moves to plays the playback on
under its id and records on into the recording's next segment (``calls/handover.py``), and
goes on from there (:func:`carry_on`): the step after a ``play`` once its playback ends there;
a voicemail ended at its original ``maxS``, its ``call.voicemail`` naming the caller's whole
message, the segments the move made joined into one file (``RecordingService.joined``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from ..attachments import PlaybackService, RecordingService
from ..calls import CallManager
from ..calls.model import Call

if TYPE_CHECKING:
    from ..calls.runtime import CallRuntime
    from .routes import Step
    from .turns import Turns

log = logging.getLogger(__name__)

LOOK = 0.05
"""Seconds between looks at whether a playback is still on the call (it tells it finished
only as a call event)."""


class PlayDesk(Protocol):
    """What these steps use of the desk: the playbacks, the recordings, the calls."""

    @property
    def playback(self) -> PlaybackService: ...
    @property
    def recordings(self) -> RecordingService: ...
    @property
    def manager(self) -> CallManager: ...


class PlayRun(Protocol):
    """What these steps use of the route's run on the call (``runner.RouteRun``)."""

    call: Call
    runtime: CallRuntime
    turns: Turns
    voicemail: Any
    wants_media: bool
    doing: dict[str, Any] | None

    @property
    def desk(self) -> PlayDesk: ...

    async def save(self) -> None: ...

    async def ensure_answered(self) -> None: ...

    async def run(self, start: int = 0) -> None: ...


async def play(run: PlayRun, step: Step) -> bool:
    """``play``: answered and started in one turn, then played out; the next step."""
    async with run.turns.turn():
        await run.ensure_answered()
        playback_id = await _start_playing(run, step.body["assetId"])
    await _played(run, playback_id)
    return False


async def voicemail(run: PlayRun, step: Step) -> bool:
    """``voicemail``: refused before the answer where recording is forbidden; answered and
    its greeting started in one turn, then the caller recorded up to ``maxS``; hung up."""
    async with run.turns.turn():
        # Before the answer: a call nobody may record is not answered for a voicemail.
        run.desk.recordings.check_allowed(run.call.id)
        await run.ensure_answered()
        greeting = (
            await _start_playing(run, step.body["greeting"]) if "greeting" in step.body else None
        )
    if greeting is not None:
        await _played(run, greeting)
    return await _record(run, step)


async def _start_playing(run: PlayRun, asset_id: str) -> str:
    """Start an audio asset to the caller, saved as what the run does (in its turn)."""
    playback = await run.desk.playback.start(run.runtime, {"assetId": asset_id})
    run.doing = {"playing": playback.id}
    await run.save()
    return playback.id


async def _played(run: PlayRun, playback_id: str) -> None:
    """Return once the playback ``playback_id`` is off the call (played out, stopped, or gone
    with the call to another worker, where the run carries on)."""
    while any(p.id == playback_id for p in run.runtime.attached("playback")):  # noqa: ASYNC110
        await asyncio.sleep(LOOK)


async def _record(run: PlayRun, step: Step) -> bool:
    async with run.turns.turn():
        if not run.call.live:
            return True
        # A recording alone never opens the engine media; a voicemail is for hearing the caller.
        run.wants_media = True
        await run.runtime.media.open()
        run.voicemail = await run.desk.recordings.start(run.runtime)
        run.doing = {"voicemail": time.time() + float(step.body["maxS"])}
        await run.save()
    return await _recorded_until(run, float(run.doing["voicemail"]))


async def _recorded_until(run: PlayRun, until: float) -> bool:
    """Record until ``until`` (the wall clock), then say the voicemail and hang up, in a turn
    (a move of the call at that moment carries that end to the new owner)."""
    await asyncio.sleep(max(0.0, until - time.time()))
    async with run.turns.turn():
        if run.call.live:
            await recorded(run)
            await run.desk.manager.hangup(run.call.id)
    return True


async def recorded(run: PlayRun) -> None:
    """The voicemail recorded (at ``maxS``, or the caller hung up first: what was said):
    ``call.voicemail {recordingID, durationMs}`` names its inbound file — the segments a move
    of the call made joined into one."""
    recorder, run.voicemail = run.voicemail, None
    if recorder is None:
        return
    recordings = await recorder.close()  # idempotent: closed with the call already
    heard = next((r for r in recordings if r.kind == "inbound"), None)
    if heard is None:
        return
    if recorder.segment > 1:
        heard = await run.desk.recordings.joined(recorder, heard)
    run.runtime.emit("call.voicemail", recordingID=heard.id, durationMs=heard.duration_ms)


async def carry_on(run: PlayRun, step: Step, index: int, doing: dict[str, Any]) -> None:
    """The step ``step`` (at ``index``) a call moved here was doing (``doing``, from the run's
    record): a ``play``'s playback played on here, then the next step; a voicemail's greeting
    played on, then its recording; its recording, going on here into its next segment, ended
    at the original ``maxS``. The run does it from here: a move of the call meanwhile saves it
    under way (the worker after this one carries it on too)."""
    run.doing = doing
    if "playing" in doing:
        await _played(run, str(doing["playing"]))
        if step.kind == "voicemail":
            await _record(run, step)
        else:
            await run.run(index + 1)
        return
    recorders = run.runtime.attached("recorder")
    run.wants_media = True
    if not recorders:  # its next segment could not start here (said at WARNING where it failed)
        log.info(
            "call %s: its voicemail is not recorded on here; it ends at its maxS all the same",
            run.call.id,
            extra={"call_id": run.call.id},
        )
    run.voicemail = recorders[0] if recorders else None
    await _recorded_until(run, float(doing["voicemail"]))
