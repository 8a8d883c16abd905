"""``CallBus``: one call's 16 kHz mono s16 audio in 20 ms frames, both directions.

Uplink is what the WhatsApp peer hears (browser microphone, later playback and sockets);
downlink is what the WhatsApp peer says, fanned out to every listener (the browser's paced
track, later recorders and sockets). Every queue is bounded with a counted drop policy and
nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .audio import FRAME_SAMPLES, JitterBuffer
from .audio.pcm import Pcm


class BusFrame(NamedTuple):
    """One 20 ms frame and the monotonic time it entered the bridge."""

    pcm: Pcm
    t: float


TRANSIT_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    0.06,
    0.08,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
)
"""Upper bounds (seconds) of the frame-transit histograms."""


class FixedHistogram:
    """A histogram cheap enough for every frame: fixed buckets, plain integer counts.

    Exported to Prometheus by the metrics collector; ``counts[i]`` counts observations
    ``<= bounds[i]`` (non-cumulative), the last slot is +Inf.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = TRANSIT_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def merge(self, other: FixedHistogram) -> None:
        for i, c in enumerate(other.counts):
            self.counts[i] += c
        self.sum += other.sum

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (``None`` if empty)."""
        total = self.count
        if not total:
            return None
        rank = q * total
        seen = 0
        for bound, c in zip((*self.bounds, float("inf")), self.counts, strict=True):
            seen += c
            if seen >= rank:
                return bound
        return float("inf")


@dataclass
class BusStats:
    """Counters of one call's bus (plain ints: updated per frame, read by the collector)."""

    uplink_frames: int = 0
    uplink_dropped_overflow: int = 0
    uplink_discarded_inactive: int = 0
    downlink_frames: int = 0
    downlink_played: int = 0
    bad_frames: int = 0
    uplink_transit: FixedHistogram = field(default_factory=FixedHistogram)
    """Seconds from a frame entering the bus to its hand-off to the engine leg."""
    downlink_transit: FixedHistogram = field(default_factory=FixedHistogram)
    """Seconds from a frame entering the bus to its hand-off to the browser's encoder."""


class BusClosed(ConnectionError):
    """The bus was closed while a reader waited."""


class DownlinkSink:
    """A listener's view of the downlink: a jitter buffer fed by the bus."""

    def __init__(self, bus: CallBus, name: str, jitter: JitterBuffer[BusFrame]) -> None:
        self.bus = bus
        self.name = name
        self.jitter = jitter
        self.last_frame_t: float | None = None

    def push(self, frame: BusFrame) -> None:
        self.jitter.push(frame)
        self.last_frame_t = frame.t

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
        self.stats.uplink_transit.observe(time.monotonic() - frame.t)
        return frame

    def add_uplink_tap(self, tap: UplinkTap) -> None:
        self._uplink_taps.append(tap)

    def remove_uplink_tap(self, tap: UplinkTap) -> None:
        if tap in self._uplink_taps:
            self._uplink_taps.remove(tap)

    # -- downlink
    def add_downlink(self, name: str, jitter: JitterBuffer[BusFrame] | None = None) -> DownlinkSink:
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
