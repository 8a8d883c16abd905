"""OpenAI's Realtime API over a WebSocket (the GA protocol; Azure OpenAI and self-hosted
OpenAI-compatible servers such as vLLM-Omni's ``/v1/realtime`` speak it too).

The bridge is the client. It configures the session with one ``session.update`` (the app's
``session`` fields merged into the bridge's: 24 kHz ``audio/pcm`` both ways, server VAD),
streams the caller with ``input_audio_buffer.append`` and reads ``response.output_audio.delta``
(and the beta servers' ``response.audio.delta``). On a barge-in it sends
``conversation.item.truncate`` with the ``audio_end_ms`` the caller really heard.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any
from urllib.parse import urlsplit

from ..errors import BadRequest
from .wire import (
    Audio,
    ModelError,
    ModelEvent,
    ProtocolError,
    Ready,
    SpeechStarted,
    SpeechStopped,
    Tool,
    ToolCall,
    Transcript,
    TurnDone,
)

RATE = 24_000
"""``audio/pcm`` is 16-bit mono at 24 kHz only."""

_AUDIO_DELTA = ("response.output_audio.delta", "response.audio.delta")
_AGENT_TRANSCRIPT = ("response.output_audio_transcript.done", "response.audio_transcript.done")
_CALLER_TRANSCRIPT = "conversation.item.input_audio_transcription.completed"
_SHORTHAND = {"voice": ("output", "voice"), "turn_detection": ("input", "turn_detection")}
"""Fields apps know from the beta protocol at the session's top level, moved where GA has
them (``audio.output.voice``, ``audio.input.turn_detection``)."""


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` merged into a copy of ``base``, objects recursively."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_session(session: dict[str, Any]) -> None:
    """Refuse what the bridge must decide itself: the audio formats and the session type."""
    audio = session.get("audio")
    if audio is not None and not isinstance(audio, dict):
        raise BadRequest("field 'session': audio must be an object")
    for side in ("input", "output"):
        part = (audio or {}).get(side)
        if part is not None and (not isinstance(part, dict) or "format" in part):
            raise BadRequest(
                f"field 'session': audio.{side}.format is the bridge's (24 kHz audio/pcm)"
            )
    if session.get("type", "realtime") != "realtime":
        raise BadRequest("field 'session': type must be realtime")


def _b64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ProtocolError("audio delta is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ProtocolError("audio delta is not base64") from None


class OpenAIRealtime:
    """The OpenAI Realtime dialect (:class:`~.wire.ModelDialect`)."""

    provider = "openai-realtime"
    rate_in = RATE
    rate_out = RATE

    def __init__(self, session: dict[str, Any] | None = None) -> None:
        session = dict(session or {})
        check_session(session)
        for key, (side, name) in _SHORTHAND.items():
            if key in session:
                session = merge(session, {"audio": {side: {name: session.pop(key)}}})
        self.session = session
        self._event = 0
        turns = (
            session.get("audio", {}).get("input", {})
            if isinstance(session.get("audio"), dict)
            else {}
        )
        self.model_detects_speech = not (
            isinstance(turns, dict)
            and "turn_detection" in turns
            and turns["turn_detection"] is None
        )

    def connect(self, url: str, api_key: str | None) -> tuple[str, dict[str, str]]:
        if not api_key:
            return url, {}
        host = (urlsplit(url).hostname or "").lower()
        if host.endswith(".openai.azure.com"):
            return url, {"api-key": api_key}  # Azure OpenAI's header
        return url, {"Authorization": f"Bearer {api_key}"}

    def _client(self, type_: str, **fields: Any) -> dict[str, Any]:
        self._event += 1
        return {"type": type_, "event_id": f"evt_bridge_{self._event}", **fields}

    def opening(self, tools: list[Tool], resume: str | None) -> list[dict[str, Any]]:
        ours: dict[str, Any] = {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "turn_detection": {"type": "server_vad"},
                },
                "output": {"format": {"type": "audio/pcm", "rate": RATE}},
            },
        }
        session = merge(ours, self.session)
        if tools:
            session["tools"] = list(session.get("tools") or []) + [
                {
                    "type": "function",
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                }
                for t in tools
            ]
        return [self._client("session.update", session=session)]

    def audio(self, pcm: bytes) -> dict[str, Any]:
        return self._client("input_audio_buffer.append", audio=base64.b64encode(pcm).decode())

    def parse(self, body: dict[str, Any]) -> list[ModelEvent]:
        kind = body.get("type")
        if not isinstance(kind, str):
            raise ProtocolError("a server event without a type")
        if kind in _AUDIO_DELTA:
            return [Audio(_b64(body.get("delta")), str(body.get("item_id") or ""))]
        if kind == "session.updated":
            return [Ready()]
        if kind == "input_audio_buffer.speech_started":
            return [SpeechStarted(str(body.get("item_id") or ""))]
        if kind == "input_audio_buffer.speech_stopped":
            return [SpeechStopped()]
        if kind == "response.done":
            return [TurnDone()]
        if kind in _AGENT_TRANSCRIPT:
            return [Transcript("agent", str(body.get("transcript") or ""))]
        if kind == _CALLER_TRANSCRIPT:
            return [Transcript("caller", str(body.get("transcript") or ""))]
        if kind == "response.function_call_arguments.done":
            try:
                args = json.loads(body.get("arguments") or "{}")
            except ValueError:
                args = {}
            return [
                ToolCall(
                    str(body.get("call_id") or ""),
                    str(body.get("name") or ""),
                    args if isinstance(args, dict) else {},
                )
            ]
        if kind == "error":
            err = body.get("error")
            err = err if isinstance(err, dict) else {}
            return [
                ModelError(
                    str(err.get("code") or err.get("type") or "error"),
                    str(err.get("message") or ""),
                )
            ]
        return []  # session.created, response.created, deltas of text … nothing to do

    def truncate(self, item_id: str, audio_end_ms: int) -> list[dict[str, Any]]:
        if not item_id:
            return []
        return [
            self._client(
                "conversation.item.truncate",
                item_id=item_id,
                content_index=0,
                audio_end_ms=max(0, audio_end_ms),
            )
        ]

    def tool_result(self, call: ToolCall, output: Any) -> list[dict[str, Any]]:
        item = {
            "type": "function_call_output",
            "call_id": call.call_id,
            "output": output if isinstance(output, str) else json.dumps(output),
        }
        return [
            self._client("conversation.item.create", item=item),
            self._client("response.create"),
        ]

    def turn_started(self) -> list[dict[str, Any]]:
        return []

    def turn_ended(self) -> list[dict[str, Any]]:
        # Without turn detection the client commits the buffer and asks for a response.
        return [self._client("input_audio_buffer.commit"), self._client("response.create")]

    def context(self, lines: list[tuple[str, str]]) -> list[dict[str, Any]]:
        # A new session knows nothing of the old one: one system message recounts it.
        if not lines:
            return []
        said = "\n".join(
            f"{'Caller' if role == 'caller' else 'You'}: {text}" for role, text in lines
        )
        text = "The connection was reopened. The conversation so far:\n" + said
        item = {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": text}],
        }
        return [self._client("conversation.item.create", item=item)]

    def text(self, text: str) -> list[dict[str, Any]]:
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }
        return [
            self._client("conversation.item.create", item=item),
            self._client("response.create"),
        ]
