"""The caller's turns as the bridge tells them to a model whose own turn detection is off
(OpenAI, xAI and Azure ``"turn_detection": null``, Gemini
``realtimeInputConfig.automaticActivityDetection.disabled``), and the caller's audio stopping
as a model whose detection is on is told it (Gemini's ``audioStreamEnd``).

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

A model that hears the turns itself has its own detection waiting on the caller's audio: when
that stops reaching it (the same hold or leaving, :meth:`CallerTurns.cut`) it is told the
microphone is off (the dialect's ``audio_stopped``), once for audio it was sent; the caller's
next audio reopens the stream with nothing more said.
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
    """The caller's turns and audio, as one agent's model is told them (module docstring)."""

    def __init__(self, dialect: ModelDialect, send: Callable[[list[dict[str, Any]]], None]) -> None:
        self._dialect = dialect
        self._send = send
        self.detector = None if dialect.model_detects_speech else _detector()
        """The bridge's turn detection: ``None`` when the model's own is on, or when the
        ``vad`` extra is missing (said once, at WARNING): no turns then."""
        self.open = False
        """A turn was told started to the model's current session and not yet ended."""
        self.speaking = False
        """The caller is speaking, as the model or the bridge heard it (not the agent's echo):
        a renewal waits for the end of it."""
        self.streaming = False
        """The caller's audio went to the model's current session since it opened or since
        the last :meth:`cut`."""

    def feed(self, pcm: Pcm) -> bool | None:
        """A frame of the caller, on its way up: ``True`` when speech starts, ``False`` when
        it stops (the bridge's detection; ``None`` otherwise)."""
        self.streaming = True
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
        where the protocol allows, the model's own detection is told the audio stopped, and
        the bridge's starts afresh. ``True`` when a turn was open."""
        was_open = self.open
        self.speaking = False  # (a held caller is not heard)
        if was_open:
            self.open = False
            self._send(self._dialect.turn_ended(answer=False))
        if self.streaming:
            self.streaming = False
            self._send(self._dialect.audio_stopped())
        if self.detector is not None:
            self.detector = SpeechDetector()  # (it loaded before: it loads again)
        return was_open

    def reopened(self) -> None:
        """A new session of the model: the turn in progress is told started to it (its
        stream opens with the caller's next audio). A start the old session heard and never
        ended is over with it: only a turn the bridge hears is the caller still speaking, so
        a renewal does not wait on a stop that will never come."""
        self.streaming = False
        self.speaking = self.open
        if self.open:
            self._send(self._dialect.turn_started())


def _detector() -> SpeechDetector | None:
    try:
        return SpeechDetector()
    except VadUnavailable as exc:
        log.warning("the model's turn detection is off and the bridge's is unavailable: %s", exc)
        return None
