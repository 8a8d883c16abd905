"""The lean RTP receive path (bridge/rtc/rtprecv.py): SRTP packets from the UDP guard's
datagram callback reach the leg's receiver with their sequence numbers, timestamps and
payloads; RED and telephone-event are split off as before; what is not its own goes to aiortc;
and aiortc's RTCP receiver reports and inbound stats count exactly what was received."""

from __future__ import annotations

import asyncio
import queue
import random
import struct
from types import SimpleNamespace
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCCertificate, RTCIceGatherer, RTCIceTransport, RTCRtpCodecParameters
from aiortc import rtcrtpreceiver as aiortc_receiver
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import (
    RTCRtpDecodingParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack, RTCRtpReceiver, StreamStatistics
from aiortc.rtp import RtcpRrPacket, RtpPacket
from pylibsrtp import Policy, Session

from bridge.rtc import aiortc_seam, guard, rtprecv
from bridge.rtc.reception import ReceptionStats, record
from bridge.rtc.red import RedStats
from bridge.rtc.rfc4733 import DtmfDetector, event_payload
from bridge.rtc.rtprecv import payload_bounds
from bridge.rtc.uplink import ReceiverBuffer

from ..support.waits import until

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48_000, channels=2, payloadType=111)
PCMU = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, channels=1, payloadType=0)
RED_PT, DTMF_PT = 63, 126
SSRC = 0x1234ABCD
KEY = bytes(range(30))
ADDR = ("127.0.0.1", 40000)
EXTENSION = struct.pack("!HH", 0xBEDE, 1) + bytes([0x10, 0x20, 0x40]) + b"0"


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
        self._stop: queue.Queue[None] = queue.Queue()

    def packet(self, seq: int, timestamp: int, payload: bytes) -> None:
        self.packets.append((seq, timestamp, payload))

    def redundant(self, timestamp: int, payload: bytes) -> None:
        self.copies.append((timestamp, payload))

    def numbered(self, seq: int) -> None:
        self.numbers.append(seq)

    def put(self, task: Any) -> None:
        if task is None:
            self._stop.put(None)

    def get(self) -> None:
        return self._stop.get()


class Leg:
    """A real aioice connection, aiortc DTLS transport (with its libsrtp session as after the
    handshake) and audio receiver, with the lean path installed: what a PeerLeg has."""

    def __init__(self, codecs: list[RTCRtpCodecParameters] | None = None) -> None:
        aiortc_seam.install()
        self.ice = RTCIceTransport(RTCIceGatherer())
        self.dtls = RTCDtlsTransport(self.ice, [RTCCertificate.generateCertificate()])
        self.dtls._rx_srtp = srtp(Policy.SSRC_ANY_INBOUND)
        self.dtls._state = State.CONNECTED
        self.connection = self.ice._connection
        self.protocol = aioice.ice.StunProtocol(self.connection)
        self.protocol.local_candidate = SimpleNamespace(component=1)  # type: ignore[assignment]
        self.connection._nominated[1] = SimpleNamespace(protocol=self.protocol, remote_addr=ADDR)  # type: ignore[assignment]
        self.receiver = RTCRtpReceiver("audio", self.dtls)
        self.receiver._track = RemoteStreamTrack("audio")
        self.playout = Playout()
        self.receiver._RTCRtpReceiver__jitter_buffer = ReceiverBuffer(self.playout)  # type: ignore[attr-defined, arg-type]
        self.receiver._RTCRtpReceiver__decoder_queue = self.playout  # type: ignore[attr-defined]
        self.lean = rtprecv.install(self.receiver, self.playout)  # type: ignore[arg-type]
        self.red = RedStats()
        self.digits: list[tuple[str, int]] = []
        self.detector = DtmfDetector(lambda d, ms: self.digits.append((d, ms)))
        self.lean.take_red(RED_PT, 111, self.red)
        self.lean.take_dtmf(lambda: DTMF_PT, self.detector)
        self.codecs = codecs or [OPUS]
        self.tx = srtp(Policy.SSRC_ANY_OUTBOUND)

    async def start(self) -> None:
        await self.receiver.receive(
            RTCRtpReceiveParameters(
                codecs=self.codecs,
                headerExtensions=[
                    RTCRtpHeaderExtensionParameters(
                        id=1, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"
                    ),
                    RTCRtpHeaderExtensionParameters(
                        id=4, uri="urn:ietf:params:rtp-hdrext:sdes:mid"
                    ),
                ],
                encodings=[RTCRtpDecodingParameters(ssrc=SSRC, payloadType=111)],
                muxId="0",
            )
        )

    def send(self, packet: bytes) -> None:
        """One packet, protected, through the UDP guard as it arrives from the socket."""
        guard.guarded_datagram_received(self.protocol, self.tx.protect(packet), ADDR)

    def queued(self) -> list[bytes]:
        """What went into aioice's queue, for aiortc's receive task."""
        out = []
        while not self.connection._queue.empty():
            out.append(self.connection._queue.get_nowait()[0])
        return out

    @property
    def stream(self) -> ReceptionStats:
        return self.receiver._RTCRtpReceiver__remote_streams[SSRC]  # type: ignore[attr-defined, no-any-return]

    async def stop(self) -> None:
        await self.receiver.stop()
        self.lean.detach()


@pytest.fixture
async def leg() -> Any:
    leg = Leg()
    await leg.start()
    yield leg
    await leg.stop()


def test_record_counts_as_aiortc_does_with_loss_reordering_duplicates_and_a_wrap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fed the same packets at the same arrival times, the bridge's ``ReceptionStats`` and
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
    theirs, ours = StreamStatistics(48_000), ReceptionStats(48_000)
    now = [1_700_000_000.0]
    monkeypatch.setattr(aiortc_receiver.time, "time", lambda: now[0])
    fractions = []
    for i, s in enumerate(seqs):
        now[0] += 0.02 + rng.uniform(-0.004, 0.004)
        ts = ((s - 65_000) & 0xFFFF) * 960 + 12_345
        theirs.add(RtpPacket(sequence_number=s, timestamp=ts))
        record(ours, s, ts, now[0])
        if i % 50 == 49:
            fractions.append((theirs.fraction_lost, ours.fraction_lost))
    fields = ("packets_received", "base_seq", "max_seq", "cycles", "_jitter_q4", "_last_arrival")
    assert [getattr(ours, f) for f in fields] == [getattr(theirs, f) for f in fields]
    assert ours.packets_lost == theirs.packets_lost > 0
    assert ours.jitter == theirs.jitter > 0
    assert all(a == b for a, b in fractions) and any(a for a, _ in fractions)
    assert ours.cycles == 1 << 16


def test_the_jitter_survives_the_rtp_timestamp_wrapping_and_events_count_without_it() -> None:
    stream = ReceptionStats(48_000)
    t = 100.0
    ts = 0xFFFFFFFF - 5 * 960
    for seq in range(20):
        record(stream, seq, ts & 0xFFFFFFFF, t)
        ts += 960
        t += 0.02
    assert stream.jitter < 5  # aiortc's non-modular difference: ~2^32 / 16 here
    # A key press: telephone-event packets in the same sequence space, one RTP timestamp on
    # another clock. Received, not lost, and no jump in the jitter.
    jitter = stream._jitter_q4
    for seq in range(20, 26):
        record(stream, seq, 777, t, audio=False)
        t += 0.02
    assert stream.packets_received == 26 and stream.packets_lost == 0
    assert stream._jitter_q4 == jitter and stream.max_seq == 25


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
    assert not leg.queued()  # aiortc's receive task never woke
    assert leg.lean.packets == 10
    transport = leg.dtls._get_stats()
    stats = next(iter(transport.values()))
    assert stats.packetsReceived == 10  # the transport's own counters, as aiortc keeps them
    assert stats.bytesReceived == sum(len(p) + 12 + len(EXTENSION) + 10 for *_, p in sent)
    assert leg.stream.packets_received == 10 and leg.stream.packets_lost == 0
    assert leg.receiver.getSynchronizationSources()[0].source == SSRC


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
    # press (aiortc never saw those packets: each press was loss in its reports).
    assert leg.stream.packets_received == 7 and leg.stream.packets_lost == 1
    assert not leg.queued()


async def test_what_is_not_its_own_goes_to_aiortc_untouched(leg: Leg) -> None:
    other_receiver = object()
    leg.dtls._rtp_router.ssrc_table[0xBEEF] = other_receiver  # type: ignore[assignment]
    packets = [
        rtp(1, 960, b"x", ssrc=0xBEEF),  # another receiver's SSRC
        rtp(2, 960, b"x", pt=0),  # another payload type (PCMU)
        bytes([0x80, 201]) + bytes(30),  # RTCP
    ]
    protected = [leg.tx.protect(p) if p[1] != 201 else p for p in packets]
    for data in protected:
        guard.guarded_datagram_received(leg.protocol, data, ADDR)
    dtls_record = b"\x17\xfe\xfd" + bytes(8) + b"\x00\x01" + b"\x00"
    guard.guarded_datagram_received(leg.protocol, dtls_record, ADDR)
    assert leg.queued() == [*protected, dtls_record]  # as they came, still protected
    assert not leg.playout.packets and leg.lean.packets == 0
    # Before DTLS has set up SRTP, everything is aiortc's too.
    leg.dtls._rx_srtp = None
    data = leg.tx.protect(rtp(3, 960, b"x"))
    guard.guarded_datagram_received(leg.protocol, data, ADDR)
    assert leg.queued() == [data]


async def test_a_packet_that_fails_srtp_is_dropped_and_the_stream_goes_on(leg: Leg) -> None:
    data = bytearray(leg.tx.protect(rtp(1, 960, b"opus")))
    data[-1] ^= 0xFF  # the authentication tag
    guard.guarded_datagram_received(leg.protocol, bytes(data), ADDR)
    leg.send(rtp(2, 1920, b"opus"))
    assert leg.lean.unprotect_failed == 1
    assert leg.playout.packets == [(2, 1920, b"opus")]


async def test_a_new_ssrc_is_learnt_as_aiortcs_router_learns_it(leg: Leg) -> None:
    leg.send(rtp(1, 960, b"a", ssrc=0x777))  # not signalled: the only Opus receiver takes it
    assert leg.playout.packets == [(1, 960, b"a")]
    assert leg.dtls._rtp_router.ssrc_table[0x777] is leg.receiver


async def test_a_stream_aiortc_started_before_the_lean_path_attached_is_adopted(leg: Leg) -> None:
    """A packet aiortc routed itself (before the lean path took the connection) left its own
    ``StreamStatistics`` in the receiver's table: the lean path takes its counts over instead
    of failing on every later packet (what CI met: one packet received, then none)."""
    theirs = StreamStatistics(48_000)
    theirs.add(RtpPacket(sequence_number=9, timestamp=9 * 960))
    leg.receiver._RTCRtpReceiver__remote_streams[SSRC] = theirs  # type: ignore[attr-defined]
    for seq in (10, 11, 13):
        leg.send(rtp(seq, seq * 960, b"opus"))
    assert [p[0] for p in leg.playout.packets] == [10, 11, 13]
    ours = leg.receiver._RTCRtpReceiver__remote_streams[SSRC]  # type: ignore[attr-defined]
    assert isinstance(ours, ReceptionStats)
    assert ours.packets_received == 4 and ours.base_seq == 9 and ours.packets_lost == 1


async def test_the_receiver_reports_count_what_was_received(
    leg: Leg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiortc's RTCP task builds its receiver report from the counters the lean path keeps:
    fraction lost, cumulative loss, highest sequence and jitter of what arrived."""
    sent_rtcp: list[Any] = []

    async def send_rtcp(packet: Any) -> None:
        sent_rtcp.append(packet)

    leg.receiver._send_rtcp = send_rtcp  # type: ignore[method-assign]
    leg.receiver._set_rtcp_ssrc(0x42)
    received = [s for s in range(500, 600) if s % 10 != 3]  # 10 of 100 lost
    # Arrival times with jitter; aiortc's own statistics, fed the same, are the reference.
    rng = random.Random(3)
    now = [1_700_000_000.0]
    clock = SimpleNamespace(time=lambda: now[0])
    monkeypatch.setattr(rtprecv, "time", clock)
    monkeypatch.setattr(aiortc_receiver, "time", clock)
    reference = StreamStatistics(48_000)
    for seq in received:
        now[0] += 0.02 + rng.uniform(-0.005, 0.005)
        leg.send(rtp(seq, seq * 960, b"opus"))
        reference.add(RtpPacket(sequence_number=seq, timestamp=seq * 960))
    monkeypatch.setattr(aiortc_receiver.random, "random", lambda: 0.0)
    task = asyncio.ensure_future(leg.receiver._run_rtcp())
    await until(lambda: sent_rtcp, 2.0, "a receiver report")
    task.cancel()
    report = next(p for p in sent_rtcp if isinstance(p, RtcpRrPacket)).reports[0]
    assert report.ssrc == SSRC
    assert report.packets_lost == 10
    assert report.fraction_lost == 10 * 256 // 100  # 100 expected from 500 to 599
    assert report.highest_sequence == 599
    assert report.jitter == reference.jitter > 0
    stats = await leg.receiver.getStats()
    inbound = next(s for s in stats.values() if s.type == "inbound-rtp")
    assert inbound.packetsReceived == 90 and inbound.packetsLost == 10


async def test_no_opus_no_lean_path() -> None:
    leg = Leg(codecs=[PCMU])
    await leg.start()
    assert leg.lean.dtls is None and "data_received" not in vars(leg.connection)
    await leg.stop()


async def test_detach_gives_the_connection_back() -> None:
    leg = Leg()
    await leg.start()
    assert vars(leg.connection)["data_received"] == leg.lean.datagram
    await leg.stop()
    assert "data_received" not in vars(leg.connection)
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


async def test_a_receiver_without_the_private_fields_is_refused() -> None:
    leg = Leg()
    del leg.receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="remote_streams"):
        rtprecv.install(leg.receiver, leg.playout)  # type: ignore[arg-type]


async def test_a_failure_on_one_packet_is_counted_and_the_next_one_goes_through(leg: Leg) -> None:
    from bridge.rtc.counters import UDP_DROPS

    before = UDP_DROPS["dtls_receive_error"]
    packet = leg.playout.packet

    def broken(seq: int, timestamp: int, payload: bytes) -> None:
        leg.playout.packet = packet  # type: ignore[method-assign]
        raise ValueError("a bug on one packet")

    leg.playout.packet = broken  # type: ignore[method-assign]
    leg.send(rtp(1, 960, b"a"))
    leg.send(rtp(2, 1920, b"b"))
    assert UDP_DROPS["dtls_receive_error"] == before + 1
    assert leg.playout.packets == [(2, 1920, b"b")]
