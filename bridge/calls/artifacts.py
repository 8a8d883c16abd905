"""``ArtifactSink``: what a provider made of a call after it (Meta's recording and transcript)
joins the call's recordings and events.

The engine fetches the files (``engines/cloudapi/artifacts.py``) and reports each as an
``ARTIFACT`` event, often after the call has ended; the sink names the call by its engine key
(remembered from ``call.created``, bounded), checks the recording policy (a number or tenant
that forbids recording keeps nothing, logged), stores an audio file with the bridge's
recordings and publishes ``recording.ready {source: "meta", recordings}``,
``transcript.ready {language, words}`` or, for Meta's voicemail of a rejected or unanswered
call (kept as its ``voicemail`` recording; a call turned away busy included),
``call.voicemail {mediaID, recordingID, durationMs}``. An artifact of a call the bridge does
not know (or no longer remembers) is logged and dropped.

Storing one (decoding the audio, writing the files) waits for the disk: it runs on the sink's
own worker, one artifact at a time behind a bounded queue, never on the engine's one reader of
events (every other call's ringing, answer and end waited for that disk).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from ..attachments import RecordingService
from ..attachments.imported import UndecodableAudio, import_recording, import_transcript
from ..engines import EngineEvent
from ..logs import FailureKinds
from ..tasks import TaskSet
from .events import CallEvents
from .model import Call, engine_key
from .registry import CallRegistry

log = logging.getLogger(__name__)

REMEMBERED_CALLS = 10_000
"""Calls whose engine keys are remembered for late artifacts (the oldest are forgotten)."""
WAITING_MAX = 256
"""Artifacts waiting to be stored; past it one is dropped, said (a disk that stays stalled)."""


class ArtifactSink:
    """Stores and announces a provider's recordings and transcripts of calls."""

    def __init__(
        self, registry: CallRegistry, events: CallEvents, recordings: RecordingService
    ) -> None:
        self.registry = registry
        self.events = events
        self.recordings = recordings
        self._calls: OrderedDict[str, str] = OrderedDict()
        events.listen(self._follow)
        self._waiting: asyncio.Queue[EngineEvent] = asyncio.Queue(WAITING_MAX)
        self._tasks = TaskSet("artifacts")
        self._storing = False
        self._bugs = FailureKinds(log)

    def _follow(self, type_: str, call: Call) -> None:
        # A call turned away as it rang (busy) is never created, only ended: Meta's voicemail
        # follows such a call too (the business rejected it).
        turned_away = type_ == "call.ended" and call.engine_key not in self._calls
        if type_ == "call.created" or turned_away:
            self._calls[call.engine_key] = call.id
            while len(self._calls) > REMEMBERED_CALLS:
                self._calls.popitem(last=False)

    async def take(self, event: EngineEvent) -> None:
        """Queue an artifact to be stored on the sink's worker (see the module docstring)."""
        if self._tasks.closed:
            return
        try:
            self._waiting.put_nowait(event)
        except asyncio.QueueFull:
            log.warning(
                "Meta's %s of engine call %s dropped: %d artifacts wait to be stored already "
                "(the disk is stalled?)",
                event.data.get("artifact"),
                event.engine_call_id,
                WAITING_MAX,
            )
            return
        if not self._storing:
            self._storing = True
            self._tasks.spawn(self._store_forever(), "store")

    async def close(self) -> None:
        """Stop storing (at shutdown): what waits is not stored."""
        await self._tasks.close()

    async def _store_forever(self) -> None:
        while True:
            event = await self._waiting.get()
            try:
                await self._store(event)
            except OSError as exc:  # a full disk: that artifact is lost, said
                log.warning(
                    "Meta's %s of engine call %s not stored: %s",
                    event.data.get("artifact"),
                    event.engine_call_id,
                    exc,
                )
            except Exception as exc:
                self._bugs.failed(exc, "storing Meta's artifact %s", event)

    async def _store(self, event: EngineEvent) -> None:
        artifact = str(event.data.get("artifact") or "")
        call_id = self._calls.get(engine_key(event.number_id, event.engine_call_id))
        call = self.registry.get(call_id) if call_id else None
        if call is None:
            log.warning("Meta's %s of an unknown call %s dropped", artifact, event.engine_call_id)
            return
        who = self.recordings.forbidden_by(call.id)
        if who is not None:
            log.warning(
                "call %s: Meta's %s discarded (recording forbidden by %s)", call.id, artifact, who
            )
            return
        if artifact == "transcript":
            data = {"language": event.data.get("language"), "words": event.data.get("words")}
            stored = await import_transcript(self.recordings, call.id, data)
            self.events.publish(
                "transcript.ready", call, source="meta", recordingID=stored.id, **data
            )
            return
        content = event.data.get("content")
        if not isinstance(content, bytes):
            return
        kind = "voicemail" if artifact == "voicemail" else "meta"
        try:
            recording = await import_recording(self.recordings, call.id, content, kind)
        except UndecodableAudio as exc:
            log.warning("call %s: Meta's %s is not audio: %s", call.id, artifact, exc)
            return
        if kind == "voicemail":
            self.events.publish(
                "call.voicemail",
                call,
                mediaID=event.data.get("mediaID") or None,
                recordingID=recording.id,
                durationMs=recording.duration_ms,
            )
            return
        self.events.publish(
            "recording.ready", call, source="meta", recordings=[recording.as_json()]
        )
