"""Pure, synchronous DSP on the bus format (16 kHz mono s16, 20 ms frames)."""

from .analysis import rms_dbfs, tone
from .jitter import JitterBuffer
from .pcm import (
    FRAME_MS,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    Reframer,
    f32_to_s16,
    s16_to_f32,
)
from .resample import Resampler

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "JitterBuffer",
    "Reframer",
    "Resampler",
    "f32_to_s16",
    "rms_dbfs",
    "s16_to_f32",
    "tone",
]
