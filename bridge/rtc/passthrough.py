"""Opus forwarded untouched from one WebRTC leg to another (an SFU's job), when nothing mixes.

On a Cloud API call both legs speak Opus on a 48 kHz RTP clock. While the browser hears only
the WhatsApp user — one agent, no hold, no playback or supervisor mixed into what it hears —
decoding WhatsApp's packets and encoding them again for the browser costs an encoder's CPU and
a second lossy encode (docs/quality.md measures both). Instead the packets go through as they
arrived: the browser's own NetEq then does the jitter buffering, FEC and concealment with
everything the sender put in them.

* :class:`PassThrough` is the hop between the source leg's receive callback (its
  :class:`~bridge.rtc.uplink.Playout` calls :meth:`PassThrough.offer`; it decodes only what
  the bus's other users need) and the target's sender track
  (:class:`~bridge.rtc.tracks.OpusBusTrack`, its :class:`ForwardTarget`). While
  :attr:`PassThrough.allowed` says nothing mixes into that direction, the target sends each
  packet **in the callback it arrived in**: no queue, no task woken and no timer per packet (a
  forwarded call's largest cost under asyncio was its event loop's, docs/performance.md). The
  target encodes the bus otherwise — switching either way at a packet boundary — and its
  clocked sender's tick sends nothing of its own while a forwarding run lasts.
* The target's RTP stream (``rtc/rtpsend.py``'s :class:`~bridge.rtc.rtpsend.RtpStream`, the
  one owner of its sequence numbers) sends a forwarded packet with the source's number mapped
  onto its own: it keeps its distance from the others in the source's numbering, so a packet
  lost before the bridge is still a gap the far receiver sees (and rebuilds from the next
  packet's FEC), and a reordered one keeps its place. RTP timestamps follow the source's the
  same way (RFC 3550 §5.1), continuous across a switch. A packet older than the first of the
  forwarding run it arrives in (its number one the target sent already while it encoded), or a
  copy of one sent already (the run's newest; an older one the target's SRTP refuses), is
  dropped and counted (:attr:`PassThrough.late`).
* A trunk's phone leg forwards only packets of one 20 ms frame (:func:`one_20ms_packet`): what
  its peer was told to expect (``minptime=20``, Meta's 20 ms ptime).
* Whether forwarding is allowed is asked per packet (:meth:`PassThrough.permitted`), at the
  packet's arrival time (time is an input: nothing here reads a clock), and the answer takes a
  walk through the call's conference and bus. A yes is kept for one 20 ms tick
  (:data:`YES_FOR`): mixing that starts meanwhile is heard at most one packet later. A no ends
  the kept yes and is asked again every time, so forwarding resumes at the first packet it
  may; the first no also tells the target (:meth:`ForwardTarget.forward_refused`), whose
  sender goes back to encoding from its next tick (unless forwarding is permitted again by
  then).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..audio.phone_codecs import NARROW_SAMPLES

YES_FOR = 0.02
"""Seconds (one packet) a yes of ``allowed()`` is kept without asking again."""


class ForwardTarget(Protocol):
    """The sender a :class:`PassThrough` hands its packets to (``rtc/tracks.py``)."""

    def forward(
        self, source: PassThrough, seq: int, timestamp: int, payload: bytes, at: float
    ) -> bool:
        """Send the source's packet now, mapped onto the target's stream (in the source's
        receive callback); ``at`` its arrival (``time.monotonic()`` base). Whether it was
        carried: sent as it is, or its run covers it (a reordered packet it may not send);
        else the target sends the bus's audio in its place."""

    def forward_refused(self, source: PassThrough) -> None:
        """Forwarding is not allowed at this packet: encode again from the next tick."""


class PassThrough:
    """The source leg's Opus packets on their way to one target sender (module docstring)."""

    def __init__(self, allowed: Callable[[], bool]) -> None:
        self.allowed = allowed
        """Whether the target may get the source's packets as they are right now."""
        self._yes_until = 0.0
        self.target: ForwardTarget | None = None
        """The sender the packets go to (set by its ``forward_from``)."""
        self.forwarded = 0
        self.switches = 0
        self.late = 0
        """Packets whose numbers went out already, dropped: older than the first of the
        forwarding run they came in (the target's own encoded packets), a duplicate of the
        run's newest, or a copy of an older one the target's SRTP refused as sent already."""
        self.jumps = 0
        """Packets dropped as a jump in the source's numbering (``RunNumbering.judge``): a
        restart's first (the run goes on from its next), or a stray."""
        self.not_allowed = 0
        """Packets offered while ``allowed()`` said no (something mixed into the direction)."""

    def permitted(self, now: float) -> bool:
        """``allowed()`` at ``now`` (``time.monotonic()`` base: a packet's arrival, or the
        target's tick after a refusal), a yes kept for :data:`YES_FOR` (module docstring)."""
        if now < self._yes_until:
            return True
        if self.allowed():
            self._yes_until = now + YES_FOR
            return True
        # A no ends the kept yes: the target's tick that asks again after a refusal is timed
        # by the clock's schedule, and may fall before the refused packet's arrival, within
        # the yes kept from the packet before it. That yes is older news than the no: kept,
        # it undid the refusal, and the run then carried the ticks silent until the source's
        # quiet ended it (FORWARD_WAIT), the RTP time moved on by a pause nobody made.
        self._yes_until = 0.0
        return False

    def offer(self, seq: int, timestamp: int, payload: bytes, at: float) -> bool:
        """A source packet as it arrived, ``at`` (``time.monotonic()`` base: the socket's
        stamp), in the source's receive callback on the event loop: sent on by the target now,
        or refused; whether the target carried it (:meth:`ForwardTarget.forward`)."""
        target = self.target
        if not payload or target is None:
            return False
        if at < self._yes_until or self.permitted(at):  # (the kept yes without a call)
            return target.forward(self, seq, timestamp, payload, at)
        self.not_allowed += 1
        target.forward_refused(self)
        return False


def one_20ms_packet(codec: str, payload: bytes) -> bool:
    """Whether a packet of ``codec`` carries exactly 20 ms: Opus by its TOC byte, G.711 by
    its length; other codecs are never forwarded."""
    if codec == "opus":
        return one_20ms_frame(payload)
    return codec in ("PCMU", "PCMA") and len(payload) == NARROW_SAMPLES  # a byte a sample


def one_20ms_frame(payload: bytes) -> bool:
    """Whether an Opus packet holds one 20 ms frame, by its TOC byte (RFC 6716 §3.1): frame
    count code 0, and a configuration whose frame size is 20 ms (SILK 1, 5, 9; hybrid 13, 15;
    CELT 19, 23, 27, 31)."""
    if not payload or payload[0] & 0x03:
        return False
    config = payload[0] >> 3
    if config < 12:
        return config % 4 == 1
    if config < 16:
        return config % 2 == 1
    return config % 4 == 3
