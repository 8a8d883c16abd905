"""What we receive of one SSRC, as RTCP reports it (RFC 3550 A.1, A.3, A.8), sans-IO.

The bridge counts every packet it receives itself: ``rtc/rtprecv.py`` on a peer connection,
``rtc/rtcp.py`` on the SDES leg. On a peer connection a :class:`ReceptionStats` sits in
aiortc's receiver table where aiortc's own ``StreamStatistics`` would, and aiortc reads it for
its receiver reports and ``getStats``: it has that class's public face (``packets_received``,
``max_seq``, ``cycles``, ``jitter``, ``fraction_lost``, ``packets_lost``, ``add``) and
counts as it does (``tests/unit/test_rtprecv.py`` feeds both the same packets), with the RTP
timestamp difference taken modulo 2³² (aiortc's is not) and RFC 4733 events counted without
moving the jitter.
"""

from __future__ import annotations

import time
from typing import Any

LOST_MIN, LOST_MAX = -0x800000, 0x7FFFFF
"""The cumulative number of packets lost is a signed 24-bit field (RFC 3550 §6.4.1)."""


class ReceptionStats:
    """One SSRC's reception counters (module docstring)."""

    def __init__(self, clockrate: int) -> None:
        self.clockrate = clockrate
        self.base_seq: int | None = None
        self.max_seq: int | None = None
        """The highest sequence number received (16 bits; :attr:`cycles` counts the wraps)."""
        self.cycles = 0
        self.packets_received = 0
        self._jitter_q4 = 0  # the interarrival jitter in timestamp units, times 16 (A.8)
        self._last_arrival: int | None = None
        self._last_timestamp: int | None = None
        self._expected_prior = 0
        self._received_prior = 0

    def received(self, seq: int, timestamp: int, now: float, *, audio: bool = True) -> None:
        """One packet, ``now`` being its arrival (``time.time()``); ``audio=False`` (an RFC
        4733 event, on another clock) moves the sequence counters but not the jitter."""
        max_seq = self.max_seq
        self.packets_received += 1
        if self.base_seq is None:
            self.base_seq = seq
        if max_seq is not None and (seq == max_seq or (seq - max_seq) & 0xFFFF >= 0x8000):
            return  # a duplicate or an older (reordered) packet: counted, nothing else moves
        if max_seq is not None and seq < max_seq:
            self.cycles += 1 << 16
        self.max_seq = seq
        if not audio:
            return
        arrival = int(now * self.clockrate)
        last = self._last_timestamp
        if last is not None and timestamp != last and self.packets_received > 1:
            step = ((timestamp - last + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            diff = abs((arrival - self._last_arrival) - step)  # type: ignore[operator]
            self._jitter_q4 += diff - ((self._jitter_q4 + 8) >> 4)
        self._last_arrival = arrival
        self._last_timestamp = timestamp

    @classmethod
    def adopt(cls, stream: Any, clockrate: int) -> ReceptionStats:
        """Take over the counts of aiortc's own ``StreamStatistics`` for an SSRC whose first
        packets aiortc routed itself, before the bridge's receive path attached (its public
        fields; the jitter starts again, as it would after any gap)."""
        if isinstance(stream, cls):
            return stream
        ours = cls(clockrate)
        ours.packets_received = stream.packets_received
        ours.base_seq, ours.max_seq, ours.cycles = stream.base_seq, stream.max_seq, stream.cycles
        return ours

    def add(self, packet: Any) -> None:
        """A packet aiortc routed itself (its ``StreamStatistics.add``)."""
        self.received(packet.sequence_number, packet.timestamp, time.time())

    @property
    def packets_expected(self) -> int:
        if self.max_seq is None or self.base_seq is None:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def packets_lost(self) -> int:
        """Cumulative (A.3), clamped to its 24-bit field."""
        return max(LOST_MIN, min(self.packets_expected - self.packets_received, LOST_MAX))

    @property
    def fraction_lost(self) -> int:
        """Lost since the last time it was read, in 256ths (A.3): read once per report."""
        expected = self.packets_expected - self._expected_prior
        self._expected_prior = self.packets_expected
        received = self.packets_received - self._received_prior
        self._received_prior = self.packets_received
        lost = expected - received
        return 0 if expected == 0 or lost <= 0 else (lost << 8) // expected

    @property
    def jitter(self) -> int:
        return self._jitter_q4 >> 4


def record(
    stream: ReceptionStats, seq: int, timestamp: int, now: float, *, audio: bool = True
) -> None:
    """Count one received packet in ``stream`` (:meth:`ReceptionStats.received`)."""
    stream.received(seq, timestamp, now, audio=audio)
