"""A forwarding run: another leg's packets on a sender's own RTP stream, first to last.

Every RTP leg's one clocked sender (``rtc/rtpsend.py``'s ``LeanSender``, playing a
``rtc/tracks.py`` ``OpusBusTrack``: a browser, a WhatsApp leg, a trunk's phone leg) forwards
another leg's packets (``rtc/passthrough.py``) from that leg's receive callback. It alternates
between its own packets and runs of the source's, and a run has two jobs:

* **Numbering** (:class:`RunNumbering`). The run starts where the stream stands: the source's
  sequence numbers and RTP times are mapped onto the stream's next ones, continuous both ways
  (RFC 3550 §5.1), and then keep their distances, so a loss before the bridge stays a gap and a
  reordered packet keeps its place. A packet older than the run's first is refused: its number
  went out already as the sender's own, and SRTP refuses an index sent twice (RFC 3711
  §3.3.2). A jump in the source's numbering (a restart) renumbers the run from the packet
  that confirms it, on the stream's next number and time (:meth:`RunNumbering.judge`, RFC 3550
  §A.1). RFC 4733 events the stream numbers meanwhile move the mapping on.
* **Lifetime** (:meth:`ForwardRun.carries`). A run carries the sender's ticks while the
  source's packets come, until it has been quiet for :data:`FORWARD_WAIT` or forwarding was
  refused and is still not permitted; when it ends, the sender's RTP time moves on by the ticks
  nobody sent (:func:`unsent_time`). Time is an input: a packet is placed with its arrival time,
  and the sender's tick asks with the tick's time; nothing here reads a clock, and nothing
  waits. While only the source's quiet can end the run, its earliest end is known
  (:meth:`ForwardRun.carried_until`): the sender rests off the clock until that tick
  (``rtc/rtpsend.py``), and is woken when the run ends sooner.
"""

from __future__ import annotations

from ..audio import FRAME_SAMPLES, SAMPLE_RATE
from .passthrough import PassThrough
from .rtpsend import RtpStream

FORWARD_WAIT = 0.25
"""How long a forwarding run lasts past the source's last packet before the sender goes back
to encoding the bus. Longer than a few lost packets in a row: a loss must stay a gap in what
the far end receives (its receiver then uses the next packet's FEC), not become a frame the
bridge encoded from its own concealment (or, from an idle source leg, from nothing)."""
_FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
MAX_DROPOUT = 3000
"""Source packets a run's newest may be followed by at most, ahead of it (RFC 3550 §A.1's
``MAX_DROPOUT``); further is a jump (:meth:`RunNumbering.judge`)."""
MAX_MISORDER = 100
"""Source packets a reordered one may be behind the run's newest at most (RFC 3550 §A.1's
``MAX_MISORDER``: two seconds late, of no use to a receiver, and within the sender's SRTP
replay window, 128 at its smallest); further is a jump (:meth:`RunNumbering.judge`)."""
_FOLLOWS = 0x10000 - MAX_DROPOUT
PLACE, LATE, JUMP, RESYNC = "place", "late", "jump", "resync"
"""What :meth:`RunNumbering.judge` says of a packet off the common path."""


def unsent_time(quiet: float, frame_ticks: int) -> int:
    """RTP time of the whole frames nobody sent while the source was ``quiet`` (seconds): the
    sender's time moves on by it, so the far end's jitter buffer sees a pause (and the stream's
    marker a new talkspurt, RFC 3551 §4.1), not packets arriving late."""
    return int(quiet / _FRAME_S) * frame_ticks


class RunNumbering:
    """One run's map from the source's numbers and times onto the stream's (module docstring)."""

    def __init__(self, seq: int, ts: int, pts: int, stream: RtpStream, at: float) -> None:
        """The run begins with the source's packet ``seq``, arrived ``at``: mapped onto the
        stream's next number and the sender's next RTP time ``pts``."""
        self.resync(seq, ts, pts, stream)
        self.last_at = at
        """When the run's latest packet arrived (``time.monotonic()`` base)."""

    def resync(self, seq: int, ts: int, pts: int, stream: RtpStream) -> None:
        """Map the source's packet ``seq`` (its RTP time ``ts``) onto the stream's next number
        and the sender's next RTP time ``pts``, and the run's later packets by their distance
        from it: the run's start, and its restart after a jump (:meth:`judge`)."""
        self._first = self._newest = seq
        self._seq_offset = stream.next_seq - seq
        self._ts_offset = pts - ts
        self._numbered_at = stream.numbered
        self._restart = -1
        """The number that, next, confirms a jump as the source's restart (none: -1)."""

    def follows(self, seq: int) -> bool:
        """Whether source packet ``seq`` is newer than the run's newest by at most
        :data:`MAX_DROPOUT` (serial numbers, RFC 1982): :meth:`place` takes it as it is. The
        forwarding route's common path, one comparison; anything else :meth:`judge` says."""
        return (self._newest - seq) & 0xFFFF >= _FOLLOWS

    def judge(self, seq: int, ts: int, pts: int, stream: RtpStream) -> str:
        """What becomes of source packet ``seq`` (RTP time ``ts``) that does not follow the
        newest (:meth:`follows`; ``pts``: the sender's next RTP time): ``PLACE`` (reordered
        within the run), ``LATE`` (its number went out already, and SRTP refuses an index sent
        twice, RFC 3711 §3.3.2: the newest again, a duplicate the network made, which a plain
        RTP source such as a phone passes on; or older than the run's first, sent as the
        sender's own), ``JUMP`` (dropped, see below), or ``RESYNC`` (placed, the run
        renumbered from it).

        A jump is more than :data:`MAX_DROPOUT` ahead of the newest or :data:`MAX_MISORDER`
        behind it: not a loss or a reorder (a live run hears its source every
        :data:`FORWARD_WAIT` at least), but a source that restarted its numbering. Mapped
        through the run's offsets, it would go out as a gap of thousands of packets, or as a
        number the sender's SRTP refuses as too old (behind its replay window: 128 packets for
        an SDES leg, libsrtp's default; 1024 for a DTLS one, aiortc's): a failure that ends
        forwarding into the sender for the rest of the call. As RFC 3550 §A.1 does, the
        packet is dropped, and when the next one follows it, the source restarted: the run goes
        on from that one, on the stream's next number and RTP time (continuous both ways, its
        payload as it came). A lone stray is dropped and nothing else changes."""
        behind = (self._newest - seq) & 0xFFFF
        if behind <= MAX_MISORDER:  # the newest again (a duplicate), or a reordered one
            return LATE if not behind or behind > (self._newest - self._first) & 0xFFFF else PLACE
        if seq != self._restart:
            self._restart = (seq + 1) & 0xFFFF
            return JUMP
        self.resync(seq, ts, pts, stream)
        return RESYNC

    def place(self, seq: int, ts: int, stream: RtpStream, at: float) -> tuple[int, int, bool]:
        """Where a packet of the run, arrived ``at``, goes on the stream: its number, the
        sender's RTP time, and whether no packet of the run is newer (the sender's own packets
        go on after it). A plain tuple: this runs for every forwarded packet."""
        newest = (seq - self._newest) & 0x8000 == 0
        if newest:
            self._newest = seq
        self.last_at = at
        shift = stream.numbered - self._numbered_at
        return (
            (seq + self._seq_offset + shift) & 0xFFFF,
            (ts + self._ts_offset) & 0xFFFFFFFF,
            newest,
        )

    def quiet(self, now: float) -> float:
        """Seconds from the run's latest packet's arrival to ``now``."""
        return now - self.last_at


class ForwardRun:
    """A sender's current forwarding run, if any, and whether it carries a tick (module
    docstring)."""

    def __init__(self) -> None:
        self.source: PassThrough | None = None
        """The pass-through the run's packets come from (a transfer starts a new run)."""
        self.numbering: RunNumbering | None = None
        self.refused = False
        """Forwarding was refused since the run's last packet (mixing began): the next tick
        asks the pass-through again."""

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
        self.refused = False
        source.switches += 1
        self.numbering = RunNumbering(seq, ts, pts, stream, at)
        return self.numbering

    def carries(self, now: float) -> float | None:
        """The sender's tick at ``now``, while a run is active: ``None`` while the run's
        packets carry the tick (a lost one stays a gap); else the run ends here and this returns
        how long the source had been quiet when that was :data:`FORWARD_WAIT` or more (the
        ticks nobody sent), else 0 (forwarding refused and still not permitted at ``now``)."""
        numbering, source = self.numbering, self.source
        if numbering is None:
            return 0.0
        quiet = numbering.quiet(now)
        if source is not None and quiet < FORWARD_WAIT:
            if not self.refused:
                return None
            if source.permitted(now):  # allowed again since: the run goes on
                self.refused = False
                return None
        if source is not None:
            source.switches += 1
        self.end()
        return quiet if quiet >= FORWARD_WAIT else 0.0

    def carried_until(self) -> float | None:
        """While the run carries the ticks and only its source's quiet can end it (no refusal
        waiting to be asked again): the time that will, its latest packet's arrival plus
        :data:`FORWARD_WAIT` (a tick before it finds the run carrying, whatever comes); else
        ``None``."""
        numbering = self.numbering
        if numbering is None or self.source is None or self.refused:
            return None
        return numbering.last_at + FORWARD_WAIT

    def end(self) -> None:
        """No run any more (a transfer, a key press waiting, the track stopped, a failure): the
        sender's next tick sends its own packets."""
        self.numbering = None
        self.refused = False
