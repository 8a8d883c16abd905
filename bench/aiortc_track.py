"""The bridge's track played by aiortc's own sender: the quality bench's far-end peers
(``bench/quality_paths.py`` ``Browser``), whose ``RTCPeerConnection`` sends what an
:class:`~bridge.rtc.tracks.OpusBusTrack` encodes.

The bridge itself sends every leg through its one clocked sender (``rtc/rtpsend.py``
``LeanSender``, which ticks ``OpusBusTrack.packets`` on the media clock's ``SEND`` phase);
aiortc's sender reads a track by ``recv`` instead, one packet a call, each with ``bytes()``,
``pts`` and ``time_base``. That path lives here, in the bench, not in ``bridge/``.
"""

from __future__ import annotations

import fractions
import time
from collections import deque
from typing import Any

from aiortc import MediaStreamError

from bridge.media.clock import WorkerClock, worker_clock
from bridge.media.ports import FrameSource
from bridge.rtc.rtpsend import OPUS_CLOCK
from bridge.rtc.tracks import OpusBusTrack

_RTP_TIME_BASE = fractions.Fraction(1, OPUS_CLOCK)
"""Opus' RTP clock (RFC 7587 §4.1): a packet stamped on it needs no conversion in aiortc."""


class AiortcPacket:
    """One encoded packet as aiortc's sender reads it (``bytes()``, ``pts``, ``time_base``).

    Stands in for ``av.Packet``, which copies the payload into an FFmpeg buffer and builds a
    new ``Fraction`` on every ``time_base`` read; with ``time_base`` the very object aiortc
    compares against, its ``convert_timebase`` does no ``Fraction`` arithmetic either.
    """

    __slots__ = ("data", "pts")
    time_base = _RTP_TIME_BASE

    def __init__(self, data: bytes, pts: int) -> None:
        self.data = data
        self.pts = pts

    def __bytes__(self) -> bytes:
        return self.data


class WorkerPacer:
    """A track's place on a worker clock where aiortc's own sender reads it (``recv``).

    The first frame at once (a WhatsApp-side sender's first packet must not wait: Meta sends
    nothing before it), then one per tick; a track that missed ticks (its sender was held up)
    takes the missed ones at once, up to ``resync`` ticks, then rejoins the clock where it is.
    ``clock``: the worker's unless given (a simulated far end's, which keeps its own time).
    """

    def __init__(self, resync: int = 10, clock: WorkerClock | None = None) -> None:
        self.resync = resync
        self.clock = clock
        self.ticks = -1
        """The latest tick's index, 0 at the first."""
        self._served: int | None = None

    async def tick(self) -> None:
        clock = self.clock or worker_clock()
        served = self._served
        if served is None:
            self._served = clock.n  # the first frame goes at once (Meta waits for it)
        elif 0 < clock.n - served <= self.resync:
            self._served = served + 1
        else:
            self._served = await clock.next_tick()
        self.ticks += 1


class AiortcTrack(OpusBusTrack):
    """An :class:`OpusBusTrack` read by aiortc's own sender: :meth:`recv` asks
    ``OpusBusTrack.packets`` once per tick of ``pacer`` (the worker clock's unless given: a
    drifting far end's own) and hands the tick's packets over one a call. Plain Opus only:
    aiortc's sender packs neither RED nor RFC 4733 events from a track."""

    def __init__(self, sink: FrameSource, *, pacer: WorkerPacer | None = None, **kw: Any) -> None:
        super().__init__(sink, **kw)
        self.pacer = pacer or WorkerPacer()
        self._pending: deque[AiortcPacket] = deque()
        """A tick's packets :meth:`recv` has not returned yet (one a call; at most a tick's)."""

    async def recv(self) -> AiortcPacket:  # type: ignore[override]
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._pending:
                return self._pending.popleft()
            await self.pacer.tick()
            now = time.monotonic()  # the pacer is the shell
            self._pending.extend(AiortcPacket(p.data, p.pts) for p in self.packets(now))
