"""A forwarding run: another leg's packets on a sender's own RTP stream, first to last.

A sender that forwards (``rtc/passthrough.py``; the track is ``rtc/tracks.py``'s
``OpusBusTrack``) alternates between its own encoded packets and runs of the source's. A
:class:`ForwardRun` is one such run's two jobs:

* **Numbering.** The run starts where the stream stands: the source's sequence numbers and RTP
  times are mapped onto the stream's next ones, continuous both ways (RFC 3550 §5.1), and then
  keep their distances, so a loss before the bridge stays a gap and a reordered packet keeps
  its place. A packet older than the run's first is refused: its number went out already as
  the sender's own, and SRTP refuses an index sent twice (RFC 3711 §3.3.2). RFC 4733 events
  the stream numbers meanwhile move the mapping on.
* **Lifetime.** The source's receive callback sends the run's packets; the sender's task only
  waits the run out (:meth:`ForwardRun.wait_out`), with one timer per :data:`FORWARD_WAIT`
  rather than one per packet, until the source goes quiet or forwarding is refused.
"""

from __future__ import annotations

import asyncio
import time

from .passthrough import PassThrough
from .rtpsend import RtpStream

FORWARD_WAIT = 0.25
"""How long a forwarding run lasts past the source's last packet before the sender goes back
to encoding the bus. Longer than a few lost packets in a row: a loss must stay a gap in what
the far end receives (its receiver then uses the next packet's FEC), not become a frame the
bridge encoded from its own concealment."""


class ForwardRun:
    """The current forwarding run of one sender, if any (module docstring)."""

    def __init__(self) -> None:
        self.active = False
        self.source: PassThrough | None = None
        """The pass-through this run's packets come from (a transfer starts a new run)."""
        self.last_at = 0.0
        """When the run's newest packet went out (monotonic)."""
        self._first = 0
        """The source's number of the run's first packet."""
        self._newest = 0
        self._seq_offset = 0
        self._ts_offset = 0
        self._numbered_at = 0
        """The stream's own numbered count when the run began (RFC 4733 events since shift it)."""
        self._waiter: asyncio.Future[None] | None = None

    def continues(self, source: PassThrough) -> bool:
        """Whether ``source``'s packets continue this run."""
        return self.active and source is self.source

    def older_than_first(self, seq: int) -> bool:
        """Whether source packet ``seq`` is older than the run's first.

        Only a packet older than the newest forwarded can be, and it is when it lies further
        behind the newest than the first does (serial numbers, RFC 1982: "older" is within half
        the number space). Measured from the newest, never from the first alone: after 32768
        packets (11 minutes) every new packet would look older than the first."""
        behind = (self._newest - seq) & 0xFFFF
        if behind == 0 or behind & 0x8000:  # the newest, or newer
            return False
        return behind > (self._newest - self._first) & 0xFFFF

    def start(self, source: PassThrough, seq: int, ts: int, pts: int, stream: RtpStream) -> None:
        """A run begins with this packet: mapped onto the stream's next number and the sender's
        next RTP time ``pts``."""
        self.active, self.source = True, source
        source.switches += 1
        self._ts_offset = pts - ts
        self._seq_offset = stream.next_seq - seq
        self._first = self._newest = seq
        self._numbered_at = stream.numbered

    def place(self, seq: int, ts: int, stream: RtpStream) -> tuple[int, int]:
        """The stream's sequence number and the sender's RTP time for a packet of the run."""
        if (seq - self._newest) & 0x8000 == 0:
            self._newest = seq
        self.last_at = time.monotonic()
        shift = stream.numbered - self._numbered_at
        return (seq + self._seq_offset + shift) & 0xFFFF, (ts + self._ts_offset) & 0xFFFFFFFF

    async def wait_out(self) -> float:
        """The sender's task, while the run lasts: wait until the source is quiet for
        :data:`FORWARD_WAIT` or forwarding is refused, then end the run. Returns how long the
        source had been quiet when it was for that long (the ticks nobody sent), else 0."""
        loop = asyncio.get_running_loop()
        while self.active:
            source = self.source
            quiet = time.monotonic() - self.last_at
            if source is None or quiet >= FORWARD_WAIT or not source.permitted():
                if source is not None:
                    source.switches += 1
                self.end()
                return quiet if quiet >= FORWARD_WAIT else 0.0
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(FORWARD_WAIT - quiet, _set_done, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return 0.0

    def end(self) -> None:
        """No run any more (a transfer, the track stopped, a failure): the waiting task goes on."""
        self.active = False
        self.wake()

    def wake(self) -> None:
        """Let the waiting task look again (forwarding was refused)."""
        if self._waiter is not None:
            _set_done(self._waiter)


def _set_done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
