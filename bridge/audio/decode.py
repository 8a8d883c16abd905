"""Audio file decoding with PyAV: any container/codec FFmpeg reads, detected from the content
(never the file name), streamed as bus frames so long files are never held in memory."""

from __future__ import annotations

import io
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from .pcm import FRAME_SAMPLES, Pcm, Reframer
from .resample import Resampler


class UndecodableAudio(ValueError):
    """The data is not audio FFmpeg can decode."""


@dataclass(frozen=True)
class AudioInfo:
    format: str
    codec: str
    duration_ms: int | None
    sample_rate: int
    channels: int


Source = str | Path | bytes | BinaryIO


def _open(source: Source) -> av.container.InputContainer:
    try:
        if isinstance(source, bytes):
            return av.open(io.BytesIO(source), "r")
        if isinstance(source, Path):
            return av.open(str(source), "r")
        return av.open(source, "r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise UndecodableAudio(f"not a decodable audio file: {exc}") from None


def probe(source: Source) -> AudioInfo:
    """Check that ``source`` holds decodable audio (decoding its first frames) and describe it."""
    container = _open(source)
    try:
        if not container.streams.audio:
            raise UndecodableAudio("the file has no audio stream")
        stream = container.streams.audio[0]
        decoded = 0
        try:
            for frame in container.decode(stream):
                decoded += frame.samples
                if decoded >= 4800:
                    break
        except (av.FFmpegError, ValueError) as exc:
            raise UndecodableAudio(f"the audio does not decode: {exc}") from None
        if decoded == 0:
            raise UndecodableAudio("the audio stream holds no samples")
        # A length of 0 is a header that does not know it (NUT's; samples were decoded just
        # now): unknown, measured by decoding, not an asset of 0 ms.
        duration = None
        if stream.duration and stream.time_base is not None:
            duration = int(stream.duration * stream.time_base * 1000)
        elif container.duration:
            duration = int(container.duration / 1000)
        return AudioInfo(
            format=container.format.name.split(",")[0],
            codec=stream.codec_context.name,
            duration_ms=duration,
            sample_rate=stream.codec_context.sample_rate or 0,
            channels=stream.codec_context.channels or 0,
        )
    finally:
        container.close()


def measure_duration_ms(source: Source) -> int:
    """Exact duration by decoding everything (for files whose header does not say)."""
    return sum(f.size for f in bus_frames(source)) * 1000 // 16_000


def bus_frames(source: Source) -> Generator[Pcm, None, None]:
    """Decode ``source`` to 20 ms bus frames, lazily; the last partial frame is zero-padded."""
    container = _open(source)
    try:
        if not container.streams.audio:
            raise UndecodableAudio("the file has no audio stream")
        stream = container.streams.audio[0]
        resampler = Resampler()
        reframer = Reframer(FRAME_SAMPLES)
        try:
            for frame in container.decode(stream):
                yield from reframer.push(resampler.resample(frame))
        except (av.FFmpegError, ValueError) as exc:
            raise UndecodableAudio(f"the audio stopped decoding: {exc}") from None
        yield from reframer.push(resampler.flush())  # the filter's last few ms
        if reframer.pending:
            tail = reframer.push(np.zeros(FRAME_SAMPLES - reframer.pending, dtype=np.int16))
            yield from tail
    finally:
        container.close()
