"""What follows every call by the settings and the numbers' policies: a recording of each
answered call (``BRIDGE_RECORD_ALL``, not where recording is forbidden), speech events, the
recording policy every kind of recording asks, and a provider's recordings of calls."""

from __future__ import annotations

import asyncio
import logging

from ..attachments import RecordingService
from ..attachments.recorder import failed as recording_failed
from ..attachments.speech import start_speech_activity
from ..config import Settings
from ..errors import BridgeError, CallStateError
from ..numbers.catalog import Catalog
from ..tasks import TaskSet
from .artifacts import ArtifactSink
from .events import CallEvents
from .manager import CallManager
from .model import Call, CallState
from .runtime import CallRuntime

log = logging.getLogger(__name__)


def follow_policy(manager: CallManager, catalog: Catalog, recordings: RecordingService) -> None:
    """The recording policy of a call's number and tenant (``"recording": "forbidden"``)
    for every recording; Meta's recordings and transcripts through :class:`ArtifactSink`."""
    registry = manager.registry

    def forbidden_by(call_id: str) -> str | None:
        call = registry.get(call_id)
        if call is None:
            return None
        return catalog.recording_forbidden_by(call.number_id, call.tenant_id)

    recordings.forbidden_by = forbidden_by
    manager.artifacts = ArtifactSink(registry, manager.events, recordings)


def follow_calls(
    settings: Settings,
    manager: CallManager,
    events: CallEvents,
    recordings: RecordingService,
    tasks: TaskSet,
) -> None:
    """What the settings start on every answered call: a recording, speech events (these
    also on a call carried on here answered: its recording moved with it)."""
    if settings.storage.record_all:

        def record_every_call(type_: str, call: Call) -> None:
            runtime = manager.find_runtime(call.id)
            if type_ != "call.active" or runtime is None:
                return
            who = recordings.forbidden_by(call.id)
            if who is not None:  # BRIDGE_RECORD_ALL stops where a number or tenant forbids
                log.info("call %s: not recorded (forbidden by %s)", call.id, who)
                return
            tasks.spawn(record(runtime), f"record:{call.id}")

        async def record(runtime: CallRuntime) -> None:
            """Start the call's recording; one that cannot start leaves the call unrecorded,
            said (a request would have had the error; here nobody asked)."""
            try:
                await recordings.start(runtime)
            except CallStateError:
                return  # the call ended as its recording started: nothing to record
            except BridgeError as exc:  # a disk that refuses the files: said, to the app too
                call = runtime.call
                log.warning(
                    "call %s: not recorded (BRIDGE_RECORD_ALL): %s",
                    call.id,
                    exc.message,
                    extra={"call_id": call.id},
                )
                if call.live:
                    recording_failed(runtime, 1, exc)

        events.listen(record_every_call)
    if settings.media.speech_events:
        loop = asyncio.get_running_loop()

        def hear_who_talks(type_: str, call: Call) -> None:
            # Answered here, or carried on here answered (moved from another worker).
            answered = type_ == "call.active" or (
                type_ == "call.carried" and call.state is CallState.ACTIVE
            )
            runtime = manager.find_runtime(call.id)
            if runtime is None:
                return
            if answered:
                loop.call_soon(start_speech, runtime, call)
            elif type_ == "call.moved" and call.owner != manager.owner:
                # Handed to another worker, whose own detector says who talks from now on:
                # this one stops at once, not after the browser's relay (both would say it).
                for activity in runtime.attached("speech"):
                    runtime.spawn(runtime.close_attachment(activity), "speech-moved")

        def start_speech(runtime: CallRuntime, call: Call) -> None:
            if call.live and not runtime.closed:
                start_speech_activity(runtime, lambda now: setattr(call, "speaking", now))

        events.listen(hear_who_talks)
