"""``CallBus``: one call's 16 kHz mono s16 audio in 20 ms frames, both directions.

Uplink is what the WhatsApp peer hears (browser microphone, later playback and sockets);
downlink is what the WhatsApp peer says, fanned out to every listener (the browser's paced
track, later recorders and sockets). Every queue is bounded with a counted drop policy and
nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .audio import FRAME_SAMPLES, JitterBuffer
from .audio.pcm import Pcm


class BusFrame(NamedTuple):
    """One 20 ms frame and the monotonic time it entered the bridge."""

    pcm: Pcm
    t: float


@dataclass
class BusStats:
    uplink_frames: int = 0
    uplink_dropped_overflow: int = 0
    uplink_discarded_inactive: int = 0
    downlink_frames: int = 0
    bad_frames: int = 0


class BusClosed(ConnectionError):
    """The bus was closed while a reader waited."""


class DownlinkSink:
    """A listener's view of the downlink: a jitter buffer fed by the bus."""

    def __init__(self, bus: CallBus, name: str, jitter: JitterBuffer) -> None:
        self.bus = bus
        self.name = name
        self.jitter = jitter
        self.last_frame_t: float | None = None

    def push(self, frame: BusFrame) -> None:
        self.jitter.push(frame.pcm)
        self.last_frame_t = frame.t

    def pop(self) -> Pcm | None:
        """Next frame to play, or ``None`` for silence."""
        return self.jitter.pop()

    def detach(self) -> None:
        self.bus.remove_downlink(self)


UplinkTap = Callable[[BusFrame], None]


class CallBus:
    """The per-call PCM bus. See the module docstring."""

    def __init__(self, call_id: str, *, uplink_capacity: int = 25) -> None:
        self.call_id = call_id
        self.muted = False
        self.stats = BusStats()
        self._uplink: asyncio.Queue[BusFrame] = asyncio.Queue(maxsize=uplink_capacity)
        self._uplink_open = False
        self._sinks: list[DownlinkSink] = []
        self._uplink_taps: list[UplinkTap] = []
        self._users: set[str] = set()
        self._closed = False
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    # -- users: anything that makes the call's audio worth carrying (a browser, a socket)
    def add_user(self, name: str) -> None:
        self._users.add(name)

    def remove_user(self, name: str) -> None:
        self._users.discard(name)

    @property
    def users(self) -> frozenset[str]:
        return frozenset(self._users)

    # -- uplink
    def open_uplink(self) -> None:
        """Start accepting uplink frames (a leg is attached); stale frames are dropped."""
        while not self._uplink.empty():
            self._uplink.get_nowait()
        self._uplink_open = True

    def close_uplink(self) -> None:
        self._uplink_open = False

    def push_uplink(self, pcm: Pcm, t: float | None = None) -> None:
        """Offer one 20 ms frame towards the WhatsApp peer (silence while muted).

        Never blocks: with no leg attached the frame is discarded; a full queue drops its
        oldest frame.
        """
        if pcm.shape != (FRAME_SAMPLES,) or pcm.dtype != np.int16:
            self.stats.bad_frames += 1
            return
        frame = BusFrame(self._silence if self.muted else pcm, time.monotonic() if t is None else t)
        for tap in self._uplink_taps:
            tap(frame)
        if not self._uplink_open or self._closed:
            self.stats.uplink_discarded_inactive += 1
            return
        if self._uplink.full():
            self._uplink.get_nowait()
            self.stats.uplink_dropped_overflow += 1
        self._uplink.put_nowait(frame)
        self.stats.uplink_frames += 1

    async def read_uplink(self) -> BusFrame:
        """Wait for the next uplink frame (raises :class:`BusClosed` once closed)."""
        if self._closed:
            raise BusClosed(self.call_id)
        frame = await self._uplink.get()
        if frame.pcm.size == 0:  # the close() sentinel
            raise BusClosed(self.call_id)
        return frame

    def add_uplink_tap(self, tap: UplinkTap) -> None:
        self._uplink_taps.append(tap)

    def remove_uplink_tap(self, tap: UplinkTap) -> None:
        if tap in self._uplink_taps:
            self._uplink_taps.remove(tap)

    # -- downlink
    def add_downlink(self, name: str, jitter: JitterBuffer | None = None) -> DownlinkSink:
        sink = DownlinkSink(self, name, jitter or JitterBuffer())
        self._sinks.append(sink)
        return sink

    def remove_downlink(self, sink: DownlinkSink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def push_downlink(self, pcm: Pcm, t: float | None = None) -> None:
        """Deliver one 20 ms frame from the WhatsApp peer to every listener."""
        if pcm.shape != (FRAME_SAMPLES,) or pcm.dtype != np.int16:
            self.stats.bad_frames += 1
            return
        frame = BusFrame(pcm, time.monotonic() if t is None else t)
        self.stats.downlink_frames += 1
        for sink in self._sinks:
            sink.push(frame)

    def close(self) -> None:
        """Stop the bus; a waiting uplink reader gets :class:`BusClosed`."""
        if self._closed:
            return
        self._closed = True
        self._uplink_open = False
        self._sinks.clear()
        self._uplink_taps.clear()
        while not self._uplink.empty():
            self._uplink.get_nowait()
        self._uplink.put_nowait(BusFrame(np.empty(0, dtype=np.int16), 0.0))
