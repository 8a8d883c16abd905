"""The bridge's own RTP send path (rtc/rtpsend.py): one owner of a stream's sequence numbers
and RTP time across encoded, forwarded and DTMF packets; the marker bit of RFC 3551 §4.1 /
RFC 7587; the session's sender reports counting exactly what was sent."""

from __future__ import annotations

import asyncio
import itertools
import re
import time

import numpy as np
from aiortc.rtp import RtcpPacket, RtcpSrPacket, RtpPacket

from bridge.audio import FRAME_SAMPLES
from bridge.rtc import rtpsend
from bridge.rtc.passthrough import PassThrough
from bridge.rtc.rfc4733 import KeyPresses
from bridge.rtc.rtp_session import RtpSession
from bridge.rtc.rtpsend import LeanSender, RtpStream, ntp_time
from bridge.rtc.tracks import OpusBusTrack

from ..support.waits import until

EVENT_PT = 101


class Tone:
    """A 440 Hz tone, 20 ms at a time (a ``FrameSource``)."""

    def __init__(self) -> None:
        self.n = 0

    def take(self, now: float) -> np.ndarray:
        t = (np.arange(FRAME_SAMPLES) + self.n * FRAME_SAMPLES) / 16_000
        self.n += 1
        return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)

    def detach(self) -> None:
        pass


class Wire:
    """A leg's wire with SRTP as the identity: the test reads the packets as sent; after
    ``dead_after`` packets it is gone, as a closed DTLS transport is."""

    def __init__(self, dead_after: int | None = None) -> None:
        self.sent: list[bytes] = []
        self.dead_after = dead_after

    def send_rtp(self, plain: bytes) -> None:
        if self.dead_after is not None and len(self.sent) >= self.dead_after:
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        self.sent.append(plain)

    def packets(self) -> list[RtpPacket]:
        return [RtpPacket.parse(d) for d in self.sent]


def test_the_marker_bit_is_set_on_the_first_packet_and_after_a_pause_only() -> None:
    s = RtpStream(0x1234, 111, first_seq=100, origin=0)
    marks = [RtpPacket.parse(s.packetise(b"x", 960 * i)).marker for i in range(3)]
    assert marks == [1, 0, 0]
    # Nothing sent for 200 ms (DTX, a source that paused): the next packet starts a talkspurt.
    assert RtpPacket.parse(s.packetise(b"x", 960 * 12)).marker == 1
    assert RtpPacket.parse(s.packetise(b"x", 960 * 13)).marker == 0
    # A forwarded packet after a loss before the bridge: a gap in both numbers, no talkspurt.
    loss = RtpPacket.parse(s.packetise(b"x", 960 * 15, s.next_seq + 1))
    assert loss.marker == 0 and loss.sequence_number == 106
    # An event says so itself, and moves neither the audio's RTP time nor its marker logic.
    ev = RtpPacket.parse(s.packetise(b"ev", 960 * 16, marker=True, payload_type=EVENT_PT))
    assert (ev.marker, ev.payload_type, ev.sequence_number) == (1, EVENT_PT, 107)
    assert s.last_pts == 960 * 15
    nxt = RtpPacket.parse(s.packetise(b"x", 960 * 16))
    assert (nxt.marker, nxt.sequence_number) == (0, 108)
    assert s.packets == 8 and s.octets == 9 and s.markers == 3


def test_a_reordered_forwarded_packet_keeps_its_number_and_moves_nothing_back() -> None:
    s = RtpStream(1, 111, first_seq=0xFFFE, origin=0xFFFFFF00)
    a = RtpPacket.parse(s.packetise(b"a", 0))
    c = RtpPacket.parse(s.packetise(b"c", 1920, 0))  # 0xFFFF lost or late, numbers wrap
    b = RtpPacket.parse(s.packetise(b"b", 960, 0xFFFF))  # the late one
    d = RtpPacket.parse(s.packetise(b"d", 2880))
    assert [p.sequence_number for p in (a, c, b, d)] == [0xFFFE, 0, 0xFFFF, 1]
    assert [p.timestamp for p in (a, b, c, d)] == [0xFFFFFF00, 0x2C0, 0x680, 0xA40]
    assert s.last_pts == 2880


def test_the_header_extension_block_is_what_aiortc_writes() -> None:
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensionsMap

    for ext_id, mid in ((1, "0"), (4, "audio"), (14, "a" * 16)):
        m = HeaderExtensionsMap()
        m.configure(
            RTCRtpParameters(
                headerExtensions=[
                    RTCRtpHeaderExtensionParameters(
                        id=ext_id, uri="urn:ietf:params:rtp-hdrext:sdes:mid"
                    )
                ]
            )
        )
        s = RtpStream(7, 111, first_seq=5, origin=0)
        s.extension = rtpsend.mid_extension(ext_id, mid)
        ours = s.packetise(b"opus", 960, marker=False)
        theirs = RtpPacket(
            payload_type=111, sequence_number=5, timestamp=960, ssrc=7, payload=b"opus"
        )
        theirs.extensions.mid = mid
        assert ours == theirs.serialize(m)
        assert RtpPacket.parse(ours, m).extensions.mid == mid
    assert rtpsend.mid_extension(1, None) == b""
    assert rtpsend.mid_extension(15, "0") == b""  # 15 is reserved (RFC 8285 §4.2)


async def test_numbers_and_rtp_time_run_on_across_forwarding_and_dtmf_and_reports_count_them() -> (
    None
):
    session = RtpSession(0x5EED, "test")
    wire = Wire()
    lean = LeanSender(session.stream, wire.send_rtp)
    keys = KeyPresses(payload_type=lambda: EVENT_PT)
    track = OpusBusTrack(Tone(), keys=keys)
    allow = False
    pass_through = PassThrough(lambda: allow)
    track.forward_from(pass_through, lean)
    lean.start(track)
    try:
        await until(lambda: len(wire.sent) >= 10)
        # Another leg's packets arrive: forwarded as they are, one lost before the bridge.
        allow = True
        source = [(40_000 + i, 5_000_000 + 960 * i, bytes([0xF8, i])) for i in range(10)]
        for seq, ts, payload in source:
            if seq != 40_004:
                pass_through.offer(seq, ts, payload, time.monotonic())
        await until(lambda: track.forwarded_frames == 9)
        allow = False  # mixing starts: back to the bridge's encoder at the next packet
        await asyncio.sleep(0.03)  # past the kept yes (one tick: passthrough.YES_FOR)
        pass_through.offer(40_010, 5_000_000 + 960 * 10, bytes([0xF8, 10]), time.monotonic())
        mark = len(wire.sent)
        await until(lambda: len(wire.sent) >= mark + 5)
        keys.press("5", 100)  # sent on the track's clock, in place of its audio
        await until(lambda: not keys.pending)
        mark = len(wire.sent)
        await until(lambda: len(wire.sent) >= mark + 5)
    finally:
        lean.stop()
    assert not lean.running and track.readyState == "ended"

    packets = wire.packets()
    audio = [p for p in packets if p.payload_type == 111]
    ev = [p for p in packets if p.payload_type == EVENT_PT]
    assert {p.ssrc for p in packets} == {0x5EED}
    # One sequence for everything, with the source's loss kept as the one gap.
    seqs = [p.sequence_number for p in packets]
    steps = [(b - a) & 0xFFFF for a, b in itertools.pairwise(seqs)]
    assert steps.count(2) == 1 and set(steps) == {1, 2}
    forwarded = [p for p in audio if p.payload[:1] == b"\xf8" and len(p.payload) == 2]
    assert [p.payload[1] for p in forwarded] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    # RTP time: 20 ms per audio packet, encoded or forwarded, 40 ms across the lost one.
    ts_steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(audio)]
    # Across the key press, the 5 ticks it took from the audio (plus the audio's own 20 ms).
    assert ts_steps.count(1920) == 1 and ts_steps.count(6 * 960) == 1
    assert set(ts_steps) == {960, 1920, 6 * 960}
    # Marker: the stream's first packet, each key press's first, and the audio after the
    # press (its RTP time jumped with no sequence gap: a talkspurt, RFC 3551 §4.1).
    after = next(i for i, p in enumerate(audio) if packets.index(p) > packets.index(ev[-1]))
    assert [i for i, p in enumerate(audio) if p.marker] == [0, after]
    assert [p.marker for p in ev] == [1] + [0] * (len(ev) - 1)
    # The press: 5 packets of 20 ms + the end sent 3 times, at the audio's next RTP time.
    assert len(ev) == 7 and len({p.timestamp for p in ev}) == 1
    before = [p for p in audio if packets.index(p) < packets.index(ev[0])]
    assert ev[0].timestamp == (before[-1].timestamp + 960) & 0xFFFFFFFF
    assert [p.payload[1] & 0x80 for p in ev] == [0] * 4 + [0x80] * 3

    # The session's sender report says exactly that (RFC 3550 §6.4.1): every packet and
    # payload octet, and the newest audio packet's RTP time (never an event's), carried to now.
    sent_at = time.time()
    sr = next(p for p in RtcpPacket.parse(session.report()) if isinstance(p, RtcpSrPacket))
    info = sr.sender_info
    assert sr.ssrc == 0x5EED
    assert info.packet_count == len(packets) == lean.stream.packets
    assert info.octet_count == sum(len(p.payload) for p in packets)
    assert 0 <= (info.rtp_timestamp - audio[-1].timestamp) & 0xFFFFFFFF < 48_000 // 2
    assert abs(info.ntp_timestamp - ntp_time(sent_at)) < 2**32


async def test_a_dead_transport_ends_the_loop_and_the_track() -> None:
    wire = Wire(dead_after=2)
    lean = LeanSender(RtpSession(1, "test").stream, wire.send_rtp)
    track = OpusBusTrack(Tone())
    lean.start(track)
    await until(lambda: not lean.running)
    assert len(wire.sent) == 2 and not lean.running
    assert track.readyState == "ended"


async def test_a_key_press_ends_a_forwarding_run_and_goes_out_on_the_clock() -> None:
    """A press waits: the next forwarded packet is not sent but ends the run, the track's
    clock sends the press in place of audio, then forwarding starts afresh (as the trunk's
    phone leg does, ``trunks/media.py`` ``offer``)."""
    wire = Wire()
    lean = LeanSender(RtpSession(0x5EED, "test").stream, wire.send_rtp)
    keys = KeyPresses(payload_type=lambda: EVENT_PT)
    track = OpusBusTrack(Tone(), keys=keys)
    pass_through = PassThrough(lambda: True)
    track.forward_from(pass_through, lean)
    lean.start(track)
    source = [(7_000 + i, 960 * i, bytes([0xF8, i])) for i in range(8)]
    try:
        await until(lambda: len(wire.sent) >= 3)
        for seq, ts, payload in source[:4]:
            pass_through.offer(seq, ts, payload, time.monotonic())
        assert track.forwarded_frames == 4
        keys.press("3", 40)
        pass_through.offer(*source[4], time.monotonic())  # refused: the press goes first
        await until(lambda: not keys.pending)
        for seq, ts, payload in source[5:]:
            pass_through.offer(seq, ts, payload, time.monotonic())
        await until(lambda: track.forwarded_frames == 7)
    finally:
        lean.stop()
    packets = wire.packets()
    forwarded = [p.payload[1] for p in packets if p.payload[:1] == b"\xf8" and len(p.payload) == 2]
    assert forwarded == [0, 1, 2, 3, 5, 6, 7]
    kinds = "".join(
        "e" if p.payload_type == EVENT_PT else "f" if p.payload[:1] == b"\xf8" else "a"
        for p in packets
    )
    # The press in place of audio, right after the run it ended (2 ticks: its end 3 times);
    # audio only for the ticks, if any, that pass before the test offers the next packets
    # (a loaded host's pace, not the sender's), then forwarding again.
    assert re.search(r"ffffeeeea*fff", kinds), kinds
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    ev = [p for p in packets if p.payload_type == EVENT_PT]
    after = packets[packets.index(ev[-1]) + 1 :]
    assert all((p.timestamp - ev[0].timestamp) & 0xFFFFFFFF < 0x80000000 for p in after)
