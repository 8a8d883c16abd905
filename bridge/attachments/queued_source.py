"""Server-side media access: audio queued into a call by a client (the call's PCM WebSocket or
a two-way media fork), with marks, ``clear`` and buffer watermarks."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..audio import FRAME_MS, FRAME_SAMPLES, Reframer
from ..audio.pcm import Pcm
from ..media import BusStats

log = logging.getLogger(__name__)


MAX_MARKS = 1000
"""Marks one client may have waiting."""


@dataclass(frozen=True)
class Mark:
    name: str


class QueuedSource:
    """An ``UplinkSource`` fed by a client: audio of any length in, one 20 ms frame per tick out.

    * ``push`` reframes the client's audio into bus frames and queues them (bounded: beyond
      ``max_ms`` the oldest audio is dropped and counted, said once at WARNING for ``where``
      and its count at the end);
    * ``mark(name)`` is acknowledged through ``on_mark(name, "played")`` once every frame queued
      before it has been played into the call — at once if nothing is queued;
    * ``clear()`` drops all queued audio and the reframer's partial frame at once; marks still
      waiting are acknowledged as ``"cleared"``, never as played;
    * ``on_buffer(ms)`` is called when the queued audio crosses the high watermark going up or
      the low one going down (backpressure for the client).
    """

    def __init__(
        self,
        *,
        to_downlink: bool = False,
        max_ms: int = 10_000,
        low_ms: int = 200,
        high_ms: int = 2_000,
        on_mark: Callable[[str, str], None] | None = None,
        on_buffer: Callable[[int], None] | None = None,
        stats: BusStats | None = None,
        where: str = "a queued source",
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        """``on_dropped``: told of the frames dropped past ``max_ms``, which it counts and
        says (by default they are a client's audio: the call's ``source_frames_dropped``,
        said once at WARNING)."""
        self.to_downlink = to_downlink
        self.where = where
        """Whose audio it queues, for the log (``call …: PCM socket …``)."""
        self.dropped_frames = 0
        """Frames dropped because the client sent more than ``max_ms`` ahead."""
        self.max_frames = max_ms // FRAME_MS
        self.low_ms = low_ms
        self.high_ms = high_ms
        self._items: deque[Pcm | Mark] = deque()
        self._frames = 0
        self._marks = 0
        self._reframer = Reframer(FRAME_SAMPLES)
        self._on_mark = on_mark
        self._on_buffer = on_buffer
        self._above = False
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.closed = False
        self.quiet = False
        """While set (a talking socket's call on hold), its audio still plays out in time
        (the queue drained, marks answered) but as silence: the held caller hears none of it."""
        self.stats = stats if stats is not None else BusStats()
        self._on_dropped = on_dropped
        self.played_frames = 0

    @property
    def buffered_ms(self) -> int:
        return self._frames * FRAME_MS

    def push(self, pcm: Pcm) -> None:
        for frame in self._reframer.push(pcm):
            self._items.append(frame)
            self._frames += 1
        dropped = 0
        while self._frames > self.max_frames:
            item = self._items.popleft()
            if isinstance(item, Mark):
                self._ack(item.name, "cleared")
            else:
                self._frames -= 1
                dropped += 1
        if dropped:
            self._dropped(dropped)
        self._watermarks()

    def _dropped(self, frames: int) -> None:
        if self._on_dropped is not None:  # not a client's audio: its owner counts and says it
            self._on_dropped(frames)
        elif not self.dropped_frames:  # once: a client that keeps too far ahead drops every push
            log.warning(
                "%s: the client sent audio more than %d ms ahead of the call; its oldest "
                "queued audio is dropped (pace it by what plays: buffer and mark messages)",
                self.where,
                self.max_frames * FRAME_MS,
            )
        if self._on_dropped is None:
            self.stats.source_frames_dropped += frames
        self.dropped_frames += frames

    def mark(self, name: str) -> bool:
        """Queue a mark behind the audio so far; False when too many marks wait already."""
        if self._reframer.pending:
            # The tail shorter than a frame belongs before the mark: pad it and queue it.
            self.push(np.zeros(FRAME_SAMPLES - self._reframer.pending, dtype=np.int16))
        if self.closed or self._frames == 0:
            if self._on_mark is not None:
                self._on_mark(name, "cleared" if self.closed else "played")
            return True
        if self._marks >= MAX_MARKS:
            return False
        self._marks += 1
        self._items.append(Mark(name))
        return True

    def clear(self) -> int:
        """Drop every queued frame (and the partial one); returns how many frames went."""
        dropped = self._frames
        for item in self._items:
            if isinstance(item, Mark):
                self._ack(item.name, "cleared")
        self._items.clear()
        self._frames = 0
        self._reframer.clear()
        self._watermarks()
        return dropped

    def next_frame(self) -> Pcm | None:
        if self.closed:
            return None
        frame: Pcm = self._silence
        if self._frames:
            while self._items and isinstance(self._items[0], Mark):
                self._ack(self._items.popleft().name, "played")  # type: ignore[union-attr]
            item = self._items.popleft()
            assert not isinstance(item, Mark)
            frame = item
            self._frames -= 1
            self.played_frames += 1
            # Marks right behind the frame just played are now due.
            while self._items and isinstance(self._items[0], Mark):
                self._ack(self._items.popleft().name, "played")  # type: ignore[union-attr]
            self._watermarks()
        return self._silence if self.quiet else frame

    def finished(self) -> None:
        if self.dropped_frames and not self.closed:
            log.info(
                "%s: %d ms of the client's audio were dropped, sent too far ahead",
                self.where,
                self.dropped_frames * FRAME_MS,
            )
        self.closed = True
        for item in self._items:
            if isinstance(item, Mark):
                self._ack(item.name, "cleared")
        self._items.clear()
        self._frames = 0

    def _ack(self, name: str, status: str) -> None:
        self._marks = max(0, self._marks - 1)
        if self._on_mark is not None:
            self._on_mark(name, status)

    def _watermarks(self) -> None:
        ms = self.buffered_ms
        if not self._above and ms >= self.high_ms:
            self._above = True
            if self._on_buffer is not None:
                self._on_buffer(ms)
        elif self._above and ms <= self.low_ms:
            self._above = False
            if self._on_buffer is not None:
                self._on_buffer(ms)
