"""How much a listener's downlink sink (``frames.py`` ``DownlinkSink``) owes its delay to
follow a remote engine's clock: the decision (NetEq's ``decision_logic``); the sink stretches
by it, a pitch period at a time (its class docstring says how and where)."""

from __future__ import annotations

from ..audio.pcm import FRAME_MS, FRAME_SAMPLES
from .cushion import Cushion

DRIFT_WINDOW = 50
"""Ticks a window of the depth watch lasts (1 s)."""


class DepthWatch:
    """The smallest depth before a tick over each window of :data:`DRIFT_WINDOW` ticks while
    playing, against the :class:`Cushion`: the samples of delay owed (:attr:`debt`), and
    whether only a long silence may pay it (:attr:`in_silence`)."""

    def __init__(self, cushion: Cushion) -> None:
        self.cushion = cushion
        self.ticks = 0
        self.debt = 0
        """Samples of delay still to add (+) or remove (-) to follow the engine's clock."""
        self.debt_since = 0
        """The tick the debt was owed from."""
        self.in_silence = False
        """The debt is the cushion's frame, given up or taken back: paid in a long silence."""
        self._window_start = 0
        self._window_min = 1 << 30
        self._deep_windows = 0
        self._short_windows = 0

    def waited(self) -> float:
        """Seconds the debt has been owed."""
        return (self.ticks - self.debt_since) * FRAME_MS / 1000

    def new_window(self) -> None:
        self._window_min, self._window_start = 1 << 30, self.ticks
        self.cushion.lead = float("inf")

    def settle(self) -> None:
        """The debt is paid, or forgiven: a window starts."""
        self.debt = 0
        self.in_silence = False
        self.new_window()

    def watch(self, depth: int, playing: bool, late: int, busy: bool) -> None:
        """A tick, ``depth`` samples waiting before it, the jitter buffer ``playing`` (not
        filling); ``late``: the sink's frames that came too late so far; ``busy``: a backlog
        is being shed (the depth is not the clock's). Positional: called every tick."""
        n = FRAME_SAMPLES
        self.ticks += 1
        if self.debt or busy:
            return  # paying the last one (or a backlog): the next window starts once it is paid
        if not playing:
            # Filling, at the start or after an underrun: that depth is the fill's, not the
            # engine's clock; a window starts when the audio does.
            self.new_window()
            self._short_windows = self._deep_windows = 0
            return
        self._window_min = min(self._window_min, depth)
        if self.ticks - self._window_start < DRIFT_WINDOW:
            return
        floor = self._window_min
        target = self.cushion.choose(floor, late) * n
        self.new_window()
        self._deep_windows = self._deep_windows + 1 if floor >= target + n else 0
        self._short_windows = self._short_windows + 1 if floor < target else 0
        if floor < target:
            # A drifting clock lowers the floor a few samples a window (2000 ppm: 32); one
            # chunk that slipped a tick lowers one window's by a frame, which is what the
            # cushion is for: a shortfall that large is paid when the next window confirms it,
            # else the sink would add a frame of delay mid-speech and take it away later.
            if target - floor < n // 2 or self._short_windows >= 2:
                self.debt = target - floor  # up to the cushion
                self._short_windows = 0
                self.in_silence, self.cushion.grow_quietly = self.cushion.grow_quietly, False
        elif self._deep_windows >= 2 or (floor >= target + n and target < Cushion.FRAMES * n):
            # A frame or more beyond the cushion for two windows in a row: not the phase of
            # one late chunk (which only ever lowers a floor), the engine's clock running fast;
            # or the frame the cushion gave up, taken out only in a long silence (the sink).
            self.in_silence = self._deep_windows < 2
            self.debt = target - floor
            self._deep_windows = 0
        self.debt_since = self.ticks
