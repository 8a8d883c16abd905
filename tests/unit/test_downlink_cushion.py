"""The downlink sink's cushion sized from how early a remote engine's frames come
(``bridge/media/cushion.py`` ``Cushion``), on a simulated clock: a steady engine's 60 ms
chunks play with one frame held once they have shown it (given up in a long silence), a
jittery or tight one's with two, and a late chunk takes the second back for the rest of the
call."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from bridge.media import CallBus

from ..support.calls import agent_sink
from ..support.spectrum import tone_breaks

RATE = 16_000
TONE = (np.sin(2 * np.pi * 440 * np.arange(40 * RATE) / RATE) * 8000).astype(np.int16)
BURSTS = TONE.copy()
BURSTS.reshape(-1, RATE // 2)[3::4] = 0  # 1.5 s of tone, 0.5 s of pause: speech-like


def engine_chunks(
    seconds: float,
    *,
    early: float,
    jitter: float = 0.0,
    late_at: float | None = None,
    seed: int = 1,
    signal: np.ndarray = TONE,
    stall: tuple[float, float] | None = None,
) -> tuple[Any, np.ndarray, list[int], list[int]]:
    """A 440 Hz tone (or ``signal``) from an engine whose 60 ms chunks come ``early`` seconds
    before a tick of the listener's 20 ms clock (plus ``jitter``, a seeded |gauss| delay; the
    chunk due at ``late_at`` s comes 20 ms late; those due in ``stall`` (from, seconds) come
    together at its end). The sink, what it played, its cushion after each second, and the
    samples it held before each tick."""
    rng = random.Random(seed)
    bus = CallBus("c1")
    sink = agent_sink(bus)
    played, cushions, depths = [], [], []
    chunk, i, tick = 0, 0, 0.0
    while tick < seconds:
        while True:
            due = chunk * 0.06 - early + (abs(rng.gauss(0, jitter)) if jitter else 0.0)
            if late_at is not None and abs(chunk * 0.06 - late_at) < 0.03:
                due += 0.02
            if stall is not None and stall[0] <= due < sum(stall):
                due = sum(stall)
            if due > tick:
                break
            for _ in range(3):
                bus.push_downlink(signal[i * 320 : (i + 1) * 320], t=due)
                i += 1
            chunk += 1
        depths.append(len(sink.jitter) * 320 + sink.fifo.held)
        got = sink.pop(tick)
        played.append(got if got is not None else np.zeros(320, np.int16))
        if round(tick / 0.02) % 50 == 49:
            cushions.append(sink.cushion.frames)
        tick = round(tick + 0.02, 6)
    return sink, np.concatenate(played), cushions, depths


def test_a_steady_engine_plays_with_one_frame_held_and_nothing_stretched() -> None:
    """Chunks 8 ms ahead of the tick that needs them, every 60 ms: the first window shows the
    lead while the depth holds one frame, so one is all the sink ever holds: no frame of delay
    added or taken out (no stretch at all), the tone never breaks, and the frame a tick plays
    is the last one held when the next chunk comes."""
    sink, played, cushions, depths = engine_chunks(20.0, early=0.008)
    assert set(cushions[1:]) == {1}
    assert sink.inserted_samples == sink.removed_samples == 0
    assert sink.concealed == 0 and sink.bridged == 0
    jumps, silent = tone_breaks(played, RATE, 440, 8000)
    assert jumps == [] and silent == []
    assert min(depths[50:]) == 320


def test_a_frame_more_than_needed_is_taken_out_in_a_long_silence() -> None:
    """Chunks 28 ms ahead, speech-like (1.5 s of voice, 0.5 s of pause): two frames wait
    before every tick though one would do. After four windows that showed it, one is taken
    out, in a pause, once."""
    sink, _, cushions, depths = engine_chunks(20.0, early=0.028, signal=BURSTS)
    assert cushions[:4] == [2] * 4 and set(cushions[5:]) == {1}
    assert sink.removed_samples == 320 and sink.inserted_samples == 0
    assert min(depths[-300:]) == 320


def test_a_frame_is_taken_out_only_in_a_long_silence() -> None:
    """The same engine playing a tone with no pause at all: the frame is never taken out
    mid-tone; after 20 s without a silence it is kept for the call. The tone never breaks."""
    sink, played, cushions, _ = engine_chunks(30.0, early=0.028)
    assert sink.removed_samples == 0 and cushions[-3:] == [2] * 3
    jumps, silent = tone_breaks(played, RATE, 440, 8000)
    assert jumps == [] and silent == []


def test_an_engine_with_no_lead_to_spare_keeps_the_second_frame() -> None:
    """Chunks 2 ms ahead of their tick (less than ``LEAD_SPARE``): the cushion stays two
    frames (one frame of delay added once, by stretching), and the tone never breaks."""
    sink, played, cushions, depths = engine_chunks(20.0, early=0.002)
    assert set(cushions) == {2}
    assert 300 <= sink.inserted_samples - sink.removed_samples <= 360
    assert sink.concealed == 0
    jumps, silent = tone_breaks(played, RATE, 440, 8000, skip=3.0)
    assert jumps == [] and silent == []
    assert 600 <= min(depths[250:]) <= 690  # the second frame held


def test_a_jittery_engine_keeps_two_frames_and_never_runs_dry() -> None:
    """Chunks 12 ms ahead of their tick but up to ~20 ms late by a seeded |gauss| of 6 ms:
    the lead's spread leaves less than 2.5 ms, so two frames are held (after one lucky
    window, for the rest of the call). Nothing is concealed."""
    sink, played, cushions, _ = engine_chunks(30.0, early=0.012, jitter=0.006, seed=7)
    assert cushions.count(1) <= 1 and cushions[-20:] == [2] * 20
    assert sink.concealed == 0
    assert tone_breaks(played, RATE, 440, 8000, skip=3.0)[1] == []  # never silent


def test_a_late_chunk_takes_the_second_frame_back_for_the_rest_of_the_call() -> None:
    """A steady engine whose chunk 10 s in comes 20 ms late, one frame held: that gap is
    concealed once (a fade, the audio faded in again), and the cushion is two from then on."""
    sink, _, cushions, _ = engine_chunks(30.0, early=0.008, late_at=10.0, signal=BURSTS)
    assert cushions[1:10] == [1] * 9
    assert cushions[11:] == [2] * (len(cushions) - 11)
    assert sink.cushion.final
    assert sink.concealed == 1 and sink.slips == 0


def test_a_stalled_engines_backlog_is_shed_without_a_click_and_the_delay_comes_back() -> None:
    """A steady engine stalls for 500 ms, then sends what it held at once: the 25 frames of
    backlog are shed as the Opus receiver sheds one (a period at a time, cross-faded), not a
    whole frame a tick down to ten (13 phase jumps, 11 steps of several times the tone's own,
    and 200 ms of delay kept for seconds). The tone never steps nor jumps in phase after the
    stall's gap, and within three seconds the sink holds its cushion again (two frames: the
    stall was a frame come late, ``cushion.py``)."""
    sink, played, cushions, depths = engine_chunks(7.0, early=0.005, stall=(3.0, 0.5))
    assert max(depths[175:185]) >= 20 * 320  # the backlog came
    x = played[int(3.6 * RATE) :].astype(np.float64)  # from the burst's fade-in on
    own = np.abs(np.diff(TONE[:RATE].astype(np.float64))).max()
    assert np.abs(np.diff(x)).max() <= 1.2 * own  # no splice
    jumps, silent = tone_breaks(played, RATE, 440, 8000, skip=3.6)
    assert jumps == [] and silent == []
    assert sink.jitter.stats.latency_drops == 0 and sink.removed_samples >= 20 * 320
    assert cushions[-1] == 2 and min(depths[300:]) <= 2 * 320 + 160  # the cushion's, from 6 s
