"""A small adaptive jitter buffer for 20 ms bus frames on the downlink."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class JitterStats:
    """Counters of a :class:`JitterBuffer`."""

    pushed: int = 0
    played: int = 0
    underruns: int = 0
    overflow_drops: int = 0
    latency_drops: int = 0
    inserted: int = 0
    """Frames of silence played in a pause so the depth could grow (a slow source clock)."""


class JitterBuffer(Generic[T]):
    """Bounded FIFO of frames that absorbs arrival jitter before a paced playout clock.

    Playout starts once ``target`` frames are queued. On underrun the reader gets ``None``
    (play silence), the target grows by one frame (up to ``max_target``) and the buffer
    refills. After ``shrink_after`` frames without an underrun the target shrinks by one
    (down to ``min_target``). A depth that stays above ``target + slack`` is trimmed by one
    frame at a time (counted as a latency drop), so delay cannot creep up; beyond ``capacity``
    the oldest frame is dropped (an overflow).

    Given ``quiet`` (whether a frame is a pause), the buffer follows a source whose clock runs
    faster or slower than the playout's (an engine's clock drifts by hundreds of ppm) without
    cutting or gapping speech: every ``window`` frames it looks at the smallest depth it saw
    before a pop; below ``CUSHION`` frames it plays one frame of silence in the next pause,
    above ``CUSHION + 1`` frames (one frame of hysteresis: the depth before a pop moves by one as
    a chunked source's phase slides) it skips the next quiet frame. Only a depth ``FORCED`` frames
    past ``target + slack`` is trimmed in speech.
    """

    CUSHION = 2
    FORCED = 5

    def __init__(
        self,
        *,
        min_target: int = 1,
        max_target: int = 8,
        target: int = 2,
        slack: int = 3,
        capacity: int = 50,
        shrink_after: int = 500,
        quiet: Callable[[T], bool] | None = None,
        window: int = 50,
    ) -> None:
        if not 1 <= min_target <= target <= max_target < capacity:
            raise ValueError("need 1 <= min_target <= target <= max_target < capacity")
        self.min_target = min_target
        self.max_target = max_target
        self.target = target
        self.slack = slack
        self.capacity = capacity
        self.shrink_after = shrink_after
        self._frames: deque[T] = deque()
        self._playing = False
        self._since_underrun = 0
        self.stats = JitterStats()
        self.quiet = quiet
        self.window = window
        self._pops = 0
        self._window_min = capacity
        self._want = 0
        """+1: play a frame of silence in the next pause; -1: skip the next quiet frame."""
        self._last_quiet = False

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, frame: T) -> None:
        """Queue one frame (never blocks; drops the oldest past capacity)."""
        self.stats.pushed += 1
        self._frames.append(frame)
        if len(self._frames) > self.capacity:
            self._frames.popleft()
            self.stats.overflow_drops += 1

    def pop(self) -> T | None:
        """Next frame to play, or ``None`` when the reader should play silence."""
        if not self._playing:
            if len(self._frames) < self.target:
                return None
            self._playing = True
        if not self._frames:
            self._playing = False
            self.stats.underruns += 1
            self._since_underrun = 0
            self.target = min(self.target + 1, self.max_target)
            return None
        if self.quiet is None:
            if len(self._frames) > self.target + self.slack:
                self._frames.popleft()
                self.stats.latency_drops += 1
        elif self._follow_clock():
            self.stats.inserted += 1
            return None
        self._since_underrun += 1
        if self._since_underrun >= self.shrink_after and self.target > self.min_target:
            self.target -= 1
            self._since_underrun = 0
        self.stats.played += 1
        return self._frames.popleft()

    def _follow_clock(self) -> bool:
        """The pause-aware depth control (see the class docstring); ``True`` to play one frame
        of silence now instead of the next frame."""
        assert self.quiet is not None
        frames = self._frames
        self._window_min = min(self._window_min, len(frames))
        self._pops += 1
        if self._pops % self.window == 0:
            floor, self._window_min = self._window_min, self.capacity
            if floor < self.CUSHION:
                self._want = 1
            elif floor > self.CUSHION + 1:
                self._want = -1
            else:
                self._want = 0
        if len(frames) > self.target + self.slack + self.FORCED:
            frames.popleft()  # far too deep: trim even in speech
            self.stats.latency_drops += 1
        if self._want > 0 and self._last_quiet:
            self._want = 0
            return True
        if self._want < 0 and len(frames) > 1 and self.quiet(frames[0]):
            self._want = 0
            frames.popleft()
            self.stats.latency_drops += 1
        if self._want > 0:
            self._last_quiet = self.quiet(frames[0])
        return False

    def clear(self) -> None:
        """Drop everything queued and wait to refill."""
        self._frames.clear()
        self._playing = False
