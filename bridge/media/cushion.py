"""How many frames a listener's downlink sink holds against a remote engine's jitter
(``frames.py`` ``DownlinkSink``), from how early the engine's frames come."""

from __future__ import annotations

from ..audio.pcm import FRAME_MS, FRAME_SAMPLES


class Cushion:
    """How many frames a :class:`DownlinkSink` keeps its depth at: one while the engine's
    frames come early enough, else :data:`FRAMES`.

    An engine next to the worker sends its chunks on a steady clock, and a second frame held is
    20 ms of delay that nothing needs; one across a network, or on a busy host, sends them with
    jitter, and a frame that slips a tick must still find one held. So, as a browser's NetEq
    sizes its buffer from measured arrivals, a call starts with one frame held and takes the
    second at the first window whose latest frame would not have come :data:`LEAD_SPARE` before
    its tick with one held, plus the spread of that lead over the last
    :data:`SPREAD_WINDOWS` windows (the jitter seen), or in which a frame came too late
    (bridged or concealed). It keeps the second for the rest of the call: a frame taken out
    again mid-call is a jump in the delay that a listener (and PESQ-WB) hears, and an engine
    that was late once will be again.
    """

    FRAMES = 2
    """Frames held once the frames do not lead: a frame that slips a tick still finds one
    (docs/quality.md, *Delay*: 1.5 saved 18 ms of downlink transit but scored lower downlink
    PESQ on a loaded machine)."""
    LEAD_SPARE = 0.0025
    """Seconds the latest frame of a window must have come before its tick, one frame held,
    beyond the spread of that lead: a wake-up's lateness (an engine next to the worker spreads
    it by under a millisecond; a busy or distant one by more)."""
    SPREAD_WINDOWS = 4

    def __init__(self) -> None:
        self.frames = 1
        """Frames the depth is kept at now."""
        self.lead = float("inf")
        """The least time a frame fed this window waited between arriving and its tick (the
        sink keeps it)."""
        self._late_seen = 0
        self._spares: list[float] = []
        """The last windows' leads with one frame held."""

    def choose(self, floor: int, late: int) -> int:
        """The frames to hold after a window whose least depth before a tick was ``floor``
        samples; ``late``: the sink's count of frames that came too late, so far."""
        if self.frames >= self.FRAMES:
            return self.frames
        held = max(1, floor // FRAME_SAMPLES)  # a part frame held is delay, not safety
        spares = self._spares
        spares.append(self.lead - (held - 1) * FRAME_MS / 1000)  # the latest frame's, one held
        del spares[: -self.SPREAD_WINDOWS]
        was_late, self._late_seen = late != self._late_seen, late
        if was_late or min(spares) < self.LEAD_SPARE + (max(spares) - min(spares)):
            self.frames = self.FRAMES
        return self.frames
