"""Recordings made elsewhere (Meta's own recording of a call, a voicemail), kept beside the
bridge's: decoded to the store's format (16 kHz mono s16 WAV, whatever Meta sent: Ogg/Opus,
WAV…), with the same sidecar, index, retention and routes as the recorder's files."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE
from ..audio.decode import UndecodableAudio, bus_frames
from ..disk import on_disk
from .recording import Recording, RecordingService
from .wav import wav_header

__all__ = ["UndecodableAudio", "import_recording", "import_transcript"]


async def import_recording(
    service: RecordingService, call_id: str, content: bytes, kind: str
) -> Recording:
    """Store ``content`` (any audio FFmpeg reads) as the call's ``kind`` recording
    (``files/calls/{callID}-{kind}.wav``); ``UndecodableAudio`` when it is not audio. The
    recording policy is checked first (403 ``recording_forbidden``: nothing is written)."""
    service.check_allowed(call_id)
    recording = await on_disk(_write, service, call_id, content, kind)
    service.add([recording])
    return recording


async def import_transcript(
    service: RecordingService, call_id: str, transcript: dict[str, object]
) -> Recording:
    """Store a provider's transcript of the call (``{language, words}``) beside its recordings:
    ``files/calls/{callID}-transcript.jsonl`` (one JSON line; ``.jsonl`` so no sidecar scan
    takes it for a sidecar), with the same sidecar, retention and route
    (``GET /call/recordings/{id}`` answers it as ``application/json``)."""
    service.check_allowed(call_id)
    recording = await on_disk(_write_transcript, service, call_id, transcript)
    service.add([recording])
    return recording


def _write_transcript(
    service: RecordingService, call_id: str, transcript: dict[str, object]
) -> Recording:
    base = service.calls_dir.resolve() / call_id
    path = base.with_name(f"{base.name}-transcript.jsonl")
    n = 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-transcript{n}.jsonl")
    path.write_text(json.dumps(transcript) + "\n")
    words = transcript.get("words")
    ends = [w.get("end") for w in words if isinstance(w, dict)] if isinstance(words, list) else []
    last = max((float(e) for e in ends if isinstance(e, int | float)), default=0.0)
    return _record(service, call_id, "transcript", path, int(last * 1000))


def _write(service: RecordingService, call_id: str, content: bytes, kind: str) -> Recording:
    frames = list(bus_frames(content))
    pcm = np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)
    base = service.calls_dir.resolve() / call_id
    path = base.with_name(f"{base.name}-{kind}.wav")
    n = 1
    while path.exists():  # a second delivery of the same kind: its own file
        n += 1
        path = base.with_name(f"{base.name}-{kind}{n}.wav")
    path.write_bytes(wav_header(pcm.nbytes) + pcm.astype("<i2").tobytes())
    return _record(service, call_id, kind, path, pcm.size * 1000 // SAMPLE_RATE)


def _record(
    service: RecordingService, call_id: str, kind: str, path: Path, duration_ms: int
) -> Recording:
    """The file's record, and its sidecar written (the index after a restart)."""
    now = time.time()
    recording = Recording(
        id="rec_" + uuid.uuid4().hex,
        call_id=call_id,
        kind=kind,
        path=path,
        relative=str(path.relative_to(service.root.resolve())),
        duration_ms=duration_ms,
        size_bytes=path.stat().st_size,
        created_at=now,
        expires_at=now + service.retention_s,
    )
    path.with_suffix(".json").write_text(json.dumps(recording.as_json()))
    return recording
