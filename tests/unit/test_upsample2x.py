"""A phone's G.711 reaches the 16 kHz bus through ``Upsample2x`` (``audio/resample.py``): the
speech band passes, and the image the doubling makes above 4 kHz does not (a filter whose
transition straddled 4 kHz let a 3.4 kHz tone's image through 23 dB down, and PESQ-WB heard
it on speech: 2.50 against 2.88)."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.audio.resample import Upsample2x


def level_db(x: np.ndarray, hz: float, rate: int) -> float:
    """The level of ``hz`` in ``x`` (least squares on a sine and a cosine), dB."""
    t = np.arange(x.size) / rate
    basis = np.stack([np.sin(2 * np.pi * hz * t), np.cos(2 * np.pi * hz * t)], 1)
    fit, *_ = np.linalg.lstsq(basis, x.astype(np.float64), rcond=None)
    return float(20 * np.log10(np.hypot(*fit) + 1e-9))


def upsampled(hz: float) -> tuple[np.ndarray, np.ndarray]:
    """A second of ``hz`` at 8 kHz, and what ``Upsample2x`` makes of it, 20 ms at a time."""
    pcm = (8000 * np.sin(2 * np.pi * hz * np.arange(8000) / 8000)).astype(np.int16)
    up = Upsample2x()
    out = np.concatenate([up.process(pcm[i : i + 160]) for i in range(0, pcm.size, 160)])
    assert out.size == 2 * pcm.size  # exactly two out for one in: the receiver counts them
    return pcm[200:], out[400:]  # past the filter's start


@pytest.mark.parametrize("hz", [300.0, 1000.0, 2000.0])
def test_the_speech_band_passes_unchanged(hz: float) -> None:
    pcm, out = upsampled(hz)
    assert level_db(out, hz, 16_000) == pytest.approx(level_db(pcm, hz, 8000), abs=0.1)


@pytest.mark.parametrize("hz", [1000.0, 3000.0, 3400.0])
def test_the_image_above_4_khz_is_gone(hz: float) -> None:
    _, out = upsampled(hz)
    image = level_db(out, 8000 - hz, 16_000) - level_db(upsampled(1000.0)[1], 1000.0, 16_000)
    assert image < -50, (hz, image)
