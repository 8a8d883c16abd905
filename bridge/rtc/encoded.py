"""What a sender track hands its clocked sender each tick (``rtc/tracks.py``,
``rtc/rtpsend.py``)."""

from __future__ import annotations

import fractions
from typing import Protocol

OPUS_RATE = 48_000
_RTP_TIME_BASE = fractions.Fraction(1, OPUS_RATE)
"""Opus' RTP clock (RFC 7587 §4.1): a packet stamped on it needs no conversion in aiortc."""


class EncodedPacket:
    """A pre-encoded packet: what ``rtc/rtpsend.py``'s sender reads (``data``, ``pts``,
    ``seq``: a number the stream is to send it under, else ``None``: the stream numbers it;
    ``payload_type``: RED's when ``data`` is a RED payload, else ``None``; with ``event``, an
    RFC 4733 event's payload type, its ``pts`` the press's start), and what aiortc's own
    sender reads (``bytes()``, ``pts``, ``time_base``) where it sends the track. A forwarded
    packet goes to the wire without one (``rtc/forwarding_track.py``).

    Stands in for ``av.Packet``, which copies the payload into an FFmpeg buffer and builds a
    new ``Fraction`` on every ``time_base`` read; with ``time_base`` the very object aiortc
    compares against, its ``convert_timebase`` does no ``Fraction`` arithmetic either.
    """

    __slots__ = ("data", "event", "marker", "payload_type", "pts", "seq", "time_base")

    def __init__(
        self,
        data: bytes,
        pts: int,
        seq: int | None = None,
        payload_type: int | None = None,
        marker: bool | None = None,
        event: bool = False,
    ) -> None:
        self.data = data
        self.pts = pts
        self.seq = seq
        self.payload_type = payload_type
        self.marker = marker
        """The RTP marker bit, or ``None``: the stream decides (``RtpStream.packetise``)."""
        self.event = event
        """An RFC 4733 event sent in place of the tick's audio (``rtc/rfc4733.py``)."""
        self.time_base = _RTP_TIME_BASE

    def __bytes__(self) -> bytes:
        return self.data


class Player(Protocol):
    """The clocked sender ticking a track (``rtc/rtpsend.py`` ``LeanSender``)."""

    def on_clock(self) -> None:
        """Tick the track from now: its first packets at once, then every tick."""

    def off_clock(self) -> None:
        """Tick it no more for now (it parked)."""

    def wake(self) -> None:
        """A forwarding run it rests through ended sooner: tick it from the next send phase."""

    def stop(self) -> None:
        """Tick it no more: it ended."""
