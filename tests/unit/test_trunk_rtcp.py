"""A trunk leg's RTCP (``trunks/media.py``): off unless both SDPs said ``a=rtcp-mux``; then,
on the one scheduler (``rtc/rtcp_schedule.py``, its timers fired by hand here), the first report
within half an interval of 5 s (RFC 3550 §6.2, randomised 0.5–1.5 ×) and then one every 2.5 to
7.5 s, an SR while audio goes out (an RR on hold), carrying a report block on the phone's
stream with its loss, and a BYE at the end."""

from __future__ import annotations

import itertools
import struct
import time

import pytest

from bridge.rtc.packets import (
    Bye,
    ReceiverReport,
    Sdes,
    SenderReport,
    parse_rtcp,
    receiver_report,
    report_block,
)
from bridge.rtc.rtcp import RtcpReports
from bridge.rtc.rtpsend import ntp_time
from bridge.rtc.sdes import read_savp
from bridge.trunks import sdp as trunk_sdp
from bridge.trunks.media import TrunkMedia, timeline
from tests.unit.test_rtcp_schedule import ManualTimers

TICKS = 250
"""5 s of 20 ms ticks."""


class Wire:
    def __init__(self) -> None:
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []
        self.rtp_before: list[int] = []
        """How many RTP packets had gone out when each RTCP packet went."""

    def send_rtp(self, plain: bytes) -> None:
        self.rtp.append(plain)

    def send_rtcp(self, plain: bytes) -> None:
        self.rtcp.append(plain)
        self.rtp_before.append(len(self.rtp))

    def close(self) -> None:
        pass


def leg(mux: bool, sending: bool = True) -> tuple[TrunkMedia, Wire, ManualTimers]:
    """A started leg whose clock ticks are called by hand (the test never yields to the
    worker clock) and whose reports' timers are fired by hand; ``sending`` false: on hold
    from the start."""
    media = TrunkMedia("t", "PCMU", 0, 101, lambda pcm: None, lambda now: None, lambda d, ms: None)
    wire, timers = Wire(), ManualTimers()
    media.rtcp_mux = mux
    media.leg.rtcp_schedule.timers = timers
    media.leg.rtcp_schedule.monotonic = lambda: 0.0
    media.track.sending = sending
    media.leg.wire = wire
    media.start()
    return media, wire, timers


def phone_packet(seq: int, ts: int, ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + bytes(160)


async def test_no_rtcp_without_multiplexing() -> None:
    media, wire, timers = leg(mux=False)
    for _ in range(3 * TICKS):
        media.leg.sender._tick(0.0)
    assert timers.pending == []
    media.stop()
    assert wire.rtcp == [] and len(wire.rtp) >= 3 * TICKS - 2  # the resampler's start
    assert media.leg.stream.packets == len(wire.rtp)
    first = wire.rtp[0]
    assert first[1] & 0x80 and not any(p[1] & 0x80 for p in wire.rtp[1:])  # RFC 3551 §4.1


async def test_reports_every_five_seconds_on_average_with_the_phones_loss_then_bye() -> None:
    media, wire, timers = leg(mux=True)
    # The phone's stream: 100 packets, every tenth lost.
    for n in range(100):
        if n % 10 != 9:
            media.leg.receive_rtp(phone_packet(1000 + n, 160 * n), time.monotonic())
    times = []
    for _ in range(40):
        for _ in range(TICKS // 5):  # audio goes out between the reports
            media.leg.sender._tick(0.0)
        times.append(timers.fire())
    assert 1.25 <= times[0] <= 3.75  # the first: half the 5 s minimum, 0.5–1.5 ×
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(2.5 <= gap <= 7.5 for gap in gaps), gaps
    assert 4.0 < sum(gaps) / len(gaps) < 6.0  # 5 s on average
    sent = len(wire.rtcp)
    assert sent == 40
    packets = parse_rtcp(wire.rtcp[-1])
    sr = packets[0]
    assert isinstance(sr, SenderReport) and sr.ssrc == media.leg.stream.ssrc
    assert sr.packet_count == wire.rtp_before[-1]  # what went out before it (RFC 3550 §6.4.1)
    assert sr.octet_count == 160 * sr.packet_count  # payload octets: G.711, 20 ms
    (block,) = sr.reports
    assert block.ssrc == 0x1234 and block.packets_lost == 9  # the last gap is not yet a loss
    assert isinstance(packets[1], Sdes)
    # The leg's timeline view: what the phone sent and lost.
    seen = timeline(media)
    assert seen.receiver is not None
    assert (seen.receiver.packets_received, seen.receiver.packets_lost) == (90, 9)
    assert seen.rtt is None and seen.loss_reported is None  # the phone has not reported yet
    media.stop()
    last = parse_rtcp(wire.rtcp[-1])
    assert isinstance(last[-1], Bye) and last[-1].sources == [media.leg.stream.ssrc]
    assert len(wire.rtcp) == sent + 1


async def test_a_receiver_report_before_any_audio_went_out() -> None:
    media, wire, timers = leg(mux=True, sending=False)  # the phone holds: RTCP still goes
    for _ in range(TICKS):
        media.leg.sender._tick(0.0)
    timers.fire()
    media.stop()
    assert wire.rtp == [] and wire.rtcp
    assert isinstance(parse_rtcp(wire.rtcp[0])[0], ReceiverReport)


async def test_a_held_leg_sends_receiver_reports_until_it_sends_again() -> None:
    """RFC 3550 §6.4: an SR only from a leg that sent RTP since the report before its last
    one; a held phone's leg (nothing sent for two intervals) reports as a receiver, with no
    sender counts going stale, and as a sender again once its audio goes out."""
    media, wire, timers = leg(mux=True)

    def report(ticks: int) -> type:
        for _ in range(ticks):
            media.leg.sender._tick(0.0)
        timers.fire()
        return type(parse_rtcp(wire.rtcp[-1])[0])

    assert report(TICKS // 5) is SenderReport
    media.track.sending = False  # on hold: the frames are taken, no packet goes out
    sent = len(wire.rtp)
    kinds = [report(TICKS // 5) for _ in range(3)]
    assert len(wire.rtp) == sent
    # The interval before the first of them had audio; the next two had none.
    assert kinds == [SenderReport, ReceiverReport, ReceiverReport]
    media.track.sending = True
    assert report(TICKS // 5) is SenderReport
    (rr,) = [p for p in parse_rtcp(wire.rtcp[-2]) if isinstance(p, ReceiverReport)]
    assert rr.ssrc == media.leg.stream.ssrc
    media.stop()


def test_the_round_trip_from_a_far_end_whose_delay_since_our_report_is_rounded_up() -> None:
    """The phone's report block echoes our SR's middle NTP bits (LSR) and the time it held it
    (DLSR); round trip = arrival − LSR − DLSR (RFC 3550 §6.4.1). baresip counts DLSR in whole
    milliseconds (seen: 195035, 2976 ms), so on loopback the sum can land a little after the
    report arrived: a round trip of 0, not none (seen on every other report; on CI, enough in a
    row that a test waiting 20 s for a round trip timed out). A sum far past the arrival is
    bogus: none."""

    def middle(unix: float) -> int:
        return (ntp_time(unix) >> 16) & 0xFFFFFFFF

    def rtt_after(held: float, dlsr_s: float) -> float | None:
        reports = RtcpReports(0xABCD, "us", clock=8000)
        arrival = time.monotonic()
        wall = arrival + time.time() - time.monotonic()
        block = report_block(0xABCD, 0, 0, 0, 0, middle(wall - held), int(dlsr_s * 65536))
        reports.receive(receiver_report(0x1234, block, 1), arrival)
        assert reports.far_reports == 1
        return reports.far.rtt_s

    assert rtt_after(2.976, 2.9760) == pytest.approx(0, abs=0.001)
    assert rtt_after(2.976, 2.977) == 0  # rounded up by a millisecond: 0
    assert rtt_after(2.976, 2.926) == pytest.approx(0.05, abs=0.001)  # 50 ms away
    assert rtt_after(2.976, 3.5) is None  # half a second in the future: bogus


def test_where_the_far_end_takes_rtcp_is_read_once_for_a_phone_and_for_meta() -> None:
    # RFC 5761 §5.1.1 (a=rtcp-mux: the RTP port), RFC 3605 (a=rtcp: its port and address),
    # else RTP's port + 1 (RFC 3550 §11): the trunk's Remote and the SDES leg's SavpMedia
    # both say it as ``AudioSection.rtcp_address`` reads it.
    key = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + "QUJD" * 10
    head = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"

    def both(*attributes: str) -> set[tuple[str, int]]:
        savp = (
            head + "m=audio 4000 RTP/SAVP 0\r\n" + "".join(a + "\r\n" for a in (*attributes, key))
        )
        phone = trunk_sdp.read(savp, ("PCMU",), srtp=True)
        return {phone.rtcp, read_savp(savp).rtcp}

    assert both() == {("192.0.2.1", 4001)}
    assert both("a=rtcp-mux", "a=rtcp:5000") == {("192.0.2.1", 4000)}
    assert both("a=rtcp:5000") == {("192.0.2.1", 5000)}
    assert both("a=rtcp:5000 IN IP4 198.51.100.7") == {("198.51.100.7", 5000)}
