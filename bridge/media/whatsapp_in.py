"""What the WhatsApp side says, waiting for the call's mixer (``conference.py``): one frame a
tick, as it came from a clocked leg, or de-jittered from a remote engine's clock."""

from __future__ import annotations

from collections import deque

from .drops import WHATSAPP_OVERFLOW, Drops
from .frames import BusFrame, DownlinkSink, downlink_jitter
from .stats import BusStats

CLOCKED_WAITING = 4
"""Frames of a clocked WhatsApp side that may wait for the mix (80 ms), oldest dropped beyond:
its leg's receiver (or the simulator's far end) gives one a tick, taken in the next mix.
Counted in the call's ``whatsapp_in_frames_dropped``, said once a call (``drops.py``)."""


class WhatsAppInput:
    """The mixer's input from the WhatsApp side: frames in as they come (:meth:`push`), one
    out each mixing tick (:meth:`take`).

    A clocked side (the Cloud API's leg, the simulator's far end) says one frame a tick on the
    worker clock, already de-jittered by its leg's receiver: it waits in a short queue. A remote
    engine keeps a clock of its own and sends its frames in bursts (ZuckZapGo's 60 ms messages):
    they go through a :class:`~bridge.media.frames.DownlinkSink`, as a listener's on the direct
    path (a jitter buffer, its drift followed, a gap concealed with a fade)."""

    def __init__(self, stats: BusStats, drops: Drops) -> None:
        self.stats = stats
        """The call's counters (a clocked side's frames dropped)."""
        self.drops = drops
        self._ticked: deque[BusFrame] = deque(maxlen=CLOCKED_WAITING)
        self._foreign: DownlinkSink | None = None

    def set_clocked(self, clocked: bool) -> None:
        """The WhatsApp side is (or is not) on the worker clock: a remote engine starts afresh.
        Its sink's counters are its own: the participants' sinks count what they play."""
        self._ticked.clear()
        self._foreign = None if clocked else DownlinkSink(BusStats(), "whatsapp", downlink_jitter())

    def adopt(self, sink: DownlinkSink) -> bool:
        """A remote engine's frames go through ``sink`` from now on (the agent's, on the direct
        path until now: it holds the frames not played yet), its counters its own; whether it
        did (not for a clocked side, nor a sink already on the clock)."""
        if self._foreign is None or sink.clocked:
            return False
        sink.stats = BusStats()
        self._foreign = sink
        return True

    def push(self, frame: BusFrame) -> None:
        """A frame the WhatsApp side said (never blocks)."""
        if self._foreign is not None:
            self._foreign.push(frame)
        else:
            if len(self._ticked) == CLOCKED_WAITING:
                self.stats.whatsapp_in_frames_dropped += 1
                self.drops.dropped(WHATSAPP_OVERFLOW)
            self._ticked.append(frame)

    def take(self, now: float) -> BusFrame | None:
        """This tick's frame, ``None`` for none: a clocked side's as it came; a remote engine's
        out of its sink, stamped with when the newest frame it played entered the bus."""
        foreign = self._foreign
        if foreign is None:
            return self._ticked.popleft() if self._ticked else None
        pcm = foreign.pop(now)
        return None if pcm is None else BusFrame(pcm, foreign.fed_at)

    def clear(self) -> None:
        """Drop what waits (the mixing clock starts)."""
        self._ticked.clear()
        if self._foreign is not None:
            self._foreign.detach()
