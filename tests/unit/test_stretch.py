"""The playout FIFO's time-scale modification (bridge/audio/stretch.py), on the samples."""

from __future__ import annotations

import numpy as np

from bridge.audio.stretch import PlayoutFifo

RATE = 16_000
FRAME = 320


def sine(n: int, hz: float, level: float = 8000.0, phase: float = 0.0) -> np.ndarray:
    t = np.arange(n) / RATE
    return (np.sin(2 * np.pi * hz * t + phase) * level).astype(np.int16)


def played(fifo: PlayoutFifo, frames: int) -> np.ndarray:
    return np.concatenate([fifo.take() for _ in range(frames)])


def largest_step(pcm: np.ndarray) -> float:
    return float(np.abs(np.diff(pcm.astype(np.float64))).max())


def test_accelerate_removes_whole_periods_of_a_voice_and_leaves_no_step() -> None:
    fifo = PlayoutFifo(RATE, FRAME)
    fifo.feed(sine(4 * FRAME, 200))  # a 200 Hz voice: a period of 80 samples
    first = fifo.take()
    removed = fifo.accelerate(fifo.held - FRAME)
    assert removed > 0 and removed % 80 == 0 and removed <= 240
    assert fifo.held == 3 * FRAME - removed
    out = np.concatenate((first, played(fifo, 2)))
    # Still the same sine, continuous in phase: a splice out of phase would step by ~2 × 8000.
    assert largest_step(out) < 1.05 * largest_step(sine(4 * FRAME, 200))
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) * RATE / out.size == 200


def test_expand_repeats_a_period_continuing_what_was_played() -> None:
    src = sine(4 * FRAME, 250)  # period 64 samples
    fifo = PlayoutFifo(RATE, FRAME)
    fifo.feed(src)
    first = fifo.take()
    inserted = fifo.expand()
    assert inserted > 0 and inserted % 64 == 0 and inserted <= 240
    assert fifo.held == 3 * FRAME + inserted
    out = np.concatenate((first, played(fifo, 3)))
    assert largest_step(out) < 1.05 * largest_step(src)
    assert fifo.inserted == inserted


def test_in_a_pause_the_longest_step_is_taken() -> None:
    fifo = PlayoutFifo(RATE, FRAME)
    fifo.feed(np.zeros(3 * FRAME, np.int16))
    assert fifo.accelerate(1000) == 240
    assert fifo.expand() == 240


def test_noise_is_not_stretched_unless_forced_and_then_without_a_click() -> None:
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(4 * FRAME) * 3000).astype(np.int16)
    fifo = PlayoutFifo(RATE, FRAME)
    fifo.feed(noise)
    fifo.take()
    assert fifo.accelerate(fifo.held - FRAME) == 0  # nothing repeats in noise
    assert fifo.expand() == 0
    held = fifo.held
    removed = fifo.accelerate(fifo.held - FRAME, force=True)
    assert 40 <= removed <= 240 and fifo.held == held - removed
    assert fifo.removed == removed


def test_a_stretch_never_takes_more_than_asked_or_than_is_held() -> None:
    fifo = PlayoutFifo(RATE, FRAME)
    fifo.feed(sine(FRAME + 100, 200))
    assert fifo.accelerate(30) == 0  # less than the shortest period
    assert fifo.accelerate(100) in (80,)
    fifo.clear()
    assert fifo.held == 0
    fifo.feed(sine(100, 200))
    assert fifo.expand() == 0  # too little held to compare


def test_around_a_word_onset_the_onset_is_never_repeated_or_smeared() -> None:
    """After a pause, a stretch touches only the pause: what is inserted is quiet and the
    onset that follows comes out sample for sample; a cut takes quiet samples only."""
    onset = np.concatenate((np.zeros(100, np.int16), sine(3 * FRAME, 300)))
    fifo = PlayoutFifo(RATE, FRAME)
    fifo.feed(np.zeros(FRAME, np.int16))
    fifo.take()  # a pause was played
    fifo.feed(onset)
    inserted = fifo.expand()
    assert inserted > 0
    out = played(fifo, 2)
    assert np.abs(out[:inserted]).max() == 0  # the pause, continued
    assert np.array_equal(
        out[inserted : inserted + 2 * FRAME - inserted], onset[: 2 * FRAME - inserted]
    )

    fifo = PlayoutFifo(RATE, FRAME)
    fifo.feed(np.zeros(FRAME, np.int16))
    fifo.take()
    fifo.feed(onset)
    removed = fifo.accelerate(1000)
    assert 40 <= removed <= 60  # the quiet 100 samples less a block of cross-fade
    out = played(fifo, 2)
    start = 100 - removed
    assert np.array_equal(out[start : start + FRAME], onset[100 : 100 + FRAME])
