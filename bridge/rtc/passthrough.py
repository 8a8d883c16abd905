"""Opus forwarded untouched from one WebRTC leg to another (an SFU's job), when nothing mixes.

On a Cloud API call both legs speak Opus on a 48 kHz RTP clock. While the browser hears only
the WhatsApp user — one agent, no hold, no playback or supervisor mixed into what it hears —
decoding WhatsApp's packets and encoding them again for the browser costs an encoder's CPU and
a second lossy encode (docs/quality.md measures both). Instead the packets go through as they
arrived: the browser's own NetEq then does the jitter buffering, FEC and concealment with
everything the sender put in them.

* :class:`PassThrough` takes the source leg's packets as they arrive (the source's
  :class:`~bridge.rtc.uplink.Playout` calls :meth:`PassThrough.offer`; the bridge still decodes
  them, for the bus's other users: recording, forks, sockets) and hands them to the target's
  sender track (:class:`~bridge.rtc.tracks.OpusBusTrack`), which sends each as its next packet
  while :attr:`PassThrough.allowed` says nothing mixes into that direction, and encodes the
  bus otherwise — switching either way at a packet boundary.
* :class:`SequenceNumbers` owns the target sender's RTP sequence numbers (it renumbers aiortc's
  packets as they leave, before SRTP): a forwarded packet keeps its distance from the others
  in the source's numbering, so a packet lost before the bridge is still a gap the far
  receiver sees (and rebuilds from the next packet's FEC), and a reordered one keeps its place.
  RTP timestamps follow the source's the same way (RFC 3550 §5.1), continuous across a switch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .rfc4733 import is_rtcp

QUEUE = 10
"""Forwarded packets waiting for the sender (200 ms); the oldest go first."""


class SequenceNumbers:
    """Renumbers one SSRC's RTP packets as they leave ``dtls`` (see the module docstring)."""

    def __init__(self, dtls: Any, ssrc: int) -> None:
        self.ssrc = ssrc
        self.next = -1
        """The number the next packet gets (-1: keep aiortc's first one)."""
        self.override: int | None = None
        """Set just before a forwarded packet is returned to aiortc: its number."""
        original: Callable[[bytes], Awaitable[None]] = dtls._send_rtp

        async def send_rtp(data: bytes) -> None:
            if is_rtcp(data) or len(data) < 12 or int.from_bytes(data[8:12], "big") != ssrc:
                await original(data)
                return
            await original(self._renumber(data))

        dtls._send_rtp = send_rtp

    def _renumber(self, data: bytes) -> bytes:
        b = bytearray(data)
        if self.next < 0:
            self.next = int.from_bytes(b[2:4], "big")
        seq = self.next if self.override is None else self.override
        self.override = None
        b[2:4] = seq.to_bytes(2, "big")
        # Later packets continue after the highest number sent (a reordered packet, forwarded
        # with a lower number, does not move the count back).
        if (seq - self.next) & 0x8000 == 0:
            self.next = (seq + 1) & 0xFFFF
        return bytes(b)


class PassThrough:
    """The source leg's Opus packets on their way to one target sender (module docstring)."""

    def __init__(self, allowed: Callable[[], bool]) -> None:
        self.allowed = allowed
        """Whether the target may get the source's packets as they are right now."""
        self._queue: deque[tuple[int, int, bytes]] = deque(maxlen=QUEUE)
        self._ready = asyncio.Event()
        self.forwarded = 0
        self.switches = 0

    def offer(self, seq: int, timestamp: int, payload: bytes) -> None:
        """A source packet as it arrived (on the event loop)."""
        if not payload:
            return
        if not self.allowed():
            self._queue.clear()
            self._ready.set()  # a sender waiting for a packet goes back to encoding now
            return
        self._queue.append((seq, timestamp, payload))
        self._ready.set()

    async def next(self, timeout: float) -> tuple[int, int, bytes] | None:
        """The next source packet, or ``None`` if none comes within ``timeout`` seconds."""
        if not self._queue:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
        return self._queue.popleft() if self._queue else None
