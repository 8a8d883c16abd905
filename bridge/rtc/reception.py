"""What we receive of one SSRC, as RTCP reports it (RFC 3550 A.1, A.3, A.8), sans-IO.

Every leg's RTP session (``rtc/rtp_session.py``, its reports in ``rtc/rtcp.py``) counts every
packet it receives here. :class:`ReceptionStats` counts as aiortc's own ``StreamStatistics``
does (``tests/unit/test_dtls_srtp.py`` feeds both the same packets), with the RTP timestamp
difference taken modulo 2³² (aiortc's is not) and RFC 4733 events counted without moving the
jitter.
"""

from __future__ import annotations

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
        """One packet, ``now`` being its arrival (seconds, any one base: only differences
        count); ``audio=False`` (an RFC
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
