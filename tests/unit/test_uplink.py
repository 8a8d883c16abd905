"""Every leg's receive path (bridge/rtc/uplink.py): every packet reaches the leg's receiver, a
steady clock takes 20 ms frames out, bad packets are counted and never end the stream, and the
clock stops with the leg."""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import numpy as np
import pytest

from bridge.audio import FRAME_SAMPLES, tone
from bridge.audio.opus import OpusDecoder, OpusEncoder
from bridge.media import BusStats
from bridge.rtc.uplink import Playout
from bridge.tasks import TaskSet

from ..support.loops import LoopLag


def opus_packets(n: int) -> list[bytes]:
    enc = OpusEncoder(16_000, bitrate=32_000, complexity=5, fec=False, expected_loss=0, dtx=False)
    pcm = tone(440, FRAME_SAMPLES * n, 16_000)
    return [enc.encode(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(n)]


class Frames(list[np.ndarray]):
    """Frames handed on by the playout; :meth:`wait` until there are ``n``."""

    def __init__(self) -> None:
        super().__init__()
        self._more = asyncio.Event()

    def append(self, frame: np.ndarray) -> None:
        super().append(frame)
        self._more.set()

    async def wait(self, n: int) -> None:
        while len(self) < n:
            self._more.clear()
            await asyncio.wait_for(self._more.wait(), 2)


class Feed:
    """Hands packets to a playout as a leg's RTP session does (number, RTP time, payload)."""

    def __init__(self, playout: Playout) -> None:
        self.playout = playout

    def add(self, packet: tuple[int, bytes]) -> None:
        seq, payload = packet
        self.playout.packet(seq, seq * 960, payload, time.monotonic())


def rtp(seq: int, payload: bytes) -> tuple[int, bytes]:
    return seq, payload


async def test_packets_become_a_steady_stream_of_frames_and_bad_ones_are_counted() -> None:
    frames = Frames()
    stats = BusStats()
    tasks = TaskSet("test")
    playout = Playout(frames.append, stats, tasks)
    buffer = Feed(playout)
    packets = opus_packets(10)
    buffer.add(rtp(1, packets[0]))
    buffer.add(rtp(2, b""))  # padding-only RTP
    buffer.add(rtp(3, b"\xff" * 3))  # not Opus
    for seq, p in enumerate(packets[1:], start=4):
        buffer.add(rtp(seq, p))
    buffer.add(rtp(5, packets[2]))  # a duplicate
    await frames.wait(14)
    playout.stop()
    await tasks.close()
    assert {f.shape for f in frames} == {(FRAME_SAMPLES,)}
    rx = playout.stats
    # The empty and the broken packet were concealed in place (two frames), then the tone
    # (and, after the last packet, concealment again while the clock runs on).
    assert rx.total_samples_received == 10 * FRAME_SAMPLES
    assert rx.concealed_samples == (len(frames) - 10) * FRAME_SAMPLES
    levels = [float(np.sqrt(np.mean(f.astype(np.float64) ** 2))) for f in frames[:12]]
    assert levels[0] > 1000 and min(levels[6:12]) > 1000
    assert rx.decode_errors == 1 and stats.uplink_decode_errors == 1
    assert rx.packets_discarded >= 2 and stats.uplink_rtp_late == rx.packets_discarded
    assert playout.last_packet is not None


async def test_the_clock_stops_with_the_leg_and_later_packets_are_ignored() -> None:
    frames = Frames()
    tasks = TaskSet("test")
    playout = Playout(frames.append, BusStats(), tasks)
    Feed(playout).add(rtp(1, opus_packets(1)[0]))
    await frames.wait(1)
    playout.stop()  # the leg's close
    count = len(frames)
    await asyncio.sleep(0.1)
    assert len(frames) == count  # no frames after the stop
    Feed(playout).add(rtp(2, opus_packets(1)[0]))  # late packets are ignored
    await asyncio.sleep(0.05)
    assert len(frames) == count
    await tasks.close()


async def test_a_receiver_that_raised_is_replaced_and_one_that_keeps_raising_is_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tick that raises (a bug in the receiver) is dropped by the clock: the playout takes
    the next packet into a fresh receiver and is back on the clock, the tone heard again.
    Before, the leg kept believing it was on the clock and was silent for the rest of the
    call. A receiver that fails every time is given up after three, said once."""
    frames = Frames()
    tasks = TaskSet("test")
    playout = Playout(frames.append, BusStats(), tasks)
    feed, packets = Feed(playout), opus_packets(40)
    feed.add(rtp(1, packets[0]))
    await frames.wait(1)
    broken = playout.receiver

    def fails(now: float) -> np.ndarray:
        raise RuntimeError("a bug")

    broken.pop = fails  # type: ignore[method-assign]
    await asyncio.sleep(0.05)
    assert not playout.clocked
    before = len(frames)
    for seq in range(2, 12):
        feed.add(rtp(seq, packets[seq]))
        await asyncio.sleep(0.02)
    await frames.wait(before + 5)
    assert playout.receiver is not broken and playout.clocked
    levels = [float(np.sqrt(np.mean(f.astype(np.float64) ** 2))) for f in frames[before:]]
    assert max(levels) > 1000  # the tone again
    for attempt in range(3):
        playout.receiver.pop = fails  # type: ignore[method-assign]
        await asyncio.sleep(0.05)
        feed.add(rtp(20 + attempt, packets[20 + attempt]))
    await asyncio.sleep(0.05)
    assert not playout.clocked
    said = [r for r in caplog.records if "audio is off" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    count = len(frames)
    feed.add(rtp(30, packets[30]))
    await asyncio.sleep(0.05)
    assert len(frames) == count  # given up: nothing more handed on
    await tasks.close()


async def test_the_reports_carry_the_loss_beyond_a_forwarded_leg() -> None:
    """While the leg's packets are forwarded into another leg, its sender hears the larger of
    the two losses (RFC 3550 §6.4.2's fraction lost, out of 256) in every receiver report
    (rtc/rtp_session.py)."""
    from aiortc.rtp import RtcpPacket, RtcpRrPacket

    from bridge.rtc.rtp_session import RtpSession

    session = RtpSession(2, "test")
    beyond = [0.10]
    session.loss_beyond = lambda: beyond[0]

    def fraction(received: range, skip: int | None = None) -> int:
        for seq in received:
            if seq != skip:
                packet = struct.pack("!BBHII", 0x80, 111, seq, seq * 960, 1) + b"x"
                session.receive_rtp(packet, time.monotonic())
        rr = next(p for p in RtcpPacket.parse(session.report()) if isinstance(p, RtcpRrPacket))
        assert rr.reports[0].ssrc == 1
        return int(rr.reports[0].fraction_lost)

    assert fraction(range(1, 51), skip=25) == 25  # ours 2 %, beyond 10 %: 10 % (25/256)
    assert fraction(range(51, 53)) == 25  # ours 0 %: beyond's
    beyond[0] = 0.0
    assert fraction(range(53, 57), skip=54) == 64  # nothing beyond: ours (1 of 4)
    assert session.quality().uplink_lost == 2


def _block_levels(pcm: np.ndarray) -> np.ndarray:
    blocks = pcm[: pcm.size // 80 * 80].reshape(-1, 80).astype(np.float64)
    return np.sqrt((blocks**2).mean(axis=1))


@pytest.mark.parametrize("celt", [False, True], ids=["silk", "celt"])
@pytest.mark.parametrize("hz", [440, 3000])
def test_a_warmed_decoder_carries_on_at_the_senders_level(celt: bool, hz: int) -> None:
    """An idle leg's decoder skipped the stream; warmed on the packets before the next, its
    first frames are the tone at its level in every 5 ms block, where a cold one starts at a
    fraction of it (the seam this warm-up is for)."""
    from bridge.audio.opus import WARM_PACKETS, OpusDecoder

    enc = OpusEncoder(16_000, bitrate=32_000, complexity=5, fec=True, expected_loss=5, dtx=False)
    enc.set_celt_only(celt)
    pcm = tone(hz, FRAME_SAMPLES * 60, 16_000, 0.3)
    packets = [enc.encode(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(60)]
    reference = OpusDecoder(16_000)
    heard = [reference.decode(p) for p in packets]
    k = 40
    expected = _block_levels(np.concatenate(heard[k : k + 2]))

    def resumed(warm: list[bytes]) -> np.ndarray:
        decoder = OpusDecoder(16_000)
        decoder.warm(warm)
        return _block_levels(np.concatenate([decoder.decode(p) for p in packets[k : k + 2]]))

    warmed, cold = resumed(packets[k - WARM_PACKETS : k]), resumed([])
    assert (warmed / expected).min() > 0.9 and (warmed / expected).max() < 1.1
    assert (cold / expected).min() < 0.5


async def test_an_idle_playout_counts_what_it_forwards_and_decodes_from_when_asked() -> None:
    """While nothing needs a forwarded leg's audio, its packets are forwarded and counted (the
    reports' loss and bit rate) but never decoded, no frame is handed on and the leg is off
    the clock; once something asks, the next packets are decoded into frames of the tone."""
    frames = Frames()
    tasks = TaskSet("test")
    playout = Playout(frames.append, BusStats(), tasks)
    forwarded: list[int] = []
    wanted = False
    playout.forward = lambda seq, ts, payload, at: forwarded.append(seq) is None  # carried
    playout.needs_pcm = lambda at: wanted
    decoder = playout.receiver.decoder
    decodes = 0
    real_decode = decoder.decode

    def counting(packet: bytes) -> np.ndarray:
        nonlocal decodes
        decodes += 1
        return real_decode(packet)

    decoder.decode = counting  # type: ignore[method-assign]
    packets = opus_packets(40)
    for seq, p in enumerate(packets[:20]):
        playout.packet(seq, seq * 960, p, time.monotonic())
        await asyncio.sleep(0.02)
    assert forwarded == list(range(20)) and playout.not_decoded == 20
    assert decodes == 0 and len(frames) == 0
    assert not playout.clocked  # idle: no tick of its own (it would hand nothing on)
    assert playout.stats.packets_received == 20 and playout.stats.bytes_received > 20 * 40
    wanted = True
    async with LoopLag() as lag:  # the packets' pace is this loop's sleeps
        for seq, p in enumerate(packets[20:], start=20):
            playout.packet(seq, seq * 960, p, time.monotonic())
            await asyncio.sleep(0.02)
        await frames.wait(15)
    assert playout.clocked
    playout.stop()
    await tasks.close()
    assert forwarded == list(range(40)) and playout.not_decoded == 20
    # A stall of this loop's sleeps underruns the playout: concealed frames are among the 15
    # waited for, so fewer packets were decoded by then (13 once beside a loaded suite).
    assert decodes >= 15 - lag.frames and playout.stats.packets_received == 40, lag.worst
    levels = [float(np.sqrt(np.mean(f.astype(np.float64) ** 2))) for f in frames[:15]]
    # The tone, decoded: a loaded host that delays this loop's 20 ms sleeps underruns the
    # playout now and then, and a concealed frame fades (618 RMS seen beside a full suite;
    # once 5 of 15, the loop stalled): silence would be none of them.
    assert sum(level > 1000 for level in levels) >= 12 - lag.frames, (levels, lag.worst)


async def test_a_playout_leaves_the_clock_while_idle_and_comes_back_when_decoding() -> None:
    """A leg decoding is on the worker clock; idle (its packets forwarded, nothing needing
    them decoded) it leaves it, with nothing to hand on; asked for its audio again, it is back
    on the clock from the next packet."""
    frames = Frames()
    tasks = TaskSet("test")
    playout = Playout(frames.append, BusStats(), tasks)
    wanted = [True]
    playout.forward_to(lambda seq, ts, payload, at: True, lambda at: wanted[0])
    packets = opus_packets(9)
    for seq, p in enumerate(packets):
        if seq == 3:
            assert playout.clocked
            wanted[0] = False
        if seq == 6:
            assert not playout.clocked and playout.not_decoded == 3
            wanted[0] = True
        playout.packet(seq, seq * 960, p, time.monotonic())
    assert playout.clocked
    playout.stop()
    await tasks.close()
    assert not playout.clocked


def _level_off_by(meter: Any, decoder: Any, packets: list[bytes]) -> float:
    """How far (dB) ``meter``'s level is from that of every packet decoded by ``decoder``."""
    from bridge.media import LevelMeter, level_dbfs

    reference = LevelMeter()
    for p in packets:
        reference.add(decoder.decode(p))
    metered = level_dbfs(meter.energy, meter.samples)
    whole = level_dbfs(reference.energy, reference.samples)
    assert metered is not None and whole is not None
    return abs(metered - whole)


async def test_an_idle_playouts_level_comes_from_a_sample_each_second() -> None:
    """An idle leg decodes a run of packets a second (LEVEL_RUN of LEVEL_EVERY) and meters the
    run's last ones: the reports read the tone's level from it, within half a dB, at a fifth
    of what decoding every packet costs."""
    from bridge.media import LevelMeter
    from bridge.rtc.uplink import LEVEL_EVERY, LEVEL_METERED, LEVEL_RUN

    tasks = TaskSet("test")
    playout = Playout(lambda pcm: None, BusStats(), tasks)
    heard, forwarded_to = LevelMeter(), LevelMeter()
    playout.forward = lambda seq, ts, payload, at: True  # carried
    playout.needs_pcm = lambda at: False
    playout.idle_meters = (heard, forwarded_to)
    packets = opus_packets(2 * LEVEL_EVERY)
    for seq, p in enumerate(packets):
        playout.packet(seq, seq * 960, p, time.monotonic())
    playout.stop()
    await tasks.close()
    assert playout.not_decoded == len(packets) - 2 * LEVEL_RUN
    assert heard.samples == forwarded_to.samples == 2 * LEVEL_METERED * FRAME_SAMPLES
    assert _level_off_by(heard, OpusDecoder(16_000), packets) < 0.5


async def test_an_idle_playouts_level_sample_is_the_runs_packets_decoded_in_order() -> None:
    """The sample's run is decoded in a row at its last packet, not one a packet as they come:
    the same decodes in the same order, so the meters get the very energies they would have,
    also for a leg that went idle in the middle of a run (only its packets since: metered the
    last LEVEL_METERED of the run's)."""
    from bridge.media import LevelMeter, frame_energy
    from bridge.rtc.uplink import LEVEL_EVERY, LEVEL_METERED, LEVEL_RUN

    packets = opus_packets(2 * LEVEL_EVERY)
    for idle_from in (0, 3):
        tasks = TaskSet("test")
        playout = Playout(lambda pcm: None, BusStats(), tasks)
        heard = LevelMeter()
        playout.forward = lambda seq, ts, payload, at: True  # carried
        playout.needs_pcm = lambda at: False
        playout.idle_meters = (heard,)
        playout._idle_packets = idle_from  # the run's phase the leg goes idle at
        for seq, p in enumerate(packets[: LEVEL_RUN - idle_from]):
            playout.packet(seq, seq * 960, p, time.monotonic())
        playout.stop()
        await tasks.close()
        decoder = OpusDecoder(16_000)
        run = [decoder.decode(p) for p in packets[: LEVEL_RUN - idle_from]]
        expected = [frame_energy(pcm) for pcm in run[-LEVEL_METERED:]]
        assert heard.samples == LEVEL_METERED * FRAME_SAMPLES
        assert heard.energy == sum(expected)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
async def test_an_idle_g711_playouts_level_comes_from_a_sample_of_packets_bytes(codec: str) -> None:
    """An idle G.711 leg (Meta's G.711 forwarded to a PBX phone) decodes nothing, not even a
    sample: one packet in LEVEL_STRIDE is metered from its bytes (a table of squares), at the
    level decoding them all gives, to half a dB: this tone rises by 0.2 dB a packet, and each
    sample is two packets before its stride's middle (0.4 dB low); speech has no such slope."""
    from bridge.audio.g711 import alaw_encode, ulaw_encode
    from bridge.audio.phone_codecs import G711Decoder
    from bridge.media import LevelMeter
    from bridge.rtc.uplink import LEVEL_STRIDE

    decodes = 0

    class Counted(G711Decoder):
        def _decode(self, payload: bytes) -> np.ndarray:
            nonlocal decodes
            decodes += 1
            return super()._decode(payload)

    encode = ulaw_encode if codec == "PCMU" else alaw_encode
    # A voice-like 300 Hz tone rising from -30 to -10 dBFS, at 8 kHz, 160 samples a packet.
    n = 100 * 160
    pcm = tone(300, n, 8000, 0.3) * np.geomspace(0.1, 1.0, n)
    packets = [encode(pcm[i : i + 160].astype(np.int16)) for i in range(0, n, 160)]
    tasks = TaskSet("test")
    playout = Playout(lambda pcm: None, BusStats(), tasks, lambda: Counted(codec))
    heard = LevelMeter()
    playout.forward = lambda seq, ts, payload, at: True  # carried
    playout.needs_pcm = lambda at: False
    playout.idle_meters = (heard,)
    for seq, p in enumerate(packets):
        playout.packet(seq, seq * 160, p, time.monotonic())
    playout.stop()
    await tasks.close()
    assert decodes == 0 and playout.not_decoded == len(packets)
    assert heard.samples == len(packets) // LEVEL_STRIDE * FRAME_SAMPLES  # as 16 kHz frames
    assert _level_off_by(heard, G711Decoder(codec), packets) < 0.5


async def test_an_idle_legs_quality_counts_the_network_loss_its_listener_meets() -> None:
    """Nothing is played on an idle leg, so no concealment is measured there: the MOS counts
    the packets the network lost instead (the forwarded-to receiver must rebuild them), and
    a decoded leg's MOS counts its own concealment as before."""
    from bridge.rtc.quality import Quality, sample

    tasks = TaskSet("test")
    playout = Playout(lambda pcm: None, BusStats(), tasks)
    playout.forward = lambda seq, ts, payload, at: True  # carried
    playout.needs_pcm = lambda at: False
    for seq, p in enumerate(opus_packets(50)):
        if seq % 10 != 3:  # a tenth lost on the way
            playout.packet(seq, seq * 960, p, time.monotonic())
    idle = sample(Quality(uplink_packets=45, uplink_lost=5), Quality(), playout)
    assert idle.concealed_fraction == pytest.approx(0.1) and idle.loss_fraction == pytest.approx(
        0.1
    )
    # A decoded leg that played its audio with nothing concealed: its listener missed nothing.
    playout.needs_pcm = lambda at: True
    frames = Frames()
    playout.on_frame = frames.append
    for seq, p in enumerate(opus_packets(20), start=50):
        playout.packet(seq, seq * 960, p, time.monotonic())
        await asyncio.sleep(0.02)
    await frames.wait(10)
    playout.stop()
    await tasks.close()
    decoded = sample(Quality(uplink_packets=20, uplink_lost=0), Quality(), playout)
    assert decoded.concealed_fraction < 0.2 and decoded.loss_fraction == decoded.concealed_fraction
