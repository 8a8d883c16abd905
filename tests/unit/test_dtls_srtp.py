"""A DTLS leg's RTP session on the wire (bridge/rtc/dtls_srtp.py, bridge/rtc/rtp_session.py):
SRTP packets from the UDP guard's datagram callback reach the leg's receiver with their
sequence numbers, timestamps and payloads; RED and telephone-event are split off; DTLS records
and anything before the keys go to aioice's queue for aiortc's DTLS transport; aiortc's
sender and receiver never start; and the session's RTCP counts exactly what was received."""

from __future__ import annotations

import random
import struct
from types import SimpleNamespace
from typing import Any

import aioice.ice
import pytest
from aiortc import (
    RTCCertificate,
    RTCIceGatherer,
    RTCIceTransport,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc import rtcrtpreceiver as aiortc_receiver
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import (
    RTCRtpDecodingParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtcpPacket, RtcpRrPacket, RtcpSrPacket, RtpPacket
from pylibsrtp import Policy, Session

from bridge.audio.reception import RtpReception
from bridge.media import BusStats
from bridge.rtc import aiortc_seam, guard, hooks, rtcp
from bridge.rtc import packets as rtcp_packets
from bridge.rtc.dtls_srtp import DtlsSrtp
from bridge.rtc.red import RedStats
from bridge.rtc.rfc4733 import DtmfDetector, event_payload
from bridge.rtc.rtp_leg import RtpLeg
from bridge.rtc.rtp_session import RtpSession, payload_bounds
from bridge.tasks import TaskSet

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48_000, channels=2, payloadType=111)
PCMU = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, channels=1, payloadType=0)
RED_PT, DTMF_PT = 63, 126
SSRC = 0x1234ABCD
OUR_SSRC = 0x42
KEY = bytes(range(30))
ADDR = ("127.0.0.1", 40000)
EXTENSION = struct.pack("!HH", 0xBEDE, 1) + bytes([0x10, 0x20, 0x40]) + b"0"
MID = [RTCRtpHeaderExtensionParameters(id=4, uri="urn:ietf:params:rtp-hdrext:sdes:mid")]


def srtp(direction: int) -> Session:
    return Session(
        Policy(key=KEY, ssrc_type=direction, srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    )


def rtp(
    seq: int,
    ts: int,
    payload: bytes,
    *,
    pt: int = 111,
    ssrc: int = SSRC,
    marker: bool = False,
    ext: bytes = EXTENSION,
    csrcs: int = 0,
    padding: int = 0,
) -> bytes:
    first = 0x80 | (0x20 if padding else 0) | (0x10 if ext else 0) | csrcs
    header = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    pad = bytes(padding - 1) + bytes([padding]) if padding else b""
    return header + bytes(4 * csrcs) + ext + payload + pad


class Playout:
    """What the leg's Playout is handed, in order."""

    def __init__(self) -> None:
        self.packets: list[tuple[int, int, bytes]] = []
        self.copies: list[tuple[int, bytes]] = []
        self.numbers: list[int] = []
        """Numbers of the packets that were not audio (RFC 4733 events)."""

    def packet(self, seq: int, timestamp: int, payload: bytes, at: float) -> None:
        self.packets.append((seq, timestamp, payload))

    def redundant(self, timestamp: int, payload: bytes, at: float) -> None:
        self.copies.append((timestamp, payload))

    def numbered(self, seq: int) -> None:
        self.numbers.append(seq)


class Socket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append(data)


class QuietTrack:
    """A track with nothing to send (what our sender plays here: the tests send by hand)."""

    def __init__(self) -> None:
        self.stopped = False
        self.codec = "opus"  # what the sender checks the negotiation against

    readyState = "live"

    def played_by(self, player: Any) -> None:
        pass  # never on the clock: nothing to send

    def packets(self, now: float) -> list[Any]:
        return []

    def stop(self) -> None:
        self.stopped = True


class Leg:
    """A real aioice connection, aiortc DTLS transport (with its libsrtp sessions as after the
    handshake), aiortc sender and receiver, and the bridge's session on them: what a PeerLeg
    has."""

    def __init__(self) -> None:
        hooks.install()
        self.ice = RTCIceTransport(RTCIceGatherer())
        self.dtls = RTCDtlsTransport(self.ice, [RTCCertificate.generateCertificate()])
        self.dtls._rx_srtp = srtp(Policy.SSRC_ANY_INBOUND)
        self.dtls._tx_srtp = srtp(Policy.SSRC_ANY_OUTBOUND)
        self.dtls._state = State.CONNECTED
        self.connection = self.ice._connection
        self.protocol = aioice.ice.StunProtocol(self.connection)
        self.protocol.local_candidate = SimpleNamespace(component=1)  # type: ignore[assignment]
        self.socket = Socket()
        self.protocol.transport = self.socket  # type: ignore[assignment]
        self.connection._nominated[1] = SimpleNamespace(protocol=self.protocol, remote_addr=ADDR)  # type: ignore[assignment]
        self.receiver = RTCRtpReceiver("audio", self.dtls)
        self.sender = RTCRtpSender("audio", self.dtls)
        self.playout = Playout()
        self.session = RtpSession(1, "test")
        self.tasks = TaskSet("test-leg")
        self.rtp = RtpLeg(
            self.session,
            codec="opus",
            on_frame=lambda pcm: None,
            stats=BusStats(),
            tasks=self.tasks,
        )
        self.session.playout = self.playout  # type: ignore[assignment]
        transceiver = SimpleNamespace(sender=self.sender, receiver=self.receiver)
        self.wire = DtlsSrtp(self.rtp, transceiver, self.tasks, "test leg")
        self.track = QuietTrack()
        self.rtp.track = self.track  # type: ignore[assignment]
        self.lean = self.rtp.sender
        self.red = RedStats()
        self.digits: list[tuple[str, int]] = []
        self.detector = DtmfDetector(lambda d, ms: self.digits.append((d, ms)))
        self.session.take_red(RED_PT, 111, self.red)
        self.session.take_dtmf(lambda: DTMF_PT, self.detector)
        self.tx = srtp(Policy.SSRC_ANY_OUTBOUND)
        self.rx = srtp(Policy.SSRC_ANY_INBOUND)

    async def start(self, codecs: list[RTCRtpCodecParameters] | None = None) -> None:
        """What aiortc's connect does once DTLS is up: send, then receive."""
        send = RTCRtpSendParameters(codecs=codecs or [OPUS], headerExtensions=MID, muxId="0")
        send.rtcp.ssrc = OUR_SSRC
        send.rtcp.cname = "cname-of-the-sdp"
        await self.sender.send(send)
        await self.receiver.receive(
            RTCRtpReceiveParameters(
                codecs=codecs or [OPUS],
                headerExtensions=MID,
                encodings=[RTCRtpDecodingParameters(ssrc=SSRC, payloadType=111)],
                muxId="0",
            )
        )

    def send(self, packet: bytes, at: float | None = None) -> None:
        """One packet, protected, through the UDP guard as it arrives from the socket, ``at``
        its arrival stamp (``None``: as from the loop's transport, now)."""
        data = self.tx.protect(packet)
        if at is None:
            guard.guarded_datagram_received(self.protocol, data, ADDR)
        else:
            guard.guarded_datagram_arrived(self.protocol, data, ADDR, at)

    def queued(self) -> list[bytes]:
        """What went into aioice's queue, for aiortc's DTLS transport."""
        out = []
        while not self.connection._queue.empty():
            out.append(self.connection._queue.get_nowait()[0])
        return out

    @property
    def stream(self) -> RtpReception:
        return self.session.reports.reception

    async def stop(self) -> None:
        await self.tasks.close()
        self.rtp.stop(bye=True)
        self.wire.close()


@pytest.fixture
async def leg() -> Any:
    leg = Leg()
    await leg.start()
    yield leg
    await leg.stop()


def test_record_counts_as_aiortc_does_with_loss_reordering_duplicates_and_a_wrap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fed the same packets at the same arrival times, the bridge's ``RtpReception`` and
    aiortc's ``StreamStatistics.add`` end with the same counters, loss, fraction lost and
    jitter."""
    rng = random.Random(7)
    seqs: list[int] = []
    seq = 65_000  # the sequence number wraps at 65536 on the way
    for _ in range(2000):
        seq = (seq + 1) & 0xFFFF
        r = rng.random()
        if r < 0.05:
            continue  # lost
        seqs.append(seq)
        if r < 0.08:
            seqs.append(seq)  # duplicated
    for i in range(0, len(seqs) - 1, 37):
        seqs[i], seqs[i + 1] = seqs[i + 1], seqs[i]  # reordered
    theirs, ours = StreamStatistics(48_000), RtpReception(48_000)
    now = [1_700_000_000.0]
    monkeypatch.setattr(aiortc_receiver.time, "time", lambda: now[0])
    fractions = []
    for i, s in enumerate(seqs):
        now[0] += 0.02 + rng.uniform(-0.004, 0.004)
        ts = ((s - 65_000) & 0xFFFF) * 960 + 12_345
        theirs.add(RtpPacket(sequence_number=s, timestamp=ts))
        ours.received(s, ts, now[0])
        if i % 50 == 49:
            fractions.append((theirs.fraction_lost, ours.fraction_lost()))
    fields = ("packets_received", "base_seq", "_jitter_q4", "_last_arrival")
    assert [getattr(ours, f) for f in fields] == [getattr(theirs, f) for f in fields]
    assert ours.highest == theirs.cycles + theirs.max_seq  # the extended highest number
    assert ours.cumulative_lost == ours.packets_lost == theirs.packets_lost > 0
    assert ours.jitter == theirs.jitter > 0
    assert all(a == b for a, b in fractions) and any(a for a, _ in fractions)
    assert theirs.cycles == 1 << 16


def test_the_jitter_survives_the_rtp_timestamp_wrapping_and_events_count_without_it() -> None:
    stream = RtpReception(48_000)
    t = 100.0
    ts = 0xFFFFFFFF - 5 * 960
    for seq in range(20):
        stream.received(seq, ts & 0xFFFFFFFF, t)
        ts += 960
        t += 0.02
    assert stream.jitter < 5  # aiortc's non-modular difference: ~2^32 / 16 here
    # A key press: telephone-event packets in the same sequence space, one RTP timestamp on
    # another clock. Received, not lost, and no jump in the jitter.
    jitter = stream._jitter_q4
    for seq in range(20, 26):
        stream.numbered(seq)
        t += 0.02
    assert stream.packets_received == 26 and stream.packets_lost == 0
    assert stream._jitter_q4 == jitter and stream.highest == 25


@pytest.mark.parametrize(
    "packet",
    [
        rtp(1, 960, b"opus"),
        rtp(1, 960, b"opus", ext=b""),
        rtp(1, 960, b"opus", csrcs=2),
        rtp(1, 960, b"opus", padding=3),
        rtp(1, 960, b"", padding=1),
        rtp(1, 960, b""),
    ],
)
def test_the_payload_is_where_aiortcs_parser_finds_it(packet: bytes) -> None:
    bounds = payload_bounds(packet)
    assert bounds is not None
    assert packet[bounds[0] : bounds[1]] == RtpPacket.parse(packet).payload


@pytest.mark.parametrize(
    "packet",
    [
        rtp(1, 960, b"opus")[:11],  # shorter than a header
        bytes([0x40]) + rtp(1, 960, b"opus")[1:],  # version 1
        rtp(1, 960, b"", csrcs=3)[:20],  # truncated CSRCs
        rtp(1, 960, b"", ext=struct.pack("!HH", 0xBEDE, 9) + bytes(4)),  # truncated extension
        bytes([0xA0]) + rtp(1, 960, b"op", ext=b"")[1:-1] + b"\x00",  # padding length 0
        bytes([0xA0]) + rtp(1, 960, b"op", ext=b"")[1:-1] + b"\x09",  # more padding than payload
    ],
)
def test_malformed_packets_are_refused_as_aiortc_refuses_them(packet: bytes) -> None:
    assert payload_bounds(packet) is None
    with pytest.raises(ValueError):
        RtpPacket.parse(packet)


async def test_opus_packets_reach_the_receiver_with_their_numbers_and_times(leg: Leg) -> None:
    sent = [(seq, 1000 + seq * 960, bytes([seq]) * (20 + seq)) for seq in range(100, 110)]
    arriving = [*sent[:3], sent[4], sent[3], *sent[5:]]  # 103 and 104 swapped
    for seq, ts, payload in arriving:
        leg.send(rtp(seq, ts, payload))
    assert leg.playout.packets == arriving
    assert not leg.queued()  # aiortc's DTLS transport never woke
    assert leg.session.packets == 10
    assert leg.stream.packets_received == 10 and leg.stream.packets_lost == 0
    assert leg.session.reports.remote_ssrc == SSRC


async def test_aiortcs_sender_and_receiver_never_start(leg: Leg) -> None:
    """aiortc's connect calls ``send`` and ``receive``: the session takes both, so neither
    aiortc object runs a task, registers with the DTLS transport's router or decodes."""
    assert not leg.sender._RTCRtpSender__started  # type: ignore[attr-defined]
    assert not leg.receiver._RTCRtpReceiver__started  # type: ignore[attr-defined]
    assert not leg.dtls._rtp_router.receivers and not leg.dtls._rtp_router.senders
    assert leg.session.ssrc == OUR_SSRC  # the SSRC and CNAME aiortc's SDP announced
    assert leg.session.reports.cname == b"cname-of-the-sdp"
    await leg.receiver.stop()  # what the peer connection's close calls: nothing to stop
    # A connect that finishes while the leg closes starts nothing, aiortc's sender neither.
    await leg.tasks.close()
    leg.wire.close()
    send = RTCRtpSendParameters(codecs=[OPUS], headerExtensions=MID, muxId="0")
    send.rtcp.ssrc = OUR_SSRC
    await leg.sender.send(send)
    await leg.receiver.receive(RTCRtpReceiveParameters(codecs=[OPUS], muxId="0"))
    assert not leg.sender._RTCRtpSender__started  # type: ignore[attr-defined]
    assert not leg.receiver._RTCRtpReceiver__started  # type: ignore[attr-defined]


async def test_red_is_split_and_dtmf_is_detected_and_both_are_counted(leg: Leg) -> None:
    leg.send(rtp(1, 960, b"first"))
    # RED (RFC 2198): a redundant copy of the previous frame (offset 960), then the primary.
    header = bytes([0x80 | 111]) + (960 << 10 | 5).to_bytes(3, "big") + bytes([111])
    red = header + b"first" + b"second"
    leg.send(rtp(2, 1920, red, pt=RED_PT))
    assert leg.playout.copies == [(960, b"first")]
    assert leg.playout.packets[-1] == (2, 1920, b"second")
    assert leg.red.packets == 1
    leg.send(rtp(3, 2880, b"\xff\x01", pt=RED_PT))  # a broken RED payload
    assert leg.red.malformed == 1
    # A key press of "5": three packets and the end packet, in the audio's sequence space.
    for i, seq in enumerate(range(4, 8)):
        end = seq == 7
        leg.send(rtp(seq, 2880, event_payload(5, end, 160 * (i + 1)), pt=DTMF_PT, marker=i == 0))
    leg.send(rtp(8, 3840, b"after"))
    assert leg.digits == [("5", 80)]
    assert [p[0] for p in leg.playout.packets] == [1, 2, 8]
    assert leg.playout.numbers == [4, 5, 6, 7]  # no gap in the audio's numbers (a DTX sender's)
    # Everything but the broken RED packet was received: nothing is reported lost for the key
    # press (aiortc never counted those packets: each press was loss in its reports).
    assert leg.stream.packets_received == 7 and leg.stream.packets_lost == 1
    assert not leg.queued()


async def test_dtls_and_what_comes_before_the_keys_go_to_aiortc_other_payloads_are_counted(
    leg: Leg,
) -> None:
    # Before DTLS has set up SRTP, everything is aiortc's.
    keys, leg.dtls._rx_srtp = leg.dtls._rx_srtp, None
    data = leg.tx.protect(rtp(1, 960, b"x"))
    guard.guarded_datagram_received(leg.protocol, data, ADDR)
    assert leg.queued() == [data]
    assert not leg.playout.packets
    leg.dtls._rx_srtp = keys  # the keys set (the wire keeps the session from its next packet)
    leg.send(rtp(2, 960, b"x", pt=0))  # a payload type nobody negotiated (PCMU)
    assert leg.session.unknown_payloads == 1 and not leg.playout.packets
    dtls_record = b"\x17\xfe\xfd" + bytes(8) + b"\x00\x01" + b"\x00"
    guard.guarded_datagram_received(leg.protocol, dtls_record, ADDR)
    assert leg.queued() == [dtls_record]  # RFC 7983: 20-63 is DTLS, as it came


async def test_a_packet_that_fails_srtp_is_dropped_and_the_stream_goes_on(leg: Leg) -> None:
    data = bytearray(leg.tx.protect(rtp(1, 960, b"opus")))
    data[-1] ^= 0xFF  # the authentication tag
    guard.guarded_datagram_received(leg.protocol, bytes(data), ADDR)
    leg.send(rtp(2, 1920, b"opus"))
    assert leg.wire.auth_failed == 1
    assert leg.playout.packets == [(2, 1920, b"opus")]


async def test_a_new_ssrc_starts_its_report_block_afresh_and_the_totals_go_on(leg: Leg) -> None:
    leg.send(rtp(1, 960, b"a"))
    leg.send(rtp(500, 960, b"b", ssrc=0x777))  # a restarted sender
    assert [p[0] for p in leg.playout.packets] == [1, 500]
    assert leg.session.reports.remote_ssrc == 0x777
    # The report block is the new source's: one expected from 500, none lost...
    assert (leg.stream.base_seq, leg.stream.highest, leg.stream.packets_expected) == (500, 500, 1)
    assert leg.stream.cumulative_lost == 0
    # ...while the counts read over the call go on (none lost: 498 numbers skipped are no loss).
    assert leg.stream.packets_received == 2 and leg.stream.packets_lost == 0


async def test_our_reports_count_what_was_received_and_reach_the_far_end_protected(
    leg: Leg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our receiver report block: fraction lost, cumulative loss, highest sequence and jitter
    of what arrived, as aiortc's own statistics count the same packets; sent as SRTCP to the
    nominated pair, with our SSRC (the one our SDP announced)."""
    received = [s for s in range(500, 600) if s % 10 != 3]  # 10 of 100 lost
    rng = random.Random(3)
    now = [1_700_000_000.0]
    clock = SimpleNamespace(time=lambda: now[0])
    monkeypatch.setattr(rtcp, "time", clock)
    monkeypatch.setattr(aiortc_receiver, "time", clock)
    reference = StreamStatistics(48_000)
    for seq in received:
        now[0] += 0.02 + rng.uniform(-0.005, 0.005)
        leg.send(rtp(seq, seq * 960, b"opus"), at=now[0])  # the socket's stamp
        reference.add(RtpPacket(sequence_number=seq, timestamp=seq * 960))
    leg.wire.send_rtcp(leg.session.report())
    packets = RtcpPacket.parse(leg.rx.unprotect_rtcp(leg.socket.sent[-1]))
    rr = next(p for p in packets if isinstance(p, RtcpRrPacket))
    assert rr.ssrc == OUR_SSRC
    (report,) = rr.reports
    assert report.ssrc == SSRC
    assert report.packets_lost == 10
    assert report.fraction_lost == 10 * 256 // 100  # 100 expected from 500 to 599
    assert report.highest_sequence == 599
    assert report.jitter == reference.jitter > 0
    # While its packets are forwarded into a lossier leg, the report says that leg's loss.
    leg.session.loss_beyond = lambda: 0.25
    packets = RtcpPacket.parse(leg.session.report())
    assert next(p for p in packets if isinstance(p, RtcpRrPacket)).reports[0].fraction_lost == 64
    quality = leg.session.quality()
    assert quality.uplink_packets == 90 and quality.uplink_lost == 10


async def test_what_we_send_is_our_stream_and_the_far_ends_reports_reach_the_encoder(
    leg: Leg,
) -> None:
    losses: list[float] = []
    leg.session.on_report = losses.append
    lean = leg.lean
    assert lean.running
    assert leg.session.stream.extension == struct.pack("!HHBBH", 0xBEDE, 1, 0x40, ord("0"), 0)
    leg.session.stream.extension = b""
    lean.send_now(b"opus", 0)
    lean.send_now(b"opus", 960)
    first, second = (RtpPacket.parse(leg.rx.unprotect(p)) for p in leg.socket.sent[-2:])
    assert first.ssrc == second.ssrc == OUR_SSRC
    assert second.sequence_number == (first.sequence_number + 1) & 0xFFFF
    assert (second.timestamp - first.timestamp) & 0xFFFFFFFF == 960
    # Our sender report carries what we sent; the far end's report block about us is heard.
    packets = RtcpPacket.parse(leg.session.report())
    sr = next(p for p in packets if isinstance(p, RtcpSrPacket))
    assert sr.sender_info.packet_count == 2 and sr.sender_info.octet_count == 8
    block = rtcp_packets.report_block(OUR_SSRC, 51, 3, 1000, 0, 0, 0)
    data = leg.tx.protect_rtcp(rtcp_packets.receiver_report(SSRC, block, 1))
    guard.guarded_datagram_received(leg.protocol, data, ADDR)
    assert losses == [51 / 256] and leg.wire.rtcp_received == 1
    assert leg.session.quality().downlink_lost == 3
    # Once closed, the last report says goodbye (RFC 3550 §6.6) and nothing more goes out.
    await leg.stop()
    packets = RtcpPacket.parse(leg.rx.unprotect_rtcp(leg.socket.sent[-1]))
    assert any(p.__class__.__name__ == "RtcpByePacket" for p in packets)
    with pytest.raises(ConnectionError):
        lean.send_now(b"opus", 1920)
    assert leg.track.stopped and not lean.running


async def test_no_opus_nothing_received_or_sent(caplog: pytest.LogCaptureFixture) -> None:
    leg = Leg()
    await leg.start(codecs=[PCMU])
    assert "not Opus" in caplog.text and "no Opus negotiated" in caplog.text
    assert not leg.lean.running
    await leg.stop()


async def test_close_gives_the_connection_back() -> None:
    leg = Leg()
    await leg.start()
    assert aiortc_seam.taken_datagrams(leg.connection) == leg.wire.datagram
    await leg.stop()
    assert "data_received" not in vars(leg.connection)
    assert aiortc_seam.taken_datagrams(leg.connection) is None
    data = leg.tx.protect(rtp(1, 960, b"x"))
    guard.guarded_datagram_received(leg.protocol, data, ADDR)
    assert leg.queued() == [data]


def test_stun_still_goes_to_aioice(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(guard, "verdict", lambda *a: None)
    monkeypatch.setattr(guard, "_ORIGINAL_STUN", lambda self, data, addr: seen.append(data))
    protocol = SimpleNamespace(
        receiver=SimpleNamespace(data_received=lambda data, c: seen.append(("media", data)))
    )
    protocol.local_candidate = SimpleNamespace(component=1)  # type: ignore[attr-defined]
    guard.guarded_datagram_received(protocol, b"\x00\x01" + bytes(18), ADDR)
    guard.guarded_datagram_received(protocol, b"\x80" + bytes(20), ADDR)
    assert seen == [b"\x00\x01" + bytes(18), ("media", b"\x80" + bytes(20))]


async def test_a_failure_on_one_packet_is_counted_and_the_next_one_goes_through(leg: Leg) -> None:
    from bridge.rtc.counters import UDP_DROPS

    before = UDP_DROPS["rtp_receive_error"]
    packet = leg.playout.packet

    def broken(seq: int, timestamp: int, payload: bytes, at: float) -> None:
        leg.playout.packet = packet  # type: ignore[method-assign]
        raise ValueError("a bug on one packet")

    leg.playout.packet = broken  # type: ignore[method-assign]
    leg.send(rtp(1, 960, b"a"))
    leg.send(rtp(2, 1920, b"b"))
    assert UDP_DROPS["rtp_receive_error"] == before + 1
    assert leg.playout.packets == [(2, 1920, b"b")]
