"""The recordings' WAV files (16 kHz mono s16, a 44-byte header): one track written as
frames arrive with gaps filled by silence (:class:`WavTrack`), two tracks summed into the
mixed file (:func:`mix_files`), the segments of a recording that moved with its call joined
(:func:`join_files`), and a file a crash left open repaired (:func:`repair_wav`)."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..audio import FRAME_SAMPLES, SAMPLE_RATE
from ..audio.pcm import clip16, mix_into

HEADER_BYTES = 44
CHUNK = 1 << 16


def wav_header(data_bytes: int) -> bytes:
    """RIFF/WAVE header for 16 kHz mono s16 PCM with ``data_bytes`` of samples."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        SAMPLE_RATE,
        SAMPLE_RATE * 2,
        2,
        16,
        b"data",
        data_bytes,
    )


def repair_wav(path: Path) -> bool:
    """Fix the sizes in a WAV header left unfinished (e.g. by a crash); True if changed."""
    size = path.stat().st_size
    if size < HEADER_BYTES:
        return False
    with path.open("r+b") as f:
        head = f.read(HEADER_BYTES)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE" or head[36:40] != b"data":
            return False
        data = size - HEADER_BYTES
        data -= data % 2
        if (
            struct.unpack("<I", head[4:8])[0] == 36 + data
            and struct.unpack("<I", head[40:44])[0] == data
        ):
            return False
        f.seek(0)
        f.write(wav_header(data))
    return True


class WavTrack:
    """One growing WAV file, aligned to wall-clock time from ``t0`` (monotonic).

    A frame stamped more than two frames after where the file has got to is a gap, filled
    with silence, unless the frame after it comes in less than half a frame: then it was only
    late (the worker clock catching up a stalled tick runs the ticks it owes at once, each
    frame there), nothing was missing, and silence there would shift the rest of the track
    (and put exact zeros amid the audio). So such a frame waits for the next one to say which.
    """

    def __init__(self, path: Path, t0: float) -> None:
        self.path = path
        self.t0 = t0
        self.samples = 0
        self._file: BinaryIO | None = path.open("wb")
        self._file.write(wav_header(0))
        self._waiting: tuple[np.ndarray, float] | None = None
        """A frame past a gap, waiting for the next one to tell a gap from a late frame."""

    def discard(self) -> None:
        """Close and delete the file (a recording that could not start)."""
        try:
            if self._file is not None:
                self._file.close()
        finally:  # a close that fails too (the disk that failed the start): the file goes
            self._file = None
            self.path.unlink(missing_ok=True)

    def write_at(self, pcm: np.ndarray, t: float) -> None:
        """Append the frame stamped ``t`` (the class docstring says when silence goes first)."""
        if self._file is None:
            return
        waiting = self._waiting
        if waiting is not None:
            before, at = waiting
            late = t - at < FRAME_SAMPLES / SAMPLE_RATE / 2  # the frames it was late behind
            self._waiting = (pcm, t)  # its write failing (a full disk) loses it, not this one
            self._append(before, None if late else at)
            self._waiting = None
        if self._gap(t) > 0:
            self._waiting = (pcm, t)
        else:
            self._append(pcm, None)

    def _gap(self, t: float) -> int:
        """Samples missing before a frame stamped ``t`` (which covers [t - 20 ms, t)): those
        past where the file has got to, if more than two frames."""
        missing = int((t - self.t0) * SAMPLE_RATE) - FRAME_SAMPLES - self.samples
        return missing if missing > 2 * FRAME_SAMPLES else 0

    def _append(self, pcm: np.ndarray, at: float | None) -> None:
        """``pcm`` written, after silence for its gap if it is stamped (``at``)."""
        assert self._file is not None
        if at is not None and (gap := self._gap(at)):
            self._silence(gap)
        self._file.write(pcm.astype("<i2", copy=False).tobytes())
        self.samples += pcm.size

    def _silence(self, samples: int) -> None:
        # Seek over the gap: the hole reads as zeros, and a long one costs no writing.
        assert self._file is not None
        self._file.seek(samples * 2, os.SEEK_CUR)
        self.samples += samples

    def finish(self, t_end: float) -> None:
        if self._file is None:
            return
        try:
            waiting, self._waiting = self._waiting, None
            if waiting is not None:  # nothing came after it: its gap was one
                self._append(*waiting)
            target = int((t_end - self.t0) * SAMPLE_RATE)
            if target > self.samples:
                self._silence(target - self.samples)
            self._file.truncate(HEADER_BYTES + self.samples * 2)  # materialise a trailing hole
            self._file.seek(0)
            self._file.write(wav_header(self.samples * 2))
        finally:  # closed even when the disk fails its end (full): no handle left behind
            file, self._file = self._file, None
            file.close()


def _whole_samples(file: BinaryIO, count: int) -> bytes:
    """Up to ``count`` whole samples read from ``file``. One a crash cut mid-sample ends in
    half of one (``repair_wav`` keeps it): dropped, else every byte after it in a joined file
    is shifted into noise, and a mix's buffer of an odd length is refused."""
    chunk = file.read(count * 2)
    return chunk[: len(chunk) - len(chunk) % 2]


def mix_files(a: Path, b: Path, out: Path) -> int:
    """Sum two of our WAVs into ``out`` (clipping-safe), chunk by chunk; returns samples."""
    total = 0
    with a.open("rb") as fa, b.open("rb") as fb, out.open("wb") as fo:
        fa.seek(HEADER_BYTES)
        fb.seek(HEADER_BYTES)
        fo.write(wav_header(0))
        while True:
            xa = np.frombuffer(_whole_samples(fa, CHUNK), dtype="<i2")
            xb = np.frombuffer(_whole_samples(fb, CHUNK), dtype="<i2")
            if not xa.size and not xb.size:
                break
            n = max(xa.size, xb.size)
            acc = np.zeros(n, dtype=np.int32)
            mix_into(acc[: xa.size], xa)
            mix_into(acc[: xb.size], xb)
            fo.write(clip16(acc).astype("<i2", copy=False).tobytes())
            total += n
        fo.seek(0)
        fo.write(wav_header(total * 2))
    return total


def join_files(parts: list[tuple[Path, int | None]], out: Path) -> int:
    """Write our WAVs one after the other into ``out``, each ``(path, samples)`` cut to its
    ``samples`` (padded with silence when shorter; ``None``: whole), chunk by chunk; returns
    the samples written."""
    total = 0
    with out.open("wb") as fo:
        fo.write(wav_header(0))
        for path, samples in parts:
            left = samples if samples is not None else -1
            with path.open("rb") as fi:
                fi.seek(HEADER_BYTES)
                while left:
                    chunk = _whole_samples(fi, CHUNK if left < 0 else min(CHUNK, left))
                    if not chunk:
                        break
                    fo.write(chunk)
                    total += len(chunk) // 2
                    left = left - len(chunk) // 2 if left > 0 else left
            if left > 0:
                fo.write(bytes(left * 2))
                total += left
        fo.seek(0)
        fo.write(wav_header(total * 2))
    return total
