"""An agent's voice on the call: the model's audio, resampled to the bus's 16 kHz and queued
as one bus source, with what the caller has heard of each response item counted in the
frames the bus really took (so ``audio_end_ms`` is what was played, not what was received).
"""

from __future__ import annotations

import numpy as np

from ..attachments.queued_source import QueuedSource
from ..audio import FRAME_MS, SAMPLE_RATE, Resampler
from ..media import BusStats

LIMIT_MS = 60_000
"""Model audio queued ahead of the caller (models send faster than real time)."""
CUT_ITEMS = 16
"""Interrupted items remembered, so their late deltas are not played."""


class AgentVoice:
    """The model's voice: :meth:`push` its audio, :meth:`cut` it on a barge-in."""

    def __init__(self, rate: int, stats: BusStats) -> None:
        self.rate = rate
        self.source = QueuedSource(max_ms=LIMIT_MS, stats=stats)
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
