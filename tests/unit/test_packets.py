"""rtc/packets.py: RTCP on the wire (RFC 3550), checked both ways against aiortc's own packet
classes (what the far ends of the tests speak)."""

from __future__ import annotations

import time
from dataclasses import astuple

import pytest
from aiortc.rtp import (
    RtcpByePacket,
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

from bridge.rtc import packets
from bridge.rtc.packets import (
    Bye,
    ReceiverReport,
    ReportBlock,
    Sdes,
    SenderReport,
    parse_rtcp,
    receiver_report,
    report_block,
    sender_report,
)
from bridge.rtc.rtcp import RtcpReports
from bridge.rtc.rtpsend import RtpStream, ntp_time


def test_rtcp_compound_matches_aiortc() -> None:
    block = ReportBlock(ssrc=9, fraction_lost=25, packets_lost=-3, highest_sequence=70000)
    block.jitter, block.lsr, block.dlsr = 120, 0xAABBCCDD, 65536
    ours = (
        sender_report(1, 0x0102030405060708, 960, 50, 4000, report_block(*astuple(block)), 1)
        + bytes(Sdes([(1, [(packets.SDES_CNAME, b"bridge-cname")])]))
        + bytes(Bye([1]))
    )
    sr, sdes, bye = RtcpPacket.parse(ours)
    assert isinstance(sr, RtcpSrPacket) and sr.ssrc == 1
    assert sr.sender_info.ntp_timestamp == 0x0102030405060708
    assert (sr.sender_info.packet_count, sr.sender_info.octet_count) == (50, 4000)
    (theirs_block,) = sr.reports
    assert (theirs_block.ssrc, theirs_block.fraction_lost, theirs_block.packets_lost) == (9, 25, -3)
    assert (theirs_block.highest_sequence, theirs_block.jitter) == (70000, 120)
    assert (theirs_block.lsr, theirs_block.dlsr) == (0xAABBCCDD, 65536)
    assert isinstance(sdes, RtcpSdesPacket)
    assert sdes.chunks[0].ssrc == 1 and sdes.chunks[0].items == [(1, b"bridge-cname")]
    assert isinstance(bye, RtcpByePacket) and bye.sources == [1]
    assert parse_rtcp(ours) == [
        SenderReport(1, 0x0102030405060708, 960, 50, 4000, [block]),
        Sdes([(1, [(1, b"bridge-cname")])]),
        Bye([1]),
    ]


def test_rtcp_from_aiortc_parses() -> None:
    info = RtcpReceiverInfo(
        ssrc=5, fraction_lost=1, packets_lost=2, highest_sequence=3, jitter=4, lsr=5, dlsr=6
    )
    sr = RtcpSrPacket(ssrc=2, sender_info=RtcpSenderInfo(7, 8, 9, 10), reports=[info])
    sdes = RtcpSdesPacket(chunks=[RtcpSourceInfo(2, [(1, b"abcd")])])  # a chunk of 8 + 4 null
    data = bytes(RtcpRrPacket(ssrc=3, reports=[info])) + bytes(sr) + bytes(sdes)
    data += bytes(RtcpByePacket(sources=[2, 3]))
    rr, ours_sr, ours_sdes, bye = parse_rtcp(data)
    expected = ReportBlock(5, 1, 2, 3, 4, 5, 6)
    assert rr == ReceiverReport(3, [expected])
    assert ours_sr == SenderReport(2, 7, 8, 9, 10, [expected])
    assert ours_sdes == Sdes([(2, [(1, b"abcd")])])
    assert bye == Bye([2, 3])


def test_other_rtcp_is_skipped_and_broken_rtcp_refused() -> None:
    nack = bytes([0x81, 205, 0, 2]) + bytes(8)  # RTPFB generic NACK: not ours to read
    assert parse_rtcp(nack + receiver_report(1)) == [ReceiverReport(1)]
    for broken in (b"\x80\xc9\x00", b"\x80\xc9\x00\x05" + bytes(4), b"\x00\xc9\x00\x00"):
        with pytest.raises(ValueError):
            parse_rtcp(broken)
    with pytest.raises(ValueError):  # an RR that claims a block it lacks
        parse_rtcp(bytes([0x81, 201, 0, 1]) + bytes(4))


def test_padding_and_feedback_between_reports() -> None:
    """Reports read in place and skipped packets not copied: the same packets as before, a
    padded last packet's padding left out, a padded one too short for its padding refused."""
    block = ReportBlock(7, 3, -2, 65540, 11, 12, 13)
    raw = report_block(*astuple(block))
    sr = sender_report(4, 1 << 40, 2, 3, 4, raw + raw, 2)
    pli = bytes([0x81, 206, 0, 2]) + bytes(8)
    rr = receiver_report(4, raw, 1)
    padded_rr = bytes([0xA1]) + rr[1:3] + bytes([rr[3] + 1]) + rr[4:] + bytes([0, 0, 0, 4])
    expected = [SenderReport(4, 1 << 40, 2, 3, 4, [block, block]), ReceiverReport(4, [block])]
    assert parse_rtcp(sr + pli + padded_rr) == expected
    assert parse_rtcp(sr + pli + rr) == expected
    # The padding eats the block an RR claims: refused.
    eaten = bytes([0xA1, 201, 0, 6]) + rr[4:8] + bytes(19) + bytes([24])
    with pytest.raises(ValueError):
        parse_rtcp(eaten)
    with pytest.raises(ValueError):  # padding longer than the packet
        parse_rtcp(bytes([0xA0, 205, 0, 0]))
    with pytest.raises(ValueError):  # an SR shorter than its sender info
        parse_rtcp(bytes([0x80, 200, 0, 1]) + bytes(4))
    assert ReportBlock.parse(report_block(7, 3, -2, 65540, 11, 12, 13), 0) == block
    with pytest.raises(ValueError):
        packets.report_block(7, 256, 0, 0, 0, 0, 0)


def test_sender_reports_go_on_past_the_ntp_era_and_the_counts_wrap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 3550 §4: the NTP timestamp wraps in 2036 (era 1, RFC 5905 §6), and the sender's
    packet and octet counts wrap at 2^32 (§6.4.1: 12 days of a leg's Opus, 6 of G.711). Past
    either, every report was a ``struct.error`` on the worker clock: the leg's RTCP ended."""
    era = 2_085_978_496  # 2036-02-07T06:28:16Z: NTP second 2^32
    assert ntp_time(era - 1) == 0xFFFFFFFF << 32
    assert ntp_time(era + 1.5) == 3 << 31  # era 1, 1.5 s in
    stream = RtpStream(0xB1D6E, first_seq=7, origin=0)
    stream.packetise(b"x" * 80, 960)
    stream.packets, stream.octets = 2**32 + 5, 2**32 + 80  # a leg that has sent a long time
    monkeypatch.setattr(time, "time", lambda: era + 1.5)
    (report, _) = parse_rtcp(RtcpReports(0xB1D6E, "bridge").compound(stream))
    assert isinstance(report, SenderReport)
    assert (report.packet_count, report.octet_count) == (5, 80)
    assert report.ntp_timestamp >> 32 == 1  # 1.5 s into era 1 (the sent time's pair)
