"""Spectral checks on received audio: which tones are there, and how strong.

The one FFT helper of the tests: the strongest tone of a signal (:func:`dominant_frequency`),
and for "does this signal hold that tone", a Hann-windowed power spectrum summed over ±15 Hz
around each frequency. (The bridge itself measures no spectrum.)"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

BAND_HZ = 15.0


def dominant_frequency(pcm: object, rate: int) -> float:
    """Frequency (Hz) of the strongest spectral peak, interpolated between FFT bins."""
    x = np.asarray(pcm, dtype=np.float64)
    if x.size < 16:
        return 0.0
    x = (x - x.mean()) * np.hanning(x.size)
    spectrum = np.abs(np.fft.rfft(x))
    k = int(np.argmax(spectrum[1:]) + 1)
    if 1 <= k < spectrum.size - 1:
        a, b, c = spectrum[k - 1], spectrum[k], spectrum[k + 1]
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom != 0 else 0.0
    else:
        offset = 0.0
    return float((k + offset) * rate / x.size)


def band_powers(pcm: object, rate: int, freqs: Iterable[float]) -> tuple[dict[float, float], float]:
    """Power within ±15 Hz of each frequency, and the signal's total power (both of the
    Hann-windowed spectrum)."""
    x = np.asarray(pcm, dtype=np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    f = np.fft.rfftfreq(x.size, 1 / rate)
    powers = {float(fr): float(spec[(f > fr - BAND_HZ) & (f < fr + BAND_HZ)].sum()) for fr in freqs}
    return powers, float(spec.sum())


def band_energy(pcm: object, rate: int, freq: float) -> float:
    """Share of a signal's energy within ±15 Hz of ``freq`` (is a tone present, and how much)."""
    powers, total = band_powers(pcm, rate, [freq])
    return powers[float(freq)] / max(total, 1e-12)


def levels_db(pcm: object, rate: int, freqs: list[float]) -> dict[float, float]:
    """Energy within ±15 Hz of each frequency, in dB relative to the strongest of them."""
    powers, _total = band_powers(pcm, rate, freqs)
    powers = {fr: p + 1e-12 for fr, p in powers.items()}
    top = max(powers.values())
    return {fr: float(10 * np.log10(p / top)) for fr, p in powers.items()}


# Bands at least 40 Hz from every tone and every sum or difference of two tones: their
# median is the track's broadband floor, relative to the strongest tone.
OFF_TONE_BANDS = [510.0, 610.0, 710.0, 820.0, 940.0, 1050.0, 1190.0, 1380.0, 1490.0, 1600.0]


def assert_hears(pcm: np.ndarray, rate: int, present: set[float], absent: set[float]) -> None:
    """Each present tone within 30 dB of the strongest; each absent tone at least 50 dB down.

    A leak is a peak: a whispered 880 Hz tone reaching the wrong ear shows within ~20 dB of the
    tones that belong there. A frame lost on a loaded machine (a 2-core CI runner) instead
    clicks, and a click raises every band alike, to about -46 dB. So an absent tone may sit up
    to 10 dB above the broadband floor measured between the tones, never higher than -35 dB;
    where many clicks (a machine starved for a while) lift the floor itself past -38 dB, an
    absent tone must still not stand out of it (3 dB), and the floor must stay 5 dB under a
    leak's level: a track that is all clicks fails.

    An absent tone near a present one (within :data:`NEAR_HZ`) is judged in time instead,
    window by window (:func:`tone_damage`), when the present tone is whole in most of the
    track: a stall that breaks the present tone (a gap concealed, frames spliced out of
    phase) throws its skirt to one side more than the other (a splice's phase decides which;
    a catch-up played faster throws it upwards), so the mirror cannot vouch for it over the
    whole track; but a leak is additive, it leaves the present tone whole, and in a whole
    40 ms window even 20 ms of another source at -30 dB stands ~10 dB above what the tone's
    own skirt and coding put there. A track that
    is mostly breaks passes if either judgement vouches for it.
    """
    tones = present | absent
    mirrors = {fr: _mirror(fr, present, tones) for fr in absent}
    extra = [m for m in mirrors.values() if m is not None]
    db = levels_db(pcm, rate, sorted(tones) + OFF_TONE_BANDS + extra)
    floor = float(np.median([db[fr] for fr in OFF_TONE_BANDS]))
    assert floor <= -25.0, (floor, db)
    for fr in present:
        assert db[fr] >= -30, (fr, db)
    for fr in absent:
        allowed = max(min(-35.0, max(-50.0, floor + 10)), floor + 3)
        mirror = mirrors[fr]
        if mirror is not None:
            # Clicks in a present tone near this one spread its skirt to both sides alike:
            # as high here as at the mirror frequency on its other side, where no tone is.
            allowed = max(allowed, db[mirror] + 6)
        if mirror is not None:
            local = tone_damage(pcm, rate, (fr + mirror) / 2, fr)  # (the tone between them)
            if local.judged:  # mostly whole: judged in time, where a leak cannot hide
                assert local.clean, (fr, local, floor, mirror, db)
                continue
            # Mostly broken: either judgement may vouch for it (the mirror where the breaks
            # splatter alike, time where they do not); a frame of music fails both.
            assert local.clean or db[fr] <= allowed, (fr, local, floor, mirror, db)
            continue
        assert db[fr] <= allowed, (fr, floor, mirror, db)


NEAR_HZ = 300.0
"""How far from a present tone an absent one is judged in time (:func:`tone_damage`): a broken
tone's skirt reaches that far above the whole-track limit (the browser hold test's supervisor,
1250 Hz, broken on a starved machine: -13 to -23 dB at the music's 1000 Hz, 250 Hz below it,
in 341 ms of what the agent's page played; the coach's 880 Hz: -25 dB at 1000 Hz)."""
WINDOW_S = 0.04
"""The time-local windows of :func:`tone_damage` (Hann, hop half a window): long enough
to part tones 120 Hz apart (a 40 ms Hann window's skirt is ~-48 dB there)."""
CLEAN_LEAK_DB = -39.0
"""An absent tone in a window where the present tone is whole, relative to the present
tone's whole level in a window: 20 ms of music mixed in at -30 dB reads -35 to -31 dB, a
whole tone's own skirt and Opus coding at most -42.6 dB (the hold test's agent, 167 runs
beside CPU burners at load 4-9)."""
DAMAGED_LEAK_DB = -10.0
"""The same in a window where the present tone breaks: its splatter stays below the tone's
whole level (seen up to ~-18 dB); a frame of another source in the tone's place (hold
music is 8 dB louder than a participant's tone) does not."""
BROKEN_MEDIAN_DB = -25.0
"""The absent tone's median over the broken windows, at most (seen up to ~-30 dB)."""
SILENT_DB = -35.0
"""A damaged window whose whole power is this far under the present tone's whole level is
silent (the tone's stream stopped): nothing of the tone is left there to splatter, so an
absent tone is held to :data:`CLEAN_LEAK_DB` there too (a leak that goes on shows in the
silence)."""
DAMAGED_SHARE = 0.5
"""At most this share of the windows may be broken (damaged, not silent) to judge a track in
time alone: one that is mostly breaks passes if either the whole track's rule or the
time-local one does."""


@dataclass(frozen=True)
class TimeLocal:
    """An absent tone beside a present one, window by window (:func:`tone_damage`): the
    share of windows where the present tone breaks (damaged, not silent), and the absent
    tone's loudest window among the whole or silent ones and among the broken ones (dB
    relative to the present tone's level in a window where it is whole: the 90th percentile
    of its windows)."""

    broken: float
    whole_db: float
    broken_db: float
    broken_median_db: float
    """The absent tone's median over the broken windows: a break's splatter comes and goes,
    a leak that goes on is in every window."""

    @property
    def judged(self) -> bool:
        """Whether the track is whole enough to be judged in time (:data:`DAMAGED_SHARE`)."""
        return self.broken <= DAMAGED_SHARE

    @property
    def clean(self) -> bool:
        return (
            self.whole_db <= CLEAN_LEAK_DB
            and self.broken_db <= DAMAGED_LEAK_DB
            and self.broken_median_db <= BROKEN_MEDIAN_DB
        )


def tone_damage(pcm: object, rate: int, tone: float, absent: float) -> TimeLocal:
    """``absent`` beside the present ``tone``, judged in time (see :class:`TimeLocal`).

    The track is cut into :data:`WINDOW_S` Hann windows (hop half a window). A window is
    damaged where ``tone`` breaks, and the windows beside it too: demodulated on 10 ms blocks,
    a block whose amplitude is more than 30 % off the whole tone's (the blocks' 90th
    percentile), or whose phase jumped by more than 0.5 rad from the block before (a gap
    concealed, a fade, frames spliced out of phase, a stretch played faster). A leak mixed in
    is additive: at -30 dB it moves the tone's blocks by 3 %, so it leaves them whole and
    shows in whole windows (and in silent ones: :data:`SILENT_DB`).
    """
    x = np.asarray(pcm, dtype=np.float64)
    n = int(WINDOW_S * rate)
    block = int(0.01 * rate)
    if x.size < 4 * n:
        return TimeLocal(1.0, 0.0, 0.0, 0.0)  # too short to judge
    starts = np.arange(0, x.size - n + 1, n // 2)
    segs = np.stack([x[s : s + n] for s in starts]) * np.hanning(n)
    spec = np.abs(np.fft.rfft(segs, 4 * n, axis=1)) ** 2
    f = np.fft.rfftfreq(4 * n, 1 / rate)
    band = {
        fr: spec[:, (f > fr - BAND_HZ) & (f < fr + BAND_HZ)].sum(axis=1) for fr in (tone, absent)
    }
    usual = float(np.percentile(band[tone], 90)) + 1e-12  # the whole tone's level
    leak = 10 * np.log10(band[absent] / usual + 1e-12)
    y = x[: x.size // block * block]
    k = np.arange(y.size)
    z = (y * np.exp(-2j * np.pi * tone * k / rate)).reshape(-1, block).mean(axis=1)
    amp = np.abs(z) / (float(np.percentile(np.abs(z), 90)) + 1e-12)
    bad = (amp < 0.7) | (amp > 1.3)
    bad[1:] |= np.abs(np.angle(z[1:] * np.conj(z[:-1]))) > 0.5
    damaged = np.zeros(starts.size, dtype=bool)
    for i in np.flatnonzero(bad):
        damaged |= (starts < (i + 1) * block) & (starts + n > i * block)
    damaged |= np.r_[False, damaged[:-1]] | np.r_[damaged[1:], False]
    silent = damaged & (spec.sum(axis=1) < usual * 10 ** (SILENT_DB / 10))
    broken = damaged & ~silent
    whole = leak[~broken].max() if (~broken).any() else -np.inf
    worst = leak[broken].max() if broken.any() else -np.inf
    usually = float(np.median(leak[broken])) if broken.any() else -np.inf
    return TimeLocal(float(broken.mean()), float(whole), float(worst), usually)


def _mirror(absent: float, present: set[float], tones: set[float]) -> float | None:
    """The frequency on the other side of the present tone nearest ``absent`` (within
    :data:`NEAR_HZ`), at the same distance, if no tone lies within 60 Hz of it; else ``None``."""
    near = [p for p in present if abs(p - absent) <= NEAR_HZ]
    if not near:
        return None
    tone = min(near, key=lambda p: abs(p - absent))
    mirror = 2 * tone - absent
    if mirror <= 0 or any(abs(mirror - t) < 60 for t in tones):
        return None
    return mirror


def tone_breaks(
    pcm: object, rate: int, hz: float, level: float, *, block: int = 80, skip: float = 1.0
) -> tuple[list[float], list[float]]:
    """Where a continuous tone of ``hz`` at ``level`` (peak) breaks, after ``skip`` seconds: the
    times (s) of its phase jumps (more than 0.5 rad from one 5 ms block to the next: a frame
    inserted, dropped or spliced out of phase) and of its silent blocks (under a quarter of
    the level). The tone is demodulated block by block, so a stretch by whole periods (WSOLA)
    leaves its phase alone and is no break."""
    x = np.asarray(pcm, dtype=np.float64)
    x = x[: x.size // block * block]
    n = np.arange(x.size)
    z = (x * np.exp(-2j * np.pi * hz * n / rate)).reshape(-1, block).mean(axis=1) * 2
    first = int(skip * rate / block)
    z = z[first:]
    seconds = (np.arange(z.size) + first) * block / rate
    jumps = np.flatnonzero(np.abs(np.angle(z[1:] * np.conj(z[:-1]))) > 0.5) + 1
    silent = np.flatnonzero(np.abs(z) < 0.25 * level)
    return [float(seconds[i]) for i in jumps], [float(seconds[i]) for i in silent]


def steady_level_db(pcm: object, rate: int) -> float:
    """A steady tone's level where it plays (dBFS RMS): the median of its 20 ms windows.

    A loaded host's stall leaves a gap in what a far end heard; over a second, 250 ms of it
    reads as a gain 1.2 dB low. The gain is judged here, the gap by the tests' own checks for
    dropouts; a track mostly gaps still fails (three windows in four within 3 dB of the median).
    """
    x = np.asarray(pcm, dtype=np.float64)
    if np.issubdtype(np.asarray(pcm).dtype, np.integer):
        x = x / 32768.0
    window = rate // 50
    windows = x[: x.size // window * window].reshape(-1, window)
    levels = 10 * np.log10(np.mean(windows * windows, axis=1) + 1e-20)
    median = float(np.median(levels))
    steady = float(np.mean(np.abs(levels - median) <= 3.0))
    assert steady >= 0.75, f"only {steady:.0%} of the 20 ms windows near {median:.1f} dBFS"
    return median
