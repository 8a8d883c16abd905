"""How many frames a listener's downlink sink holds against a remote engine's jitter
(``frames.py`` ``DownlinkSink``), from how early the engine's frames come."""

from __future__ import annotations

from ..audio.pcm import FRAME_MS, FRAME_SAMPLES


class Cushion:
    """How many frames a :class:`DownlinkSink` keeps its depth at, from how early the engine's
    frames come.

    An engine next to the worker sends its chunks on a steady clock, and a second frame held is
    20 ms of delay that nothing needs; one across a network, or on a busy host, sends them with
    jitter, and a frame that slips a tick must still find one held. So, as a browser's NetEq
    sizes its buffer from measured arrivals: one frame while the latest frame of every window
    would still have come :data:`LEAD_SPARE` before its tick with one held, plus the spread of
    that lead over the last windows (the jitter seen), :data:`FRAMES` otherwise.

    A call starts with one (a steady engine's sink then never stretches at all) and takes the
    second at the first window that does not allow one, or in which a frame came too late
    (bridged or concealed). It is given up again only after :attr:`shed_after` windows in a row
    allowed it, and only in a pause (``frames.py``); each time it is taken back the patience
    doubles, so a sink that keeps guessing wrong stops guessing.
    """

    FRAMES = 2
    """Frames held while the frames do not lead: a frame that slips a tick still finds one
    (docs/quality.md, *Delay*: 1.5 saved 18 ms of downlink transit but scored lower downlink
    PESQ on a loaded machine)."""
    LEAD_SPARE = 0.0025
    """Seconds the latest frame of a window must have come before its tick, one frame held,
    beyond the spread of that lead over the last windows: a wake-up's lateness (an engine
    next to the worker spreads it by under a millisecond; a busy or distant one by more)."""
    SHED_WINDOWS = 4
    """Windows in a row that must allow one frame before a second held is given up (doubled
    each time it is taken back, up to :data:`MAX_SHED_WINDOWS`)."""
    MAX_SHED_WINDOWS = 120

    def __init__(self) -> None:
        self.frames = 1
        """Frames the depth is kept at now."""
        self.lead = float("inf")
        """The least time a frame fed this window waited between arriving and its tick (the
        sink keeps it)."""
        self.spare_windows = 0
        """Windows in a row whose frames would have led with one frame held."""
        self.shed_after = self.SHED_WINDOWS
        self._late_seen = 0
        self._spares: list[float] = []
        """Those windows' spare leads: their spread is the jitter a frame given up must
        leave room for, beyond :data:`LEAD_SPARE`."""

    def choose(self, floor: int, late: int) -> int:
        """The frames to hold after a window whose least depth before a tick was ``floor``
        samples; ``late``: the sink's count of frames bridged or concealed so far."""
        held = max(1, floor // FRAME_SAMPLES)  # a part frame held is delay, not safety
        spare = self.lead - (held - 1) * FRAME_MS / 1000  # the latest frame's, one held
        was_late, self._late_seen = late != self._late_seen, late
        spares = self._spares
        spares.append(spare)
        del spares[: -self.shed_after]
        if was_late or min(spares) < self.LEAD_SPARE + (max(spares) - min(spares)):
            self.keep()
            return self.frames
        self.spare_windows += 1
        if self.frames > 1 and self.spare_windows >= self.shed_after:
            self.frames = 1
        return self.frames

    def keep(self) -> None:
        """Hold :data:`FRAMES` (again): the frames did not lead, or no pause came to give
        the frame up in; the patience doubles if one was held."""
        if self.frames < self.FRAMES:
            self.frames = self.FRAMES
            self.shed_after = min(2 * self.shed_after, self.MAX_SHED_WINDOWS)
        self.spare_windows = 0
