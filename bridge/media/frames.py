"""What a listener of a call's bus holds: a frame, and its view of the downlink.

Shared by the bus (``bus.py``) and the conference (``conference.py``) so that the dependency
runs one way — the bus owns the conference, which sees it only as a ``MixHost`` and imports
nothing of it; a sink knows only the call's counters and what says its drops (``drops.py``).
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from ..audio import JitterBuffer
from ..audio.pcm import FRAME_SAMPLES, SAMPLE_RATE, Pcm, frame_energy, quiet
from ..audio.plc import fade_in, fade_out_mirror
from ..audio.stretch import PlayoutFifo, licence
from .backlog import Backlog
from .cushion import Cushion
from .drift import DepthWatch
from .drops import LISTENER_BEHIND, Drops
from .stats import BusStats


class BusFrame:
    """One 20 ms frame and the monotonic time it entered the bridge, and its :attr:`energy`
    computed once for every reader of the frame."""

    __slots__ = ("_energy", "pcm", "t")

    def __init__(self, pcm: Pcm, t: float) -> None:
        self.pcm = pcm
        self.t = t
        self._energy: float | None = None

    @property
    def energy(self) -> float:
        """The frame's sum of squares (:func:`~bridge.audio.pcm.frame_energy`), made by its
        first reader and kept: the bus meters every frame the WhatsApp side says and is sent
        with it, an agent's echo guard reads the same frames' levels and the in-band key
        detector gates on it, so each frame is summed once."""
        energy = self._energy
        if energy is None:
            energy = self._energy = frame_energy(self.pcm)
        return energy


def downlink_jitter() -> JitterBuffer[BusFrame]:
    """A listener's jitter buffer, whose reader (:class:`DownlinkSink`) follows the engine's
    clock drift itself."""
    return JitterBuffer(follow_clock=True)


SHED_WAIT = 20.0
"""Seconds the frame a cushion gave up may wait for a long silence to be taken out in; with
none (music, a tone, a monologue) the frame is kept for the call, and drift followed again."""
GROW_WAIT = 4.0
"""Seconds a frame the cushion takes back may wait for a long silence to be added in, before
the drift rule's (voiced speech, then anywhere): its lead is short, not gone."""
SILENCE_FRAMES = 10
"""Frames of silence (200 ms) played before a frame given up is taken out: a pause between
sentences, where a 20 ms jump in the delay is not heard (nor marked down by PESQ-WB, which
aligns each utterance on its own), not one between words."""

CLOCKED_FRAMES = 3
"""Frames from a producer on the worker clock that may wait for the listener's sender (60 ms),
the oldest dropped beyond (the call's ``listener_frames_dropped``, said once a call): the frame
pushed in a tick
is taken in that tick's send phase, so more wait only while a sender catches up on ticks its
task missed."""


class DownlinkSink:
    """A listener's view of the downlink: a jitter buffer fed by the bus, played through a
    :class:`~bridge.audio.stretch.PlayoutFifo`.

    **Clock drift.** An engine's clock runs a few hundred ppm off the listener's, so the depth
    of what waits (queued frames plus samples in the FIFO) creeps up or down. With a buffer that
    ``follow_clock``, every second (``drift.py``) the sink looks at the smallest depth it
    saw before a tick while playing (a fill is not the clock's doing): below its cushion
    (one frame while the engine's frames come early enough, else two: :class:`Cushion`) it
    owes what is missing — at once if less than half a frame (drift is a few samples a
    window), else only if the next window is short too (one chunk that slipped a tick is what
    the cushion absorbs); a frame or more above it for two windows in a row, it owes the
    excess (the frame a cushion gives up is taken out only in a long silence). The debt is
    paid a pitch period
    at a time (WSOLA accelerate / expand) where it is not heard, by the drift rule the Opus
    receiver follows too (``bridge.audio.stretch.licence``): in a pause, then in voiced speech,
    then anywhere with a cross-fade. Never a whole frame dropped or inserted.

    **A backlog** (an engine's stall released at once: more than a few frames beyond the
    cushion, ``backlog.py``) is shed as the Opus receiver sheds one, fast
    (:meth:`~bridge.audio.stretch.PlayoutFifo.rush`): whole frames of a pause, and after half a
    second voiced speech too, a pitch period at a time, down to the cushion (:meth:`_rush`).

    **A frame late by a tick** with less than a frame but at least a comparison window held
    (what a stretch left): that is stretched to a whole frame by pitch periods
    (:meth:`_bridge`) rather than concealed.

    **On the worker clock** (:meth:`set_clocked`): when what feeds the sink runs on the
    worker's clock too (a clocked WhatsApp leg, the simulator's far end), the frame pushed in
    a tick is the frame its sender takes in that tick's send phase: no cushion, no fill, no
    drift to follow (one clock), no second de-jitter stage (the leg's receiver was the one).
    A tick with no frame is concealed and faded in again as below.

    **Underruns.** When nothing is left to play (the engine's audio ran late), what the FIFO
    still holds is played and the rest of the frame conceals the gap with
    :func:`fade_out_mirror` of what was played last; then silence, and the audio that follows
    fades in over 5 ms: never a hard cut from speech to digital silence and back.
    """

    def __init__(
        self,
        stats: BusStats,
        name: str,
        jitter: JitterBuffer[BusFrame],
        drops: Drops | None = None,
    ) -> None:
        self.stats = stats
        """The call's bus counters (frames played, their transit)."""
        self.drops = drops
        """What says the call's drops (``None``: a remote engine's input, counted apart,
        never on the worker clock)."""
        self.name = name
        self.jitter = jitter
        self.fifo = PlayoutFifo(SAMPLE_RATE, FRAME_SAMPLES)
        self._last: Pcm | None = None
        """The last frame played, while the next missing one may still be concealed by it."""
        self._after_gap = True
        """Nothing (or a concealment) was played last: the next frame fades in."""
        self.concealed = 0
        """Frames concealed (one per gap)."""
        self.bridged = 0
        """Late frames bridged by stretching what was held (:meth:`_bridge`)."""
        self.slips = 0
        """Of those, the ones that came late (not a shortfall the sink's own removal left: a
        pitch period may take a few samples more than was owed)."""
        self._removed_tick = -(1 << 30)
        self._quiet_run = 0
        """Frames of silence played in a row, counted while the debt waits for one."""
        self.cushion = Cushion()
        self.drift = DepthWatch(self.cushion)
        """What the depth owes to follow the engine's clock (``drift.py``)."""
        self._backlog = Backlog()
        self.clocked = False
        """Fed on the worker clock (see the class docstring)."""
        self._tick: deque[BusFrame] = deque(maxlen=CLOCKED_FRAMES)
        self.fed_at = 0.0
        """When the newest frame played entered the bus (its ``t``)."""

    def set_clocked(self, clocked: bool) -> None:
        """Whether what feeds this sink runs on the worker clock (the class docstring); a
        change starts afresh (what waited is dropped, the next frame fades in)."""
        if clocked == self.clocked:
            return
        self.clocked = clocked
        self.detach()
        self._tick.clear()
        self._last = None
        self._after_gap = True
        self.drift.debt = 0

    @property
    def inserted_samples(self) -> int:
        """Samples added by stretching (the engine's clock runs slow)."""
        return self.fifo.inserted

    @property
    def removed_samples(self) -> int:
        """Samples removed by stretching (the engine's clock runs fast)."""
        return self.fifo.removed

    def push(self, frame: BusFrame) -> None:
        if self.clocked:
            if len(self._tick) == CLOCKED_FRAMES:  # its sender fell behind
                self.stats.listener_frames_dropped += 1
                if self.drops is not None:
                    self.drops.dropped(LISTENER_BEHIND, self.name)
            self._tick.append(frame)
            return
        self.jitter.push(frame)

    def take(self, now: float) -> Pcm | None:
        """The sender's frame for the tick at ``now`` (``media/ports.py`` ``FrameSource``)."""
        return self.pop(now)

    def pop(self, now: float | None = None) -> Pcm | None:
        """Next frame to play at ``now`` (``time.monotonic()``, by default now), a
        concealment, or ``None`` for silence (a played frame's bus transit time is
        recorded)."""
        if now is None:
            now = time.monotonic()
        if self.clocked:
            return self._pop_clocked(now)
        fifo, n = self.fifo, FRAME_SAMPLES
        depth = len(self.jitter) * n + fifo.held  # what waits before the tick
        if self.jitter.follow_clock:
            late, busy = self.slips + self.concealed, self._backlog.since is not None
            self.drift.watch(depth, self.jitter.playing, late, busy)
        while fifo.held < n and self._feed(now, early=True):
            pass
        if fifo.held < n and not self._bridge():
            while fifo.held < n and self._feed(now):
                pass
            if fifo.held < n:
                return self._conceal()
        if self._rush(now, depth):
            pass
        elif self.drift.debt:
            self._stretch(now)
        pcm = fifo.take()
        if self.drift.in_silence:
            self._quiet_run = self._quiet_run + 1 if quiet(pcm) else 0
        self._last = pcm
        return pcm

    def _pop_clocked(self, now: float) -> Pcm | None:
        """This tick's frame (the producer pushed it in this tick's receive, mix or engine
        phase), else the last one's fading continuation once, then silence."""
        if not self._tick:
            last, self._last = self._last, None
            self._after_gap = True
            if last is None:
                return None
            self.concealed += 1
            return fade_out_mirror(last)
        frame = self._tick.popleft()
        self.fed_at = frame.t
        stats = self.stats
        stats.downlink_played += 1
        stats.downlink_transit.observe(now - frame.t)
        pcm = frame.pcm
        if self._after_gap:
            self._after_gap = False
            pcm = fade_in(pcm)
        self._last = pcm
        return pcm

    def _feed(self, now: float, *, early: bool = False) -> bool:
        """One frame from the jitter buffer into the FIFO; ``early`` only if one is queued (no
        underrun counted)."""
        if early and not len(self.jitter):
            return False
        frame = self.jitter.pop()
        if frame is None:
            return False
        stats = self.stats
        stats.downlink_played += 1
        self.fed_at = frame.t
        waited = now - frame.t
        stats.downlink_transit.observe(waited)
        if waited < self.cushion.lead:
            self.cushion.lead = waited
        pcm = frame.pcm
        if self._after_gap:
            self._after_gap = False
            pcm = fade_in(pcm)
        self.fifo.feed(pcm)
        return True

    def _bridge(self) -> bool:
        """Nothing queued, but at least a comparison window held: a frame late by a tick (an
        engine's chunk that slipped past the tick it was due for). Stretch what is held to a
        whole frame, a pitch period at a time (WSOLA expand, in a pause or voiced speech, else
        forced, still cross-faded), instead of concealing and refilling: the late frame then
        plays after it, and the depth watch sheds the added delay where it is not heard."""
        fifo, n = self.fifo, FRAME_SAMPLES
        if self._last is None or not self.jitter.playing:
            return False
        while fifo.held < n:
            if fifo.held < fifo.window or not fifo.expand(n - fifo.held, force=True):
                return False
        self.bridged += 1
        if self.drift.ticks - self._removed_tick > 3:  # a 60 ms chunk's ticks since a removal
            self.slips += 1
        return True

    def _conceal(self) -> Pcm | None:
        fifo, n = self.fifo, FRAME_SAMPLES
        last, self._last = self._last, None
        self._after_gap = True
        self.drift.debt = 0  # the gap itself moved the delay
        if last is None and not fifo.held:
            return None
        self.concealed += 1
        held = fifo.held
        played = fifo.take()  # what is left, then its continuation fading out
        before = last if last is not None else np.zeros(n, dtype=np.int16)
        tail = np.concatenate((before, played))
        return np.concatenate((played, fade_out_mirror(tail[-(n - held) :])))

    def _rush(self, now: float, depth: int) -> bool:
        """Shed a backlog fast (the class docstring), ``depth`` samples waiting before the
        tick; whether there is one."""
        fifo, n, backlog = self.fifo, FRAME_SAMPLES, self._backlog
        rushing = backlog.since is not None
        owed = backlog.owed(depth - self.cushion.frames * n, fifo.max_lag, now)
        if not owed:
            if rushing:
                self.drift.new_window()  # the drift is watched again from here
            return False
        self.drift.debt = 0  # what the depth watch owed is in the backlog's
        self.drift.in_silence = False
        while fifo.held < 3 * n + 2 * fifo.max_lag + fifo.window and self._feed(now, early=True):
            pass  # periods may come out of the next frames too
        removed = fifo.rush(voiced=backlog.voiced(now), most=owed)
        if removed:
            backlog.shed(removed)
            self._removed_tick = self.drift.ticks
        return True

    def _stretch(self, now: float) -> None:
        fifo, n, drift = self.fifo, FRAME_SAMPLES, self.drift
        waited = drift.waited()
        voiced, force = licence(waited, grow=drift.debt > 0)
        if drift.in_silence:
            if drift.debt < 0 and waited > SHED_WAIT:  # no long silence: keep the frame
                self.cushion.keep()
                drift.settle()
                return
            if drift.debt > 0 and waited > GROW_WAIT:
                drift.in_silence = False  # the drift rule's licence from here
            elif self._quiet_run < SILENCE_FRAMES:
                return
            else:
                voiced = force = False
        if drift.debt > 0:
            drift.debt = max(0, drift.debt - fifo.expand(drift.debt, voiced=voiced, force=force))
            if drift.debt < fifo.min_lag:
                drift.settle()
            return
        if fifo.held < n + 2 * fifo.max_lag + fifo.window:
            self._feed(now, early=True)  # a period may come out of the next frame
        removed = fifo.accelerate(fifo.held - n, voiced=voiced, force=force, owed=-drift.debt)
        if removed:
            self._removed_tick = drift.ticks
        drift.debt = min(0, drift.debt + removed)
        if -drift.debt < fifo.min_lag:
            drift.settle()  # less than the shortest period: within the hysteresis

    def detach(self) -> None:
        """The listener is gone: drop what waits (nothing is pushed to it any more once its
        participant has left the conference)."""
        self.jitter.clear()
        self.fifo.clear()
        self._tick.clear()
        self._backlog.clear()
