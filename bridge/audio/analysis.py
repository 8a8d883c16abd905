"""Signal generation and measurement: tones, level and dominant frequency."""

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


def dominant_frequency(pcm: npt.NDArray[np.integer] | npt.NDArray[np.floating], rate: int) -> float:
    """Frequency (Hz) of the strongest spectral peak, interpolated between FFT bins."""
    x = np.asarray(pcm, dtype=np.float64)
    if x.size < 16:
        return 0.0
    x = (x - x.mean()) * np.hanning(x.size)
    spectrum = np.abs(np.fft.rfft(x))
    k = int(np.argmax(spectrum[1:]) + 1)
    if 1 <= k < spectrum.size - 1:
        a, b, c = spectrum[k - 1], spectrum[k], spectrum[k + 1]
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom != 0 else 0.0
    else:
        offset = 0.0
    return float((k + offset) * rate / x.size)
