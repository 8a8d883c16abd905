"""The in-band DTMF detector's windows (bridge/audio/dtmf.py): projected half a frame at a time,
with a frame's second half carried into the next window, they must be the windows a direct
transform of each 20 ms window (hop 10 ms) gives — also right after a frame the silence gate
skipped, whose second half is projected only when the next frame needs it."""

from __future__ import annotations

import numpy as np

from bridge.audio.dtmf import HOP, WINDOW, DtmfToneDetector, _basis


def test_half_frame_projections_equal_the_direct_transform_of_every_window() -> None:
    rng = np.random.default_rng(7)
    loud = [rng.normal(0, 6000, WINDOW) for _ in range(6)]
    quiet = [rng.normal(0, 200, WINDOW) for _ in range(2)]  # under the gate: skipped
    frames = [f.astype(np.int16) for f in loud[:3] + quiet + loud[3:]]
    seen: list[tuple[list[float], float]] = []
    detector = DtmfToneDetector(lambda digit, ms: None)
    classify = detector._classify

    def record(power: list[float], total: float) -> str | None:
        seen.append((power, total))
        return classify(power, total)

    detector._classify = record  # type: ignore[method-assign]
    for frame in frames:
        detector.feed(frame)

    signal = np.concatenate([np.zeros(HOP)] + [f.astype(np.float64) for f in frames])
    basis = _basis()
    expected = []
    for k in range(len(frames)):
        windows = [signal[s : s + WINDOW] for s in (k * WINDOW, k * WINDOW + HOP)]
        totals = [float(w @ w) for w in windows]
        if 2 * max(totals) < detector._min_energy:
            continue  # the gate: neither window can hold a key, nothing classified
        for window, total in zip(windows, totals, strict=True):
            y = basis @ window
            half = len(y) // 2
            expected.append(((y[:half] ** 2 + y[half:] ** 2).tolist(), total))
    # Six loud frames, the quiet frame after one (its first window holds loud audio), and the
    # loud frame after the quiet ones, whose first window needs the skipped frame's half.
    assert len(seen) == len(expected) == 2 * 7
    for (power, total), (want_power, want_total) in zip(seen, expected, strict=True):
        assert np.allclose(power, want_power, rtol=1e-3, atol=1e3)
        assert abs(total - want_total) <= 1e-5 * want_total
