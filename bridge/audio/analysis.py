"""Signal generation and measurement: tones and level (the tests' spectral helper is
``tests/support/spectrum.py``)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .pcm import SAMPLE_RATE, Pcm


def tone(
    freq: float,
    samples: int,
    rate: int = SAMPLE_RATE,
    amplitude: float = 0.5,
    start: int = 0,
) -> Pcm:
    """A sine tone as s16; ``start`` is the sample index, so consecutive chunks join phase."""
    t = (np.arange(samples, dtype=np.float64) + start) / rate
    return np.rint(np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype(np.int16)


def rms_dbfs(pcm: npt.NDArray[np.integer] | npt.NDArray[np.floating]) -> float:
    """RMS level in dBFS (a full-scale sine is about -3 dBFS); -inf for silence."""
    x = np.asarray(pcm, dtype=np.float64)
    if np.issubdtype(np.asarray(pcm).dtype, np.integer):
        x = x / 32768.0
    if x.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(x * x)))
    return 20 * np.log10(rms) if rms > 0 else float("-inf")
