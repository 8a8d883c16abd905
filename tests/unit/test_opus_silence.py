"""The downlink encoder's learned silence (bridge/audio/opus.py ``SilenceCycle``): a run of
digital silence costs no encode and sends exactly the packets libopus would, and the sound
around it decodes the same."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.audio import FRAME_SAMPLES, tone
from bridge.audio.opus import SILENCE_CHECK_EVERY, OpusDecoder, OpusEncoder

from ..support.spectrum import dominant_frequency

N = FRAME_SAMPLES
DOWNLINK = {"bitrate": 40_000, "complexity": 5, "fec": True, "expected_loss": 0, "dtx": False}


def frames(pcm: np.ndarray) -> list[np.ndarray]:
    return [pcm[i : i + N] for i in range(0, pcm.size, N)]


def rms_db(pcm: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) / 32768))


def test_a_run_of_silence_is_sent_from_the_cycle_byte_for_byte() -> None:
    rng = np.random.default_rng(1)
    dither = rng.integers(-2, 3, 16_000 * 3).astype(np.int16)  # ±2: digital silence
    speech = [tone(440, 16_000, amplitude=0.3), tone(300, 16_000, amplitude=0.3)]
    signal = frames(np.concatenate([speech[0], dither, speech[1]]))
    as_zeros = [f if np.abs(f).max() > 2 else np.zeros(N, np.int16) for f in signal]
    reference = OpusEncoder(16_000, **DOWNLINK)
    reference.silence = None  # codes every frame
    learned = OpusEncoder(16_000, **DOWNLINK)
    ref = [reference.encode(f) for f in as_zeros]
    out = [learned.encode(f) for f in signal]
    silent = range(50, 200)
    assert [out[i] for i in silent] == [ref[i] for i in silent]  # what the far end receives
    assert learned.silence is not None
    checks = len(silent) // SILENCE_CHECK_EVERY + 1
    assert learned.silence.skipped >= len(silent) - 16 - checks  # learnt, then skipped
    # The sound after the run decodes to the same tone at the same level.
    dec_ref, dec_out = OpusDecoder(16_000), OpusDecoder(16_000)
    a = np.concatenate([dec_ref.decode(p) for p in ref])[210 * N :]
    b = np.concatenate([dec_out.decode(p) for p in out])[210 * N :]
    assert dominant_frequency(b, 16_000) == pytest.approx(300, abs=2)
    assert rms_db(b) == pytest.approx(rms_db(a), abs=0.1)
    diff = a.astype(np.float64) - b
    assert 10 * np.log10(np.sum(a.astype(np.float64) ** 2) / np.sum(diff**2)) > 20


def test_sound_or_a_new_setting_forgets_the_cycle_and_dtx_never_learns_one() -> None:
    enc = OpusEncoder(16_000, **DOWNLINK)
    assert enc.silence is not None
    zero = np.zeros(N, np.int16)
    for _ in range(10):
        enc.encode(zero)
    assert enc.silence.cycle is not None
    enc.encode(tone(440, N, amplitude=0.01))  # -40 dBFS: sound
    assert enc.silence.cycle is None
    for _ in range(10):
        enc.encode(zero)
    enc.set_expected_loss(10)  # FEC for the next frames: silence may code differently
    assert enc.silence.cycle is None
    dtx = OpusEncoder(16_000, **{**DOWNLINK, "dtx": True})
    assert dtx.silence is None
    assert all(len(dtx.encode(zero)) for _ in range(30))
