"""Echo guard: is the caller talking, or is it the agent's own voice coming back?

A phone on speaker sends the agent's voice back to the bridge 60–250 ms after it was played,
15–30 dB down. A model's turn detection cannot tell that from the caller (it never heard what
the bridge played); the bridge can: it keeps the level of every 20 ms frame it sent the caller
and of every frame the caller sent, and a caller frame counts as the caller's own voice only
when it is louder than the loudest agent frame of the echo's delay window less
``MARGIN_DB``. An echo — at most the played level less 15 dB — never is; a voice over it at
a talker's level is (decide apart from doing: this module only decides, the agent acts).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..audio.pcm import Pcm

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


def level_dbfs(pcm: Pcm) -> float:
    """RMS of one frame in dBFS (-120 for digital silence)."""
    if pcm.size == 0:
        return -120.0
    power = float(np.mean(np.square(pcm.astype(np.float64)))) / (32768.0 * 32768.0)
    return 10.0 * float(np.log10(power)) if power > 1e-12 else -120.0


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

    def played(self, pcm: Pcm) -> None:
        """A frame the caller was sent (everything the call sends them)."""
        self._played.append(level_dbfs(pcm))

    def heard(self, pcm: Pcm) -> None:
        """A frame from the caller."""
        lags = list(self._played)
        first = len(lags) - LAG_MAX_MS // FRAME_MS
        last = len(lags) - LAG_MIN_MS // FRAME_MS
        reference = max(lags[max(0, first) : max(1, last)])
        self._heard.append((level_dbfs(pcm), reference))

    @property
    def agent_recent_dbfs(self) -> float:
        return max(self._played)

    def decide(self) -> Verdict:
        """Whether the speech the model reported now is the agent's echo."""
        voiced = [
            (caller, agent)
            for caller, agent in self._heard
            if caller > FLOOR_DBFS and caller > agent - MARGIN_DB
        ]
        caller = max((c for c, _ in self._heard), default=-120.0)
        agent = max((a for _, a in self._heard), default=-120.0)
        echo = len(voiced) < VOICED_FRAMES
        return Verdict(echo, round(caller, 1), round(agent, 1), len(voiced))
