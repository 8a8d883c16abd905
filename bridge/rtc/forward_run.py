"""A forwarding run: another leg's packets on a sender's own RTP stream, first to last.

Two senders forward: a WebRTC or Meta leg's Opus track (``rtc/tracks.py``'s ``OpusBusTrack``,
fed by ``rtc/passthrough.py``) and a trunk's phone leg (``trunks/media.py``'s
``TrunkMedia.offer``: Opus, or G.711 on Meta's G.711 road). Each alternates between its own
packets and runs of the source's, and a run has two jobs:

* **Numbering** (:class:`RunNumbering`, both senders'). The run starts where the stream stands:
  the source's sequence numbers and RTP times are mapped onto the stream's next ones,
  continuous both ways (RFC 3550 §5.1), and then keep their distances, so a loss before the
  bridge stays a gap and a reordered packet keeps its place. A packet older than the run's
  first is refused: its number went out already as the sender's own, and SRTP refuses an index
  sent twice (RFC 3711 §3.3.2). RFC 4733 events the stream numbers meanwhile move the mapping
  on.
* **Lifetime.** A run lasts while the source's packets come, until it has been quiet for
  :data:`FORWARD_WAIT` (:meth:`RunNumbering.quiet`), for both senders; when it ends, the
  sender's RTP time moves on by the ticks nobody sent (:func:`unsent_time`). Time is an input:
  a packet is placed with its arrival time and the quiet is asked with the asker's time;
  nothing here but the waiting task reads a clock. The trunk's media clock looks every tick,
  with the tick's time. A track's task has no tick while the source's receive callback
  sends the run's packets, so it waits the run out (:meth:`ForwardRun.wait_out`), with one
  timer per :data:`FORWARD_WAIT` rather than one per packet, until the source goes quiet or
  forwarding is refused.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

from ..audio import FRAME_SAMPLES, SAMPLE_RATE
from .passthrough import PassThrough
from .rtpsend import RtpStream

FORWARD_WAIT = 0.25
"""How long a forwarding run lasts past the source's last packet before the sender goes back
to encoding the bus. Longer than a few lost packets in a row: a loss must stay a gap in what
the far end receives (its receiver then uses the next packet's FEC), not become a frame the
bridge encoded from its own concealment (or, from an idle source leg, from nothing)."""
_FRAME_S = FRAME_SAMPLES / SAMPLE_RATE


def unsent_time(quiet: float, frame_ticks: int) -> int:
    """RTP time of the whole frames nobody sent while the source was ``quiet`` (seconds): the
    sender's time moves on by it, so the far end's jitter buffer sees a pause (and the stream's
    marker a new talkspurt, RFC 3551 §4.1), not packets arriving late."""
    return int(quiet / _FRAME_S) * frame_ticks


class Placed(NamedTuple):
    """Where one of the run's packets goes on the stream."""

    seq: int
    pts: int
    """The sender's RTP time."""
    newest: bool
    """No packet of the run is newer: the sender's own packets go on after this one."""


class RunNumbering:
    """One run's map from the source's numbers and times onto the stream's (module docstring)."""

    def __init__(self, seq: int, ts: int, pts: int, stream: RtpStream, at: float) -> None:
        """The run begins with the source's packet ``seq``, arrived ``at``: mapped onto the
        stream's next number and the sender's next RTP time ``pts``."""
        self._first = self._newest = seq
        self._seq_offset = stream.next_seq - seq
        self._ts_offset = pts - ts
        self._numbered_at = stream.numbered
        self.last_at = at
        """When the run's latest packet arrived (``time.monotonic()`` base)."""

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

    def place(self, seq: int, ts: int, stream: RtpStream, at: float) -> Placed:
        """The stream's number and the sender's RTP time for a packet of the run, arrived
        ``at``."""
        newest = (seq - self._newest) & 0x8000 == 0
        if newest:
            self._newest = seq
        self.last_at = at
        shift = stream.numbered - self._numbered_at
        return Placed(
            (seq + self._seq_offset + shift) & 0xFFFF, (ts + self._ts_offset) & 0xFFFFFFFF, newest
        )

    def quiet(self, now: float) -> float:
        """Seconds from the run's latest packet's arrival to ``now``."""
        return now - self.last_at


class ForwardRun:
    """A track's current forwarding run, if any, and the wait its task does while it lasts
    (module docstring)."""

    def __init__(self) -> None:
        self.source: PassThrough | None = None
        """The pass-through the run's packets come from (a transfer starts a new run)."""
        self.numbering: RunNumbering | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def active(self) -> bool:
        return self.numbering is not None

    def numbering_for(self, source: PassThrough) -> RunNumbering | None:
        """The run's numbering when ``source``'s packets continue it."""
        return self.numbering if source is self.source else None

    def start(
        self, source: PassThrough, seq: int, ts: int, pts: int, stream: RtpStream, at: float
    ) -> RunNumbering:
        """A run of ``source``'s packets begins with packet ``seq``, arrived ``at``
        (:class:`RunNumbering`)."""
        self.source = source
        source.switches += 1
        self.numbering = RunNumbering(seq, ts, pts, stream, at)
        return self.numbering

    async def wait_out(self) -> float:
        """The sender's task, while the run lasts: wait until the source is quiet for
        :data:`FORWARD_WAIT` or forwarding is refused, then end the run. Returns how long the
        source had been quiet when it was for that long (the ticks nobody sent), else 0."""
        loop = asyncio.get_running_loop()
        while (numbering := self.numbering) is not None:
            source = self.source
            # The task is the shell that reads the clock, once a wake (the run's packets bring
            # their arrival times; the numbering and the pass-through read none).
            now = time.monotonic()
            quiet = numbering.quiet(now)
            if source is None or quiet >= FORWARD_WAIT or not source.permitted(now):
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
        self.numbering = None
        self.wake()

    def wake(self) -> None:
        """Let the waiting task look again (forwarding was refused)."""
        if self._waiter is not None:
            _set_done(self._waiter)


def _set_done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
