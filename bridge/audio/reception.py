"""``RtpReception``: one received RTP stream, each packet counted once (RFC 3550 A.1, A.3, A.8).

A leg's RTP session (``rtc/rtp_session.py``) counts every packet it receives from the far end
here, once, as it dispatches it (its reports own the stream's reception, ``rtc/rtcp.py``), and
every figure about what arrived is read from these counts:

* our RTCP receiver report block about the far end's SSRC: fraction lost since the last report
  (:meth:`RtpReception.fraction_lost`), cumulative lost (:attr:`RtpReception.cumulative_lost`,
  its signed 24-bit field), extended highest sequence number, interarrival jitter in timestamp
  units;
* the receiver's W3C figures (``audio/receiver_stats.py`` ``ReceiverStats``: packetsReceived,
  packetsLost, jitter in seconds) and the leg's quality samples (``rtc/quality.py``).

The receiver (``audio/receiver.py``) takes each packet's sequence number and timestamp extended
past their wraps from here (:meth:`RtpReception.extended`); a receiver that nobody counts for
(an agent's voice, a test) counts its own packets into one of its own.

One rule for every reader:

* **Received** is every packet, duplicates included (as aiortc's ``StreamStatistics`` and
  libwebrtc count), so **lost**, expected minus received (A.3), may go below zero (W3C's
  ``packetsLost`` may too). An RFC 4733 event (:meth:`RtpReception.numbered`) is a packet of
  the stream, numbered with the audio: counted, it moves the sequence, never the jitter.
* **Jitter** (A.8) is one estimate, in timestamp units times 16, in integers, from arrivals read
  on the stream's clock. Only a packet that is the newest yet moves it (not a duplicate nor a
  reordered one, as in aiortc), and not a transit jump of a second or more (a sender that
  restarted its timeline; libwebrtc skips large jumps too). RTCP carries its integer part; W3C
  reads it in seconds.
* **A new SSRC** (:meth:`RtpReception.restart`, A.1's ``init_seq``) starts the report block
  afresh (its numbers, loss and jitter); the totals received and lost go on, so a count read
  over a call (W3C's, a call's timeline, a leg's quality) never goes back.
* **A restarted sequence** under the same SSRC (a PBX's media relay bridging another source
  through): A.1's validation. A number :data:`MAX_DROPOUT` or more ahead of the highest, or
  more than :data:`MAX_MISORDER` behind it, moves nothing (counted, as a reordered packet);
  once the next packet follows it in order (A.1's ``bad_seq``) the sequence restarted there,
  and the report block starts afresh from that jump as for a new SSRC, the totals going on.
  Counted as a gap, such a jump was thousands of packets lost in one report (a sender
  adapting to our reports cut its bitrate); counted as reordering, every packet after it was
  a duplicate for minutes, the jitter frozen.

Fed the same packets, it counts what aiortc counts (``tests/unit/test_dtls_srtp.py``), but for
the RTP timestamp difference, taken modulo 2³² here, the events and the transit jumps.
Sans-IO: the caller stamps the arrivals.
"""

from __future__ import annotations

LOST_MIN, LOST_MAX = -0x800000, 0x7FFFFF
"""The cumulative number of packets lost is a signed 24-bit field (RFC 3550 §6.4.1)."""
MAX_DROPOUT, MAX_MISORDER = 3000, 100
"""RFC 3550 A.1: how far ahead of the highest number a packet is a gap (packets lost), how far
behind it a packet is reordered; beyond either, a jump of the sequence."""


class RtpReception:
    """One received RTP stream's counts (module docstring); ``clock``: its RTP clock (Hz)."""

    def __init__(self, clock: int) -> None:
        self.clock = clock
        self.packets_received = 0
        """Every packet of the stream, duplicates and events included, over all its sources."""
        self.base_seq: int | None = None
        """The current source's first sequence number (``None``: nothing from it yet)."""
        self.highest = 0
        """The current source's extended highest sequence number: its cycles above 16 bits."""
        self._jitter_q4 = 0  # the interarrival jitter in timestamp units, times 16 (A.8)
        self._last_ts: int | None = None  # the newest audio packet's extended timestamp
        self._last_arrival = 0  # and its arrival, on the stream's clock
        self._received_before = 0  # packets_received when the current source began
        self._lost_before = 0  # what the sources before it lost
        self._expected_prior = self._received_prior = 0  # at the last report block (A.3)
        self._bad_seq = -1  # the number that would confirm a jump of the sequence (A.1)

    # -- packets in
    def received(self, seq: int, timestamp: int, at: float) -> tuple[int, int]:
        """One audio packet, ``at`` its arrival (seconds, any one base: only differences
        count): counted; its sequence number and timestamp extended (the closest to the newest
        packet's)."""
        self.packets_received += 1
        last_ts = self._last_ts
        if self.base_seq is None:  # the source's first packet
            self.base_seq = self.highest = seq
            self._last_ts, self._last_arrival = timestamp, int(at * self.clock)
            return seq, timestamp
        highest = self.highest
        ahead = (seq - highest) & 0xFFFF
        ext_seq = highest + (ahead - 0x10000 if ahead >= 0x8000 else ahead)
        if last_ts is None:  # only events before it: the first timestamp
            ts = timestamp
        else:
            delta = (timestamp - last_ts) & 0xFFFFFFFF
            ts = last_ts + (delta - 0x100000000 if delta >= 0x80000000 else delta)
        if not 0 < ahead < MAX_DROPOUT:
            if not self._jumped(seq, ahead):
                return ext_seq, ts  # a duplicate, a reordered packet or a jump: nothing moves
            self.highest = ext_seq = self.highest + 1  # the jump's next packet (_jumped)
            self._last_ts, self._last_arrival = ts, int(at * self.clock)
            return ext_seq, ts
        self.highest = ext_seq
        arrival = int(at * self.clock)
        if last_ts is not None and ts != last_ts:
            # A.8: J += (|D| - J) / 16, D the difference of the relative transit times.
            diff = abs(arrival - self._last_arrival - (ts - last_ts))
            if diff < self.clock:  # not across a restarted timeline
                self._jitter_q4 += diff - ((self._jitter_q4 + 8) >> 4)
        self._last_ts, self._last_arrival = ts, arrival
        return ext_seq, ts

    def numbered(self, seq: int) -> int:
        """One packet that is not audio (an RFC 4733 event: its timestamp is its event's start)
        took number ``seq`` of the stream: counted, it moves the sequence, not the jitter; its
        extended number."""
        self.packets_received += 1
        if self.base_seq is None:
            self.base_seq = self.highest = seq
            return seq
        highest = self.highest
        delta = (seq - highest) & 0xFFFF
        ext_seq = highest + (delta - 0x10000 if delta >= 0x8000 else delta)
        if 0 < delta < MAX_DROPOUT:
            self.highest = ext_seq
        elif self._jumped(seq, delta):
            self.highest = ext_seq = self.highest + 1
        return ext_seq

    def _jumped(self, seq: int, delta: int) -> bool:
        """A packet neither newest nor in the gap a loss leaves (``delta``: its number ahead of
        the highest, modulo 2¹⁶): whether it confirms a jump of the sequence (A.1's
        ``bad_seq``: it follows, in order, a packet that jumped). Then the report block starts
        again at the packet before it, that jump (its number the base and the highest: this
        packet's caller makes it the highest); both packets are the new block's, the totals go
        on. Otherwise, a jump is remembered for its next packet."""
        if delta == 0 or delta > 0x10000 - MAX_MISORDER:
            return False  # a duplicate or a reordered packet
        if seq != self._bad_seq:
            self._bad_seq = (seq + 1) & 0xFFFF
            return False
        # Both packets are counted already, as the old sequence's: they move to the new one.
        self._start_block(self.packets_lost + 2, self.packets_received - 2)
        self.base_seq = self.highest = (seq - 1) & 0xFFFF
        return True

    def restart(self) -> None:
        """Another source (a new SSRC, A.1): numbers, loss and jitter start again from its
        first packet; the totals received and lost go on."""
        self._start_block(self.packets_lost, self.packets_received)
        self.base_seq, self.highest = None, 0
        self._last_ts, self._last_arrival = None, 0

    def _start_block(self, lost_before: int, received_before: int) -> None:
        """The report block starts afresh (A.1 ``init_seq``): what came before it is in the
        totals (``lost_before``, ``received_before``), not in its loss; its jitter restarts."""
        self._lost_before, self._received_before = lost_before, received_before
        self._jitter_q4, self._bad_seq = 0, -1
        self._expected_prior = self._received_prior = 0

    def use_clock(self, clock: int) -> None:
        """The stream's RTP clock from now (another codec): the jitter, in its units, starts
        again from zero."""
        if clock != self.clock:
            self._last_arrival = self._last_arrival * clock // self.clock
            self.clock, self._jitter_q4 = clock, 0

    # -- numbers extended, for the receiver (nothing counted)
    def extended(self, seq: int, timestamp: int) -> tuple[int, int]:
        """A packet already counted (:meth:`received`): its extended number and timestamp."""
        highest, last_ts = self.highest, self._last_ts
        delta = (seq - highest) & 0xFFFF
        ext_seq = highest + (delta - 0x10000 if delta >= 0x8000 else delta)
        if last_ts is None:
            return ext_seq, timestamp
        delta = (timestamp - last_ts) & 0xFFFFFFFF
        return ext_seq, last_ts + (delta - 0x100000000 if delta >= 0x80000000 else delta)

    def extend_seq(self, seq: int) -> int | None:
        """A sequence number extended like the packets'; ``None`` before any."""
        if self.base_seq is None:
            return None
        delta = (seq - self.highest) & 0xFFFF
        return self.highest + (delta - 0x10000 if delta >= 0x8000 else delta)

    def extend(self, timestamp: int) -> int | None:
        """A timestamp (of a redundant copy, RFC 2198) extended like the packets'; ``None``
        before any audio packet."""
        last_ts = self._last_ts
        if last_ts is None:
            return None
        delta = (timestamp - last_ts) & 0xFFFFFFFF
        return last_ts + (delta - 0x100000000 if delta >= 0x80000000 else delta)

    # -- what the readers read
    @property
    def packets_expected(self) -> int:
        """Of the current source (A.3): from its first number to its highest."""
        return 0 if self.base_seq is None else self.highest - self.base_seq + 1

    @property
    def packets_lost(self) -> int:
        """Expected minus received over all the sources (W3C ``packetsLost``): below zero
        when duplicates outnumber the losses."""
        received = self.packets_received - self._received_before
        return self._lost_before + self.packets_expected - received

    @property
    def cumulative_lost(self) -> int:
        """The current source's (A.3), clamped to its report block's 24-bit field."""
        lost = self.packets_expected - (self.packets_received - self._received_before)
        return max(LOST_MIN, min(lost, LOST_MAX))

    def fraction_lost(self) -> int:
        """The current source's loss since the previous call, in 256ths (A.3): call it once
        per report block."""
        expected = self.packets_expected
        received = self.packets_received - self._received_before
        interval = expected - self._expected_prior
        lost = interval - (received - self._received_prior)
        self._expected_prior, self._received_prior = expected, received
        return 0 if interval == 0 or lost <= 0 else (lost << 8) // interval

    @property
    def jitter(self) -> int:
        """The interarrival jitter in timestamp units (the report block's field)."""
        return self._jitter_q4 >> 4

    @property
    def jitter_s(self) -> float:
        """The same estimate in seconds (W3C ``jitter``), its sixteenths kept."""
        return self._jitter_q4 / (16 * self.clock)
