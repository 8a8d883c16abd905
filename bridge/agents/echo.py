"""Echo guard: is the caller talking, or is it the agent's own voice coming back?

A phone on speaker sends the agent's voice back to the bridge 60–250 ms after it was played,
15–30 dB down. A model's turn detection cannot tell that from the caller (it never heard what
the bridge played); the bridge can: it keeps the level of every 20 ms frame it sent the caller
and of every frame the caller sent.

* The echo path: over the last 1.5 s, the delay at which the caller's level followed the
  agent's at a steady loss (median absolute deviation of the difference ≤ 3 dB). With it, a
  caller frame is the caller's own voice when it is 6 dB above the echo the path predicts (from
  the loudest agent frame within a frame of the path's delay, so a delay that moves by a frame
  is still the echo) —
  an echo only 10 dB down is still an echo, a voice at a talker's level is not.
* Without a path (too little played, or nothing steady), a bound: a caller frame is the
  caller's when it is louder than the loudest agent frame of the echo's delay window less
  ``MARGIN_DB`` — an echo 15 dB down or more never is.

This module only decides (decide apart from doing); the agent acts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..media import BusFrame, level_dbfs
from ..media.stats import SILENCE_DBFS

FRAME_MS = 20
LAG_MIN_MS, LAG_MAX_MS = 40, 300
"""The echo delays looked at: the 60–250 ms a phone on speaker gives, with a frame of slack
each side for the bridge's own buffering."""
MARGIN_DB = 10.0
"""How far below the played level a frame may be and still be taken for the echo (echo is
15 dB down or more)."""
FLOOR_DBFS = -50.0
"""Quieter than this is nobody talking."""
WINDOW_MS = 600
"""The caller frames a decision looks back on (a model's speech-start comes a few hundred
milliseconds after the onset it detected)."""
VOICED_FRAMES = 3
"""Caller frames above the echo line, within the window, that make the caller's voice."""
HISTORY_MS = 1500
"""The frames the echo path (its delay and loss) is estimated from."""
PATH_SPREAD_DB = 3.0
"""How steady (median absolute deviation) the caller's level against the agent's, at one
delay, must be for that delay and loss to be taken for an echo path."""
PATH_MARGIN_DB = 6.0
"""With the echo path known, how far above the echo it predicts a frame is the caller."""
PATH_MIN_LOSS_DB = 6.0
"""The least an echo path can take off the agent's level. A caller who talks steadily at the
agent's level or above (a tone, a loud line) also follows it "steadily"; an echo through a
phone never comes back that loud, so such a path is none."""


def _level(frame: BusFrame) -> float:
    """The frame's RMS in dBFS (-120 for digital silence), from the energy the bus meters it
    with (``BusFrame.energy``: summed once for both)."""
    level = level_dbfs(frame.energy, frame.pcm.size)
    return SILENCE_DBFS if level is None else level


def _medians(columns: np.ndarray) -> np.ndarray:
    """Each column's median, ignoring NaN (every column holds some numbers); numpy's
    ``nanmedian`` is ten times slower on arrays this small."""
    ordered = np.sort(columns, axis=0)  # NaN last
    n = np.sum(~np.isnan(columns), axis=0)
    cols = np.arange(columns.shape[1])
    return (ordered[(n - 1) // 2, cols] + ordered[n // 2, cols]) / 2.0


@dataclass(frozen=True)
class Verdict:
    echo: bool
    """No voice of the caller's own was found: what the model reported as speech is the
    agent's voice coming back (or a sound too quiet to be a talker)."""
    caller_dbfs: float
    """The loudest caller frame of the window."""
    agent_dbfs: float
    """The loudest agent frame played in the echo window before it."""
    voiced_frames: int
    """Caller frames louder than the agent's echo could be."""


class EchoGuard:
    """Levels of what was played to the caller and what the caller sent, frame by frame."""

    def __init__(self) -> None:
        self._played: deque[float] = deque(
            [-120.0] * (LAG_MAX_MS // FRAME_MS), maxlen=LAG_MAX_MS // FRAME_MS
        )
        self._heard: deque[tuple[float, float]] = deque(maxlen=WINDOW_MS // FRAME_MS)
        """(caller level, loudest agent level of the echo window) per caller frame."""
        self._history: deque[tuple[float, tuple[float, ...]]] = deque(maxlen=HISTORY_MS // FRAME_MS)
        """(caller level, the agent's levels at each delay) per caller frame."""

    def played(self, frame: BusFrame) -> None:
        """A frame the caller was sent (everything the call sends them)."""
        self._played.append(_level(frame))

    def heard(self, frame: BusFrame) -> None:
        """A frame from the caller."""
        lags = list(self._played)
        first = len(lags) - LAG_MAX_MS // FRAME_MS
        last = len(lags) - LAG_MIN_MS // FRAME_MS
        window = lags[max(0, first) : max(1, last)]
        level = _level(frame)
        self._heard.append((level, max(window)))
        self._history.append((level, tuple(window)))

    def echo_path(self) -> tuple[int, float] | None:
        """The echo's delay (an index into the delay window: the mean of that frame and the
        next) and its level against the agent's, when the caller's level has followed the
        agent's that steadily over the last :data:`HISTORY_MS`; ``None`` otherwise."""
        history = list(self._history)
        if len(history) < 15:
            return None
        caller = np.array([c for c, _ in history])
        played = np.array([w for _, w in history])  # frames × delays (oldest delay first)
        power = 10.0 ** (played / 10.0)
        pairs = 10.0 * np.log10((power[:, :-1] + power[:, 1:]) / 2.0 + 1e-12)
        use = (pairs > FLOOR_DBFS + 10) & (caller[:, None] > FLOOR_DBFS)
        enough = use.sum(axis=0) >= 15
        if not enough.any():
            return None
        residual = np.where(use, caller[:, None] - pairs, np.nan)[:, enough]
        loss = _medians(residual)
        spread = _medians(np.abs(residual - loss))
        k = int(np.argmin(spread))
        if spread[k] > PATH_SPREAD_DB or loss[k] > -PATH_MIN_LOSS_DB:
            return None
        return int(np.flatnonzero(enough)[k]), float(loss[k])

    def _voiced_on_path(self, delay: int, loss: float) -> list[tuple[float, float]]:
        frames = list(self._history)[-len(self._heard) :]
        out = []
        for caller, window in frames:
            # The loudest of the path's two frames and one either side: an echo whose delay
            # moves by a frame (a stalled loop, jitter on the caller's line) is still the echo.
            expected = max(window[max(0, delay - 1) : delay + 3]) + loss
            if caller > FLOOR_DBFS and caller > expected + PATH_MARGIN_DB:
                out.append((caller, expected))
        return out

    def decide(self) -> Verdict:
        """Whether the speech the model reported now is the agent's echo."""
        path = self.echo_path()
        if path is not None:  # the echo's delay and loss are known: expect exactly it
            voiced = self._voiced_on_path(*path)
        else:  # bound it: the loudest agent frame of the window, less MARGIN_DB
            voiced = [
                (caller, agent)
                for caller, agent in self._heard
                if caller > FLOOR_DBFS and caller > agent - MARGIN_DB
            ]
        caller = max((c for c, _ in self._heard), default=-120.0)
        agent = max((a for _, a in self._heard), default=-120.0)
        echo = len(voiced) < VOICED_FRAMES
        return Verdict(echo, round(caller, 1), round(agent, 1), len(voiced))
