"""An agent's voice on the call: the model's audio, resampled to the bus's 16 kHz and queued
as one bus source, with what the caller has heard of each response item counted in the
frames the bus really took (so ``audio_end_ms`` is what was played, not what was received).

A full-duplex model's one continuous real-time stream (GPT-Live: ``duplex_buffer_ms``) is not
queued but played through a small :class:`~bridge.audio.JitterBuffer`
(:class:`StreamedSource`): when the stream turns silent, its voice is gone from the call
within that buffer's depth.
"""

from __future__ import annotations

import logging

import numpy as np

from ..attachments.queued_source import QueuedSource
from ..audio import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, JitterBuffer, Reframer, Resampler
from ..audio.pcm import Pcm
from ..media import BusStats

log = logging.getLogger(__name__)

LIMIT_MS = 60_000
"""Model audio queued ahead of the caller (models send faster than real time)."""
CUT_ITEMS = 16
"""Interrupted items remembered, so their late deltas are not played."""


STREAM_TARGET_FRAMES = 3
"""Frames (60 ms) a continuous stream's jitter buffer holds before it plays, at the start and
after an underrun (it grows by one per underrun, to at most one frame under its bound)."""


WARN_DROPPED = 10
"""Frames of a continuous stream dropped before it is reported: a few go at a session change
(the old stream's tail meets the new one's start); more mean a stream faster than real time."""


class StreamedSource:
    """An ``UplinkSource`` for a model's continuous real-time stream: reframed to 20 ms and
    played through a :class:`~bridge.audio.JitterBuffer` of at most ``max_ms`` (beyond it the
    oldest audio goes, counted in ``source_frames_dropped`` and logged once: the stream came
    faster than real time). The same face as :class:`QueuedSource` where the voice uses it."""

    to_downlink = False

    def __init__(self, *, max_ms: int, stats: BusStats, where: str = "") -> None:
        capacity = max(STREAM_TARGET_FRAMES + 1, max_ms // FRAME_MS)
        most = min(STREAM_TARGET_FRAMES + 1, capacity - 1)
        self._jitter: JitterBuffer[Pcm] = JitterBuffer(
            min_target=min(2, STREAM_TARGET_FRAMES),
            target=STREAM_TARGET_FRAMES,
            max_target=most,
            slack=capacity - most,  # trimmed only past the bound
            capacity=capacity,
        )
        self._reframer = Reframer(FRAME_SAMPLES)
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.stats = stats
        self.where = where
        self.max_ms = capacity * FRAME_MS
        self.played_frames = 0
        self.closed = False
        self._dropped = 0

    @property
    def buffered_ms(self) -> int:
        return len(self._jitter) * FRAME_MS

    def push(self, pcm: Pcm) -> None:
        if self.closed:
            return  # off the bus (the agent is closing): nothing will play it
        for frame in self._reframer.push(pcm):
            self._jitter.push(frame)
        self._count_drops()

    def next_frame(self) -> Pcm | None:
        if self.closed:
            return None
        frame = self._jitter.pop()
        self._count_drops()
        if frame is None:
            return self._silence
        self.played_frames += 1
        return frame

    def _count_drops(self) -> None:
        j = self._jitter.stats
        dropped = j.overflow_drops + j.latency_drops
        if dropped > self._dropped:
            if self._dropped < WARN_DROPPED <= dropped:
                log.warning(
                    "%s: the model's stream came faster than real time: its oldest audio is "
                    "dropped to keep the voice within %d ms (BRIDGE_AGENT_OPENAI_LIVE_BUFFER_MS)",
                    self.where,
                    self.max_ms,
                )
            self.stats.source_frames_dropped += dropped - self._dropped
            self._dropped = dropped

    def clear(self) -> int:
        dropped = len(self._jitter)
        self._jitter.clear()
        self._reframer.clear()
        return dropped

    def finished(self) -> None:
        self.closed = True
        self.clear()


class AgentVoice:
    """The model's voice: :meth:`push` its audio, :meth:`cut` it on a barge-in."""

    def __init__(
        self, rate: int, stats: BusStats, *, stream_ms: int | None = None, where: str = ""
    ) -> None:
        """``stream_ms``: the model sends one continuous real-time stream, played through a
        jitter buffer of at most that many ms (module docstring); ``None``: replies, queued."""
        self.rate = rate
        self.source: QueuedSource | StreamedSource = (
            QueuedSource(max_ms=LIMIT_MS, stats=stats)
            if stream_ms is None
            else StreamedSource(max_ms=stream_ms, stats=stats, where=where)
        )
        self._resampler = Resampler(SAMPLE_RATE) if rate != SAMPLE_RATE else None
        """``None`` for a 16 kHz model (xAI, Azure Voice Live): its audio is the bus's."""
        self.item = ""
        self._start = 0
        """The source's ``played_frames`` when the current item's first frame plays."""
        self._frames = 0
        self._cut: list[str] = []

    @property
    def playing(self) -> bool:
        return self.source.buffered_ms > 0

    def push(self, pcm: bytes, item: str) -> None:
        """Model audio (s16le at ``rate``) of response item ``item``."""
        if item and item in self._cut:
            return  # the caller interrupted it: what the model sent before it knew is dropped
        if item != self.item or not item:
            self.item = item
            self._start = self.source.played_frames + self.source.buffered_ms // FRAME_MS
            self._frames = 0
        raw = np.frombuffer(pcm[: len(pcm) & ~1], dtype="<i2").astype(np.int16)
        before = self.source.buffered_ms
        self.source.push(
            raw if self._resampler is None else self._resampler.resample_array(raw, self.rate)
        )
        self._frames += max(0, self.source.buffered_ms - before) // FRAME_MS

    def heard_ms(self) -> int:
        """How much of the current item the caller has been sent."""
        frames = min(max(0, self.source.played_frames - self._start), self._frames)
        return frames * FRAME_MS

    def drop(self, item: str) -> bool:
        """Play none of ``item`` (the call is held): ``True`` the first time it is dropped."""
        if not item or item in self._cut:
            return False
        self._cut = [*self._cut[-(CUT_ITEMS - 1) :], item]
        return True

    def cut(self) -> tuple[str, int, int]:
        """Stop now: (the item cut, ms of it heard, ms dropped). The next bus tick is silent."""
        item, heard = self.item, self.heard_ms()
        dropped = self.source.clear() * FRAME_MS
        if item:
            self._cut = [*self._cut[-(CUT_ITEMS - 1) :], item]
        self.item = ""
        return item, heard, dropped
