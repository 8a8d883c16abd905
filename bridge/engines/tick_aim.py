"""Aiming a PCM engine's uplink frames at the tick its clock takes them on.

An engine that speaks in 60 ms frames (ZuckZapGo's media socket) sends the peer's audio and
takes ours on its own clock. Our frames are cut from the bus's 20 ms ticks, so a 60 ms frame
can be completed on any of three ticks: the one that leaves it waiting least for the engine's
tick saves up to 40 ms of the round trip, every frame of the call. The engine's clock is not
in the protocol; when its frames arrive is. :class:`TickAim` learns that phase from the frames
the engine sends, and says when a frame completed now waits a tick or more for the engine's
tick: held a tick more it would still make it, or completed a tick sooner it would make the
engine tick it now just misses. The socket
(``socket.py``) moves its frame boundary only in a quiet frame — dropping one, or sending one
twice — so the shift is 20 ms of silence, never speech.

This helps an engine that takes our audio on the clock it sends by, as a media loop that
reads and writes each tick does (the bench's echoing engine does); an engine that takes each
frame as it comes loses nothing but the shift itself.
"""

from __future__ import annotations

from ..audio.pcm import FRAME_MS

AHEAD = 0.0015
"""Seconds a frame should reach the engine before its tick, beyond the socket's one-way
delay: the engine's reader may be a wake-up behind (our own send's lateness is in ``now``)."""


class TickAim:
    """The engine's frame clock, learnt from when its frames arrive, and where our frame
    boundary should be against it.

    ``period``: the engine's frame (s); ``opening``: how long the socket took to open (s): a
    TCP handshake and the upgrade's request and answer, two round trips, of which half bounds
    the one-way delay a frame must be sent ahead by. A frame counts only when it comes a
    period (±¼) after the one before, so a burst after a stall teaches nothing. An arrival
    earlier than predicted moves the estimate at once (the network only ever delays); a later
    one by a sixteenth (a drifting clock walks slowly, jitter does not last).
    """

    def __init__(self, period: float, opening: float = 0.0) -> None:
        self.period = period
        self.ahead = AHEAD + opening / 2
        """Seconds before the engine's tick a frame is aimed to be sent."""
        self.due: float | None = None
        """When the engine's next frame is expected (``time.monotonic()``)."""
        self._last: float | None = None
        self.shifts = 0
        """Frame boundaries moved (a quiet frame dropped or repeated)."""

    def heard(self, t: float) -> None:
        """An engine frame of one period arrived at ``t``."""
        last, self._last = self._last, t
        if last is None or abs(t - last - self.period) > self.period / 4:
            return
        due = self.due
        if due is None:
            self.due = t + self.period
            return
        err = (t - due + self.period / 2) % self.period - self.period / 2
        self.due = t + self.period if err < 0 else due + err / 16 + self.period

    def shift(self, now: float) -> int:
        """For a frame completed at ``now``: how to move the frame boundary so the next ones
        reach the engine :attr:`ahead` before its tick with less than one of our ticks to
        spare. ``-1``: drop a frame (the boundary a tick later: it would still make that
        tick); ``+1``: repeat one (a tick sooner: it makes the engine tick it now just misses,
        a whole period's wait saved for 20 ms); ``0``: where it is (also while the engine's
        clock is unknown)."""
        if self.due is None:
            return 0
        tick = FRAME_MS / 1000
        slack = (self.due - now - self.ahead) % self.period  # the wait for the engine's tick
        spare_ticks = int(slack // tick)
        if not spare_ticks:
            return 0
        return -1 if spare_ticks <= round(self.period / tick) - spare_ticks else +1
