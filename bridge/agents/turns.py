"""The caller's turns as the bridge tells them to a model whose own turn detection is off
(OpenAI, xAI and Azure ``"turn_detection": null``, Gemini
``realtimeInputConfig.automaticActivityDetection.disabled``).

The bridge's speech detector (:class:`~bridge.attachments.speech.SpeechDetector`) hears the
caller, and the dialect marks the turns (Gemini's ``activityStart``/``activityEnd``; the
Realtime family's ``input_audio_buffer.commit``). Every turn opened on the model's session is
closed on that session, and none is opened twice, so the model never waits for the end of a
turn it was told began, nor meets a start with no end before it:

* the caller stops talking: the turn ends, and the model is asked to answer;
* the caller's audio stops reaching the model in the middle of a turn (the call put on hold,
  the agent leaving the call): :meth:`CallerTurns.cut` ends the turn there, asking for no
  answer where the protocol can say so (the Realtime family: the buffer committed, no
  ``response.create``; Gemini has no such end, and its answer is dropped as anything the model
  says on hold), and the detector starts afresh: speech that goes on after the hold is a new
  turn;
* the model's socket is reopened in the middle of a turn: the new session never heard the
  turn start, so :meth:`CallerTurns.reopened` tells it, and the turn's end goes to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..attachments.speech import SpeechDetector, VadUnavailable
from ..audio.pcm import Pcm
from .wire import ModelDialect

log = logging.getLogger(__name__)


class CallerTurns:
    """The bridge's turn detection for one agent (module docstring)."""

    def __init__(self, dialect: ModelDialect, send: Callable[[list[dict[str, Any]]], None]) -> None:
        self._dialect = dialect
        self._send = send
        self.detector = _detector()
        """``None`` when the ``vad`` extra is missing (said once, at WARNING): no turns then."""
        self.open = False
        """A turn was told started to the model's current session and not yet ended."""

    def feed(self, pcm: Pcm) -> bool | None:
        """A frame of the caller: ``True`` when speech starts, ``False`` when it stops."""
        return None if self.detector is None else self.detector.feed(pcm)

    def started(self) -> None:
        """The caller started a turn (not the agent's echo): told to the model."""
        if not self.open:
            self.open = True
            self._send(self._dialect.turn_started())

    def ended(self) -> None:
        """The caller's turn ended: the model is told, and answers."""
        if self.open:
            self.open = False
            self._send(self._dialect.turn_ended())

    def cut(self) -> bool:
        """The caller's audio stops reaching the model: the open turn ends here, unanswered
        where the protocol allows, and the detector starts afresh. ``True`` when a turn was
        open."""
        was_open = self.open
        if was_open:
            self.open = False
            self._send(self._dialect.turn_ended(answer=False))
        if self.detector is not None:
            self.detector = SpeechDetector()  # (it loaded before: it loads again)
        return was_open

    def reopened(self) -> None:
        """A new session of the model: the turn in progress is told started to it."""
        if self.open:
            self._send(self._dialect.turn_started())


def _detector() -> SpeechDetector | None:
    try:
        return SpeechDetector()
    except VadUnavailable as exc:
        log.warning("the model's turn detection is off and the bridge's is unavailable: %s", exc)
        return None
