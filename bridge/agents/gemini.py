"""Google's Gemini Live API over a WebSocket (``BidiGenerateContent``).

The bridge is the client: one ``setup`` message (the app's ``session`` fields merged into
the bridge's: audio out, session resumption on, context-window compression by a sliding window
unless the session sets its own, so a long call is not cut at the audio session's cap), the
caller as ``realtimeInput`` audio at 16 kHz (the bus's own rate: no resampling up), the
model's 24 kHz ``inlineData`` audio played into the call. The transcriptions come in
fragments: each role's are put together and told once a turn, at its ``turnComplete`` (or
``interrupted``; a turn the socket's close cuts off, then: :meth:`GeminiLive.finish`).
``interrupted`` drops the queued voice; ``goAway`` and a closed socket are survived with the
last ``sessionResumptionUpdate`` handle. The key travels in the
``x-goog-api-key`` header (never in the URL, which logs may show).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ..errors import BadRequest
from .wire import (
    SLOT,
    Audio,
    GoAway,
    Interrupted,
    MessageText,
    ModelEvent,
    ProtocolError,
    Ready,
    Resumable,
    Skipped,
    Tool,
    ToolCall,
    ToolCancelled,
    Transcript,
    TurnDone,
    check_list,
    merge,
)

RATE_IN, RATE_OUT = 16_000, 24_000
TRANSCRIPT_CHARS = 4000
"""The most of one turn's transcript kept (what ``agent.transcript`` carries at most)."""
DEFAULT_MODEL = "models/gemini-live-2.5-flash-preview"
_AUDIO_OUT = "audio/pcm;rate=24000"
_AUDIO = MessageText(
    {"realtimeInput": {"audio": {"data": SLOT, "mimeType": f"audio/pcm;rate={RATE_IN}"}}}
)
"""The caller's audio (its base64 ``data``)."""


class GeminiLive:
    """The Gemini Live dialect (:class:`~.wire.ModelDialect`,
    :class:`~.capabilities.Unfinished`)."""

    provider = "gemini-live"
    rate_in = RATE_IN
    rate_out = RATE_OUT
    waits_for_hello = False
    default_url: str | None = None
    keepalive_s: float | None = None
    session_limit_s: float | None = None
    server_close_ends = False
    final_close_codes: frozenset[int] = frozenset()
    streams_up = False
    duplex_buffer_ms: int | None = None

    def __init__(self, session: dict[str, Any] | None = None) -> None:
        session = dict(session or {})
        if "sessionResumption" in session:
            raise BadRequest("field 'session': sessionResumption is the bridge's")
        model = session.get("model", DEFAULT_MODEL)
        if not isinstance(model, str) or not model:
            raise BadRequest("field 'session': model must be a string (models/<name>)")
        check_list(session.get("tools"), "tools")
        self.session = session
        self._turn = 0
        self._said = {"caller": "", "agent": ""}
        """Each role's transcription fragments of the turn so far: told once, at its end."""
        config = session.get("realtimeInputConfig")
        detection = config.get("automaticActivityDetection") if isinstance(config, dict) else None
        self.model_detects_speech = not (
            isinstance(detection, dict) and detection.get("disabled") is True
        )

    def url_refused(self, url: str) -> str | None:
        return None  # any URL of its scheme

    def connect(self, url: str, api_key: str | None) -> tuple[str, dict[str, str]]:
        return url, ({"x-goog-api-key": api_key} if api_key else {})

    def opening(self, tools: list[Tool], resume: str | None) -> list[dict[str, Any]]:
        ours: dict[str, Any] = {
            "model": DEFAULT_MODEL,
            "generationConfig": {"responseModalities": ["AUDIO"]},
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            # Without it an audio session is capped (about 15 minutes): a long call would be.
            "contextWindowCompression": {"slidingWindow": {}},
        }
        self._said = {"caller": "", "agent": ""}
        setup = merge(ours, self.session)
        model = str(setup["model"])
        setup["model"] = model if model.startswith("models/") else f"models/{model}"
        setup["sessionResumption"] = {"handle": resume} if resume else {}
        if tools:
            declarations = [
                {"name": t.name, "description": t.description, "parameters": t.parameters}
                for t in tools
            ]
            setup["tools"] = [*(setup.get("tools") or []), {"functionDeclarations": declarations}]
        return [{"setup": setup}]

    def audio(self, pcm: bytes) -> str:
        return _AUDIO(base64.b64encode(pcm).decode())

    def binary(self, data: bytes) -> list[ModelEvent]:
        raise ProtocolError("a binary frame (the protocol has none)")

    def keepalive(self) -> list[dict[str, Any]]:
        return []

    def closing(self) -> list[dict[str, Any]]:
        return []

    def parse(self, body: dict[str, Any]) -> list[ModelEvent]:
        out: list[ModelEvent] = []
        if "setupComplete" in body:
            out.append(Ready())
        content = body.get("serverContent")
        if isinstance(content, dict):
            turn = content.get("modelTurn")
            for part in (turn or {}).get("parts") or [] if isinstance(turn, dict) else []:
                try:  # a part the bridge cannot read costs that part, not its message
                    out += self._audio(part)
                except ProtocolError as exc:
                    out.append(Skipped(str(exc)))
            if content.get("interrupted"):
                out.append(Interrupted())
            for key, role in (("inputTranscription", "caller"), ("outputTranscription", "agent")):
                text = (
                    (content.get(key) or {}).get("text")
                    if isinstance(content.get(key), dict)
                    else None
                )
                if text:  # a fragment: the turn's text is put together (``_said``)
                    self._said[role] = (self._said[role] + str(text))[-TRANSCRIPT_CHARS:]
            if content.get("turnComplete") or content.get("interrupted"):
                self._turn += 1
                out += [Transcript(r, t.strip()) for r, t in self._said.items() if t.strip()]
                self._said = {"caller": "", "agent": ""}
                out.append(TurnDone())
        cancelled = body.get("toolCallCancellation")
        if isinstance(cancelled, dict) and isinstance(cancelled.get("ids"), list):
            # Calls the model abandoned (the caller spoke over it): they want no answer.
            out.append(ToolCancelled(tuple(str(i) for i in cancelled["ids"])))
        calls = body.get("toolCall")
        if isinstance(calls, dict):
            for call in calls.get("functionCalls") or []:
                if isinstance(call, dict):
                    args = call.get("args")
                    out.append(
                        ToolCall(
                            str(call.get("id") or ""),
                            str(call.get("name") or ""),
                            args if isinstance(args, dict) else {},
                        )
                    )
        update = body.get("sessionResumptionUpdate")
        if isinstance(update, dict) and update.get("resumable") and update.get("newHandle"):
            out.append(Resumable(str(update["newHandle"])))
        away = body.get("goAway")
        if isinstance(away, dict):
            out.append(GoAway(str(away.get("timeLeft") or "")))
        return out

    def finish(self) -> list[ModelEvent]:
        # The socket closed before the turn's ``turnComplete``: its fragments so far are told
        # (the caller's first, as at its end), so a new session told what was said holds them.
        said, self._said = self._said, {"caller": "", "agent": ""}
        return [Transcript(r, t.strip()) for r, t in said.items() if t.strip()]

    def _audio(self, part: Any) -> list[ModelEvent]:
        """The model's audio in one part of its turn (none in a part of another kind)."""
        inline = part.get("inlineData") if isinstance(part, dict) else None
        if not isinstance(inline, dict):
            return []
        mime = str(inline.get("mimeType") or "")
        if not mime.startswith("audio/pcm"):
            return []
        if mime.replace(" ", "") not in ("audio/pcm", _AUDIO_OUT):
            raise ProtocolError(f"model audio at {mime[:40]!r}, not 24 kHz")
        try:
            pcm = base64.b64decode(str(inline.get("data") or ""), validate=True)
        except ValueError:
            raise ProtocolError("model audio is not base64") from None
        return [Audio(pcm, f"turn{self._turn}")]

    def truncate(self, item_id: str, audio_end_ms: int, by: str = "bridge") -> list[dict[str, Any]]:
        return []  # the server cut its turn itself (``interrupted``); it has no truncate

    def cancel(self, by: str) -> list[dict[str, Any]]:
        # No cancel message: with activity detection off, the bridge's ``activityStart``
        # (sent as the caller starts) is what interrupts the model's turn.
        return []

    def tool_result(self, call: ToolCall, output: Any) -> list[dict[str, Any]]:
        response = output if isinstance(output, dict) else {"output": output}
        json.dumps(response)  # must be JSON (raises TypeError otherwise)
        return [
            {
                "toolResponse": {
                    "functionResponses": [
                        {"id": call.call_id, "name": call.name, "response": response}
                    ]
                }
            }
        ]

    def turn_started(self) -> list[dict[str, Any]]:
        # With automatic activity detection disabled the client marks the caller's turns.
        return [{"realtimeInput": {"activityStart": {}}}]

    def turn_ended(self, answer: bool = True) -> list[dict[str, Any]]:
        # The only end an activity has: the model answers it even when ``answer`` is false.
        return [{"realtimeInput": {"activityEnd": {}}}]

    def audio_stopped(self) -> list[dict[str, Any]]:
        # For the service's own activity detection only (the client ends its activities
        # itself otherwise): its turn ends rather than wait on an open microphone. The
        # stream reopens with the next audio.
        return [{"realtimeInput": {"audioStreamEnd": True}}] if self.model_detects_speech else []

    def context(self, lines: list[tuple[str, str]]) -> list[dict[str, Any]]:
        # A new session (no handle, or one refused): what was said as its history, which the
        # model answers nothing to (``turnComplete`` false: the caller's audio goes on).
        turns = [
            {"role": "user" if role == "caller" else "model", "parts": [{"text": text}]}
            for role, text in lines
        ]
        return [{"clientContent": {"turns": turns, "turnComplete": False}}] if turns else []

    def text(self, text: str) -> list[dict[str, Any]]:
        return [
            {
                "clientContent": {
                    "turns": [{"role": "user", "parts": [{"text": text}]}],
                    "turnComplete": True,
                }
            }
        ]
