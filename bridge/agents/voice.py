"""An agent's voice on the call: the model's audio, resampled to the bus's 16 kHz and queued
as one bus source, with what the caller has heard of each response item counted in the
frames the bus really took (so ``audio_end_ms`` is what was played, not what was received).

A full-duplex model's one continuous real-time stream (GPT-Live: ``duplex_buffer_ms``) is not
queued but played through the one receiver (:class:`StreamedSource`, ``audio/receiver.py``),
at the delay its jitter needs: when the stream turns silent, its voice is gone from the call
within that delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import numpy as np

from ..attachments.queued_source import QueuedSource
from ..audio import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, Reframer, Resampler
from ..audio.pcm import Pcm
from ..audio.phone_codecs import Pcm16Decoder
from ..audio.receiver import Receiver
from ..media import BusStats
from ..media.clock import WorkerClock, worker_clock

log = logging.getLogger(__name__)

LIMIT_MS = 60_000
"""Model audio queued ahead of the caller (models send faster than real time)."""
CUT_ITEMS = 16
"""Interrupted items remembered, so their late deltas are not played."""


PLAYED_OUT_S = 15.0
"""Seconds a bridge tool that takes the caller away (``tools.SAID_FIRST``) waits at most for
the agent's voice queued before it to play (a goodbye, a "please hold")."""

WARN_DROPPED = 10
"""Frames of a continuous stream dropped before it is reported: a few go at a session change
(the old stream's tail meets the new one's start); more mean a stream faster than real time."""


class StreamedSource:
    """An ``UplinkSource`` for a model's continuous real-time stream, played through the one
    receiver every RTP leg has (``audio/receiver.py``): the stream's 20 ms frames numbered by
    their place in it, each with its arrival time, so the receiver's adaptive delay follows the
    stream's real jitter (a low quantile of the frames' slack steered to a few ms: on a steady
    stream the voice plays at the next tick) and conceals a frame that comes too late, instead
    of a fixed cushion every frame waits behind. The delay never exceeds ``max_ms``: past it
    the oldest audio goes (counted in ``agent_voice_frames_dropped``, logged once: the stream came
    faster than real time). The same face as :class:`QueuedSource` where the voice uses it;
    frames are taken on the worker clock's tick (its time is the receiver's clock)."""

    to_downlink = False

    def __init__(
        self, *, max_ms: int, stats: BusStats, where: str = "", clock: WorkerClock | None = None
    ) -> None:
        self.max_ms = max(2 * FRAME_MS, max_ms - max_ms % FRAME_MS)
        self._clock = clock if clock is not None else worker_clock()
        self._reframer = Reframer(FRAME_SAMPLES)
        self._receiver = self._new_receiver()
        self._frames_in = 0
        """Frames of the stream pushed: the next one's number (its RTP-like timestamp is
        this many frames of samples)."""
        self.stats = stats
        self.where = where
        self.played_frames = 0
        self.closed = False
        self._dropped = 0

    def _new_receiver(self) -> Receiver:
        return Receiver(decoder=Pcm16Decoder(), max_delay=self.max_ms / 1000)

    @property
    def buffered_ms(self) -> int:
        return self._receiver.buffered * FRAME_MS

    def push(self, pcm: Pcm, at: float | None = None) -> None:
        """The stream's next samples, arrived ``at`` (``time.monotonic()`` base; now when
        ``None``)."""
        if self.closed:
            return  # off the bus (the agent is closing): nothing will play it
        arrival = time.monotonic() if at is None else at
        for frame in self._reframer.push(pcm):
            if self._receiver.buffered > self.max_ms // FRAME_MS:
                self._drop(self._receiver.buffered)  # the stream came faster than real time
            n = self._frames_in
            self._frames_in += 1
            self._receiver.push(
                n & 0xFFFF, (n * FRAME_SAMPLES) & 0xFFFFFFFF, frame.tobytes(), arrival
            )

    def _drop(self, frames: int) -> None:
        """Start the stream afresh from the next frame: the ``frames`` held go."""
        self._receiver = self._new_receiver()
        self._frames_in = 0
        if self._dropped < WARN_DROPPED <= self._dropped + frames:
            log.warning(
                "%s: the model's stream came faster than real time: its oldest audio is "
                "dropped to keep the voice within %d ms (BRIDGE_AGENT_OPENAI_LIVE_BUFFER_MS)",
                self.where,
                self.max_ms,
            )
        self._dropped += frames
        self.stats.agent_voice_frames_dropped += frames

    def next_frame(self) -> Pcm | None:
        if self.closed:
            return None
        receiver = self._receiver
        frame = receiver.pop(self._clock.now)  # the tick's time
        if receiver.playing:
            self.played_frames += 1
        return frame

    def clear(self) -> int:
        dropped = self._receiver.buffered
        self._receiver = self._new_receiver()
        self._frames_in = 0
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
        self.stats = stats
        self.dropped_frames = 0
        """A queued reply's frames dropped past :data:`LIMIT_MS`."""
        self.source: QueuedSource | StreamedSource = (
            QueuedSource(
                max_ms=LIMIT_MS,
                stats=stats,
                where=where or "a model's voice",
                on_dropped=self._dropped,
            )
            if stream_ms is None
            else StreamedSource(max_ms=stream_ms, stats=stats, where=where)
        )
        self._resampler = Resampler(SAMPLE_RATE) if rate != SAMPLE_RATE else None
        """``None`` for a 16 kHz model (xAI, Azure Voice Live): its audio is the bus's."""
        self.item = ""
        """The item pushed last."""
        self._items: deque[list[Any]] = deque(maxlen=CUT_ITEMS)
        """The items queued since the last cut, ``[item, first frame, frames]`` each: the
        source's ``played_frames`` when its first frame plays, and how many it queued. A
        response may hold several (a reasoning model's preamble, then its answer, queued while
        the preamble plays): a cut is told for the one the caller was hearing."""
        self._cut: list[str] = []
        self._odd = b""
        """The last chunk's odd byte: the first half of a sample the next chunk completes (a
        provider may split its int16 stream anywhere)."""

    def _dropped(self, frames: int) -> None:
        """A queued reply's oldest frames dropped past :data:`LIMIT_MS`: the model's voice
        (not a client's audio), said once."""
        if not self.dropped_frames:
            log.warning(
                "%s: the model sent its voice more than %d s ahead of the call; its oldest "
                "queued audio is dropped",
                self.source.where,
                LIMIT_MS // 1000,
            )
        self.dropped_frames += frames
        self.stats.agent_voice_frames_dropped += frames

    @property
    def playing(self) -> bool:
        return self.source.buffered_ms > 0

    def push(self, pcm: bytes, item: str) -> None:
        """Model audio (s16le at ``rate``) of response item ``item``."""
        if item and item in self._cut:
            return  # the caller interrupted it: what the model sent before it knew is dropped
        if item != self.item or not item:
            self.item = item
            start = self.source.played_frames + self.source.buffered_ms // FRAME_MS
            self._items.append([item, start, 0])
            self._odd = b""  # a half sample of the last item: not this one's
        if self._odd:
            pcm = self._odd + pcm
        whole = len(pcm) & ~1
        self._odd = pcm[whole:]
        raw = np.frombuffer(pcm[:whole], dtype="<i2").astype(np.int16)
        before = self.source.buffered_ms
        self.source.push(
            raw if self._resampler is None else self._resampler.resample_array(raw, self.rate)
        )
        self._items[-1][2] += max(0, self.source.buffered_ms - before) // FRAME_MS

    async def played_out(self) -> None:
        """Wait until the voice queued now has played to the caller (at most
        :data:`PLAYED_OUT_S`; a barge-in or a hold ends it sooner). A continuous stream never
        runs dry: not waited for."""
        if isinstance(self.source, StreamedSource):
            return
        for _ in range(int(PLAYED_OUT_S * 1000 / FRAME_MS)):  # a look each frame of the bus
            if not self.playing:
                return
            await asyncio.sleep(FRAME_MS / 1000)

    def drop(self, item: str) -> bool:
        """Play none of ``item`` (the call is held): ``True`` the first time it is dropped."""
        if not item or item in self._cut:
            return False
        self._cut = [*self._cut[-(CUT_ITEMS - 1) :], item]
        return True

    def cut(self) -> tuple[list[tuple[str, int]], int]:
        """Stop now: the items cut, each with the ms of it the caller was sent — the one they
        were hearing first, then those queued after it (none of them heard: 0) — and the ms
        dropped. The next bus tick is silent."""
        played = self.source.played_frames
        begun = [e for e in self._items if e[1] <= played]
        now = begun[-1] if begun else (self._items[0] if self._items else None)
        cut = [] if now is None else [(now[0], max(0, min(played - now[1], now[2])) * FRAME_MS)]
        cut += [(e[0], 0) for e in self._items if e[1] > played and e is not now and e[0]]
        dropped = self.source.clear() * FRAME_MS
        self._odd = b""
        self._cut = [*self._cut, *(item for item, _ in cut if item)][-CUT_ITEMS:]
        self.item = ""
        self._items.clear()
        return cut, dropped
