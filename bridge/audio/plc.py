"""Packet-loss concealment by pitch repetition, for codecs that have none of their own (G.711,
G.722): what a phone's lost packet becomes in the one receiver (``audio/receiver.py``).

The method of ITU-T G.711 Appendix I, on the receiver's 16 kHz output: the last 20 ms played
are searched for their pitch period (normalised autocorrelation over 2.5–15 ms); a lost frame
repeats the last period (its last quarter overlap-added into the quarter period before it, so
each repeat follows the one before as the signal followed itself), at full level for the first
10 ms of a loss and fading by a fifth every 10 ms after, silent from 60 ms (a long outage is
silence, not a buzz). The first real frame after a loss is joined to the
concealment's continuation by a 4 ms cross-fade, so neither edge clicks.

A listener's downlink sink (``media/frames.py``), whose frames are already PCM, conceals a gap
more simply: the last frame mirrored and faded out (:func:`fade_out_mirror`), and what follows
faded in (:func:`fade_in`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .pcm import SAMPLE_RATE, Pcm

HISTORY = SAMPLE_RATE * 48 // 1000
"""Samples of what was played kept for the pitch search (48 ms)."""
MIN_PERIOD = SAMPLE_RATE * 25 // 10_000  # 2.5 ms
MAX_PERIOD = SAMPLE_RATE * 15 // 1000  # 15 ms
FULL_LEVEL = SAMPLE_RATE // 100
"""Samples of a loss played at full level (10 ms)."""
FADE_STEP = 0.2
"""Level lost every 10 ms after that."""
JOIN = SAMPLE_RATE * 4 // 1000
"""Samples of the cross-fade from concealment back into real audio (4 ms)."""


class PitchRepeat:
    """Concealment for one stream (module docstring). Every real frame goes through
    :meth:`played`; a missing one comes from :meth:`conceal`."""

    def __init__(self) -> None:
        self._history = np.zeros(HISTORY, dtype=np.float32)
        self._period = 0
        self._cycle: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._pos = 0
        self._lost = 0
        """Samples concealed since the last real frame."""

    def played(self, pcm: Pcm) -> Pcm:
        """A real frame, as decoded: returned joined to the concealment before it (if any),
        and remembered for the next loss."""
        out = pcm
        if self._lost and pcm.size:
            tail = self._continue(min(JOIN, pcm.size)).astype(np.float32)
            ramp = np.linspace(0.0, 1.0, tail.size, endpoint=False, dtype=np.float32)
            head = pcm[: tail.size].astype(np.float32) * ramp + tail * (1.0 - ramp)
            out = pcm.copy()
            out[: tail.size] = np.clip(head, -32768, 32767).astype(np.int16)
        self._lost = 0
        self._remember(out)
        return out

    def conceal(self, samples: int) -> Pcm:
        """``samples`` of concealment continuing what was played."""
        if self._lost == 0:
            self._start()
        out = self._continue(samples)
        self._remember(out)
        return out

    def _start(self) -> None:
        history = self._history
        period = _pitch(history)
        self._period = period
        cycle = history[-period:].copy()
        # The cycle follows what was played (its first sample is the one a period before the
        # one due) and itself at every repeat: its last quarter period is cross-faded into the
        # quarter period before its start, so its last sample leads into its first as the
        # history did, without a step, however far the period is from the signal's.
        quarter = max(1, period // 4)
        ramp = np.linspace(0.0, 1.0, quarter + 1, dtype=np.float32)[1:]
        before = history[-period - quarter : -period]
        cycle[-quarter:] = cycle[-quarter:] * (1.0 - ramp) + before * ramp
        self._cycle = cycle
        self._pos = 0

    def _continue(self, samples: int) -> Pcm:
        if self._cycle.size == 0:
            self._start()
        idx = (self._pos + np.arange(samples)) % self._cycle.size
        self._pos = int((self._pos + samples) % self._cycle.size)
        lost = self._lost + np.arange(samples, dtype=np.float32)
        gain = 1.0 - FADE_STEP * np.maximum(0.0, lost - FULL_LEVEL) / FULL_LEVEL
        gain = np.clip(gain, 0.0, 1.0).astype(np.float32)
        self._lost += samples
        out = self._cycle[idx] * gain
        return np.clip(out, -32768, 32767).astype(np.int16)

    def _remember(self, pcm: Pcm) -> None:
        if pcm.size >= HISTORY:
            self._history = pcm[-HISTORY:].astype(np.float32)
        elif pcm.size:
            self._history = np.concatenate([self._history[pcm.size :], pcm.astype(np.float32)])


def _pitch(history: npt.NDArray[np.float32]) -> int:
    """The pitch period of the last 20 ms of ``history`` (normalised autocorrelation), or the
    longest period for silence or noise (a long cycle repeats least audibly); of equal scores,
    the shortest period. Every candidate at once (one correlation, one running sum of squares):
    a loop over the 201 candidates cost ~250-450 µs a loss, this ~20, the same periods."""
    window = SAMPLE_RATE // 50
    target = history[-window:]
    energy = float(np.dot(target, target))
    if energy < 1e-3 * window:
        return MAX_PERIOD
    span = history[-window - MAX_PERIOD : -MIN_PERIOD]  # every candidate's past window
    dots = np.correlate(span, target, mode="valid")[::-1]  # by period, the shortest first
    squares = np.concatenate(([0.0], np.cumsum(np.square(span, dtype=np.float64))))
    norms = (squares[window:] - squares[:-window])[::-1]
    scores = np.where(norms > 0, dots / np.sqrt(np.maximum(norms, 1e-12) * energy), 0.0)
    best = int(np.argmax(scores))
    return MIN_PERIOD + best if scores[best] > 0 else MAX_PERIOD


FADE_IN_SAMPLES = 80
"""5 ms at 16 kHz: the ramp into audio that resumes after silence, so it starts without a
step (a click)."""

_FADE_OUT = np.linspace(1.0, 0.0, 320, dtype=np.float32)
_FADE_IN = np.linspace(0.0, 1.0, FADE_IN_SAMPLES, endpoint=False, dtype=np.float32)


def fade_out_mirror(last: Pcm) -> Pcm:
    """One frame that conceals the frame that did not come: the last frame played, time-reversed
    (so the waveform continues from its last sample with no step) and faded to zero over the
    frame (so nothing buzzes on). What a listener hears as a short decay, not a cut."""
    mirrored = last[::-1].astype(np.float32)
    ramp = _FADE_OUT if mirrored.size == _FADE_OUT.size else np.linspace(1, 0, mirrored.size)
    return (mirrored * ramp).astype(np.int16)


def fade_in(pcm: Pcm) -> Pcm:
    """``pcm`` with its first 5 ms ramped up from zero."""
    n = min(FADE_IN_SAMPLES, pcm.size)
    out = pcm.copy()
    out[:n] = (out[:n].astype(np.float32) * _FADE_IN[:n]).astype(np.int16)
    return out
