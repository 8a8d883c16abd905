"""Recordings made elsewhere (Meta's own recording of a call, a voicemail), kept beside the
bridge's: decoded to the store's format (16 kHz mono s16 WAV, whatever Meta sent: Ogg/Opus,
WAV…), with the same sidecar, index, retention and routes as the recorder's files."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import numpy as np

from ..audio import SAMPLE_RATE
from ..audio.decode import UndecodableAudio, bus_frames
from .recording import Recording, RecordingService
from .wav import wav_header

__all__ = ["UndecodableAudio", "import_recording"]


async def import_recording(
    service: RecordingService, call_id: str, content: bytes, kind: str
) -> Recording:
    """Store ``content`` (any audio FFmpeg reads) as the call's ``kind`` recording
    (``files/calls/{callID}-{kind}.wav``); ``UndecodableAudio`` when it is not audio. The
    recording policy is checked first (403 ``recording_forbidden``: nothing is written)."""
    service.check_allowed(call_id)
    recording = await asyncio.to_thread(_write, service, call_id, content, kind)
    service.add([recording])
    return recording


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
    now = time.time()
    recording = Recording(
        id="rec_" + uuid.uuid4().hex,
        call_id=call_id,
        kind=kind,
        path=path,
        relative=str(path.relative_to(service.root.resolve())),
        duration_ms=pcm.size * 1000 // SAMPLE_RATE,
        size_bytes=path.stat().st_size,
        created_at=now,
        expires_at=now + service.retention_s,
    )
    path.with_suffix(".json").write_text(json.dumps(recording.as_json()))
    return recording
