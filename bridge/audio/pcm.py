"""The bus PCM format, sample conversions, mixing and reframing."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16_000
"""Bus sample rate in Hz."""
FRAME_MS = 20
"""Bus frame duration in milliseconds."""
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
"""Samples in one bus frame (320)."""

Pcm = npt.NDArray[np.int16]
"""A mono s16 PCM buffer."""


QUIET_PEAK = 200
"""A frame whose samples all stay within this (−44 dBFS) is silence: a listener cannot miss it
when it is dropped or shortened (``engines/tick_aim.py``, ``media/frames.py``)."""


def peak(pcm: Pcm) -> int:
    """The largest magnitude of ``pcm``'s samples (0 for none); a full-scale negative sample's
    is 32768. ``np.abs`` wraps int16's −32768 onto itself, which ``max`` then passed over (a
    frame with one such sample counted as silence); read as uint16 it is 32768. One reduction,
    0.25 µs more than the wrapping form a 320-sample frame; ``max`` and ``min`` would cost
    0.5 µs more on a silent frame, where most callers look (docs/performance.md, *Peaks*)."""
    return int(np.abs(pcm).view(np.uint16).max(initial=0))


def quiet(pcm: Pcm) -> bool:
    """Whether ``pcm`` is silence (:data:`QUIET_PEAK`)."""
    return bool(pcm.size) and peak(pcm) <= QUIET_PEAK


def frame_energy(pcm: Pcm) -> float:
    """A frame's sum of squares, as ``media.LevelMeter.add`` adds it: for a frame that goes to
    several readers (meters, the in-band key detector's gate), computed once and given to each
    (a bus frame keeps its own: ``BusFrame.energy``). Exact: a level made from it is the very
    figure ``numpy``'s mean of the squares gives (the echo guard's decisions rest on them)."""
    # int16 squares overflow int16 and float32 rounds their sum; int64 holds it exactly, for
    # about 0.25 µs more a frame than float32 (2-core AMD EPYC VM, 2026-11-27).
    x = pcm.astype(np.int64)
    return float(x.dot(x))  # the method: a third cheaper than np.dot's dispatch


def s16_to_f32(pcm: Pcm) -> npt.NDArray[np.float32]:
    """Convert s16 to float32 in [-1, 1) (divides by 32768, so -32768 maps to -1.0)."""
    return pcm.astype(np.float32) * np.float32(1.0 / 32768.0)


def f32_to_s16(samples: npt.NDArray[np.floating]) -> Pcm:
    """Convert float samples to s16, clipping to full scale (never wrapping around).

    +1.0 maps to 32767 and -1.0 to -32768; NaN becomes 0.
    """
    scaled = np.nan_to_num(np.asarray(samples, dtype=np.float32), nan=0.0) * np.float32(32768.0)
    return np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)


def mix_into(acc: npt.NDArray[np.int32], pcm: Pcm) -> None:
    """Add ``pcm`` into an int32 accumulator (clip once at the end with :func:`clip16`, never
    wrap): how every mix in the bridge adds (the bus, the conference, a recording's sides)."""
    acc += pcm


def clip16(acc: npt.NDArray[np.int32]) -> Pcm:
    """``acc`` clipped to int16 (``acc`` unchanged). The two ufuncs give the samples
    ``np.clip`` gives in half its time: its Python wrapper cost more than the clipping."""
    out = np.minimum(acc, 32767)
    np.maximum(out, -32768, out=out)
    return out.astype(np.int16)


def mix_over(pcm: Pcm | npt.NDArray[np.int32], frames: list[Pcm]) -> Pcm:
    """``pcm`` with ``frames`` added, clipped once to int16; ``pcm`` as it is when it is int16
    and every frame is silent (a source waiting, an agent between its replies: most frames)."""
    acc: npt.NDArray[np.int32] | None = None
    for frame in frames:
        if np.count_nonzero(frame):
            if acc is None:
                acc = pcm.astype(np.int32)  # a copy: the caller's frame is never changed
            mix_into(acc, frame)
    if acc is None:
        return pcm if pcm.dtype == np.int16 else clip16(pcm)  # type: ignore[arg-type,return-value]
    return clip16(acc)


class Reframer:
    """Cuts a stream of arbitrary-length PCM chunks into exact fixed-size frames.

    Keeps the remainder between calls, so no sample is dropped or duplicated. What it holds
    is always shorter than one frame, so it needs no bound of its own.
    """

    def __init__(self, frame_samples: int = FRAME_SAMPLES) -> None:
        if frame_samples <= 0:
            raise ValueError("frame_samples must be positive")
        self.frame_samples = frame_samples
        self._pending: Pcm = np.empty(0, dtype=np.int16)

    @property
    def pending(self) -> int:
        """Samples held, waiting for a full frame."""
        return int(self._pending.size)

    def push(self, pcm: Pcm) -> list[Pcm]:
        """Add samples; return every complete frame now available, in order."""
        buf = np.concatenate((self._pending, pcm)) if self._pending.size else pcm
        n = buf.size // self.frame_samples
        cut = n * self.frame_samples
        frames = [buf[i : i + self.frame_samples].copy() for i in range(0, cut, self.frame_samples)]
        self._pending = buf[cut:].copy()
        return frames

    def clear(self) -> None:
        """Drop any partial frame."""
        self._pending = np.empty(0, dtype=np.int16)
