"""The in-band DTMF detector's first gate (bridge/audio/dtmf.py ``DtmfToneDetector.feed``): a
frame is skipped on the frames' exact energies (``BusFrame.energy``, summed once for the bus's
meter) before anything is summed again. It must never skip a frame one of whose windows could
hold a key, and every decision must be the one the float32 gate behind it makes alone."""

from __future__ import annotations

import numpy as np

from bridge.audio.dtmf import (
    DIGITS,
    HOP,
    MIN_TONE_DBFS,
    WINDOW,
    DtmfToneDetector,
    ToneSequence,
    _basis,
)
from bridge.audio.pcm import FRAME_SAMPLES, frame_energy


def _stream(seed: int, frames: int) -> list[np.ndarray]:
    """Silence, quiet and loud noise, and key presses from 8 dB under the weakest accepted
    tone to 8 dB over it, starting anywhere in a frame: what sits on both sides of the gates."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < frames:
        kind = rng.integers(4)
        n = int(rng.integers(1, 12))
        if kind == 0:
            out += [np.zeros(FRAME_SAMPLES, dtype=np.int16)] * n
        elif kind == 1:
            sigma = float(rng.choice([3.0, 30.0, 150.0, 300.0, 600.0, 3000.0]))
            out += [rng.normal(0, sigma, FRAME_SAMPLES).astype(np.int16) for _ in range(n)]
        else:
            # MIN_TONE_DBFS is each sine's RMS; ToneSequence's level is its peak (3 dB more).
            level = MIN_TONE_DBFS + 3 + float(rng.uniform(-8, 8))
            tones = ToneSequence(level_dbfs=level)
            tones.add(str(rng.choice(list(DIGITS))), int(rng.integers(20, 120)), 40)
            lead = int(rng.integers(0, FRAME_SAMPLES))
            pcm = np.concatenate([np.zeros(lead, dtype=np.int16), *_play(tones)])
            pcm = pcm[: pcm.size - pcm.size % FRAME_SAMPLES]
            out += list(pcm.reshape(-1, FRAME_SAMPLES))
    return [np.ascontiguousarray(f) for f in out[:frames]]


def _play(tones: ToneSequence) -> list[np.ndarray]:
    frames = []
    while (step := tones.next_frame()) is not None:
        frames.append(step[0])
    return frames


def test_the_first_gate_never_skips_a_frame_that_could_hold_a_key() -> None:
    """Every frame the first gate skips: both its windows (float64, exact) under half the
    weakest tone's energy, and no key frequency's power in them (the direct transform) at that
    energy, so the classifier could not have taken it."""
    frames = _stream(11, 3000)
    detector = DtmfToneDetector(lambda digit, ms: None)
    skipped = []
    for k, frame in enumerate(frames):
        detector.feed(frame, frame_energy(frame))
        if detector._skipped is not None:  # the first gate skipped it
            skipped.append(k)
    signal = np.concatenate([np.zeros(HOP)] + [f.astype(np.float64) for f in frames])
    basis = _basis()
    near_keys = 0
    for k in skipped:
        windows = [signal[s : s + WINDOW] for s in (k * WINDOW, k * WINDOW + HOP)]
        assert 2 * max(float(w @ w) for w in windows) < detector._min_energy, k
        for window in windows:
            y = basis @ window
            half = len(y) // 2
            power = y[:half] ** 2 + y[half:] ** 2
            assert power.max() < detector._min_energy, k
        near_keys += any(frame_energy(frames[j]) > 1e6 for j in (k - 1, k + 1) if 0 < j < 3000)
    # Not vacuous: many frames skipped, some right beside a tone or loud noise.
    assert len(skipped) > 1000 and near_keys > 50, (len(skipped), near_keys)


def test_every_decision_is_the_float32_gates() -> None:
    """The same stream with and without the first gate (an energy no frame is under): the same
    windows classified, with the same powers and totals to the bit, and the same presses."""
    frames = _stream(5, 3000)
    runs = []
    for gated in (True, False):
        seen: list[tuple[list[float], float]] = []
        presses: list[tuple[str, int]] = []
        detector = DtmfToneDetector(lambda digit, ms, presses=presses: presses.append((digit, ms)))
        classify = detector._classify

        def record(power: list[float], total: float, classify=classify, seen=seen) -> str | None:
            seen.append((power, total))
            return classify(power, total)

        detector._classify = record  # type: ignore[method-assign]
        for frame in frames:
            detector.feed(frame, frame_energy(frame) if gated else float("inf"))
        runs.append((seen, presses))
    (gated_seen, gated_presses), (plain_seen, plain_presses) = runs
    assert gated_seen == plain_seen
    assert gated_presses == plain_presses
    assert len(gated_presses) > 50  # keys at and above the weakest level were heard
