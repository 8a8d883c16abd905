"""What a listener of a call's bus holds: a frame, and its view of the downlink.

Shared by the bus (``bus.py``) and the conference (``conference.py``) so that the dependency
runs one way — the bus owns the conference, and neither imports the other at run time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..audio import JitterBuffer
from ..audio.pcm import Pcm

if TYPE_CHECKING:
    from .bus import CallBus


class BusFrame(NamedTuple):
    """One 20 ms frame and the monotonic time it entered the bridge."""

    pcm: Pcm
    t: float


PAUSE_RMS = 300.0
"""RMS (int16; about -41 dBFS) under which a downlink frame is a pause, where a frame of
delay can be added or removed unheard."""


def is_pause(frame: BusFrame) -> bool:
    pcm = frame.pcm.astype(np.float32)
    return float(np.dot(pcm, pcm)) < PAUSE_RMS * PAUSE_RMS * pcm.size


def downlink_jitter() -> JitterBuffer[BusFrame]:
    """A listener's jitter buffer: follows the engine's clock drift in the pauses."""
    return JitterBuffer(quiet=is_pause)


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


class DownlinkSink:
    """A listener's view of the downlink: a jitter buffer fed by the bus.

    When the buffer has nothing to play — the engine's audio ran late (an underrun) or a frame
    of delay is added in a pause — the first missing frame is concealed by
    :func:`fade_out_mirror` of the last one played, the rest are silence, and the audio that
    follows fades in over 5 ms: never a hard cut from speech to digital silence and back.
    """

    def __init__(self, bus: CallBus, name: str, jitter: JitterBuffer[BusFrame]) -> None:
        self.bus = bus
        self.name = name
        self.jitter = jitter
        self._last: Pcm | None = None
        """The last frame played, while the next missing one may still be concealed by it."""
        self._after_gap = True
        """Nothing (or a concealment) was played last: the next frame fades in."""
        self.concealed = 0
        """Frames concealed (one per gap)."""

    def push(self, frame: BusFrame) -> None:
        self.jitter.push(frame)

    def pop(self) -> Pcm | None:
        """Next frame to play, a concealment, or ``None`` for silence (a played frame's bus
        transit time is recorded)."""
        frame = self.jitter.pop()
        if frame is None:
            last, self._last = self._last, None
            self._after_gap = True
            if last is None:
                return None
            self.concealed += 1
            return fade_out_mirror(last)
        stats = self.bus.stats
        stats.downlink_played += 1
        stats.downlink_transit.observe(time.monotonic() - frame.t)
        pcm = frame.pcm
        if self._after_gap:
            self._after_gap = False
            pcm = fade_in(pcm)
        self._last = pcm
        return pcm

    def detach(self) -> None:
        self.bus.remove_downlink(self)
