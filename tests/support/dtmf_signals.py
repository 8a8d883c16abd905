"""Test signals for DTMF (speech-like, music, digits between speech) and an independent
decoder: the textbook Goertzel recursion, written here and sharing nothing with the bridge's
vectorised detector (bridge/audio/dtmf.py)."""

from __future__ import annotations

import math

import numpy as np

RATE = 16_000
ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*0#D")


def goertzel_power(block: np.ndarray, freq: float, rate: int = RATE) -> float:
    """|X(f)|^2 of ``block`` by the Goertzel recursion (one multiply per sample)."""
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in block.tolist():
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def decode_digits(
    pcm: np.ndarray, rate: int = RATE, block_ms: int = 20, exclude: float | None = None
) -> str:
    """The keys in ``pcm``, in order: a key is two or more blocks whose strongest row and
    column tones hold most of the block's energy (less a known tone at ``exclude``: the
    agent's microphone); any other block separates presses."""
    n = rate * block_ms // 1000
    x = pcm.astype(np.float64)
    labels: list[str | None] = []
    for i in range(0, x.size - n + 1, n):
        block = x[i : i + n]
        energy = float(block @ block)
        if exclude is not None:
            energy -= goertzel_power(block, exclude, rate) * 2 / n
        if energy < n * (32768 * 10 ** (-40 / 20)) ** 2:
            labels.append(None)
            continue
        rows = [goertzel_power(block, f, rate) for f in ROWS]
        cols = [goertzel_power(block, f, rate) for f in COLS]
        r, c = int(np.argmax(rows)), int(np.argmax(cols))
        share = (rows[r] + cols[c]) * 2 / n / energy  # |X|^2 * 2/N is a sine's energy
        labels.append(KEYS[r][c] if share > 0.6 else None)
    out = []
    run_key, run = None, 0
    for label in [*labels, None]:
        if label == run_key and label is not None:
            run += 1
            continue
        if run_key is not None and run >= 2:
            out.append(run_key)
        run_key, run = label, 1
    return "".join(out)


def _resonate(x: np.ndarray, freq: np.ndarray, bw: float, rate: int) -> np.ndarray:
    """A two-pole resonator whose centre follows ``freq`` (per sample)."""
    r = math.exp(-math.pi * bw / rate)
    a1 = 2 * r * np.cos(2 * np.pi * freq / rate)
    a2 = -r * r
    y = np.zeros_like(x)
    y1 = y2 = 0.0
    xs, a1s = x.tolist(), a1.tolist()
    for i in range(len(xs)):
        v = xs[i] + a1s[i] * y1 + a2 * y2
        y[i] = v
        y2, y1 = y1, v
    return y


VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (570, 840, 2410),
          (300, 870, 2240), (660, 1720, 2410), (440, 1020, 2240), (490, 1350, 1690)]  # fmt: skip


def speech_like(seconds: float, seed: int = 1, rate: int = RATE, dbfs: float = -20.0) -> np.ndarray:
    """Voiced syllables (a glottal pulse train with a gliding pitch of 90-280 Hz through three
    moving formants) at about 4 per second, fricative noise, and pauses: s16."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = np.zeros(n)
    pos = 0
    while pos < n:
        syl = int(rate * rng.uniform(0.12, 0.3))
        seg = min(syl, n - pos)
        f0 = np.linspace(rng.uniform(90, 280), rng.uniform(90, 280), seg)
        f0 *= 1 + 0.01 * rng.standard_normal(seg).cumsum() / max(1, seg) ** 0.5
        phase = np.cumsum(f0 / rate)
        pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per pitch period
        v1, v2 = VOWELS[rng.integers(len(VOWELS))], VOWELS[rng.integers(len(VOWELS))]
        voiced = np.zeros(seg)
        for k, bw in zip(range(3), (90.0, 110.0, 170.0), strict=True):
            track = np.linspace(v1[k], v2[k], seg)
            voiced += _resonate(pulses, track, bw, rate) / (k + 1)
        env = np.sin(np.pi * np.arange(seg) / seg) ** 0.7
        chunk = voiced * env
        if rng.random() < 0.4:  # a fricative
            noise = np.diff(rng.standard_normal(seg + 1)) * 0.3
            chunk = chunk + noise * np.max(np.abs(chunk)) * 0.2
        out[pos : pos + seg] = chunk
        pos += seg
        if rng.random() < 0.3:
            pos += int(rate * rng.uniform(0.05, 0.25))  # a pause
    out /= np.sqrt(np.mean(out**2)) + 1e-9
    out *= 32768 * 10 ** (dbfs / 20)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def music(seconds: float, seed: int = 2, rate: int = RATE, dbfs: float = -18.0) -> np.ndarray:
    """A melody over chords on equal-tempered notes (C3-C7, the notes next to DTMF's
    frequencies included), harmonic-rich timbres with plucked and held envelopes: s16."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = np.zeros(n)
    beat = int(rate * 0.25)
    t = np.arange(beat * 8) / rate
    for start in range(0, n, beat):
        notes = [int(rng.integers(60, 96))]  # the melody: C4-C7
        if (start // beat) % 4 == 0:
            root = int(rng.integers(48, 72))
            notes += [root, root + 4, root + 7]  # a chord held for the bar
        for note in notes:
            freq = 440.0 * 2 ** ((note - 69) / 12)
            length = beat * (4 if note != notes[0] else int(rng.integers(1, 3)))
            length = min(length, n - start)
            tt = t[:length]
            wave = sum(np.sin(2 * np.pi * k * freq * tt) / k**1.2 for k in range(1, 7))
            env = np.exp(-tt * rng.uniform(1.5, 6.0)) * np.minimum(1, tt * 200)
            out[start : start + length] += wave * env
    out /= np.sqrt(np.mean(out**2)) + 1e-9
    out *= 32768 * 10 ** (dbfs / 20)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def dtmf_tone(digit: str, ms: int, rate: int = RATE, dbfs: float = -10.0) -> np.ndarray:
    r = next(i for i, keys in enumerate(KEYS) if digit in keys)
    c = KEYS[r].index(digit)
    t = np.arange(rate * ms // 1000) / rate
    amp = 32767 * 10 ** (dbfs / 20)
    x = amp * (np.sin(2 * np.pi * ROWS[r] * t) + np.sin(2 * np.pi * COLS[c] * t))
    return np.rint(x).astype(np.int16)


def digits_between_speech(digits: str, seed: int = 3, rate: int = RATE) -> np.ndarray:
    """Each key (80 ms) with speech-like noise between the presses."""
    parts = [speech_like(0.6, seed, rate, dbfs=-24.0)]
    for i, d in enumerate(digits):
        parts += [np.zeros(rate // 20, np.int16), dtmf_tone(d, 80, rate)]
        parts += [np.zeros(rate // 20, np.int16), speech_like(0.4, seed + i + 1, rate, -24.0)]
    parts.append(np.zeros(rate // 5, np.int16))
    return np.concatenate(parts)
