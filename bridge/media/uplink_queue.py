"""``UplinkQueue``: the uplink frames waiting for the WhatsApp side's reader, the bus's child.

Two readers, two bounds. A clocked reader (a leg or a far end on the worker clock) takes each
tick's frame in that tick (:meth:`UplinkQueue.take`), at most :data:`TICK_UPLINK` waiting;
its first take is the newest frame, the ones made before its sender was up dropped once (the
microphone starts a tick or two before the WhatsApp leg's sender, and a frame that stayed
queued would be a frame of delay for the whole call). Any other reader (a remote engine's
pump) waits in the bounded queue (:meth:`UplinkQueue.read`). Past either bound the oldest
frame is dropped — the call's ``uplink_dropped_overflow``, the metric's
``reason="overflow"`` — and said once a call at WARNING (``drops.py``) when the reader was
reading (its sender fell behind: audio the WhatsApp peer does not hear); the startup's frames
are counted only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import numpy as np

from .drops import OVERFLOW, Drops
from .frames import BusFrame
from .stats import BusStats

log = logging.getLogger(__name__)

TICK_UPLINK = 3
"""Uplink frames a clocked reader may owe (60 ms), the oldest dropped beyond: it takes the
frame of a tick in that tick's send (or engine) phase, so more wait only while its sender
catches up on ticks its task missed."""


class BusClosed(ConnectionError):
    """The bus was closed while a reader waited."""


class UplinkQueue:
    """What waits for the reader of one call's uplink (see the module docstring)."""

    def __init__(self, call_id: str, stats: BusStats, drops: Drops, capacity: int) -> None:
        self.call_id = call_id
        self.stats = stats
        self.drops = drops
        self.open = False
        """A reader is attached: frames are kept for it (else the bus discards them)."""
        self._queue: asyncio.Queue[BusFrame] = asyncio.Queue(maxsize=capacity)
        self._ticked: deque[BusFrame] | None = None
        """A clocked reader's frames (:meth:`start`), instead of the queue."""
        self._taken_once = False

    def start(self, clocked: bool) -> None:
        """A reader attached: what waited for the one before is dropped."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._ticked = deque(maxlen=TICK_UPLINK) if clocked else None
        self._taken_once = False
        self.open = True

    def put(self, frame: BusFrame) -> None:
        """Keep ``frame`` for the reader, its oldest dropped past the bound (never blocks)."""
        ticked = self._ticked
        if ticked is not None:
            if len(ticked) == TICK_UPLINK:
                self._dropped(reading=self._taken_once)
            ticked.append(frame)
        else:
            if self._queue.full():
                self._queue.get_nowait()
                self._dropped(reading=True)
            self._queue.put_nowait(frame)
        self.stats.uplink_frames += 1

    def _dropped(self, *, reading: bool) -> None:
        self.stats.uplink_dropped_overflow += 1
        if reading:
            self.drops.dropped(OVERFLOW)

    async def read(self) -> BusFrame:
        """Wait for the next frame (a remote engine's pump)."""
        return self._taken(await self._queue.get())

    def take(self) -> BusFrame | None:
        """This tick's frame if one is waiting, else ``None`` (a clocked reader never
        waits)."""
        ticked = self._ticked
        if ticked is not None:
            if not self._taken_once and ticked:
                self._taken_once = True  # the newest: see the module docstring
                while len(ticked) > 1:
                    ticked.popleft()
                    self._dropped(reading=False)
            return self._taken(ticked.popleft()) if ticked else None
        return None if self._queue.empty() else self._taken(self._queue.get_nowait())

    def _taken(self, frame: BusFrame) -> BusFrame:
        """A frame handed to the WhatsApp side: timed and metered."""
        if frame.pcm.size == 0:  # the close() sentinel
            raise BusClosed(self.call_id)
        self.stats.uplink_transit.observe(time.monotonic() - frame.t)
        self.stats.whatsapp_out.add_energy(frame.energy, frame.pcm.size)
        return frame

    def close(self) -> None:
        """Drop what waits; a waiting reader gets :class:`BusClosed`."""
        self.open = False
        while not self._queue.empty():
            self._queue.get_nowait()
        if self._ticked is not None:
            self._ticked.clear()
        self._queue.put_nowait(BusFrame(np.empty(0, dtype=np.int16), 0.0))
