"""The level meter the timeline reads (``media.LevelMeter``): a known tone's RMS in dBFS from
the sums of its frames, digital silence at the floor, no frames no level; a frame's energy
exact and summed once."""

from __future__ import annotations

import math

import numpy as np

from bridge.audio import FRAME_SAMPLES, rms_dbfs, tone
from bridge.media import BusFrame, LevelMeter, frame_energy, level_dbfs
from bridge.media.stats import SILENCE_DBFS


def test_a_second_of_tone_then_of_silence_reads_as_their_levels() -> None:
    meter = LevelMeter()
    second = tone(1000, 16_000, amplitude=0.1)
    for i in range(0, second.size, FRAME_SAMPLES):
        meter.add(second[i : i + FRAME_SAMPLES])
    assert abs(level_dbfs(meter.energy, meter.samples) - rms_dbfs(second)) < 0.01
    assert abs(level_dbfs(meter.energy, meter.samples) - (-23.0)) < 0.05  # 0.1 / sqrt(2)
    energy, samples = meter.energy, meter.samples
    for _ in range(50):
        meter.add(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    meter.add_silence(FRAME_SAMPLES)
    assert level_dbfs(meter.energy - energy, meter.samples - samples) == SILENCE_DBFS
    assert meter.samples - samples == 51 * FRAME_SAMPLES
    assert level_dbfs(0.0, 0) is None
    full = tone(1000, FRAME_SAMPLES, amplitude=1.0)
    meter = LevelMeter()
    meter.add(full)
    assert -3.2 < level_dbfs(meter.energy, meter.samples) < -2.8  # a full-scale sine


def test_a_frames_energy_is_exact_and_shared_by_its_readers() -> None:
    """Loud noise, where float32 would round the sum: the energy is the exact integer sum, so a
    level made from it is the figure numpy's mean of the squares gives, to the last bit (the
    echo guard's decisions rest on it); a bus frame sums itself once for every reader. The
    logarithm is libm's on both sides: numpy's own ``log10`` is vectorised per CPU (AVX-512's
    differs from AVX2's in the last bit), and the level never uses it."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        pcm = rng.integers(-32768, 32768, FRAME_SAMPLES).astype(np.int16)
        exact = int(np.sum(pcm.astype(np.int64) ** 2))
        assert frame_energy(pcm) == exact
        mean = float(np.mean(np.square(pcm.astype(np.float64))))
        assert level_dbfs(frame_energy(pcm), pcm.size) == 10.0 * math.log10(mean / 2.0**30)
    frame = BusFrame(pcm, 0.0)
    assert frame.energy == exact
    pcm[:] = 0  # (never done to a bus frame: the first reader's sum is the one every reader gets)
    assert frame.energy == exact
