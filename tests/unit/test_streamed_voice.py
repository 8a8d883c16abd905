"""A full-duplex model's continuous stream (GPT-Live) through the one receiver
(``agents/voice.py`` ``StreamedSource``): played at the delay its jitter needs, never more
than its bound, on the worker clock's tick times."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import numpy as np
import pytest

from bridge.agents.voice import StreamedSource
from bridge.audio import tone
from bridge.media import BusStats

from ..support.spectrum import dominant_frequency

TICK = 0.02
CHUNK = 640  # the model's 40 ms chunks (the fake GPT-Live's)


@dataclass
class Clock:
    """What the source reads of the worker clock: the tick's time."""

    now: float = 0.0


def play(
    chunks: list[tuple[float, np.ndarray]], *, seconds: float, max_ms: int = 100
) -> tuple[StreamedSource, list[tuple[float, np.ndarray]]]:
    """Push each chunk at its arrival time and take a frame every tick; the frames out with
    their tick times."""
    clock = Clock()
    source = StreamedSource(max_ms=max_ms, stats=BusStats(), where="test", clock=clock)  # type: ignore[arg-type]
    pending = sorted(chunks, key=lambda c: c[0])
    out: list[tuple[float, np.ndarray]] = []
    for n in range(int(seconds / TICK)):
        t = 1.0 + n * TICK
        while pending and pending[0][0] <= t:
            at, pcm = pending.pop(0)
            source.push(pcm, at)
        clock.now = t
        frame = source.next_frame()
        assert frame is not None and frame.shape == (320,) and frame.dtype == np.int16
        out.append((t, frame))
    return source, out


def stream(voice_from: float, voice: np.ndarray, *, phase: float, jitter: float = 0.0,
           seed: int = 1, seconds: float = 3.0) -> list[tuple[float, np.ndarray]]:  # fmt: skip
    """The model's real-time stream: 40 ms chunks sent on its own schedule at ``phase`` past
    the ticks, silence but for ``voice`` from ``voice_from`` s into it, each arriving up to
    ``jitter`` s late (in order: one TCP connection)."""
    rng = random.Random(seed)
    total = int(seconds * 16_000)
    pcm = np.zeros(total, dtype=np.int16)
    start = int(voice_from * 16_000)
    pcm[start : start + voice.size] = voice[: total - start]
    chunks, last = [], 0.0
    for i in range(total // CHUNK):
        at = max(last, 1.0 + phase + i * CHUNK / 16_000 + rng.uniform(0, jitter))
        last = at
        chunks.append((at, pcm[i * CHUNK : (i + 1) * CHUNK]))
    return chunks


@pytest.mark.parametrize("phase", [0.001, 0.007, 0.013, 0.019])
def test_a_steady_stream_plays_its_voice_at_the_next_tick(phase: float) -> None:
    voice = tone(440, 16_000, 16_000, 0.25)
    chunks = stream(1.0, voice, phase=phase)
    _, out = play(chunks, seconds=2.5)
    arrived = next(at for at, pcm in chunks if np.abs(pcm).max() > 0)
    first_loud = next(t for t, f in out if np.abs(f).max() > 1000)
    # A fixed 60 ms cushion made this 60-80 ms; the receiver's delay is the tick's phase and
    # its few ms of margin.
    assert first_loud - arrived <= 0.025, f"{1000 * (first_loud - arrived):.1f} ms"
    loud = np.concatenate([f for _, f in out if np.abs(f).max() > 1000])
    assert loud.size == pytest.approx(16_000, abs=640)  # the whole second, nothing concealed
    assert dominant_frequency(loud, 16_000) == pytest.approx(440, abs=3)


def test_a_jittery_stream_gets_the_delay_it_needs_and_no_more_than_its_bound() -> None:
    voice = tone(440, 32_000, 16_000, 0.25)
    chunks = stream(0.5, voice, phase=0.005, jitter=0.04, seed=7, seconds=4.0)
    source, out = play(chunks, seconds=4.0)
    stats = source._receiver.stats
    # 0-40 ms of jitter: the delay grows to cover it (frames concealed only while it learns).
    assert stats.concealed_samples - stats.silent_concealed_samples <= 8 * 320
    assert 0.02 <= stats.jitter_buffer_target_delay / max(1, stats.jitter_buffer_emitted_count)
    tail = np.concatenate([f for t, f in out if 2.0 <= t <= 2.4])
    assert dominant_frequency(tail, 16_000) == pytest.approx(440, abs=3)
    assert source.stats.agent_voice_frames_dropped == 0


def test_a_stream_faster_than_real_time_keeps_only_its_bound(caplog) -> None:
    caplog.set_level(logging.WARNING)
    voice = tone(440, 32_000, 16_000, 0.25)
    # Two seconds of the stream arrive at once (a server that bursts): the bound keeps 100 ms.
    chunks = [(1.1, voice[i : i + CHUNK]) for i in range(0, voice.size, CHUNK)]
    source, out = play(chunks, seconds=1.0)
    loud = [t for t, f in out if np.abs(f).max() > 1000]
    assert 4 <= len(loud) <= 7  # 100 ms, give or take the chunk in hand
    assert source.stats.agent_voice_frames_dropped >= 90  # the model's voice, by its name
    assert source.stats.source_frames_dropped == 0  # not a socket's or a fork's audio
    assert sum("faster than real time" in r.message for r in caplog.records) == 1


def test_the_voice_is_gone_within_the_delay_once_the_stream_turns_silent() -> None:
    voice = tone(440, 16_000, 16_000, 0.25)
    chunks = stream(0.5, voice, phase=0.011)
    _, out = play(chunks, seconds=2.0)
    silent_from = next(at for at, pcm in chunks[::-1] if np.abs(pcm).max() > 0) + 0.04
    last_loud = max(t for t, f in out if np.abs(f).max() > 1000)
    assert last_loud - silent_from <= 0.03
