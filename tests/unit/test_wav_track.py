"""A recording's track (attachments/wav.py ``WavTrack``): silence where frames were missing,
none where they were only late."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from bridge.attachments.wav import WavTrack

FRAME = 320
T0 = 100.0
LEAD = 0.05
"""The first frame's time after the track's start: a receiver's first frame comes 30-45 ms
after a recording starts (its next packet, its delay), so the file lags its frames' stamps
this much before anything is late."""


def frame(n: int) -> np.ndarray:
    return np.full(FRAME, n + 1, dtype=np.int16)  # never zero: a zero is silence written


def written(track: WavTrack, end: float) -> np.ndarray:
    track.finish(end)
    with wave.open(str(track.path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def test_a_late_tick_caught_up_writes_no_silence(tmp_path: Path) -> None:
    """The worker clock's ticks 25-27 held up 50 ms by a busy event loop, then run at once (it
    catches up, skipping none): every frame came, in order, so the track is every frame in a
    row with no zero among them. (Filling the late frame's gap recorded two to three frames of
    exact zeros amid the tone, its receiver concealing nothing: a clean-clone CI failure of
    test_passthrough's recording, reproduced with a 60 ms stall of the bridge's loop.)"""
    track = WavTrack(tmp_path / "t.wav", T0)
    times = [T0 + LEAD + 0.02 * n for n in range(50)]
    for n in (25, 26, 27):
        times[n] = times[27] + 0.001 * (n - 25)  # ran at once, each stamped when it ran
    for n, t in enumerate(times):
        track.write_at(frame(n), t)
    pcm = written(track, times[-1])
    assert pcm.size >= 50 * FRAME
    frames = pcm[: 50 * FRAME].reshape(50, FRAME)
    assert (frames[:, 0] == np.arange(1, 51)).all(), frames[:, 0].tolist()
    assert np.count_nonzero(pcm[: 50 * FRAME]) == 50 * FRAME


def test_frames_that_stopped_leave_their_time_as_silence_before_the_next(
    tmp_path: Path,
) -> None:
    """A sender quiet for 200 ms (no frames: its receiver's outage), then steady again: the
    frame after the quiet is where its time says, the 200 ms before it silence."""
    track = WavTrack(tmp_path / "t.wav", T0)
    for n in range(10):
        track.write_at(frame(n), T0 + 0.02 * (n + 1))
    for n in range(10, 20):
        track.write_at(frame(n), T0 + 0.2 + 0.02 * (n + 1))
    pcm = written(track, T0 + 0.5999)
    assert abs(pcm.size - 30 * FRAME) <= 1  # (a sample's rounding of the stamps)
    assert (pcm[: 10 * FRAME] != 0).all()
    assert not pcm[10 * FRAME : 20 * FRAME - 1].any()  # the 200 ms nobody sent
    resumed = pcm[-10 * FRAME :].reshape(10, FRAME)
    assert (resumed == np.arange(11, 21)[:, None]).all() and np.count_nonzero(pcm) == 20 * FRAME


def test_the_last_frame_after_a_gap_is_placed_at_its_time(tmp_path: Path) -> None:
    """A frame after a gap with nothing after it (the recording stops): its gap was one."""
    track = WavTrack(tmp_path / "t.wav", T0)
    track.write_at(frame(0), T0 + 0.02)
    track.write_at(frame(1), T0 + 0.02 + 0.1)
    pcm = written(track, T0 + 0.1199)  # (its rounding: no sample more)
    assert abs(pcm.size - 6 * FRAME) <= 1  # (a sample's rounding of the stamps)
    assert (pcm[:FRAME] == 1).all() and not pcm[FRAME : 4 * FRAME].any()
    assert (pcm[-FRAME:] == 2).all() and np.count_nonzero(pcm) == 2 * FRAME


class FailingOnce:
    """A file whose next write fails (a full disk for a moment)."""

    def __init__(self, file: object) -> None:
        self.file, self.fail = file, True

    def write(self, data: bytes) -> int:
        if self.fail:
            self.fail = False
            raise OSError(28, "No space left on device")
        return self.file.write(data)  # type: ignore[attr-defined,no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self.file, name)


def test_a_failed_write_of_a_waiting_frame_loses_that_frame_only(tmp_path: Path) -> None:
    """The frame that waited (past a gap) fails to be written: that one is lost (the recorder
    counts it, its write raising), the frame that came with it is kept."""
    track = WavTrack(tmp_path / "t.wav", T0)
    track.write_at(frame(0), T0 + 0.02)
    track.write_at(frame(1), T0 + 0.12)  # waits: a gap, or late?
    real = track._file
    track._file = FailingOnce(real)  # type: ignore[assignment]
    try:
        track.write_at(frame(2), T0 + 0.14)
    except OSError:
        pass
    else:
        raise AssertionError("the waiting frame's write should have failed")
    track._file = real
    pcm = written(track, T0 + 0.1399)
    assert (pcm[:FRAME] == 1).all(), pcm[::FRAME].tolist()
    assert (pcm == 3).sum() == FRAME and not (pcm == 2).any(), pcm[::FRAME].tolist()
