"""A bridge track's packets as its clocked sender (``rtc/rtpsend.py`` ``LeanSender``) asks for
them: ``OpusBusTrack.packets(now)``, one tick after another."""

from __future__ import annotations

import time

from bridge.rtc.tracks import EncodedPacket, OpusBusTrack


def tick_packets(track: OpusBusTrack, count: int) -> list[EncodedPacket]:
    """The track's next ``count`` packets, ticked back to back at the time of the call (what
    the encoder makes does not depend on the ticks' times, only a forwarding run does)."""
    packets: list[EncodedPacket] = []
    while len(packets) < count:
        packets.extend(track.packets(time.monotonic()))
    return packets
