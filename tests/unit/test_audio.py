"""DSP on the bus format: conversions, reframing, resampling, jitter buffer, the paced track."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import av
import numpy as np
import pytest

from bridge.audio import (
    FRAME_SAMPLES,
    JitterBuffer,
    Reframer,
    Resampler,
    f32_to_s16,
    rms_dbfs,
    s16_to_f32,
    tone,
)
from bridge.audio.opus import OpusDecoder
from bridge.media import CallBus
from bridge.rtc.tracks import OpusBusTrack

from ..support.calls import agent_sink
from ..support.spectrum import dominant_frequency


def decoder_like_frames(freq: float, seconds: float, rate: int = 48_000):
    """Frames shaped as aiortc's Opus decoder hands them over: s16 stereo 48 kHz, 20 ms."""
    n = rate // 50
    for i in range(int(seconds * 50)):
        mono = tone(freq, n, rate, 0.5, start=i * n)
        frame = av.AudioFrame.from_ndarray(np.repeat(mono, 2).reshape(1, -1), "s16", "stereo")
        frame.sample_rate = rate
        frame.pts = i * n
        yield frame


def test_uplink_framing_440hz_48k_to_bus_over_5s() -> None:
    resampler, reframer = Resampler(16_000), Reframer(FRAME_SAMPLES)
    bus = CallBus("t")
    taps: list[np.ndarray] = []
    bus.add_uplink_tap(lambda f: taps.append(f.pcm))
    for frame in decoder_like_frames(440.0, 5.0):
        for pcm in reframer.push(resampler.resample(frame)):
            bus.push_uplink(pcm)
    assert {p.shape for p in taps} == {(FRAME_SAMPLES,)}
    assert {p.dtype for p in taps} == {np.dtype(np.int16)}
    out = np.concatenate(taps)
    # 5 s at 16 kHz is 80 000 samples; the filter holds back less than one frame.
    total = out.size + reframer.pending
    assert 80_000 - 64 <= total <= 80_000
    assert dominant_frequency(out, 16_000) == pytest.approx(440.0, abs=0.5)
    # No sample dropped or duplicated anywhere: one sinusoid fits the whole 5 s (a single
    # slipped sample would shift the phase by 0.17 rad and leave a ~12 % residual).
    x = s16_to_f32(out[200:]).astype(np.float64)
    t = np.arange(x.size) / 16_000
    basis = np.column_stack([np.sin(2 * np.pi * 440 * t), np.cos(2 * np.pi * 440 * t)])
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    residual = x - basis @ coef
    assert np.sqrt(np.mean(residual**2)) < 0.005 * np.hypot(*coef)
    assert np.hypot(*coef) == pytest.approx(0.5, rel=0.01)


def test_resampler_handles_rate_change_without_losing_samples() -> None:
    r = Resampler(16_000)
    a = r.resample_array(tone(300, 48_000, 48_000), 48_000)
    b = r.resample_array(tone(300, 8_000, 8_000), 8_000)
    assert a.size + b.size == pytest.approx(32_000, abs=64)


def test_reframer_keeps_every_sample() -> None:
    rf = Reframer(320)
    data = np.arange(10_000, dtype=np.int16)
    frames: list[np.ndarray] = []
    rng = np.random.default_rng(1)
    pos = 0
    while pos < data.size:
        n = int(rng.integers(1, 700))
        frames += rf.push(data[pos : pos + n])
        pos += n
    out = np.concatenate(frames)
    assert all(f.size == 320 for f in frames)
    assert np.array_equal(out, data[: out.size])
    assert out.size + rf.pending == data.size


def test_reframer_holds_less_than_a_frame() -> None:
    rf = Reframer(960)
    assert rf.push(np.zeros(500, dtype=np.int16)) == []
    assert rf.push(np.zeros(300, dtype=np.int16)) == []
    assert rf.pending == 800
    out = rf.push(np.arange(5000, dtype=np.int16))  # 5800 samples: 6 frames, 40 left over
    assert len(out) == 6 and rf.pending == 40


def test_s16_f32_conversions_clip_at_full_scale() -> None:
    assert f32_to_s16(np.array([1.0, -1.0, 2.0, -2.0, 0.0, np.nan])).tolist() == [
        32767,
        -32768,
        32767,
        -32768,
        0,
        0,
    ]
    s = np.array([32767, -32768, 0, 16384], dtype=np.int16)
    f = s16_to_f32(s)
    assert f.dtype == np.float32
    assert f.min() == -1.0 and f.max() < 1.0
    assert np.array_equal(f32_to_s16(f), s)


def test_analysis_helpers() -> None:
    x = tone(1000, 16_000, 16_000, amplitude=1.0)
    assert rms_dbfs(x) == pytest.approx(-3.01, abs=0.05)
    assert dominant_frequency(x, 16_000) == pytest.approx(1000, abs=0.5)
    assert rms_dbfs(np.zeros(10, dtype=np.int16)) == float("-inf")


def test_jitter_buffer_prefill_underrun_and_adaptation() -> None:
    jb = JitterBuffer(target=2, min_target=1, max_target=4, slack=2, capacity=10, shrink_after=5)
    f = np.ones(320, dtype=np.int16)
    jb.push(f)
    assert jb.pop() is None  # prefilling to the target
    jb.push(f)
    assert jb.pop() is not None and jb.pop() is not None
    assert jb.pop() is None  # underrun: silence, and the target grows
    assert jb.stats.underruns == 1 and jb.target == 3
    for _ in range(3):
        jb.push(f)
    for _ in range(5):
        assert jb.pop() is not None
        jb.push(f)
    assert jb.target == 2  # shrank after 5 clean frames


def test_jitter_buffer_bounds_latency_and_capacity() -> None:
    jb = JitterBuffer(target=2, slack=2, capacity=6, max_target=4)
    for i in range(10):
        jb.push(np.full(320, i, dtype=np.int16))
    assert len(jb) == 6 and jb.stats.overflow_drops == 4
    first = jb.pop()
    assert first is not None and first[0] == 5  # oldest trimmed to stay near the target
    assert jb.stats.latency_drops == 1


async def test_bus_track_one_packet_a_tick_and_silent_on_underrun() -> None:
    """The downlink track (the one the bridge's sender plays): one 20 ms Opus packet per tick
    of the worker clock, its RTP time 960 on per packet, the sink's audio while it has some,
    then a concealed frame and silence, never a stall. (The pacing of a track read by aiortc's
    own sender, the quality bench's peers, is ``tests/unit/test_aiortc_track.py``'s.)"""
    bus = CallBus("t")
    sink = agent_sink(bus)
    track = OpusBusTrack(sink, bitrate=64_000, complexity=10)
    for i in range(5):
        bus.push_downlink(tone(500, FRAME_SAMPLES, start=i * FRAME_SAMPLES))
    assert bus.stats.downlink_frames == 5
    packets = [p for _ in range(25) for p in track.packets(time.monotonic())]
    assert [p.pts for p in packets] == [i * 960 for i in range(25)]
    decoder = OpusDecoder(16_000)
    pcm = [decoder.decode(p.data) for p in packets]
    assert {len(p) for p in pcm} == {FRAME_SAMPLES}
    # The codec's delay: the tone's 100 ms show from the second packet on.
    assert dominant_frequency(np.concatenate(pcm[1:6]), 16_000) == pytest.approx(500, abs=5)
    # The underrun: one frame conceals the missing audio (fading to zero), then silence.
    assert np.abs(np.concatenate(pcm[5:7])).max() > 100
    assert all(np.abs(p).max() < 100 for p in pcm[8:])
    assert track.silent_frames == 19
    assert bus.stats.downlink_played == 5 and bus.stats.downlink_transit.count == 5
    track.stop()
    assert len(sink.jitter) == 0 and sink.fifo.held == 0  # detached: nothing left waiting
    await asyncio.sleep(0)


def test_libopus_round_trip_at_the_bus_rate_keeps_pitch_level_and_framing() -> None:
    """Bus frames → libopus (16 kHz, the downlink's settings) → libopus decoder at 16 kHz."""
    from bridge.audio.opus import OpusDecoder, OpusEncoder

    enc = OpusEncoder(16_000, bitrate=24_000, complexity=1, fec=True, expected_loss=10, dtx=False)
    dec = OpusDecoder(16_000)
    pcm = tone(440.0, 16_000 * 2, 16_000, 0.5)
    out = []
    for i in range(0, pcm.size, FRAME_SAMPLES):
        packet = enc.encode(pcm[i : i + FRAME_SAMPLES])
        assert 10 < len(packet) < 200  # ~24 kbit/s: 60 bytes per 20 ms
        frame = dec.decode(packet)
        assert frame.dtype == np.int16 and frame.shape == (FRAME_SAMPLES,)
        out.append(frame)
    decoded = np.concatenate(out)[1600:]  # past the codec's start-up
    assert dominant_frequency(decoded, 16_000) == pytest.approx(440.0, abs=2)
    assert rms_dbfs(decoded) == pytest.approx(rms_dbfs(pcm), abs=1.5)


def test_libopus_decodes_a_browsers_48k_packets_to_16k_and_refuses_garbage() -> None:
    from bridge.audio.opus import OpusDecoder, OpusError

    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = 48_000, "stereo", "s16"
    codec.open()
    dec = OpusDecoder(16_000)
    mono = tone(1000.0, 960 * 50, 48_000, 0.5)
    out = []
    for i in range(50):
        chunk = np.repeat(mono[i * 960 : (i + 1) * 960], 2).reshape(1, -1)
        f = av.AudioFrame.from_ndarray(chunk, "s16", "stereo")
        f.sample_rate, f.pts = 48_000, i * 960
        out += [dec.decode(bytes(p)) for p in codec.encode(f)]
    assert {o.size for o in out} == {FRAME_SAMPLES}  # 20 ms at 16 kHz, downmixed to mono
    assert dominant_frequency(np.concatenate(out)[1600:], 16_000) == pytest.approx(1000, abs=3)
    with pytest.raises(OpusError):
        dec.decode(b"\xff" * 3)


def engine_drifting(ppm: float, seconds: float = 45.0) -> tuple[Any, list, list, list]:
    """An engine whose clock runs ``ppm`` fast or slow sends speech-like audio (1.5 s of a
    220 Hz voice, 0.5 s of pause) in 60 ms chunks; the browser's clock takes a frame every
    20 ms. The sink, what it played, each change of its stretch counters (samples: + inserted,
    - removed) and the depth (samples waiting) before each tick."""
    from bridge.media import CallBus

    bus = CallBus("c1")
    sink = agent_sink(bus)
    t = np.arange(int(1.5 * 16_000)) / 16_000
    voice = (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)  # ends on a zero crossing
    burst = np.concatenate((voice, np.zeros(8000, np.int16)))  # 2 s
    period = 0.06 / (1 + ppm / 1e6)  # one 3-frame chunk per engine 60 ms
    played, steps, depths = [], [], []
    next_chunk, tick, i, moved = 0.0, 0.011, 0, 0
    while tick < seconds:
        while next_chunk <= tick:
            for _ in range(3):
                k = (i * 320) % burst.size
                bus.push_downlink(burst[k : k + 320])
                i += 1
            next_chunk += period
        depths.append(len(sink.jitter) * 320 + sink.fifo.held)
        got = sink.pop()
        assert got is not None and got.shape == (320,)
        played.append(got)
        now = sink.inserted_samples - sink.removed_samples
        if now != moved:
            steps.append(now - moved)
        moved = now
        tick += 0.02
    return sink, played, steps, depths


@pytest.mark.parametrize("chunk_frames", [1, 3])
def test_one_late_engine_chunk_is_what_the_cushion_is_for_not_drift(chunk_frames: int) -> None:
    """An engine on time (0 ppm) whose one chunk, 10 s in, slips past the tick it was due for:
    the cushion plays through it, and the sink neither adds a frame of delay for it nor takes
    it away again later (two time shifts that a listener, and PESQ-WB, hear mid-speech). A
    shortfall of half a frame or more is paid only when the next window confirms it, and the
    fill at the start is no shortfall (20 ms frames: no stretch at all; 60 ms chunks: the
    cushion built once, early)."""
    from bridge.media import CallBus

    bus = CallBus("c1")
    sink = agent_sink(bus)
    t = np.arange(21 * 16_000) / 16_000
    voice = (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)
    period = 0.02 * chunk_frames
    late = round(10.0 / period)  # this chunk comes 20 ms late: past the tick it was due for
    chunk, tick, i, settled, moved = 0, 0.005, 0, None, (0, 0)
    while tick < 20.0:
        if settled is None and tick > 3.0:  # the cushion built (60 ms chunks: by stretching)
            settled = sink.jitter.stats.underruns
            moved = (sink.inserted_samples, sink.removed_samples)
        while chunk * period + (0.02 if chunk == late else 0) <= tick:
            for _ in range(chunk_frames):
                bus.push_downlink(voice[i * 320 : (i + 1) * 320])
                i += 1
            chunk += 1
        got = sink.pop()
        assert got is not None or settled is None  # silence only while the cushion fills
        tick += 0.02
    assert (sink.inserted_samples, sink.removed_samples) == moved
    assert moved[1] == 0 and moved[0] < (320 if chunk_frames == 1 else 2 * 320)
    assert sink.jitter.stats.underruns == settled and sink.concealed == 0


@pytest.mark.parametrize("ppm", [2000, -2000])
def test_downlink_drift_on_a_continuous_tone_never_jumps_in_phase_nor_goes_silent(
    ppm: int,
) -> None:
    """45 s of a tone with no pause to hide in, from an engine 2000 ppm fast or slow whose
    60 ms chunks come with a few ms of seeded jitter: the sink follows its clock by whole
    periods of the tone, so the phase never jumps and no 5 ms of it goes silent."""
    import random

    from ..support.spectrum import tone_breaks

    rng = random.Random(ppm)
    bus = CallBus("c1")
    sink = agent_sink(bus)
    t = np.arange(47 * 16_000) / 16_000
    voice = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    period = 0.06 / (1 + ppm / 1e6)
    played, next_chunk, tick, i, settled = [], 0.0, 0.011, 0, 0
    while tick < 45.0:
        if len(played) == 50:  # the first second (the cushion filling) is not drift
            settled = sink.jitter.stats.underruns
        while next_chunk + abs(rng.gauss(0, 0.004)) <= tick:
            for _ in range(3):
                bus.push_downlink(voice[i * 320 : (i + 1) * 320])
                i += 1
            next_chunk += period
        got = sink.pop()
        played.append(got if got is not None else np.zeros(320, np.int16))
        tick += 0.02
    moved = sink.inserted_samples - sink.removed_samples
    assert (moved <= -2 * 320) if ppm > 0 else (moved >= 2 * 320)  # followed (90 ms)
    jumps, silent = tone_breaks(np.concatenate(played), 16_000, 440, 8000)
    assert jumps == [] and silent == []
    assert sink.jitter.stats.underruns == settled  # never ran dry once playing


@pytest.mark.parametrize("ppm", [2000, -2000])
def test_downlink_follows_an_engine_clock_drift_a_pitch_period_at_a_time(ppm: int) -> None:
    """An engine 2000 ppm fast or slow for 45 s: the delay follows its clock by pitch periods
    (never a whole frame dropped or inserted), nothing runs dry, the waveform never steps, and
    the delay it adds is less than a frame."""
    sink, played, steps, depths = engine_drifting(ppm)
    assert sink.jitter.stats.underruns == 0 and sink.concealed == 0  # never ran dry
    assert sink.jitter.stats.latency_drops == 0  # never a frame trimmed
    assert steps and all(0 < abs(s) <= 240 for s in steps)  # 15 ms at most at a time
    moved = sum(steps[1:])  # after the first, which fills the cushion at the start
    assert (moved <= -2 * 320) if ppm > 0 else (moved >= 2 * 320)  # 90 ms of drift
    out = np.concatenate(played[1:]).astype(np.float64)  # after the first frame's fade-in
    _, clean, _, steady = engine_drifting(0)
    assert np.abs(np.diff(out)).max() < 1.2 * np.abs(np.diff(np.concatenate(clean[1:]))).max()
    # Following the drift adds less than a frame of delay to what waits before a tick.
    assert np.mean(depths[100:]) - np.mean(steady[100:]) < 320


@pytest.mark.parametrize("rate", [8000, 44100])
def test_a_files_frames_keep_its_last_ms_held_in_the_resampler(rate: int) -> None:
    """A file decoded to bus frames ends with its own last samples: the resampler holds a few
    ms of filter state, once dropped at the end of the file (the last frame's tail was the
    reframer's zero padding: about 5 ms of an 8 kHz prompt never played)."""
    from bridge.audio.decode import bus_frames

    from ..support.audio_files import encode

    wav = encode("wav", "pcm_s16le", 1000.0, 1.0, rate)  # exactly 50 bus frames of tone
    frames = list(bus_frames(wav))
    assert len(frames) == 50 and all(f.size == 320 for f in frames)
    tail = frames[-1][-32:].astype(np.float64)  # the file's last 2 ms
    assert np.sqrt(np.mean(tail**2)) > 0.2 * 32768 * 0.4, frames[-1][-48:]
