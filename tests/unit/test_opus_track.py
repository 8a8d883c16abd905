"""The bridge's own Opus sender (rtc/tracks.py OpusBusTrack): FEC and RED follow the loss the far
end reports (rtc/protection.py), and the answer's Opus parameters (rtc/browser_sdp.py)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import numpy as np
import pylibsrtp
import pytest

from bridge.audio import FRAME_SAMPLES
from bridge.audio.opus import OpusDecoder, OpusEncoder, has_fec
from bridge.media.clock import worker_clock
from bridge.rtc.browser_sdp import opus_parameters, with_opus_fmtp
from bridge.rtc.forward_run import FORWARD_WAIT
from bridge.rtc.passthrough import PassThrough
from bridge.rtc.protection import MIN_PLANNED, UNKNOWN_LOSS, EncoderSetting, LossProtection
from bridge.rtc.red import RedWrapper, split_red
from bridge.rtc.rtpsend import RtpStream
from bridge.rtc.tracks import EncodedPacket, FrameSource, OpusBusTrack
from tests.support.loops import LoopLag
from tests.support.spectrum import dominant_frequency, tone_breaks
from tests.support.track_ticks import tick_packets
from tests.support.waits import until


class Voice:
    """A wavering tone, 20 ms at a time (libopus codes it as voice, with FEC when asked)."""

    def __init__(self) -> None:
        self.n = 0

    def take(self, now: float) -> np.ndarray:
        t = (np.arange(FRAME_SAMPLES) + self.n * FRAME_SAMPLES) / 16_000
        self.n += 1
        return (np.sin(2 * np.pi * (300 * t + 10 * np.sin(2 * np.pi * 4 * t))) * 8000).astype(
            np.int16
        )

    def detach(self) -> None:
        pass


def browser_track(source: FrameSource, clean: EncoderSetting | None = None) -> OpusBusTrack:
    """A browser's downlink as rtc/session.py builds it by default: SILK at 40 kbit/s,
    complexity 5; with FEC at 48 kbit/s, complexity 8."""
    return OpusBusTrack(
        source,
        bitrate=40_000,
        complexity=5,
        protection=LossProtection(),
        protected_bitrate=48_000,
        protected_complexity=8,
        clean=clean,
    )


async def test_fec_from_the_start_off_once_clean_back_at_the_first_loss() -> None:
    track = browser_track(Voice())
    # The link is unknown: FEC is planned for the floor, at the protected bit rate.
    unknown = [p.data for p in tick_packets(track, 25)]
    assert track.expected_loss == UNKNOWN_LOSS and track.setting.bitrate == 48_000
    assert sum(has_fec(p) for p in unknown[1:]) > 15
    track.far_end_report(0.0)  # the first report: clean
    assert track.expected_loss == 0 and track.setting.bitrate == 40_000
    clean = [p.data for p in tick_packets(track, 25)]
    assert not any(has_fec(p) for p in clean[1:])  # the first may carry the last LBRR
    track.far_end_report(8 / 256)  # one report of 3 % loss: FEC at once, at least the floor
    assert track.expected_loss == MIN_PLANNED and track.setting.bitrate == 48_000
    lossy = [p.data for p in tick_packets(track, 25)]
    assert sum(has_fec(p) for p in lossy) > 15
    track.far_end_report(0.2)
    assert track.expected_loss == 30
    assert track.protection_json()["reports"] == 3
    track.stop()


class Tone:
    """A steady 700 Hz tone at -12 dBFS, 20 ms at a time: any break in it is heard."""

    HZ, PEAK = 700.0, 8000

    def __init__(self) -> None:
        self.n = 0

    def take(self, now: float) -> np.ndarray:
        t = (np.arange(FRAME_SAMPLES) + self.n * FRAME_SAMPLES) / 16_000
        self.n += 1
        return (np.sin(2 * np.pi * self.HZ * t) * self.PEAK).astype(np.int16)

    def detach(self) -> None:
        pass


def is_celt(packet: bytes) -> bool:
    """RFC 6716 §3.1: TOC configurations 16-31 are CELT-only, 0-11 SILK-only."""
    return packet[0] >> 3 >= 16


CLEAN = EncoderSetting(72_000, 2, celt=True)


async def test_a_clean_link_is_coded_in_celt_and_the_first_loss_brings_silk_and_fec_back() -> None:
    """The clean-link setting (rtc/protection.py): SILK with FEC while the link is unknown,
    CELT at its own bit rate once a report says clean, SILK with FEC again at the first loss.
    The tone decodes with no break across either switch (libopus codes a redundant frame
    across a SILK/CELT switch, RFC 6716 §4.5.1): same pitch, no phase jump, no silent 5 ms."""
    track = browser_track(Tone(), clean=CLEAN)
    unknown = [p.data for p in tick_packets(track, 25)]
    assert not any(map(is_celt, unknown)) and sum(map(has_fec, unknown[1:])) > 15
    track.far_end_report(0.0)
    assert track.setting == CLEAN and track.protection_json()["celt"] is True
    clean = [p.data for p in tick_packets(track, 50)]
    # The first is SILK's last frame, carrying the redundant CELT frame that starts the switch.
    assert all(map(is_celt, clean[1:])) and not is_celt(clean[0])
    # 72 kbit/s is 180 bytes a frame (CELT spends it: a constant bit rate in effect).
    assert 170 < np.mean([len(p) for p in clean[1:]]) <= 185
    track.far_end_report(8 / 256)
    assert track.setting.bitrate == 48_000 and not track.setting.celt
    lossy = [p.data for p in tick_packets(track, 25)]
    assert not any(map(is_celt, lossy)) and sum(map(has_fec, lossy[1:])) > 15
    track.stop()
    decoder = OpusDecoder(16_000)
    pcm = np.concatenate([decoder.decode(p) for p in unknown + clean + lossy])
    assert abs(dominant_frequency(pcm, 16_000) - Tone.HZ) < 5
    jumps, silent = tone_breaks(pcm, 16_000, Tone.HZ, Tone.PEAK, skip=0.1)
    assert (jumps, silent) == ([], [])


async def test_under_red_the_frame_copied_is_silk_at_the_plain_rate_not_celt() -> None:
    """RED puts a copy of each frame beside the next: the frames stay SILK at the plain bit rate
    (a CELT frame is twice the size), and the clean-link setting waits for a clean link again."""
    track = OpusBusTrack(
        Tone(), protection=LossProtection(red=True), red=RedWrapper(63, 111), clean=CLEAN
    )
    track.far_end_report(0.0)
    clean = [p.data for p in tick_packets(track, 5)]
    assert all(map(is_celt, clean[1:]))
    track.far_end_report(0.05)
    assert track.applied.red_depth == 1 and track.setting == track.settings.plain
    for packet in tick_packets(track, 5):
        blocks = split_red(packet.data)
        assert blocks is not None and not any(is_celt(b) for _, _, b in blocks[1:])
    track.stop()


async def test_with_fec_off_celt_waits_for_a_clean_report_and_loss_without_red_is_silk() -> None:
    """BRIDGE_OPUS_FEC=false: nothing protects the link, but CELT (no FEC, a coarser
    concealment) is still only for a link the browser reported clean."""
    track = OpusBusTrack(Tone(), fec=False, protection=LossProtection(fec=False), clean=CLEAN)
    assert track.setting == track.settings.plain
    unknown = [p.data for p in tick_packets(track, 5)]
    track.far_end_report(0.0)
    assert track.setting == CLEAN
    clean = [p.data for p in tick_packets(track, 5)]
    track.far_end_report(0.05)
    assert track.setting == track.settings.plain and track.expected_loss == 0
    lossy = [p.data for p in tick_packets(track, 5)]
    assert not any(map(is_celt, unknown + lossy[1:])) and all(map(is_celt, clean[1:]))
    track.stop()


async def test_red_carries_the_previous_frames_only_while_loss_is_reported() -> None:
    track = OpusBusTrack(Voice(), protection=LossProtection(red=True), red=RedWrapper(63, 111))
    track.far_end_report(0.0)
    plain = tick_packets(track, 5)
    assert all(p.payload_type is None for p in plain)  # a clean link: plain Opus, no copies
    track.far_end_report(0.05)
    assert track.applied.red_depth == 1 and track.expected_loss == 0  # the copy beats FEC
    one = tick_packets(track, 3)
    track.far_end_report(0.15)
    assert track.applied.red_depth == 2
    two = tick_packets(track, 3)
    sent = [p.data for p in plain]
    for packet in one + two:
        assert packet.payload_type == 63
        blocks = split_red(packet.data)
        assert blocks is not None and all(pt == 111 for _, pt, _ in blocks)
        primary = blocks[-1][2]
        previous = [(offset, data) for offset, _, data in blocks[:-1]]
        expected = [
            (960 * (len(previous) - i), sent[i - len(previous)]) for i in range(len(previous))
        ]
        assert previous == expected  # the very payloads sent before, 20 ms apart
        sent.append(primary)
    assert [len(split_red(p.data) or []) for p in one + two] == [2, 2, 2, 3, 3, 3]
    assert track.red is not None and track.red.packets == 6
    track.stop()


def test_the_answer_asks_for_fec_mono_and_16_khz_in_place_of_aiortcs_bare_opus() -> None:
    answer = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96 0\r\na=rtpmap:96 opus/48000/2\r\n"
        "a=fmtp:96 minptime=10\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    out = with_opus_fmtp(answer)
    assert out.count("a=fmtp:96 ") == 1
    assert opus_parameters(out) == {
        "minptime": "10",
        "useinbandfec": "1",
        "stereo": "0",
        "sprop-stereo": "0",
        "maxplaybackrate": "16000",
        "sprop-maxcapturerate": "16000",
        "maxaveragebitrate": "32000",
    }
    lines = out.split("\r\n")
    assert (
        lines.index(
            "a=fmtp:96 minptime=10;useinbandfec=1;stereo=0;sprop-stereo=0;"
            "maxplaybackrate=16000;sprop-maxcapturerate=16000;maxaveragebitrate=32000"
        )
        == lines.index("a=rtpmap:96 opus/48000/2") + 1
    )
    assert with_opus_fmtp("v=0\r\nm=audio 9 RTP/AVP 0\r\n") == "v=0\r\nm=audio 9 RTP/AVP 0\r\n"


class Sender:
    """The lean sender as a forwarding track sees it (``rtc/forwarding_track.py``
    ``PacketSender``): one RTP stream, and every packet sent in order, forwarded (from the
    source's callback) or encoded (:meth:`pump`, on the worker clock's ticks)."""

    def __init__(self) -> None:
        self.stream = RtpStream(1234, first_seq=100)
        self.running = True
        self.sent: list[EncodedPacket] = []
        self.numbers: list[int] = []
        """Each packet's sequence number on the wire."""
        self.times: list[int] = []
        """Each packet's RTP time, from the stream's origin."""

    def send_rtp(self, plain: bytes) -> None:
        """A forwarded packet, numbered on the stream by the track: kept as the wire has it
        (its number, its RTP time from the stream's origin, RED's payload type or ``None``)."""
        seq = int.from_bytes(plain[2:4], "big")
        pts = (int.from_bytes(plain[4:8], "big") - self.stream.origin) & 0xFFFFFFFF
        pt = plain[1] & 0x7F
        red = None if pt == self.stream.payload_type else pt
        self.sent.append(EncodedPacket(plain[12:], pts, seq, red))
        self.numbers.append(seq)
        self.times.append(pts)

    def send_encoded(self, packet: EncodedPacket) -> None:
        """One of the track's own packets (the pump's)."""
        data = self.stream.packetise(packet.data, packet.pts, packet.seq)
        self.sent.append(packet)
        self.numbers.append(int.from_bytes(data[2:4], "big"))
        self.times.append(packet.pts)

    async def pump(self, track: OpusBusTrack, packets: int) -> None:
        """The sender's ticks: ``packets`` of the track's own, each sent as the tick makes it
        (``OpusBusTrack.packets`` at the tick's time, as ``LeanSender`` asks on the clock)."""
        clock = worker_clock()
        sent = 0
        while sent < packets:
            await asyncio.wait_for(clock.next_tick(), 1.0)
            for packet in track.packets(clock.now):
                self.send_encoded(packet)
                sent += 1


async def test_red_around_forwarded_packets_keeps_every_payload_bit_exact() -> None:
    """Pass-through (rtc/passthrough.py) with RED on: each packet is the forwarded payload,
    untouched, with the one or two forwarded before it beside it (RFC 2198), RTP time mapped,
    sent from the source's callback as it comes."""
    track = OpusBusTrack(Voice(), protection=LossProtection(red=True), red=RedWrapper(63, 111))
    pt = PassThrough(lambda: True)
    sender = Sender()
    track.forward_from(pt, sender)
    track.far_end_report(0.2)  # heavy loss: two copies
    payloads = [bytes([i]) * (40 + i) for i in range(6)]
    for i, payload in enumerate(payloads):
        pt.offer(5000 + i, 48_000 + 960 * i, payload, time.monotonic())
        assert len(sender.sent) == i + 1  # sent in the offer: no queue, no task
    out = sender.sent
    assert track.forwarded_frames == 6
    assert [p.seq for p in out] == list(range(100, 106)) == sender.numbers
    assert out[0].payload_type is None and out[0].data == payloads[0]  # nothing before it yet
    for i, packet in enumerate(out[1:], start=1):
        blocks = split_red(packet.data)
        assert packet.payload_type == 63 and blocks is not None
        assert [b for _, _, b in blocks] == payloads[max(0, i - 2) : i + 1]
        assert [o for o, _, _ in blocks] == [960 * (i - k) for k in range(max(0, i - 2), i + 1)]
    track.stop()


async def test_nothing_is_forwarded_before_the_sender_runs_or_after_the_track_stops() -> None:
    """A forwarded packet goes out only while the sender sends (its transport up) and the
    track is live: before, the source's packets are dropped, not queued to burst out later."""
    track = OpusBusTrack(Voice())
    pt = PassThrough(lambda: True)
    sender = Sender()
    sender.running = False
    track.forward_from(pt, sender)
    pt.offer(1, 960, b"\x01" * 40, time.monotonic())
    assert not sender.sent and track.forwarded_frames == 0
    sender.running = True
    pt.offer(2, 1920, b"\x02" * 40, time.monotonic())
    assert [p.data for p in sender.sent] == [b"\x02" * 40]
    track.stop()
    pt.offer(3, 2880, b"\x03" * 40, time.monotonic())
    assert len(sender.sent) == 1 and pt.target is None


async def test_a_packet_reordered_across_the_switch_to_forwarding_is_dropped_not_sent_twice() -> (
    None
):
    """Encoding, then forwarding: the source's packet 7 arrives after its 8 (loopback under
    load), so the run starts at 8, on the number after our last encoded packet; 7 would map to
    that encoded packet's number, which SRTP refuses as a replay: it is dropped, counted, and
    the run goes on with 9."""
    allowed = [False]
    track = OpusBusTrack(Voice())
    pt = PassThrough(lambda: allowed[0])
    sender = Sender()
    track.forward_from(pt, sender)
    await sender.pump(track, 3)  # nothing forwardable yet: our own packets, 100-102
    allowed[0] = True
    for seq in (8, 7, 9):
        pt.offer(seq, 48_000 + 960 * seq, bytes([seq]) * 40, time.monotonic())
    assert [p.data for p in sender.sent[3:]] == [bytes([8]) * 40, bytes([9]) * 40]
    assert sender.numbers == [100, 101, 102, 103, 104]
    assert pt.late == 1 and track.forwarded_frames == 2
    track.stop()


async def test_a_new_source_after_a_transfer_starts_its_own_run_on_our_next_numbers() -> None:
    """Forwarding the first agent's packets, then (a transfer) the next agent's, whose numbers
    and RTP times start from an origin of their own, far behind the first's: the stream goes on
    from its next number and RTP time, never back through the first source's mapping (a number
    mapped backwards is a replay SRTP refuses, and the far end heard nothing more). The first
    source's packets, should any still come, go nowhere."""
    track = OpusBusTrack(Voice())
    sender = Sender()
    first = PassThrough(lambda: True)
    track.forward_from(first, sender)
    for seq in (40_000, 40_001):
        first.offer(seq, 900_000 + 960 * seq, bytes([1]) * 40, time.monotonic())
    second = PassThrough(lambda: True)
    track.forward_from(second, sender)
    first.offer(40_002, 900_000 + 960 * 40_002, bytes([1]) * 40, time.monotonic())
    for seq in (7, 8, 9):
        second.offer(seq, 960 * seq, bytes([2]) * 40, time.monotonic())
    assert [p.data for p in sender.sent] == [bytes([1]) * 40] * 2 + [bytes([2]) * 40] * 3
    assert sender.numbers == [100, 101, 102, 103, 104]
    assert sender.times == [960 * i for i in range(5)]
    assert second.late == 0 and track.forwarded_frames == 5
    track.stop()


class Quiet:
    """A sink with nothing in it (a forwarded packet pops its decoded frame; none here)."""

    def take(self, now: float) -> None:
        return None

    def detach(self) -> None:
        pass


async def test_a_forwarding_run_longer_than_half_the_number_space_keeps_forwarding() -> None:
    """A 1:1 call forwards for 40 000 packets (13 minutes), its numbers wrapping round: each
    goes out, none taken for one older than the run's first (after 32 768 packets every new
    one would have been, and the sender stopped sending until the numbers came round again);
    a packet reordered behind the run's first, at its start, is still dropped."""
    track = OpusBusTrack(Quiet())
    sender = Sender()
    pt = PassThrough(lambda: True)
    track.forward_from(pt, sender)
    first, at = 60_000, time.monotonic()
    pt.offer(first, 0, b"\x01" * 20, at)
    pt.offer(first - 1, 0, b"\x02" * 20, at)  # behind the run's first: its number went out already
    pt.offer(first + 1, 960, b"\x03" * 20, at)
    assert sender.numbers == [100, 101] and pt.late == 1
    for i in range(2, 40_000):
        pt.offer((first + i) & 0xFFFF, 960 * i, b"\x04" * 20, at + 0.02 * i)
    assert sender.numbers == [(100 + i) & 0xFFFF for i in range(40_000)]
    assert pt.late == 1 and track.forwarded_frames == 40_000
    track.stop()


class SrtpSender(Sender):
    """A :class:`Sender` whose wire protects each packet as a leg's does before it goes out:
    an SDES leg's SRTP context (libsrtp's default replay window, 128 packets) or a DTLS leg's
    (aiortc's: 1024, an index sent again allowed)."""

    def __init__(self, dtls: bool) -> None:
        super().__init__()
        policy = pylibsrtp.Policy(
            key=bytes(range(30)),
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
        if dtls:
            policy.window_size, policy.allow_repeat_tx = 1024, True
        self.srtp = pylibsrtp.Session(policy)

    def send_rtp(self, plain: bytes) -> None:
        self.srtp.protect(plain)
        super().send_rtp(plain)


def voice(i: int) -> bytes:
    """A distinct payload for source packet ``i``."""
    return i.to_bytes(3, "big") * 8


@pytest.mark.parametrize("dtls", [True, False], ids=["dtls", "sdes"])
async def test_a_source_restarting_its_numbers_far_behind_renumbers_the_run(
    dtls: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A run of 2 000 packets, then the source numbers from 1 600 back (a restart: more than
    any SRTP replay window behind): the run is renumbered (RFC 3550 §A.1: the jump's first
    packet dropped, its next confirms the restart) and forwarding goes on, the numbers and RTP
    times continuous and every payload as it came. Before, the restart's packets were mapped
    1 600 numbers back, SRTP refused them as too old, and the sender encoded from then on."""
    track = OpusBusTrack(Quiet())
    sender = SrtpSender(dtls)
    pt = PassThrough(lambda: True)
    track.forward_from(pt, sender)
    at = time.monotonic()
    for i in range(2000):
        pt.offer(10_000 + i, 960 * i, voice(i), at + 0.02 * i)
    for i in range(50):  # its RTP time restarted too
        pt.offer(10_400 + i, 7_000_000 + 960 * i, voice(5000 + i), at + 40 + 0.02 * i)
    assert sender.numbers == [100 + i for i in range(2049)]
    assert sender.times == [960 * i for i in range(2049)]
    out = [p.data for p in sender.sent]
    assert out == [voice(i) for i in range(2000)] + [voice(5000 + i) for i in range(1, 50)]
    assert pt.jumps == 1 and pt.late == 0 and pt.target is track
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    track.stop()


async def test_a_source_jumping_far_ahead_goes_on_from_our_next_number() -> None:
    """A jump of 20 000 numbers ahead in a live run (no loss is that long: the source speaks
    every 20 ms) is a restart too: the stream goes on from its next number and RTP time, not
    past a gap of 20 000 packets and their time."""
    track = OpusBusTrack(Quiet())
    sender = Sender()
    pt = PassThrough(lambda: True)
    track.forward_from(pt, sender)
    at = time.monotonic()
    for i in range(10):
        pt.offer(1000 + i, 960 * i, voice(i), at + 0.02 * i)
    for i in range(10):
        pt.offer(21_000 + i, 960 * (30_000 + i), voice(100 + i), at + 0.2 + 0.02 * i)
    assert sender.numbers == [100 + i for i in range(19)]
    assert sender.times == [960 * i for i in range(19)]
    assert [p.data for p in sender.sent] == [voice(i) for i in range(10)] + [
        voice(100 + i) for i in range(1, 10)
    ]
    assert pt.jumps == 1
    track.stop()


async def test_a_lone_packet_far_behind_is_dropped_and_the_run_goes_on() -> None:
    """One packet 199 behind the newest (a stray: a duplicate from long ago) on an SDES leg,
    whose SRTP refuses an index more than 128 behind: dropped, and the run goes on as if it
    never came. Before, it was mapped back onto a number sent already, SRTP refused it, and
    forwarding into the sender ended for the rest of the call."""
    track = OpusBusTrack(Quiet())
    sender = SrtpSender(dtls=False)
    pt = PassThrough(lambda: True)
    track.forward_from(pt, sender)
    at = time.monotonic()
    for i in range(300):
        pt.offer(30_000 + i, 960 * i, voice(i), at + 0.02 * i)
    pt.offer(30_100, 960 * 100, voice(100), at + 6.0)
    for i in range(300, 310):
        pt.offer(30_000 + i, 960 * i, voice(i), at + 6.0 + 0.02 * (i - 299))
    assert sender.numbers == [100 + i for i in range(310)]
    assert [p.data for p in sender.sent] == [voice(i) for i in range(310)]
    assert pt.jumps == 1 and pt.target is track
    track.stop()


async def test_a_duplicated_packet_is_forwarded_once() -> None:
    """A phone's plain RTP passes on a packet the network duplicated: forwarded to an SDES leg,
    whose SRTP refuses an index sent twice, the copy is dropped and the run goes on. Before, it
    went out on the same number, SRTP refused it, and forwarding into the sender ended for the
    rest of the call."""
    track = OpusBusTrack(Quiet())
    sender = SrtpSender(dtls=False)
    pt = PassThrough(lambda: True)
    track.forward_from(pt, sender)
    at = time.monotonic()
    for i, seq in enumerate((500, 501, 501, 502, 503, 503)):
        pt.offer(seq, 960 * seq, voice(seq), at + 0.02 * i)
    assert sender.numbers == [100, 101, 102, 103]
    assert [p.data for p in sender.sent] == [voice(seq) for seq in range(500, 504)]
    assert pt.late == 2 and pt.target is track
    track.stop()


async def test_the_sender_waits_out_a_run_and_encodes_again_when_it_ends() -> None:
    """While forwarding, the sender's task sends nothing of its own; it encodes again at once
    when forwarding is refused (mixing starts), on the stream's next number and RTP time, and
    :data:`FORWARD_WAIT` after the source's last packet when the source goes quiet — on the
    next number, its RTP time moved on by the ticks nobody sent (a pause, not a late packet)."""
    allowed = [True]
    track = OpusBusTrack(Voice())
    pt = PassThrough(lambda: allowed[0])
    sender = Sender()
    track.forward_from(pt, sender)
    async with LoopLag() as lag:  # a stall of this process skips the clock's ticks
        task = asyncio.ensure_future(sender.pump(track, 10**6))
        try:
            for seq in range(20):
                pt.offer(seq, 960 * seq, b"\x05" * 30, time.monotonic())
                await asyncio.sleep(0.02)
            assert [p.data for p in sender.sent] == [b"\x05" * 30] * 20  # the task sent none
            allowed[0] = False
            # Refused: the task encodes from its next tick.
            pt.offer(20, 960 * 20, b"\x05" * 30, time.monotonic())
            await until(lambda: len(sender.sent) >= 23, timeout=1.0)
            assert all(p.seq is None for p in sender.sent[20:]) and pt.switches == 2
            allowed[0] = True
            count = len(sender.sent)
            quiet_from = time.monotonic()
            # A second run, then the source is quiet.
            pt.offer(21, 960 * 21, b"\x06" * 30, quiet_from)
            await until(lambda: len(sender.sent) > count + 1, timeout=1.0)
            waited = time.monotonic() - quiet_from
            assert sender.sent[count].data == b"\x06" * 30
            assert sender.sent[count + 1].seq is None
            assert waited >= FORWARD_WAIT and pt.switches == 4
            await until(lambda: len(sender.sent) > count + 3, timeout=1.0)
        finally:
            task.cancel()
            track.stop()
        assert sender.numbers == list(range(100, 100 + len(sender.sent)))
        steps = [b - a for a, b in itertools.pairwise(sender.times)]
    # One tick each: forwarded, refused, encoded. A stall of this process skips the clock's
    # ticks, and the packet encoded after it is stamped at its own tick, as LeanSender's is:
    # a whole number of ticks later, only as often as the stalls allow.
    uneven = [step for step in steps[:count] + steps[count + 1 :] if step != 960]
    assert all(step % 960 == 0 for step in uneven), uneven
    assert len(uneven) <= lag.frames, (uneven, lag.worst)
    pause = steps[count] / 960  # the quiet after the second run, in ticks
    assert FORWARD_WAIT / 0.02 <= pause <= waited / 0.02 + 1
    assert sender.stream.markers == 2  # the stream's first packet, and the talkspurt after


async def test_a_refusal_ends_the_run_at_a_tick_timed_before_the_refused_packet() -> None:
    """The tick after a refusal is timed by the clock's schedule, and may fall before the
    refused packet's arrival, within the yes kept from the run's last packet: it encodes on
    the stream's next RTP time. (The kept yes once undid the refusal there: the run carried the
    ticks silent until the source's quiet ended it, 13 ticks later on the RTP clock.)"""
    allowed = [True]
    track = OpusBusTrack(Voice())
    pt = PassThrough(lambda: allowed[0])
    sender = Sender()
    track.forward_from(pt, sender)
    at = 100.0  # the packets' arrival times, 21 ms apart: a feeder a little late each time
    for seq in range(5):
        pt.offer(seq, 960 * seq, b"\x05" * 30, at + 0.021 * seq)
    last = at + 0.021 * 4
    allowed[0] = False
    pt.offer(5, 960 * 5, b"\x05" * 30, last + 0.021)  # refused
    (packet,) = track.packets(last + 0.015)  # the tick due before the refused packet came
    sender.send_encoded(packet)
    assert packet.seq is None and not track.forwarding and pt.switches == 2
    assert sender.times[-1] - sender.times[-2] == 960  # the next tick: no pause
    track.stop()


@pytest.mark.parametrize("transfer", [False, True])
async def test_back_from_forwarding_on_a_clean_link_the_tone_runs_on_without_a_gap(
    transfer: bool,
) -> None:
    """A Cloud API call: the bridge codes CELT on a clean link, forwards WhatsApp's SILK packets
    for a second, then codes again (``transfer``: after the call moved to a new source that
    sends nothing yet). The browser's one decoder hears the tone run on across both switches:
    no phase jump, no silent 5 ms. (From the state the encoder kept from before the
    forwarding, its first CELT frame decoded as 15 ms of near silence.)"""

    source = Tone()
    track = browser_track(source, clean=CLEAN)
    track.far_end_report(0.0)
    allowed = [False]
    pt = PassThrough(lambda: allowed[0])
    sender = Sender()
    track.forward_from(pt, sender)
    whatsapp = OpusEncoder(
        16_000, bitrate=20_000, complexity=5, fec=True, expected_loss=10, dtx=False
    )
    whatsapp.silence = None
    await sender.pump(track, 30)  # our own CELT
    allowed[0] = True
    far = Tone()
    for seq in range(500, 550):  # WhatsApp's SILK, coding the same tone in step
        far.n = source.n
        pt.offer(seq, 960 * seq, whatsapp.encode(far.take(0.0)), time.monotonic())
    allowed[0] = False  # nothing more to forward: our own encoder again
    if transfer:
        track.forward_from(PassThrough(lambda: False), sender)
    await sender.pump(track, 30)
    track.stop()
    packets = [bytes(p.data) for p in sender.sent]
    assert track.forwarded_frames == 50 and pt.switches == (1 if transfer else 2)
    modes = "".join("C" if is_celt(p) else "S" for p in packets)
    assert modes == "C" * 30 + "S" * 50 + "C" * 30
    decoder = OpusDecoder(16_000)
    pcm = np.concatenate([decoder.decode(p) for p in packets])
    assert abs(dominant_frequency(pcm, 16_000) - Tone.HZ) < 5
    assert tone_breaks(pcm, 16_000, Tone.HZ, Tone.PEAK, skip=0.1) == ([], [])


async def test_a_bug_in_forwarding_costs_the_source_nothing_and_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Forwarding runs in the source leg's receive callback: a failure there is logged once
    and ends forwarding into this sender (it encodes again), and the source's callback goes
    on as if nothing was forwarded."""

    class Broken(Sender):
        def send_rtp(self, plain: bytes) -> None:
            raise ValueError("a bug")

    track = OpusBusTrack(Voice())
    pt = PassThrough(lambda: True)
    sender = Broken()
    track.forward_from(pt, sender)
    pt.offer(1, 960, b"\x01" * 40, time.monotonic())  # raises nothing here
    pt.offer(2, 1920, b"\x02" * 40, time.monotonic())  # goes nowhere now
    failures = [r for r in caplog.records if "forwarding into this sender failed" in r.message]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert pt.target is None and track.pass_through is None
    (packet,) = track.packets(time.monotonic())  # the sender's own again
    assert packet.seq is None and len(packet.data) > 2
    track.stop()


async def test_a_duplicated_older_packet_is_dropped_and_the_run_goes_on() -> None:
    """A copy of a packet a few behind the newest (the network duplicated it late): the judge
    places it as a reordered one, and an SDES leg's SRTP refuses its index sent twice. The copy
    is dropped and counted late, and forwarding goes on. Before, the refusal ended forwarding
    into the sender for the rest of the call (an ERROR and the encoder from then on)."""
    track = OpusBusTrack(Quiet())
    sender = SrtpSender(dtls=False)
    pt = PassThrough(lambda: True)
    track.forward_from(pt, sender)
    at = time.monotonic()
    for i, seq in enumerate((700, 701, 702, 703, 701, 704, 705)):
        pt.offer(seq, 960 * seq, voice(seq), at + 0.02 * i)
    assert sender.numbers == [100, 101, 102, 103, 104, 105]
    assert [p.data for p in sender.sent] == [voice(seq) for seq in range(700, 706)]
    assert pt.late == 1 and pt.target is track and track.forwarded_frames == 6
    track.stop()
