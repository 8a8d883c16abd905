"""A small adaptive jitter buffer for 20 ms bus frames on the downlink."""

from __future__ import annotations

from collections import deque
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


class JitterBuffer(Generic[T]):
    """Bounded FIFO of frames that absorbs arrival jitter before a paced playout clock.

    Playout starts once ``target`` frames are queued. On underrun the reader gets ``None``
    (play silence), the target grows by one frame (up to ``max_target``) and the buffer
    refills. After ``shrink_after`` frames without an underrun the target shrinks by one
    (down to ``min_target``). A depth that stays above ``target + slack`` is trimmed by one
    frame at a time (counted as a latency drop), so delay cannot creep up; beyond ``capacity``
    the oldest frame is dropped (an overflow).

    With ``follow_clock`` the reader follows the source's clock itself (an engine's clock
    drifts by hundreds of ppm) and sheds a backlog itself (a source that bursts far ahead):
    see ``bridge.media.frames.DownlinkSink``, which stretches the audio a pitch period at a
    time. The buffer then never trims for latency; past ``capacity`` it still drops the oldest.
    """

    def __init__(
        self,
        *,
        min_target: int = 1,
        max_target: int = 8,
        target: int = 2,
        slack: int = 3,
        capacity: int = 50,
        shrink_after: int = 500,
        follow_clock: bool = False,
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
        self.follow_clock = follow_clock

    @property
    def playing(self) -> bool:
        """Playing out (false while it fills to ``target``, at the start and after an
        underrun)."""
        return self._playing

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
        if not self.follow_clock and len(self._frames) > self.target + self.slack:
            self._frames.popleft()
            self.stats.latency_drops += 1
        self._since_underrun += 1
        if self._since_underrun >= self.shrink_after and self.target > self.min_target:
            self.target -= 1
            self._since_underrun = 0
        self.stats.played += 1
        return self._frames.popleft()

    def clear(self) -> None:
        """Drop everything queued and wait to refill."""
        self._frames.clear()
        self._playing = False
