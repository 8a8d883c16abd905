"""Spectral checks on received audio: is a tone there, and how much of the signal it is."""

from __future__ import annotations


def band_energy(pcm, rate: int, freq: float) -> float:
    """Share of a signal's energy within ±15 Hz of ``freq`` (is a tone present, and how much)."""
    import numpy as np

    x = np.asarray(pcm, dtype=np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    f = np.fft.rfftfreq(x.size, 1 / rate)
    return float(spec[(f > freq - 15) & (f < freq + 15)].sum() / max(spec.sum(), 1e-12))
