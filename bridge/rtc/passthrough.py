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
* The target's RTP stream (``rtc/rtpsend.py``'s :class:`~bridge.rtc.rtpsend.RtpStream`, the
  one owner of its sequence numbers) sends a forwarded packet with the source's number mapped
  onto its own: it keeps its distance from the others in the source's numbering, so a packet
  lost before the bridge is still a gap the far receiver sees (and rebuilds from the next
  packet's FEC), and a reordered one keeps its place. RTP timestamps follow the source's the
  same way (RFC 3550 §5.1), continuous across a switch. A packet older than the first of the
  forwarding run it arrives in is dropped and counted (:attr:`PassThrough.late`): its number
  would be one the target sent already while it encoded.
* Whether forwarding is allowed is asked per packet, both by the source's packets and by the
  target's sender (:meth:`PassThrough.permitted`), and the answer takes a walk through the
  call's conference and bus. A yes is kept for one 20 ms tick (:data:`YES_FOR`): mixing that
  starts meanwhile is heard at most one packet later. A no is asked again every time, so
  forwarding resumes at the first packet it may.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

QUEUE = 10
"""Forwarded packets waiting for the sender (200 ms); the oldest go first."""
YES_FOR = 0.02
"""Seconds (one packet) a yes of ``allowed()`` is kept without asking again."""


class PassThrough:
    """The source leg's Opus packets on their way to one target sender (module docstring)."""

    def __init__(self, allowed: Callable[[], bool]) -> None:
        self.allowed = allowed
        """Whether the target may get the source's packets as they are right now."""
        self._yes_until = 0.0
        self._queue: deque[tuple[int, int, bytes]] = deque(maxlen=QUEUE)
        self._waiter: asyncio.Future[None] | None = None
        """The sender waiting for the next packet (:meth:`next`), if it waits."""
        self.forwarded = 0
        self.switches = 0
        self.late = 0
        """Packets older than the first of the forwarding run they came in, dropped: the
        numbers they would map to went out already (the target's own encoded packets)."""

    def permitted(self) -> bool:
        """``allowed()``, a yes kept for :data:`YES_FOR` (module docstring)."""
        now = time.monotonic()
        if now < self._yes_until:
            return True
        if self.allowed():
            self._yes_until = now + YES_FOR
            return True
        return False

    def offer(self, seq: int, timestamp: int, payload: bytes) -> None:
        """A source packet as it arrived (on the event loop)."""
        if not payload:
            return
        if not self.permitted():
            self._queue.clear()
            self._wake()  # a sender waiting for a packet goes back to encoding now
            return
        self._queue.append((seq, timestamp, payload))
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self, timeout: float) -> tuple[int, int, bytes] | None:
        """The next source packet, or ``None`` if none comes within ``timeout`` seconds.

        One future and one timer handle per wait (a packet every 20 ms while forwarding), not
        ``asyncio.wait_for``'s task around an ``Event``; no wait at all for ``timeout`` 0."""
        if not self._queue:
            if timeout <= 0:
                return None
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            expiry = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                expiry.cancel()
                self._waiter = None
        return self._queue.popleft() if self._queue else None


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
