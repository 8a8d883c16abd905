"""WhatsApp's Opus forwarded to a phone (``TrunkMedia.forward_from``: the same pass-through and
track as a browser's, ``rtc/passthrough.py``): which packets qualify, and how they are numbered
into the trunk leg's own RTP stream."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from bridge.audio import rms_dbfs
from bridge.audio.g711 import ulaw_encode
from bridge.audio.opus import OpusEncoder
from bridge.media import LevelMeter
from bridge.media.stats import level_dbfs
from bridge.rtc.forward_run import FORWARD_WAIT
from bridge.rtc.passthrough import PassThrough, one_20ms_frame
from bridge.trunks.media import TrunkMedia


class Wire:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int, bytes]] = []

    def send_rtp(self, plain: bytes) -> None:
        _, _, seq, ts, _ = struct.unpack_from("!BBHII", plain)
        self.sent.append((seq, ts, plain[12:]))

    def send_rtcp(self, plain: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def opus_packet() -> bytes:
    enc = OpusEncoder(16000, bitrate=20000, complexity=5, fec=True, expected_loss=5, dtx=False)
    t = np.arange(320) / 16000
    return enc.encode((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))


def test_only_single_20ms_frames_qualify() -> None:
    packet = opus_packet()
    assert one_20ms_frame(packet)
    assert not one_20ms_frame(bytes([packet[0] | 0x01]) + packet[1:])  # two frames (code 1)
    assert not one_20ms_frame(bytes([(16 << 3)]) + b"x")  # CELT 2.5 ms
    assert not one_20ms_frame(bytes([(0 << 3)]) + b"x")  # SILK 10 ms
    assert one_20ms_frame(bytes([(13 << 3)]) + b"x")  # hybrid 20 ms
    assert not one_20ms_frame(b"")


def media(allowed: list[bool]) -> tuple[TrunkMedia, PassThrough, Wire]:
    """A started phone leg (its clock's ticks called by hand: the test never yields to the
    worker clock) taking WhatsApp's packets through the pass-through it returns while
    ``allowed[0]``; its first packet, sent at once, cleared."""
    m = TrunkMedia("t", "opus", 111, 101, lambda pcm: None, lambda now: None, lambda d, ms: None)
    wire = Wire()
    m.leg.wire = wire
    m.start()
    wire.sent.clear()
    return m, m.forward_from(lambda: allowed[0]), wire


def next_ts(m: TrunkMedia) -> int:
    """The wire's RTP timestamp of the leg's next packet of its own."""
    return m.leg.stream.timestamp(m.track._pts)


async def test_forwarded_packets_keep_their_gaps_and_continue_our_numbering() -> None:
    allowed = [True]
    m, down, wire = media(allowed)
    packet = opus_packet()
    seq0, ts0 = m.leg.stream.next_seq, next_ts(m)
    at = time.monotonic()
    for seq, ts in ((1000, 5000), (1001, 5960), (1003, 7880), (1002, 6920), (999, 4040)):
        at += 0.02
        down.offer(seq, ts, packet, at)
    sent = [(s, t) for s, t, _ in wire.sent]
    # Mapped by one offset: the lost 1002's place stays a gap until it comes (reordered), and a
    # packet older than the run (999) is dropped, its number having gone out already.
    assert sent == [
        (seq0, ts0),
        ((seq0 + 1) & 0xFFFF, (ts0 + 960) & 0xFFFFFFFF),
        ((seq0 + 3) & 0xFFFF, (ts0 + 2880) & 0xFFFFFFFF),
        ((seq0 + 2) & 0xFFFF, (ts0 + 1920) & 0xFFFFFFFF),
    ]
    assert all(p == packet for _, _, p in wire.sent)
    assert down.late == 1 and m.track.forwarded_frames == 4
    # Mixing starts: the next packet is not forwarded and our own encoding goes on, from the
    # next tick, after the newest forwarded number and time.
    allowed[0] = False
    down.offer(1004, 8840, packet, at + 0.02)
    assert len(wire.sent) == 4 and m.track.forwarding  # refused: the tick decides
    m.leg.sender._tick(at + 0.03)
    assert not m.track.forwarding and len(wire.sent) == 5
    seq, ts, payload = wire.sent[-1]
    assert (seq, ts) == ((seq0 + 4) & 0xFFFF, (ts0 + 3840) & 0xFFFFFFFF) and payload != packet
    m.stop()


async def test_a_run_longer_than_half_the_number_space_keeps_forwarding_to_the_phone() -> None:
    """The trunk's run is numbered as a track's (``rtc/forward_run.py``): 40 000 packets (13
    minutes), the numbers wrapping round, all go to the phone; only a packet behind the run's
    first is dropped."""
    m, down, wire = media([True])
    payload = bytes([(13 << 3)]) + b"x"  # hybrid 20 ms: a packet that qualifies
    seq0, first, at = m.leg.stream.next_seq, 60_000, time.monotonic()
    down.offer(first, 0, payload, at)
    down.offer(first - 1, 0, payload, at)  # behind the run's first: its number went out already
    for i in range(1, 40_000):
        down.offer((first + i) & 0xFFFF, 960 * i, payload, at + 0.02 * i)
    assert [s for s, _, _ in wire.sent] == [(seq0 + i) & 0xFFFF for i in range(40_000)]
    assert down.late == 1 and m.track.forwarded_frames == 40_000
    m.stop()


async def test_the_run_ends_forward_wait_after_the_last_arrival_by_the_ticks_time() -> None:
    """The media clock's ticks ask the run how quiet it is at the tick's time, against the
    packets' arrival times (no clock read): nothing of the leg's own is sent until
    :data:`FORWARD_WAIT` after the last packet arrived, so a burst of lost packets shorter than
    that stays a gap for the phone's own concealment (not frames the bridge encoded from a
    bus that has nothing of WhatsApp's: an idle leg decodes nothing); then the leg encodes
    again, its RTP time moved on by the ticks nobody sent (a pause, not packets sent late).
    The same wait as a browser's track (``rtc/forward_run.py``)."""
    m, down, wire = media([True])
    packet, at = opus_packet(), time.monotonic()
    for i in range(3):
        down.offer(500 + i, 960 * i, packet, at + 0.02 * i)
    last, ts_next = at + 0.04, next_ts(m)
    tick = last + 0.007  # the clock's tick after the last packet was read
    while tick - last < FORWARD_WAIT:
        m.leg.sender._tick(tick)
        assert len(wire.sent) == 3 and m.track.forwarding
        tick += 0.02
    m.leg.sender._tick(tick)
    assert not m.track.forwarding and len(wire.sent) == 4
    unsent = int((tick - last) / 0.02)  # 13 ticks: the run's quiet, in whole frames
    assert wire.sent[-1][1] == (ts_next + unsent * 960) & 0xFFFFFFFF
    m.stop()


async def test_a_queued_key_stops_forwarding() -> None:
    m, down, wire = media([True])
    m.send_key("5")
    down.offer(1, 960, opus_packet(), time.monotonic())
    assert wire.sent == [] and m.track.forwarded_frames == 0
    m.stop()


async def test_only_one_20ms_frame_is_forwarded_to_the_phone_and_a_hold_forwards_nothing() -> None:
    """A packet of two frames (or of another length) ends the run: the leg encodes it from the
    bus; on hold nothing is forwarded (nor encoded), the stream's time moving on."""
    m, down, wire = media([True])
    packet, at = opus_packet(), time.monotonic()
    down.offer(1, 960, packet, at)
    down.offer(2, 1920, bytes([packet[0] | 0x01]) + packet[1:], at + 0.02)  # code 1: two frames
    assert len(wire.sent) == 1 and not m.track.forwarding
    m.track.sending = False
    down.offer(3, 2880, packet, at + 0.04)
    before = next_ts(m)
    m.leg.sender._tick(at + 0.05)
    assert len(wire.sent) == 1 and not m.track.forwarding and next_ts(m) == before + 960
    m.stop()


async def test_comfort_noise_offered_and_sent_is_accepted() -> None:
    """A PBX that offers CN (RFC 3389, PT 13) beside G.711 gets G.711 chosen, and its CN
    packets during silence are taken without harm: no frame, no error (silence suppression
    accepted; the bus conceals what the phone did not send)."""
    from bridge.trunks import sdp

    offer = (
        "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 0 13 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:13 CN/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
    )
    remote = sdp.read(offer, ("PCMU", "PCMA"), srtp=False)
    assert (remote.codec, remote.pt, remote.event_pt) == ("PCMU", 0, 101)
    heard: list[object] = []
    m = TrunkMedia("t", "PCMU", 0, 101, heard.append, lambda now: None, lambda d, ms: None)
    cn = struct.pack("!BBHII", 0x80, 13, 1, 160, 7) + bytes([40])  # noise level -40 dBov
    for _ in range(5):
        m.leg.receive_rtp(cn, time.monotonic())
        m.leg.playout._tick(time.monotonic())
    assert heard == [] and m.leg.session.audio_packets == 0
    pcmu = struct.pack("!BBHII", 0x80, 0, 2, 320, 7) + bytes([0xFF]) * 160
    m.leg.receive_rtp(pcmu, time.monotonic())
    m.leg.playout._tick(time.monotonic())
    m.leg.receive_rtp(
        struct.pack("!BBHII", 0x80, 0, 3, 480, 7) + bytes([0xFF]) * 160, time.monotonic()
    )
    m.leg.playout._tick(time.monotonic())
    # G.711 after the CN is heard again (a bus frame or more)
    assert m.leg.session.audio_packets == 2 and heard


async def test_the_phones_packets_forwarded_up_are_decoded_only_when_something_needs_them() -> None:
    """The phone's Opus forwarded to WhatsApp is not decoded while nothing on the call needs
    it (``forward_to``'s ``needs_pcm``); once something does, the next packet is decoded, the
    decoder warmed on the skipped ones, into the phone's 440 Hz at its level."""
    heard: list[np.ndarray] = []
    m = TrunkMedia("t", "opus", 111, 101, heard.append, lambda now: None, lambda d, ms: None)
    up: list[int] = []
    wanted = [False]
    m.forward_to(lambda seq, ts, payload, at: up.append(seq) is None, lambda at: wanted[0])
    enc = OpusEncoder(16000, bitrate=20000, complexity=5, fec=True, expected_loss=5, dtx=False)
    t = np.arange(320 * 40) / 16000
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    t0 = time.monotonic()
    for i in range(40):
        if i == 30:
            wanted[0] = True
        payload = enc.encode(pcm[i * 320 : (i + 1) * 320])
        at = t0 + i * 0.02  # a steady network: the receiver learns its jitter while idle
        m.leg.receive_rtp(struct.pack("!BBHII", 0x80, 111, 100 + i, 960 * i, 7) + payload, at)
        m.leg.playout._tick(at + 0.007)  # the media clock's receive phase
    assert up == list(range(100, 140))  # every packet went up
    assert len(heard) == 10  # only those after the ask were decoded
    levels = [float(np.sqrt(np.mean(f.astype(np.float64) ** 2))) for f in heard]
    assert min(levels) > 0.9 * 8000 / np.sqrt(2), levels


async def test_the_phones_packets_forwarded_up_undecoded_are_metered_into_what_whatsapp_hears() -> (
    None
):
    """A G.711 phone whose packets go to WhatsApp as they are, not decoded: their level still
    reaches the meters ``forward_to`` names (the call report's level of what WhatsApp heard),
    sampled from the bytes, at the level of the phone's 440 Hz."""
    m = TrunkMedia("t", "PCMU", 0, 101, lambda pcm: None, lambda now: None, lambda d, ms: None)
    sent = LevelMeter()
    up: list[int] = []
    m.forward_to(lambda seq, ts, payload, at: up.append(seq) is None, lambda at: False, (sent,))
    t = np.arange(160 * 50) / 8000
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    coded = ulaw_encode(pcm)
    t0 = time.monotonic()
    for i in range(50):
        packet = (
            struct.pack("!BBHII", 0x80, 0, 100 + i, 160 * i, 7) + coded[160 * i : 160 * (i + 1)]
        )
        m.leg.receive_rtp(packet, t0 + i * 0.02)
    assert up == list(range(100, 150)) and m.leg.playout.not_decoded == 50
    assert sent.samples > 0
    level = level_dbfs(sent.energy, sent.samples)
    assert level == pytest.approx(rms_dbfs(pcm), abs=0.5)


async def test_the_packets_a_sender_does_not_carry_are_decoded_while_forwarding_is_allowed() -> (
    None
):
    """The source leg decodes exactly the packets the target's sender did not carry, though
    forwarding is allowed and nothing taps the bus: one of two frames (the phone expects one),
    and every packet while a key press waits (the tick sends the press): that sender encodes
    those ticks from the bus. The packets it carried are only counted."""
    m, down, wire = media([True])  # the phone: WhatsApp's packets to it, its sender forwarding
    source = TrunkMedia("s", "opus", 111, 101, lambda pcm: None, lambda now: None, _no_key)
    source.forward_to(down.offer, lambda at: False)  # as calls/forwarding.py wires it
    packet, t0 = opus_packet(), time.monotonic()
    two_frames = bytes([packet[0] | 0x01]) + packet[1:]
    payloads = [packet, packet, two_frames, packet, packet]
    for i, payload in enumerate(payloads):
        source.leg.receive_rtp(struct.pack("!BBHII", 0x80, 111, 100 + i, 960 * i, 7) + payload, t0)
    assert len(wire.sent) == 4 and source.leg.playout.not_decoded == 4  # the two-frame one decoded
    m.send_key("5")
    source.leg.receive_rtp(struct.pack("!BBHII", 0x80, 111, 105, 960 * 5, 7) + packet, t0 + 0.1)
    assert len(wire.sent) == 4 and source.leg.playout.not_decoded == 4  # not carried: decoded
    assert source.leg.playout.clocked  # its frames go to the bus on the clock again
    source.stop()
    m.stop()


def _no_key(digit: str, ms: int) -> None:
    pass


async def test_the_packets_a_sender_did_not_carry_are_counted_by_why() -> None:
    """Why a direction forwards less than it is offered is in its target's counts
    (``ForwardingTrack.refusals``): offered before the phone's sender runs, a packet of two
    frames, one in a hold, and one the pass-through's policy refused; the carried one is not
    counted (a call whose pass-through never engaged one way says here which check refused)."""
    m = TrunkMedia("t", "opus", 111, 101, lambda pcm: None, lambda now: None, _no_key)
    allowed = [True]
    down = m.forward_from(lambda: allowed[0])  # wired before the leg's sender runs
    packet, t0 = opus_packet(), time.monotonic()
    assert not down.offer(100, 0, packet, t0)
    wire = Wire()
    m.leg.wire = wire
    m.start()
    wire.sent.clear()
    assert down.offer(101, 960, packet, t0)
    assert not down.offer(102, 960 * 2, bytes([packet[0] | 0x01]) + packet[1:], t0)
    m.track.sending = False  # the phone holds
    assert not down.offer(103, 960 * 3, packet, t0)
    m.track.sending = True
    allowed[0] = False  # something mixes into what the phone hears
    assert not down.offer(104, 960 * 4, packet, t0 + 0.1)  # past the yes kept for 20 ms
    assert [p for _, _, p in wire.sent] == [packet] and down.forwarded == 1
    assert m.track.refusals() == {"no_sender": 1, "not_20ms": 1, "hold": 1, "not_allowed": 1}
    m.stop()
