"""When what a listener's downlink sink holds (``frames.py`` ``DownlinkSink``) is a backlog to
shed fast: a remote engine's stall released at once (its socket, or the worker, held the
frames back; they come together), not the clock drift the sink follows a period at a time.

The decision only; the shedding is the one the Opus receiver's backlog gets
(``bridge.audio.stretch.PlayoutFifo.rush``, NetEq's fast accelerate: whole frames of a
pause, then voiced speech a period at a time after :data:`~bridge.audio.delay.RUSH_PATIENCE`),
never a whole frame of sound dropped.
"""

from __future__ import annotations

from collections import deque

from ..audio.delay import RUSH_PATIENCE
from ..audio.pcm import FRAME_SAMPLES

RUSH_ABOVE = 8 * FRAME_SAMPLES
"""Samples beyond the cushion at which what waits is a backlog (160 ms; a stall of about that
or more): where the jitter buffer began to drop whole frames before (two frames of target,
three of slack and five more), so the smaller bursts of an engine on a busy host (its process
stalled, then caught up: the quality bench's stand-in) stay the depth watch's, as they were.
(Five frames scored the same on the bench, within what the host's load moves it.)"""
FLOOR_TICKS = 3
"""Ticks whose least depth is the one compared (an engine's 60 ms chunk: what waits swings by
two frames between its chunks, and only the floor under the swing is delay to shed)."""


class Backlog:
    """Whether the sink rushes now, how much, and whether voiced speech may go."""

    def __init__(self) -> None:
        self.since: float | None = None
        """When the current rush began (``None``: none)."""
        self._levels: deque[int] = deque(maxlen=FLOOR_TICKS)
        """The last ticks' depths beyond the cushion, plus what was shed before each."""
        self._shed = 0

    def owed(self, excess: int, least: int, now: float) -> int:
        """Samples to shed at ``now``, the depth before this tick ``excess`` samples beyond
        the cushion: the least of the last :data:`FLOOR_TICKS` ticks' once it passes
        :data:`RUSH_ABOVE`, until less than ``least`` is left (the longest period: less may hold
        none that repeats; the sink's depth watch sheds what is left, if a frame)."""
        levels, shed = self._levels, self._shed
        if self.since is None and excess <= RUSH_ABOVE:
            if levels:  # (most ticks: no floor over the line for FLOOR_TICKS from here)
                levels.clear()
            return 0
        levels.append(excess + shed)
        if self.since is None:
            if len(levels) < FLOOR_TICKS:
                return 0
            self.since = now
        floor = min(levels) - shed
        if floor < least:
            self.since = None
            return 0
        return floor

    def shed(self, samples: int) -> None:
        """What the rush removed this tick (the depths before it are that much less now)."""
        self._shed += samples

    def voiced(self, now: float) -> bool:
        """Voiced speech may lose periods too (the rush is :data:`RUSH_PATIENCE` old)."""
        return self.since is not None and now - self.since >= RUSH_PATIENCE

    def clear(self) -> None:
        self.since = None
        self._levels.clear()
