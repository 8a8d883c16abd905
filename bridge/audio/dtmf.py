"""In-band DTMF on the bus format (16 kHz mono s16): ITU-T Q.23 tones out, a Q.24 detector in.

**Tones** (:class:`ToneSequence`): each digit is the sum of its row and column sines (Q.23),
``DIGIT_DBFS`` each, phase-continuous across 20 ms frames, with a 2 ms raised-cosine ramp at
both ends (no clicks, no splatter into neighbouring bins), then silence for the gap.

**Detector** (:class:`DtmfToneDetector`): per 20 ms bus frame it analyses two 20 ms windows
hopping by 10 ms (the previous frame's second half + this frame's first half, and this frame),
so a 40 ms tone always covers at least two whole windows. Each window's energy at the eight
Q.23 frequencies and their second harmonics is one matrix product (a Goertzel / single-bin DFT
for 16 frequencies at once, vectorised: ``(32, 320) @ (320, 2)``). A window holds a digit when

* the strongest row and column tones are each at least ``MIN_TONE_DBFS``;
* twist: the column tone is at most 8 dB above the row tone (normal twist) and at most 4 dB
  below it (reverse twist) — Q.24's limits;
* the two tones hold at least ``MIN_TONE_SHARE`` of the window's energy (signal to other energy:
  speech, music and noise spread theirs);
* each beats the others in its group by ``GROUP_MARGIN_DB``, and neither has a strong second
  harmonic (voiced speech and instruments do; see ``ROW_HARMONIC_MARGIN_DB``).

Timing (Q.24): a digit starts after two consecutive windows agree (a tone of 30 ms and more;
40 ms always), and ends after two windows without it (a pause of 40 ms always separates two
presses of the same key; drop-outs of 10 ms inside a tone are bridged). A press is reported
once, when it ends, with its duration (window count x 10 ms + 10 ms).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .pcm import FRAME_SAMPLES, SAMPLE_RATE, Pcm, frame_energy

ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
DIGITS = "0123456789*#ABCD"
"""The sixteen DTMF keys (RFC 4733 event codes 0-15 in this order)."""

DIGIT_DBFS = -10.0
"""Level of each of a digit's two sines (peak-referenced: amplitude 10^(-10/20))."""
RAMP_SAMPLES = 32
"""2 ms raised-cosine fade in and out of each tone."""


def frequencies(digit: str) -> tuple[float, float]:
    """The (row, column) frequencies of a key (Q.23)."""
    for r, keys in enumerate(KEYPAD):
        c = keys.find(digit.upper())
        if c >= 0:
            return ROWS[r], COLS[c]
    raise ValueError(f"not a DTMF key: {digit!r}")


def valid_digits(digits: str) -> bool:
    return bool(digits) and all(d in DIGITS for d in digits.upper())


@dataclass
class _Press:
    digit: str
    tone: int  # samples
    gap: int  # samples


class ToneSequence:
    """Queued key presses rendered as 16 kHz PCM, one 20 ms frame at a time."""

    def __init__(self, max_presses: int = 128, level_dbfs: float = DIGIT_DBFS) -> None:
        self.max_presses = max_presses
        self._amp = 32767 * 10 ** (level_dbfs / 20)
        self._presses: deque[_Press] = deque()
        self._pos = 0  # sample index inside the current press
        self._n = np.arange(FRAME_SAMPLES, dtype=np.float64)
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(RAMP_SAMPLES) / RAMP_SAMPLES)
        self._ramp = ramp

    def __len__(self) -> int:
        return len(self._presses)

    def room(self) -> int:
        return self.max_presses - len(self._presses)

    def add(self, digits: str, duration_ms: int, gap_ms: int) -> None:
        """Queue ``digits`` (raises ``ValueError`` when there is no room or a key is bad)."""
        if not valid_digits(digits):
            raise ValueError(f"not DTMF keys: {digits!r}")
        if len(digits) > self.room():
            raise ValueError("too many key presses queued")
        rate = SAMPLE_RATE // 1000
        for d in digits.upper():
            self._presses.append(_Press(d, duration_ms * rate, gap_ms * rate))

    def clear(self) -> None:
        self._presses.clear()
        self._pos = 0

    def next_frame(self) -> tuple[Pcm, list[str]] | None:
        """The next 20 ms and the keys whose press (tone and gap) finished in it; ``None``
        when nothing is queued."""
        if not self._presses:
            return None
        out = np.zeros(FRAME_SAMPLES, dtype=np.float64)
        done: list[str] = []
        filled = 0
        while filled < FRAME_SAMPLES and self._presses:
            press = self._presses[0]
            take = min(FRAME_SAMPLES - filled, press.tone + press.gap - self._pos)
            start, end = self._pos, self._pos + take
            tone_end = min(end, press.tone)
            if start < tone_end:
                n = np.arange(start, tone_end, dtype=np.float64)
                low, high = frequencies(press.digit)
                w = 2 * np.pi / SAMPLE_RATE
                chunk = np.sin(w * low * n) + np.sin(w * high * n)
                env = np.ones(n.size)
                head = n < RAMP_SAMPLES
                env[head] = self._ramp[n[head].astype(np.int64)]
                tail = n >= press.tone - RAMP_SAMPLES
                env[tail] = self._ramp[(press.tone - 1 - n[tail]).astype(np.int64)]
                out[filled : filled + (tone_end - start)] = chunk * env * self._amp
            filled += take
            self._pos = end
            if self._pos >= press.tone + press.gap:
                self._presses.popleft()
                self._pos = 0
                done.append(press.digit)
        return np.rint(out).astype(np.int16), done


# -- the detector
MIN_TONE_DBFS = -36.0
"""Weakest tone accepted (RMS of each sine, dBFS)."""
NORMAL_TWIST_DB = 8.0
REVERSE_TWIST_DB = 4.0
MIN_TONE_SHARE = 0.80
"""Part of a window's energy the two tones must hold (other energy at most about -7 dB)."""
GROUP_MARGIN_DB = 10.0
HARMONIC_MARGIN_DB = 15.0
ROW_HARMONIC_MARGIN_DB = 8.0
"""Twice a row frequency lies 58-71 Hz from a column one (1394/1336, 1540/1477, 1704/1633):
a 20 ms window leaks the column tone there at about -13 dB, so the row check is looser."""
WINDOW = FRAME_SAMPLES
HOP = FRAME_SAMPLES // 2
HOP_MS = 10
ZERO_FRAME = np.zeros(FRAME_SAMPLES, dtype=np.int16)
GATE_MARGIN = 1e-3
"""How far under the float32 gate's threshold the frames' exact energies must be for the first
gate to skip a frame (float32 sums of 160 squares are within about 1e-5 of exact)."""


def _basis() -> npt.NDArray[np.float64]:
    freqs = np.array(ROWS + COLS + tuple(2 * f for f in ROWS + COLS))
    n = np.arange(WINDOW)
    arg = 2 * np.pi * freqs[:, None] * n[None, :] / SAMPLE_RATE
    # Scaled so that |X|^2 is the energy (sum of squares) of a sine at that frequency.
    scale = np.sqrt(2.0 / WINDOW)
    return np.vstack([np.cos(arg), np.sin(arg)]) * scale


class DtmfToneDetector:
    """Feeds on 20 ms bus frames; calls ``on_digit(digit, duration_ms)`` once per press."""

    def __init__(self, on_digit: Callable[[str, int], None]) -> None:
        self.on_digit = on_digit
        basis = _basis().astype(np.float32)
        # Windows of one frame overlap by half (hop 10 ms), so each is projected half by half:
        # its first half on the basis' left columns, its second on the right ones, and a
        # frame's second half is the next window's first (carried over). float32: a window's
        # power needs the precision of a dB, not of a sample.
        self._left = np.ascontiguousarray(basis[:, :HOP])
        self._halves = np.vstack([self._left, basis[:, HOP:]])
        self._carry: npt.NDArray[np.float32] | None = np.zeros(len(basis), dtype=np.float32)
        """The last frame's second half on the left columns (``None``: not projected yet)."""
        self._prev_half = np.zeros(HOP, dtype=np.float32)
        self._prev_energy = 0.0
        self._skipped: Pcm | None = None
        """The last frame, when the first gate skipped it (its :attr:`_prev_half` and
        :attr:`_prev_energy` not made)."""
        self._prev_frame = 0.0
        """The last frame's sum of squares (its ``energy``)."""
        self._pair = np.empty((len(basis), 2), dtype=np.float32)
        self._min_energy = (10 ** (MIN_TONE_DBFS / 20) * 32768) ** 2 * WINDOW
        self._normal = 10 ** (NORMAL_TWIST_DB / 10)
        self._reverse = 10 ** (REVERSE_TWIST_DB / 10)
        self._group = 10 ** (GROUP_MARGIN_DB / 10)
        self._harmonic = 10 ** (-HARMONIC_MARGIN_DB / 10)
        self._row_harmonic = 10 ** (-ROW_HARMONIC_MARGIN_DB / 10)
        # state
        self._candidate: str | None = None
        self._run = 0
        self._digit: str | None = None
        self._hits = 0
        self._misses = 0
        self.presses = 0

    def feed(self, pcm: Pcm, energy: float | None = None) -> None:
        """One 20 ms frame; ``energy``: its sum of squares (:func:`~.pcm.frame_energy`) where
        the caller has it already (a bus frame carries its own), else summed here."""
        if energy is None:
            energy = frame_energy(pcm)
        prev_frame, self._prev_frame = self._prev_frame, energy
        # Each window lies within this frame and the one before, so neither holds more energy
        # than the two frames together; no frequency's power exceeds twice its window's (see
        # below). Under that bound neither window can hold a key: skip it all, with nothing
        # summed again. The margin covers the float32 sums of the gate below, which would have
        # skipped it too (their rounding is under 1e-5 of a window's energy): every decision is
        # the one that gate makes.
        if 2 * (1 + GATE_MARGIN) * (prev_frame + energy) < self._min_energy:
            self._carry = None
            # Kept in case the next frame needs its half (the caller may reuse its buffer).
            self._skipped = pcm.copy() if energy else ZERO_FRAME
            if self._digit is not None or self._candidate is not None:
                self._window(None)
                self._window(None)
            return
        # Two windows per frame: the last frame's second half with this one's first, and this
        # frame. A few numpy calls in all: this runs on every frame of every call the gate
        # above lets through.
        halves = pcm.reshape(2, HOP).astype(np.float32)
        first, second = float(np.dot(halves[0], halves[0])), float(np.dot(halves[1], halves[1]))
        before, prev_energy = self._before()
        total = (prev_energy + first, first + second)
        self._prev_energy = second
        carry, self._prev_half = self._carry, halves[1]
        # The basis is scaled so that cos² + sin² sums to 2/WINDOW · WINDOW: by Cauchy-Schwarz
        # no frequency's power exceeds 2 × the window's energy. Below half the minimum tone
        # energy (silence, quiet speech) neither window can hold a key: skip the transform.
        if 2 * max(total) < self._min_energy:
            self._carry = None
            self._window(None)
            self._window(None)
            return
        if carry is None:
            carry = self._left @ before  # the frame before was skipped: project it now
        y = self._halves @ halves.T  # (64, 2): left columns on each half, then right ones
        k = len(self._left)
        pair = self._pair
        pair[:, 0] = carry
        pair[:, 1] = y[:k, 0]
        windows = y[k:] + pair  # (32, 2): cos and sin parts of 16 frequencies, 2 windows
        self._carry = y[:k, 1]
        windows *= windows
        power = (windows[: k // 2] + windows[k // 2 :]).T.tolist()  # 2 windows × 16 frequencies
        self._window(self._classify(power[0], total[0]))
        self._window(self._classify(power[1], total[1]))

    def _before(self) -> tuple[npt.NDArray[np.float32], float]:
        """The last frame's second half (float32) and its float32 sum of squares: made now,
        as :meth:`feed` makes them, when the first gate skipped that frame."""
        skipped, self._skipped = self._skipped, None
        if skipped is None:
            return self._prev_half, self._prev_energy
        half = skipped.reshape(2, HOP).astype(np.float32)[1]
        return half, float(np.dot(half, half))

    def _classify(self, p: list[float], total: float) -> str | None:
        # Plain floats: on 16 values, Python beats numpy's per-call overhead (argmax, delete)
        # several times over, and this runs twice per 20 ms frame of every call.
        rows, cols = p[:4], p[4:8]
        pr, pc = max(rows), max(cols)
        if pr < self._min_energy or pc < self._min_energy:
            return None
        if pc > pr * self._normal or pr > pc * self._reverse:
            return None  # twist
        if pr + pc < MIN_TONE_SHARE * total:
            return None  # too much other energy
        r, c = rows.index(pr), cols.index(pc)
        others_r = max(rows[:r] + rows[r + 1 :])
        others_c = max(cols[:c] + cols[c + 1 :])
        if others_r * self._group > pr or others_c * self._group > pc:
            return None
        if p[8 + r] > pr * self._row_harmonic or p[12 + c] > pc * self._harmonic:
            return None  # a strong second harmonic: a voice or an instrument
        return KEYPAD[r][c]

    def _window(self, hit: str | None) -> None:
        if hit is not None and hit == self._candidate:
            self._run += 1
        else:
            self._candidate, self._run = hit, (1 if hit is not None else 0)
        if self._digit is None:
            if hit is not None and self._run >= 2:
                self._digit, self._hits, self._misses = hit, 2, 0
            return
        if hit == self._digit:
            self._hits += self._misses + 1
            self._misses = 0
            return
        self._misses += 1
        if self._misses >= 2:
            digit, hits = self._digit, self._hits
            self._digit = None
            self.presses += 1
            self.on_digit(digit, hits * HOP_MS + HOP_MS)
            if hit is not None and self._run >= 2:  # another key without a pause
                self._digit, self._hits, self._misses = hit, self._run, 0
