"""One RTP leg (``rtc/rtp_leg.py``): a codec switch moves the session, the reports' clock, the
stream's frame, the receiver's decoder and the track together; forwarded packets are numbered
into the leg's own stream; a key press is read by the leg's detector; the BYE goes once."""

from __future__ import annotations

import struct
import time

from bridge.audio.opus import OpusDecoder
from bridge.media import BusStats
from bridge.rtc.packets import Bye, parse_rtcp
from bridge.rtc.red import RedStats
from bridge.rtc.rfc4733 import END_REPEATS, DtmfDetector, KeyPresses, event_payload
from bridge.rtc.rtp_leg import RtpLeg
from bridge.rtc.rtp_session import RtpSession
from bridge.rtc.tracks import OpusBusTrack
from bridge.tasks import TaskSet
from tests.unit.test_trunk_rtcp import Wire


class _Silence:
    def take(self, now: float) -> None:
        return None

    def detach(self) -> None:
        pass


def new_leg(codec: str = "opus", pt: int = 111) -> tuple[RtpLeg, Wire, list[tuple[str, int]]]:
    keys: list[tuple[str, int]] = []
    detector = DtmfDetector(lambda digit, ms: keys.append((digit, ms)))
    presses = KeyPresses(8, lambda: 101)
    wire = Wire()
    leg = RtpLeg(
        RtpSession(0x5EED, "leg@test", audio_pt=pt),
        codec=codec,
        on_frame=lambda pcm: None,
        stats=BusStats(),
        tasks=TaskSet("rtp-leg-test"),
        dtmf=(lambda: 101, detector),
        wire=wire,
    )
    leg.track = OpusBusTrack(_Silence(), codec=codec, keys=presses, phone=True)
    return leg, wire, keys


async def test_a_codec_switch_moves_session_reports_stream_playout_and_track_together() -> None:
    leg, _, _ = new_leg()
    assert isinstance(leg.playout.receiver.decoder, OpusDecoder)
    receiver = leg.playout.receiver
    leg.use_codec("PCMA", 8)
    assert (leg.session.audio_pt, leg.stream.payload_type) == (8, 8)
    assert (leg.reports.clock, leg.stream.frame_ticks) == (8000, 160)
    assert leg.playout.receiver is not receiver  # a fresh receiver, decoding PCMA
    assert not isinstance(leg.playout.receiver.decoder, OpusDecoder)
    assert leg.track is not None and (leg.track.codec, leg.track.frame_ts) == ("PCMA", 160)
    leg.stop(bye=False)


async def test_the_same_codec_on_another_payload_type_keeps_the_receiver() -> None:
    # An SDP's own number for the codec (Meta's Opus, a re-INVITE's): both ways from now, the
    # stream received so far is still the same codec's.
    leg, _, _ = new_leg("PCMU", 0)
    receiver = leg.playout.receiver
    leg.use_codec("PCMU", 96)
    assert (leg.session.audio_pt, leg.stream.payload_type) == (96, 96)
    assert (leg.reports.clock, leg.stream.frame_ticks) == (8000, 160)
    assert leg.playout.receiver is receiver
    leg.stop(bye=False)


async def test_packets_in_go_through_the_session_to_the_receiver_and_the_detector() -> None:
    leg, _, keys = new_leg("PCMU", 0)
    at = time.monotonic()
    leg.receive_rtp(struct.pack("!BBHII", 0x80, 0, 1, 160, 7) + bytes(160), at)
    assert leg.session.audio_packets == 1 and leg.playout.last_packet == at
    event = event_payload(5, True, 800)
    for seq in (2, 3, 4):  # the end packet three times (RFC 4733 §2.5.1.4)
        leg.receive_rtp(struct.pack("!BBHII", 0x80, 101, seq, 320, 7) + event, at)
    assert keys == [("5", 100)] and leg.session.audio_packets == 1
    leg.stop(bye=False)


async def test_a_last_press_whose_end_packets_were_all_lost_is_heard_when_audio_goes_on() -> None:
    """A phone's last key press, every end packet lost on the way: reported once the audio is
    past its duration by three packets (before, only a next press reported it, so a last one
    never was); audio sent beside a held key does not cut it short."""
    leg, _, keys = new_leg("PCMU", 0)
    leg.use_codec("PCMU", 0)  # (the reports' clock: 8 kHz, as a trunk's leg sets it)
    at = time.monotonic()
    for seq, duration in ((2, 160), (3, 320), (4, 480)):  # growing, its end never comes
        event = event_payload(9, False, duration)
        leg.receive_rtp(struct.pack("!BBHII", 0x80, 101, seq, 8000, 7) + event, at)
    # Audio beside the press (a phone that sends both) keeps within a packet or two of it.
    for seq, ts in ((5, 8000 + 480), (6, 8000 + 640)):
        leg.receive_rtp(struct.pack("!BBHII", 0x80, 0, seq, ts, 7) + bytes(160), at)
    assert keys == []
    audio = struct.pack("!BBHII", 0x80, 0, 7, 8000 + 480 + 480, 7) + bytes(160)
    leg.receive_rtp(audio, at)  # three packets past it: the key was let go
    assert keys == [("9", 60)]
    leg.receive_rtp(struct.pack("!BBHII", 0x80, 0, 8, 8000 + 1120, 7) + bytes(160), at)
    assert keys == [("9", 60)]  # once
    leg.stop(bye=False)


async def test_a_press_updated_every_50_ms_beside_20_ms_audio_is_not_ended_early() -> None:
    """RFC 4733 §2.5.1.2 lets a sender update a press every 50 ms: its audio, every 20 ms
    beside it, runs up to 50 ms ahead of the latest duration, more when the update is sent a
    little after its audio (here 30 to 40 ms). The press is over once the audio is three of
    its updates past it, not three audio packets: before, a 1 s "5" was heard as 100 ms."""
    for lag in (30, 40):
        leg, _, keys = new_leg("PCMU", 0)
        leg.use_codec("PCMU", 0)  # (the reports' clock: 8 kHz, as a trunk's leg sets it)
        start, at = 80_000, time.monotonic()
        sent: list[tuple[int, bytes]] = []  # (ms sent, packet), the phone's order
        for k in range(80):  # 1.6 s of audio; the key held from its first frame for 1 s
            audio = struct.pack("!BBHII", 0x80, 0, 0, start + 160 * k, 7) + bytes(160)
            sent.append((20 * (k + 1), audio))
        for n in range(1, 21):  # an update every 50 ms, the last its end, three times
            event = event_payload(5, n == 20, 400 * n)
            packet = struct.pack("!BBHII", 0x80, 101, 0, start, 7) + event
            sent += [(50 * n + lag, packet)] * (END_REPEATS if n == 20 else 1)
        sent.sort(key=lambda p: p[0])
        for seq, (ms, packet) in enumerate(sent, 1):
            leg.receive_rtp(packet[:2] + seq.to_bytes(2, "big") + packet[4:], at + ms / 1000)
        assert keys == [("5", 1000)], lag
        leg.stop(bye=False)


def test_a_last_press_whose_end_packets_were_all_lost_is_heard_when_red_audio_goes_on() -> None:
    """The same for a browser whose audio comes as RED (RFC 2198, its packets' payload type
    RED's, not Opus's): RED's primary is the audio going on. Before, only plain Opus packets
    were asked, so a browser sending RED never had its last press heard."""
    keys: list[tuple[str, int]] = []
    session = RtpSession(0x5EED, "leg@test")  # Opus on 111, its RTP clock 48 kHz
    session.take_red(63, 111, RedStats())
    session.take_dtmf(lambda: 126, DtmfDetector(lambda digit, ms: keys.append((digit, ms))))
    at, start = time.monotonic(), 96_000
    for seq, duration in ((2, 160), (3, 320), (4, 480)):  # 8 kHz events, no end packet
        event = event_payload(9, False, duration)
        session.receive_rtp(struct.pack("!BBHII", 0x80, 126, seq, start, 7) + event, at)

    def red(seq: int, ts: int) -> bytes:  # the previous frame's copy, then the primary
        header = bytes([0x80 | 111]) + (960 << 10 | 3).to_bytes(3, "big") + bytes([111])
        return struct.pack("!BBHII", 0x80, 63, seq, ts, 7) + header + b"old" + b"new"

    session.receive_rtp(red(5, start + 2880), at)  # within the press's 60 ms
    assert keys == []
    session.receive_rtp(red(6, start + 2880 + 2880), at)  # three packets past it
    assert keys == [("9", 60)] and session.red is not None and session.red[2].packets == 2
    session.receive_rtp(red(7, start + 2880 + 3840), at)
    assert keys == [("9", 60)]  # once


async def test_forwarded_packets_are_numbered_into_the_legs_stream() -> None:
    leg, wire, _ = new_leg("PCMU", 0)
    assert leg.track is not None
    leg.play(leg.track)
    leg.sender.off_clock()  # its ticks by hand
    leg.sender._tick(0.0)
    own = struct.unpack_from("!H", wire.rtp[-1], 2)[0]
    pass_through = leg.forward_from(lambda: True)
    assert pass_through is not None
    pass_through.offer(40000, 9600, bytes(160), time.monotonic())
    forwarded = wire.rtp[-1]
    assert struct.unpack_from("!H", forwarded, 2)[0] == (own + 1) & 0xFFFF
    assert struct.unpack_from("!I", forwarded, 8)[0] == leg.stream.ssrc
    leg.stop(bye=False)


async def test_stop_sends_one_bye_and_none_without_a_wire() -> None:
    leg, wire, _ = new_leg()
    assert leg.report() > 0 and len(wire.rtcp) == 1
    leg.stop(bye=True)
    leg.stop(bye=True)
    assert len(wire.rtcp) == 2
    assert any(isinstance(p, Bye) for p in parse_rtcp(wire.rtcp[-1]))
    quiet, _, _ = new_leg()
    quiet.wire = None
    assert quiet.report() == 0
    quiet.stop(bye=True)  # no wire: nothing to send it on
    assert quiet.forward_from(lambda: True) is None  # a stopped leg forwards nothing
