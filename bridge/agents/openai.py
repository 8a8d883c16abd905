"""OpenAI's Realtime API over a WebSocket (the GA protocol; Azure OpenAI and self-hosted
OpenAI-compatible servers such as vLLM-Omni's ``/v1/realtime`` speak it too): the events it
shares with its relatives are :class:`~.realtime.RealtimeFamily`'s.

The bridge is the client. It configures the session with one ``session.update`` (the app's
``session`` fields merged into the bridge's: 24 kHz ``audio/pcm`` both ways, server VAD),
streams the caller with ``input_audio_buffer.append`` and reads ``response.output_audio.delta``
(and the beta servers' ``response.audio.delta``). On a barge-in it sends
``conversation.item.truncate`` with the ``audio_end_ms`` the caller really heard, and
``response.cancel`` when the bridge heard the caller itself (the model's turn detection off:
nothing else stops the generation), or the session's ``interrupt_response`` is ``false``,
while the response was still being generated. A tool's
output or a key press goes in as an item at once, but the ``response.create`` after it waits
until the response in progress is done: the protocol has one response at a time (the function
call comes inside a response, before its ``response.done``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import BadRequest
from .realtime import RATE, RealtimeFamily, check_audio_formats
from .wire import Tool, check_list, merge

SESSION_LIMIT_S = 3600.0
"""A Realtime session lasts at most 60 minutes: the connection opens a new one before, with
the session's configuration (instructions, tools) and what was said (``context``)."""

_SHORTHAND = {"voice": ("output", "voice"), "turn_detection": ("input", "turn_detection")}
"""Fields apps know from the beta protocol at the session's top level, moved where GA has
them (``audio.output.voice``, ``audio.input.turn_detection``)."""


BETA_FORMATS = ("input_audio_format", "output_audio_format")
"""The beta protocol's flat audio formats: the GA service answers them (the beta shape) with
``beta_api_shape_disabled`` and closes the socket (4000), since May 2026."""


def check_session(session: dict[str, Any]) -> None:
    """Refuse what the bridge must decide itself: the audio formats (the beta shape's flat
    ones too) and the session type."""
    for name in BETA_FORMATS:
        if name in session:
            raise BadRequest(
                f"field 'session': {name} is the Realtime beta shape OpenAI refuses; the "
                "audio formats are the bridge's (24 kHz audio/pcm)"
            )
    check_audio_formats(session, "24 kHz audio/pcm")
    check_list(session.get("tools"), "tools")
    if session.get("type", "realtime") != "realtime":
        raise BadRequest("field 'session': type must be realtime")


def openai_auth(url: str, api_key: str | None) -> dict[str, str]:
    """The key where OpenAI's sockets want it (Realtime and GPT-Live alike): ``Authorization:
    Bearer``, or Azure OpenAI's ``api-key`` on an ``*.openai.azure.com`` host."""
    if not api_key:
        return {}
    host = (urlsplit(url).hostname or "").lower()
    if host.endswith(".openai.azure.com"):
        return {"api-key": api_key}  # Azure OpenAI's header
    return {"Authorization": f"Bearer {api_key}"}


class OpenAIRealtime(RealtimeFamily):
    """The OpenAI Realtime dialect (:class:`~.wire.ModelDialect`)."""

    provider = "openai-realtime"
    session_limit_s: float | None = SESSION_LIMIT_S
    final_close_codes = frozenset(range(4000, 5000))
    """OpenAI's own codes: its SDK reconnects on 1001, 1005, 1006, 1011-1013, 1015 only, and a
    4000 (``beta_api_shape_disabled``) is final; other standard codes are reopened here."""

    def __init__(self, session: dict[str, Any] | None = None) -> None:
        super().__init__()
        session = dict(session or {})
        check_session(session)
        for key, (side, name) in _SHORTHAND.items():
            if key in session:
                session = merge(session, {"audio": {side: {name: session.pop(key)}}})
        self.session = session
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
        detection = turns.get("turn_detection") if isinstance(turns, dict) else None
        # Its VAD ends the response it hears the caller over unless told not to: then the
        # bridge cancels it (``interrupt_response``, on by default).
        self.server_cancels = not (
            isinstance(detection, dict) and detection.get("interrupt_response") is False
        )

    def connect(self, url: str, api_key: str | None) -> tuple[str, dict[str, str]]:
        return url, openai_auth(url, api_key)

    def session_object(self, tools: list[Tool]) -> dict[str, Any]:
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
            session["tools"] = list(session.get("tools") or []) + self.function_tools(tools)
        return session
