"""The media watchdog: a side of an answered call that has sent nothing to hear for
``BRIDGE_MEDIA_WARNING_AFTER`` seconds raises ``call.media_warning`` once, saying what stopped,
and ``call.media_warning_cleared`` when its sound returns. Two ways a side goes quiet:

* its **packets stop** (fewer than a tenth of its 50 frames a second): ``browser_audio`` (a
  blocked or lost path, a closed tab), ``whatsapp_audio`` (the engine's or Meta's media
  stalled); ``*_never_started`` when none came at all;
* its packets still flow but carry **digital silence** (:data:`SILENT_DBFS` or less over each
  second): ``browser_audio_silent`` (a muted track, a dead or disconnected microphone),
  ``whatsapp_audio_silent`` (an engine padding its stream with zeros). Not while the bridge
  itself has muted or held the call: silence is then what is expected.

It runs once a second on the level the timeline row already holds: nothing on the 20 ms path.
One watch a call, a child of the call's report (``live_report.py``), gone with it; it sees the
call's runtime as the :class:`Watched` it declares."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter

from .model import Call, CallState

log = logging.getLogger(__name__)

FRAMES_PER_SECOND = 50
"""Opus frames (20 ms) a second: a side sending fewer than a tenth of them has stopped."""
SILENT_DBFS = -90.0
"""A second at or below this RMS level (about one least significant bit of 16-bit audio) is
digital silence: what a muted track, a dead microphone or an engine's zeros decode to (Opus
brings zeros back at about -110 dBFS), where a live microphone's noise floor, even after a
browser's noise suppression, stays above it."""


class Watched(Protocol):
    """What the watch reads and tells of its call's runtime."""

    @property
    def call(self) -> Call: ...
    def emit(self, type_: str, **data: Any) -> None: ...


@dataclass
class _Watch:
    quiet_s: float = 0.0
    """Seconds in a row with nothing to hear."""
    warned: bool = False


class MediaWatch:
    """One call's legs' quiet seconds, and the warnings they raise."""

    def __init__(self, warn_after: float, warnings: Counter) -> None:
        self.warn_after = warn_after
        self.warnings = warnings
        self._legs: dict[str, _Watch] = {}
        """By leg name."""

    def second(
        self,
        runtime: Watched,
        name: str,
        seconds: float,
        received: int,
        level: float | None,
        started: bool,
    ) -> None:
        """One second of leg ``name``: ``received`` packets (or frames) at ``level`` dBFS
        (``None`` where its level is not measured); ``started``: it has sent audio before."""
        call = runtime.call
        if call.state is not CallState.ACTIVE:
            return
        w = self._legs.setdefault(name, _Watch())
        side = name.split(":")[0]
        if received * 10 < FRAMES_PER_SECOND * seconds:
            what = f"{side}_audio" if started else f"{side}_audio_never_started"
        elif level is not None and level <= SILENT_DBFS and not (call.muted or call.held):
            what = f"{side}_audio_silent"
        else:
            if w.warned:
                runtime.emit("call.media_warning_cleared", leg=name, silentS=w.quiet_s)
                w.warned = False
            w.quiet_s = 0.0
            return
        w.quiet_s += seconds
        if w.quiet_s >= self.warn_after and not w.warned:
            w.warned = True
            self.warnings.labels(side).inc()
            log.warning(
                "call %s: %s sent nothing to hear for %.0f s (%s)", call.id, name, w.quiet_s, what
            )
            runtime.emit("call.media_warning", leg=name, what=what, silentS=w.quiet_s)
