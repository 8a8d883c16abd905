"""``RtpReception`` (bridge/audio/reception.py), every leg's one count of the packets it
receives: its unwrapping of 16-bit numbers and 32-bit timestamps is inlined for speed, and must
count what the plain ``unwrap`` arithmetic counts, across both wraps, with loss, reordering,
duplicates and a restarted sender; the receiver's W3C figures and our RTCP report block read
the same counts."""

from __future__ import annotations

import struct
import time

import numpy as np

from bridge.audio.receiver import Receiver
from bridge.audio.reception import RtpReception
from bridge.media import BusStats
from bridge.rtc.packets import ReceiverReport, ReportBlock, parse_rtcp
from bridge.rtc.rtp_leg import RtpLeg
from bridge.rtc.rtp_session import RtpSession
from bridge.tasks import TaskSet


def unwrap(value: int, reference: int, bits: int) -> int:
    """``value`` (``bits`` wide, wrapping) extended to the integer closest to ``reference``."""
    span = 1 << bits
    delta = (value - reference) % span
    if delta >= span // 2:
        delta -= span
    return reference + delta


class Reference:
    """The counting as RFC 3550 A.1 and A.3 write it, with ``unwrap`` per number: a jump of
    3000 ahead or 100 behind is a restart once the next packet follows it in order, and the
    count starts again from the jump (the loss before it kept)."""

    def __init__(self) -> None:
        self.highest: int | None = None
        self.base = self.last_ts = self.received = self.total = self.lost_before = 0
        self.bad_seq = -1

    def arrive(self, seq: int, timestamp: int) -> tuple[int, int]:
        if self.highest is None:
            self.highest = self.base = seq
            self.last_ts = timestamp
        ext_seq = unwrap(seq, self.highest, 16)
        ts = unwrap(timestamp, self.last_ts, 32)
        self.received += 1
        self.total += 1
        udelta = (seq - self.highest) % 0x10000
        if 3000 <= udelta <= 0x10000 - 100:  # A.1: a very large jump
            if seq != self.bad_seq:
                self.bad_seq = (seq + 1) % 0x10000
                return ext_seq, ts
            self.lost_before += self.highest - self.base + 1 - (self.received - 2)
            self.base, self.received, self.bad_seq = (seq - 1) % 0x10000, 2, -1
            self.highest, self.last_ts = self.base + 1, ts
            return self.highest, ts
        if ext_seq > self.highest:
            self.highest, self.last_ts = ext_seq, ts
        return ext_seq, ts

    @property
    def lost(self) -> int:
        assert self.highest is not None
        return self.lost_before + self.highest - self.base + 1 - self.received


def test_the_inlined_counting_counts_as_unwrap_does() -> None:
    rng = np.random.default_rng(3)
    ours, reference = RtpReception(8000), Reference()
    seq, ts, at = 0xFFFF - 40, 0xFFFFFFFF - 30 * 160, 10.0
    steps = []
    for i in range(3000):
        step = int(rng.choice([1, 1, 1, 1, 2, 3, 0, -1, -2]))  # on, lost, duplicate, reordered
        if i == 1500:
            step = 20_000  # the sender restarted: a jump in both
        seq, ts = (seq + step) & 0xFFFF, (ts + 160 * step) & 0xFFFFFFFF
        at += 0.02 + float(rng.uniform(0, 0.01))
        counted = ours.received(seq, ts, at)
        assert counted == reference.arrive(seq, ts)
        assert ours.extended(seq, ts) == counted  # what the receiver reads of it after
        assert ours.extend_seq(seq) == counted[0] and ours.extend(ts) == counted[1]
        assert (ours.packets_received, ours.packets_lost) == (reference.total, reference.lost)
        assert ours.highest == reference.highest
        if i == 1499:
            assert ours.highest > 0x10000  # across the 16-bit wrap
        if i == 1500:  # the restart's jump moved no jitter (its 400 s / 16 would be 200 000)
            assert 0 < ours.jitter < 1000
        steps.append(step)
    # A.1: the jump is a restarted sequence (the report block's numbers again from it).
    assert ours.base_seq == reference.base and ours.highest < 0x10000
    assert any(s < 0 for s in steps)
    assert ours.jitter_s == ours._jitter_q4 / 16 / 8000


def test_duplicates_and_reordering_count_as_received_and_move_no_jitter() -> None:
    """The one rule for both readers: a duplicate is received (lost may go below zero), a
    late packet fills its gap; neither moves the jitter, which only the newest packet does."""
    r = RtpReception(48_000)
    for seq, at in [(10, 0.2), (11, 0.22), (13, 0.26), (11, 0.5), (12, 0.9)]:
        r.received(seq, seq * 960, at)
    assert (r.packets_received, r.packets_lost, r.highest) == (5, -1, 13)
    assert r.jitter == 0  # 11 again and 12 came late, but only 10, 11 and 13 count: on time
    assert r.cumulative_lost == -1 and r.fraction_lost() == 0


def test_a_new_source_starts_the_report_block_and_the_totals_go_on() -> None:
    r = RtpReception(8000)
    for seq in (100, 101, 103):  # one lost
        r.received(seq, seq * 160, seq * 0.02)
    assert r.fraction_lost() == 256 // 4
    r.restart()
    assert r.base_seq is None and r.jitter == 0
    for seq in (7, 8):
        r.received(seq, 99 + seq * 160, 3 + seq * 0.02)
    assert (r.base_seq, r.highest, r.packets_expected, r.cumulative_lost) == (7, 8, 2, 0)
    assert r.fraction_lost() == 0  # the new source's interval: nothing lost
    assert (r.packets_received, r.packets_lost) == (5, 1)


def test_a_receiver_on_its_own_counts_what_it_is_handed() -> None:
    """Nobody counting before it (an agent's voice, a test), the receiver counts into a
    reception of its own; its W3C figures are that reception's."""
    rx = Receiver(decoder=None)
    for seq in (1, 2, 4, 3, 3):  # 3 reordered, then a duplicate of it
        rx.push(seq, seq * 960, b"\xfc\xff\xfe", 0.02 * seq)
    assert rx.reception.packets_received == rx.stats.packets_received == 5
    assert rx.stats.packets_lost == -1  # the duplicate (W3C: may go below zero)
    assert rx.stats.packets_reordered == 1 and rx.stats.packets_discarded == 1
    rx.numbered(5)  # an RFC 4733 event: received, in the sequence
    assert rx.stats.packets_received == 6 and rx.reception.highest == 5
    assert rx.stats.as_w3c()["packetsReceived"] == 6


def _rtp(seq: int, ts: int, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, ts, 0x1234) + bytes(160)


async def test_a_legs_session_counts_once_and_the_reports_and_receiver_read_it() -> None:
    """Each packet of a leg is counted once, by its RTP session; the receiver's W3C figures and
    the RTCP report block are the same counts. A held receiver's figures stop where they were
    (the reports count on), and the next receiver's start from when it began."""
    session = RtpSession(1, "test", audio_pt=0)
    session.use_codec("PCMU", 0)
    tasks = TaskSet("reception-test")
    leg = RtpLeg(session, codec="PCMU", on_frame=lambda pcm: None, stats=BusStats(), tasks=tasks)
    at = time.monotonic()
    sent = [s for s in range(1, 101) if s % 10 != 5]  # 10 of 100 lost
    for i, seq in enumerate(sent):
        leg.receive_rtp(_rtp(seq, seq * 160), at + i * 0.02 + (0.003 if i % 3 else 0.0))
    reception, stats = session.reports.reception, leg.playout.stats
    assert reception.packets_received == 90  # once each, not once for RTCP and once here
    assert (stats.packets_received, stats.packets_lost) == (90, 10)
    assert stats.jitter == reception.jitter_s > 0
    (rr,) = [p for p in parse_rtcp(session.report()) if isinstance(p, ReceiverReport)]
    (block,) = rr.reports
    assert (block.packets_lost, block.highest_sequence) == (10, 100)
    assert block.jitter == reception.jitter > 0  # its integer part, in 8 kHz units
    leg.playout.hold()  # a connected leg between calls
    for seq in range(101, 111):
        leg.receive_rtp(_rtp(seq, seq * 160), at + seq * 0.02)
    assert reception.packets_received == 100 and stats.packets_received == 90
    leg.playout.resume(lambda pcm: None, BusStats())  # the next call: its own figures
    for seq in range(112, 122):  # 111 lost
        leg.receive_rtp(_rtp(seq, seq * 160), at + seq * 0.02)
    assert (leg.playout.stats.packets_received, leg.playout.stats.packets_lost) == (10, 1)
    assert (session.quality().uplink_packets, session.quality().uplink_lost) == (110, 11)
    leg.stop(bye=False)
    await tasks.close()


def _report_block(session: RtpSession) -> ReportBlock:
    (rr,) = [p for p in parse_rtcp(session.report()) if isinstance(p, ReceiverReport)]
    (block,) = rr.reports
    return block


def test_a_sender_that_jumps_its_sequence_restarts_the_report_block_and_loses_nothing() -> None:
    """RFC 3550 A.1: a PBX's media relay bridging another source through under the same SSRC
    jumps the sequence (ahead, or back): taken as a restart once the next packet follows the
    jump, the report block starting again from it, not as thousands of packets lost (a phone
    adapting to our fraction lost cuts its bitrate) nor every packet after it a duplicate,
    the jitter frozen. A lone stray number restarts nothing."""
    for jump in (5000, -20_000, 0x8000):
        session = RtpSession(1, "test", audio_pt=0)
        session.use_codec("PCMU", 0)
        seq, ts = 60_000, 1000
        for i in range(50):  # on time, one lost
            if i != 20:
                session.receive_rtp(_rtp(seq + i, ts + 160 * i), 1.0 + 0.02 * i)
        block = _report_block(session)
        assert (block.fraction_lost, block.packets_lost) == (256 // 50, 1)
        stray = (seq + 550 + jump) & 0xFFFF  # one number far off, then the sequence goes on
        session.receive_rtp(_rtp(stray, ts + 160 * 50), 2.0)
        session.receive_rtp(_rtp(seq + 50, ts + 160 * 50), 2.0)
        assert session.reports.reception.highest == seq + 50  # nothing restarted
        seq = (seq + 51 + jump) & 0xFFFF  # the relay's other source from here, every packet
        for i in range(50):  # late by 0 to 15 ms: jitter
            arrival = 2.02 + 0.02 * i + 0.005 * (i % 4)
            session.receive_rtp(_rtp((seq + i) & 0xFFFF, ts + 160 * (51 + i)), arrival)
        block = _report_block(session)
        assert (block.fraction_lost, block.packets_lost) == (0, 0), jump
        assert block.highest_sequence == seq + 49 and block.jitter > 0, jump
        reception = session.reports.reception
        # The totals go on: 1 lost before, and the stray counted as received (as a duplicate).
        assert (reception.packets_received, reception.packets_lost) == (101, 0)
