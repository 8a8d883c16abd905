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


class DownlinkSink:
    """A listener's view of the downlink: a jitter buffer fed by the bus."""

    def __init__(self, bus: CallBus, name: str, jitter: JitterBuffer[BusFrame]) -> None:
        self.bus = bus
        self.name = name
        self.jitter = jitter

    def push(self, frame: BusFrame) -> None:
        self.jitter.push(frame)

    def pop(self) -> Pcm | None:
        """Next frame to play, or ``None`` for silence (its bus transit time is recorded)."""
        frame = self.jitter.pop()
        if frame is None:
            return None
        stats = self.bus.stats
        stats.downlink_played += 1
        stats.downlink_transit.observe(time.monotonic() - frame.t)
        return frame.pcm

    def detach(self) -> None:
        self.bus.remove_downlink(self)
