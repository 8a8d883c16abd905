"""``PlayoutFifo``: samples on their way out, 20 ms at a time, with time-scale modification.

A playout clock takes exactly one frame per tick; the source (a decoder, an engine) comes in
frames of its own clock. When the two clocks drift apart (a sender's clock a few hundred ppm
off ours), the delay between them must grow or shrink. Dropping or inserting a whole 20 ms
frame does that in one audible step. Instead, like libwebrtc NetEq's "accelerate" and
"preemptive expand", this FIFO removes or inserts *one pitch period* (2.5–15 ms) at a time,
where the signal repeats itself (WSOLA: waveform-similarity overlap-add, Verhelst & Roelands,
ICASSP 1993):

* **accelerate** finds the lag ``L`` at which the samples about to be played best repeat, and
  replaces two periods ``A B`` by one cross-fade from ``A`` into ``B``: ``L`` samples fewer;
* **expand** finds the lag at which the samples about to be played repeat the last ``L``
  samples played (``A``, already out; ``B``, next) and inserts one cross-fade from ``B`` into
  ``A`` before ``B``: ``L`` samples more.

Either is done only where it cannot be heard: in a pause (below :data:`QUIET_RMS`), or, if the
caller allows ``voiced``, in speech whose periods correlate at :data:`SIMILAR` or better
(voiced sounds). The caller may ``force`` it (the best lag, whatever its correlation; the
cross-fade still avoids any click) when no such place came for too long.

**A rush** (:meth:`PlayoutFifo.rush`) sheds a large excess of delay as NetEq's fast accelerate
does: period after period in one tick, in a pause (whole frames of it) or, if the owner allows,
in voiced speech, never a whole frame of speech.

**The drift rule** (:func:`licence`, the one rule for every reader that follows a sender's
clock: the Opus receiver and the downlink sink): a stretch owed waits for a pause; after half of
:data:`PATIENCE` voiced speech will do; after all of it, anywhere. A removal (less delay: only
latency is at stake) waits twice as long as an insertion (more delay, which packets need in
time). An insertion owed to move the next frame a tick later takes a period at least as long as
what is owed when the signal repeats at one (a period shorter than owed would leave the owner a
few samples short, which no period fits, until a packet comes too late).

Pure and synchronous (numpy only). The owner decides *when* to stretch (its delay control);
this class does the *how*.
"""

from __future__ import annotations

import numpy as np

from .pcm import Pcm

QUIET_RMS = 300.0
"""RMS (of int16 samples; about -41 dBFS) under which samples count as a pause, where any lag
will do."""
SIMILAR = 0.85
"""Normalised correlation between two periods above which a period is removed or repeated in
speech (NetEq uses 0.9 for accelerate; a shade lower lets drift be followed in busy speech).
A FIFO may ask for more (:attr:`PlayoutFifo.similar`)."""
WINDOW_SECONDS = 0.0075
"""Length of the windows compared to find the period (7.5 ms)."""
PATIENCE = 2.0
"""Seconds an insertion owed may wait for a pause before it is forced (half of it before voiced
speech will do); a removal waits twice as long (see :func:`licence`)."""
KEEP_PAUSE = 20
"""Milliseconds of a pause a removal for less delay leaves of it, while only a pause will do
(:meth:`PlayoutFifo.sheddable`)."""
BLOCK = 40
"""Samples (2.5 ms at 16 kHz) per block when looking for a pause: every block a stretch touches
must be quiet, so that a word's onset right after a pause is never repeated or smeared."""


def quiet_prefix(pcm: np.ndarray) -> int:
    """How many samples from the start of ``pcm`` are a pause: whole :data:`BLOCK` blocks, up
    to the first one at or above :data:`QUIET_RMS`."""
    blocks = pcm[: pcm.size // BLOCK * BLOCK].astype(np.float32).reshape(-1, BLOCK)
    loud = np.einsum("ij,ij->i", blocks, blocks) >= QUIET_RMS * QUIET_RMS * BLOCK
    return int(np.argmax(loud)) * BLOCK if loud.any() else blocks.size


def is_pause(pcm: np.ndarray) -> bool:
    """Whether ``pcm`` as a whole is a pause (its RMS below :data:`QUIET_RMS`)."""
    x = pcm.astype(np.float32)
    return float(np.dot(x, x)) < QUIET_RMS * QUIET_RMS * x.size


def licence(waited: float, *, grow: bool) -> tuple[bool, bool]:
    """The drift rule: where a stretch owed for ``waited`` seconds may now happen, as
    ``(voiced, force)`` for :meth:`PlayoutFifo.accelerate` / :meth:`PlayoutFifo.expand` (a pause
    always will do). ``grow``: an insertion (more delay); a removal waits twice as long."""
    if grow:
        return True, waited >= PATIENCE
    waited /= 2
    return waited >= PATIENCE / 2, waited >= PATIENCE


class PlayoutFifo:
    """A FIFO of samples (``feed`` in, ``take`` a frame out) that can also lengthen or shorten
    what it holds by a pitch period (see the module docstring)."""

    def __init__(
        self, rate: int = 16_000, frame_samples: int = 320, similar: float = SIMILAR
    ) -> None:
        self.rate = rate
        self.similar = similar
        """The correlation a period in speech needs to be removed or repeated."""
        self.frame_samples = frame_samples
        self.min_lag = rate // 400  # a 400 Hz voice: 2.5 ms
        self.max_lag = rate * 15 // 1000  # a 67 Hz voice: 15 ms
        self.window = int(rate * WINDOW_SECONDS)
        self._pending = np.zeros(0, dtype=np.int16)
        self._history = np.zeros(self.max_lag, dtype=np.int16)
        """The last samples taken (played): what an expansion continues from."""
        self.inserted = 0
        """Samples added by :meth:`expand`, in total."""
        self.removed = 0
        """Samples removed by :meth:`accelerate`, in total."""

    @property
    def held(self) -> int:
        """Samples waiting to be played."""
        return int(self._pending.size)

    def feed(self, pcm: Pcm) -> None:
        """Append decoded samples."""
        if not pcm.size:
            return
        self._pending = pcm if not self._pending.size else np.concatenate((self._pending, pcm))

    def take(self) -> Pcm:
        """The next frame (the caller has fed at least ``frame_samples``)."""
        n = self.frame_samples
        frame, self._pending = self._pending[:n], self._pending[n:]
        if frame.size >= self.max_lag:
            self._history = frame[-self.max_lag :]
        else:
            self._history = np.concatenate((self._history, frame))[-self.max_lag :]
        return frame

    def clear(self) -> None:
        """Forget what is held and what was played (a new stream)."""
        self._pending = self._pending[:0]
        self._history = np.zeros(self.max_lag, dtype=np.int16)

    # -- time-scale modification
    def accelerate(
        self, limit: int, *, voiced: bool = True, force: bool = False, owed: int = 0
    ) -> int:
        """Remove one period of at most ``limit`` samples from the start of what is held, where
        it is not heard (in a pause, or if ``voiced`` in voiced speech; anywhere if ``force``);
        the samples removed (0: not here). With ``owed``: in a pause at most that many, in
        speech a period at least that long if the signal repeats at one (as :meth:`expand`)."""
        x = self._pending
        most = min(limit, self.max_lag, (x.size - self.window) // 2)
        if most < self.min_lag:
            return 0
        k = BLOCK
        quiet = quiet_prefix(x[: self.max_lag + k]) - k
        pause = min(limit, self.max_lag, max(owed, self.min_lag) if owed else limit, quiet)
        if pause >= self.min_lag and self._played_quietly():
            # In a pause (up to a word's onset, which stays whole): cut `pause` quiet samples,
            # cross-fading over a block so the waveform has no step.
            ramp = self._ramp(k)
            head = x[:k].astype(np.float32)
            mixed = np.round(head + (x[pause : pause + k] - head) * ramp).astype(np.int16)
            self._pending = np.concatenate((mixed, x[pause + k :]))
            self.removed += pause
            return pause
        region = x[: 2 * most + self.window].astype(np.float32)
        lag = self._period(
            region, region[: self.window], self.min_lag, most, voiced, force, owed=owed
        )
        if not lag:
            return 0
        ramp = self._ramp(lag)
        a = region[:lag]
        b = region[lag : 2 * lag]
        mixed = np.round(a + (b - a) * ramp).astype(np.int16)
        self._pending = np.concatenate((mixed, x[2 * lag :]))
        self.removed += lag
        return lag

    def expand(self, owed: int = 0, *, voiced: bool = True, force: bool = False) -> int:
        """Insert one period before what is held, continuing what was played last, where it is
        not heard (in a pause, or if ``voiced`` in voiced speech; anywhere if ``force``); the
        samples inserted (0: not here). In a pause that is ``owed`` samples (at least the
        shortest period, at most the longest, or as many as were quiet); in speech a period at
        least ``owed`` long if the signal repeats at one, else a shorter one."""
        x = self._pending
        if x.size < self.window:
            return 0  # too little held to compare
        most = min(self.max_lag, x.size)
        least = self.min_lag
        if most < least:
            return 0
        # The next samples (from B's start) compared with the samples `lag` earlier, which
        # reach back into what was played.
        span = np.concatenate((self._history[self.max_lag - most :], x[: self.window]))
        region = span.astype(np.float32)
        quiet = quiet_prefix(self._history[::-1][:most])  # what was played last
        pause = min(max(owed, least) if owed else most, quiet)
        if pause >= least:
            # After a pause (and before what follows, even a word's onset, which stays whole).
            return self._insert_pause(pause)
        template = region[most : most + self.window]
        # Offsets into `region`: a lag L starts at most - L; reversed so index = lag.
        lag = self._period(region, template, least, most, voiced, force, backwards=True, owed=owed)
        if not lag:
            return 0
        ramp = self._ramp(lag)
        a = region[most - lag : most]  # the last `lag` samples played
        b = x[:lag].astype(np.float32)  # the next `lag` samples
        mixed = np.round(b + (a - b) * ramp).astype(np.int16)
        self._pending = np.concatenate((mixed, x))
        self.inserted += lag
        return lag

    def lengthen_pause(self, samples: int) -> bool:
        """Insert ``samples`` of the pause just played before what is held (:attr:`max_lag` at a
        time, as :meth:`expand` does in a pause) if every block of the last :attr:`max_lag`
        samples played was a pause; whether it did (all or nothing)."""
        if quiet_prefix(self._history) < self.max_lag:
            return False
        while samples > 0:
            samples -= self._insert_pause(min(samples, self.max_lag))
        return True

    def _insert_pause(self, count: int) -> int:
        """Insert ``count`` (at most :attr:`max_lag`) of the quiet samples played last before
        what is held, time-reversed so they continue without a step, fading to nothing over
        their last block."""
        inserted = self._history[::-1][:count].astype(np.float32)
        fade = min(BLOCK, count)
        inserted[-fade:] *= 1.0 - self._ramp(fade)
        self._pending = np.concatenate((np.round(inserted).astype(np.int16), self._pending))
        self.inserted += count
        return count

    def _period(
        self,
        region: np.ndarray,
        template: np.ndarray,
        least: int,
        most: int,
        voiced: bool,
        force: bool,
        *,
        backwards: bool = False,
        owed: int = 0,
    ) -> int:
        """The lag in ``[least, most]`` at which ``template`` best repeats in ``region`` (after
        it, or with ``backwards`` before it), if it repeats well enough; 0 otherwise. With
        ``owed``, the shortest lag of at least ``owed`` that repeats (nearly) as well as the
        best of them, if one repeats well enough."""
        if not (voiced or force):
            return 0
        w = self.window
        energy_t = float(np.dot(template, template))
        dots = np.correlate(region, template, mode="valid")  # one per offset
        squares = np.concatenate(([0.0], np.cumsum(region * region, dtype=np.float64)))
        energies = squares[w:] - squares[:-w]
        if backwards:  # offset o = most - lag
            lags = np.arange(least, most + 1)
            offsets = most - lags
        else:  # offset o = lag
            lags = np.arange(least, most + 1)
            offsets = lags
        corr = dots[offsets] / np.sqrt(np.maximum(energies[offsets] * energy_t, 1e-9))
        if owed > least:
            long_enough = lags >= owed
            if long_enough.any():
                top = float(corr[long_enough].max())
                if top >= self.similar:
                    return int(lags[long_enough & (corr >= top - 0.001)][0])
        best = int(np.argmax(corr))
        if corr[best] >= self.similar or force:
            return int(lags[best])
        return 0

    def rush(self, *, voiced: bool, most: int = 1 << 30) -> int:
        """Shed a large excess of delay fast, as NetEq's fast accelerate and flush: period
        after period, up to two whole frames a tick of a pause (keeping :data:`KEEP_PAUSE` of
        it) and, if ``voiced``, up to half a frame of voiced speech (where its periods repeat);
        a frame at least stays held, and no more than ``most`` samples go (the excess owed);
        the samples removed."""
        n = self.frame_samples
        speech = n // 2 if voiced else 0
        budget, removed = speech, 0
        while removed < budget or not removed:
            room = min(self.held - self.frame_samples, most - removed)
            if self.sheddable(room, anywhere=False) >= self.min_lag:
                budget = max(budget, 2 * n)
            elif removed >= speech:
                break  # speech after a pause: no more than ``speech`` of it
            limit = self.sheddable(min(room, budget - removed), anywhere=False, voiced=voiced)
            cut = self.accelerate(limit, voiced=voiced)
            if not cut:
                break
            removed += cut
        return removed

    def sheddable(self, limit: int, *, anywhere: bool, voiced: bool = False) -> int:
        """At most ``limit`` samples to remove for less delay; unless ``anywhere``, no more
        than leaves :data:`KEEP_PAUSE` of the pause ahead (a removal for latency alone must
        not run two words together: one 20 ms gap cut to 5 ms costs a 4 s piece 0.6 PESQ-WB).
        ``voiced``: speech ahead may lose periods (where they repeat, :meth:`accelerate`), a
        pause ahead still keeps :data:`KEEP_PAUSE` of itself."""
        if anywhere or (voiced and quiet_prefix(self._pending[:BLOCK]) < BLOCK):
            return limit
        return min(limit, quiet_prefix(self._pending) - BLOCK - KEEP_PAUSE * self.rate // 1000)

    def paused(self) -> bool:
        """The last 15 ms played were, as a whole, a pause (below :data:`QUIET_RMS`)."""
        return is_pause(self._history)

    def _played_quietly(self) -> bool:
        """The last block played was a pause (so cutting what follows leaves no step)."""
        return quiet_prefix(self._history[-BLOCK:]) == BLOCK

    @staticmethod
    def _ramp(n: int) -> np.ndarray:
        return np.arange(n, dtype=np.float32) / np.float32(n)
