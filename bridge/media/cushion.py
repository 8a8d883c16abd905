"""How many frames a listener's downlink sink holds against a remote engine's jitter
(``frames.py`` ``DownlinkSink``), from how early the engine's frames come."""

from __future__ import annotations

from ..audio.pcm import FRAME_MS, FRAME_SAMPLES


class Cushion:
    """How many frames a :class:`DownlinkSink` keeps its depth at: :data:`FRAMES`, or one once
    the engine's frames have shown they come early enough.

    An engine next to the worker sends its chunks on a steady clock, and a second frame held is
    20 ms of delay that nothing needs; one across a network, or on a busy host, sends them with
    jitter, and a frame that slips a tick must still find one held. So, as a browser's NetEq
    sizes its buffer from measured arrivals: a call starts with two, and gives one up once,
    after :data:`SHED_WINDOWS` windows in a row whose latest frame would still have come
    :data:`LEAD_SPARE` before its tick with one held, plus the spread of that lead over those
    windows (the jitter seen); at the first window if the depth holds no more than one yet (a
    steady engine's start: nothing is stretched at all). The sink takes a held frame out only
    in a long silence (``frames.py``), where a jump in the delay is not heard. At the first
    window after that whose lead falls short, or in which a frame came too late (bridged or
    concealed), the second frame is taken back for the rest of the call (in a long silence
    too, if no frame came late: a lead that runs short is a clock walking, which leaves
    seconds): an engine that was late once will be again, and a delay that keeps moving is
    heard.
    """

    FRAMES = 2
    """Frames held until the frames are known to lead: a frame that slips a tick still finds
    one (docs/quality.md, *Delay*: 1.5 saved 18 ms of downlink transit but scored lower
    downlink PESQ on a loaded machine)."""
    LEAD_SPARE = 0.0025
    """Seconds the latest frame of a window must have come before its tick, one frame held,
    beyond the spread of that lead: a wake-up's lateness (an engine next to the worker spreads
    it by under a millisecond; a busy or distant one by more)."""
    SHED_WINDOWS = 4

    def __init__(self) -> None:
        self.frames = self.FRAMES
        """Frames the depth is kept at now."""
        self.lead = float("inf")
        """The least time a frame fed this window waited between arriving and its tick (the
        sink keeps it)."""
        self.final = False
        """The one frame was given up and taken back, or never could be: two from now on."""
        self.grow_quietly = False
        """Taken back because the lead runs short, not because a frame came late: there is
        time to add the frame in a long silence (the sink reads and clears it)."""
        self._late_seen = 0
        self._spares: list[float] = []
        """The last windows' leads with one frame held."""

    def choose(self, floor: int, late: int) -> int:
        """The frames to hold after a window whose least depth before a tick was ``floor``
        samples; ``late``: the sink's count of frames that came too late, so far."""
        held = max(1, floor // FRAME_SAMPLES)  # a part frame held is delay, not safety
        spares = self._spares
        spares.append(self.lead - (held - 1) * FRAME_MS / 1000)  # the latest frame's, one held
        del spares[: -self.SHED_WINDOWS]
        was_late, self._late_seen = late != self._late_seen, late
        if was_late or min(spares) < self.LEAD_SPARE + (max(spares) - min(spares)):
            if self.frames < self.FRAMES:
                self.keep()
                self.grow_quietly = not was_late
            spares.clear()
        elif not self.final and (held <= 1 or len(spares) == self.SHED_WINDOWS):
            self.frames = 1  # at once when the depth holds no more: nothing to take out
        return self.frames

    def keep(self) -> None:
        """Hold :data:`FRAMES` for the rest of the call."""
        self.frames, self.final = self.FRAMES, True
