"""xAI's Grok Voice Agent API (``wss://api.x.ai/v1/realtime``): the OpenAI Realtime GA events
(:class:`~.realtime.RealtimeFamily`) with xAI's own session object.

The bridge is the client. It waits for ``conversation.created`` (as xAI's public clients do),
then sends one **flat** ``session.update`` (``voice`` and ``turn_detection`` at the session's
top level, no ``type``, no ``output_modalities``: the app's ``session`` merged into the
bridge's) with 16 kHz ``audio/pcm`` both ways — the bus's own rate, so nothing is resampled.
The model is chosen in the URL (``?model=``), never in the session. On the caller's barge-in
(``input_audio_buffer.speech_started``) xAI does not stop its response itself: the bridge
flushes the voice, sends ``response.cancel`` and ``conversation.item.truncate``. The server's
``ping`` events are keep-alives that want no answer. The key goes as ``Authorization: Bearer``.
A session is renewed before its cap (:data:`SESSION_S`) as OpenAI's is.
"""

from __future__ import annotations

from typing import Any

from ..errors import BadRequest
from .realtime import RealtimeFamily, check_audio_formats
from .wire import Tool, check_list, merge

RATE = 16_000
PCM16 = {"type": "audio/pcm", "rate": RATE}
DEFAULT_URL = "wss://api.x.ai/v1/realtime?model=grok-voice-think-fast-2.0"
SESSION_S = 3600
"""A session's cap (an hour by one unconfirmed source: ``BRIDGE_AGENT_XAI_SESSION_S`` sets
it); the connection opens a new session before it."""


def check_session(session: dict[str, Any]) -> None:
    """Refuse what the bridge decides (the audio formats) or xAI takes elsewhere (the model)."""
    if "model" in session:
        raise BadRequest("field 'session': xAI takes the model in the URL (?model=)")
    check_audio_formats(session, "16 kHz audio/pcm")
    check_list(session.get("tools"), "tools")
    turns = session.get("turn_detection")
    if turns is not None and not isinstance(turns, dict):
        raise BadRequest("field 'session': turn_detection must be an object or null")


class XaiGrokVoice(RealtimeFamily):
    """The xAI Grok Voice dialect (:class:`~.wire.ModelDialect`)."""

    provider = "xai"
    rate_in = RATE
    rate_out = RATE
    waits_for_hello = True
    default_url: str | None = DEFAULT_URL
    server_cancels = False

    def __init__(self, session: dict[str, Any] | None = None, session_s: int = SESSION_S) -> None:
        super().__init__()
        session = dict(session or {})
        check_session(session)
        self.session = session
        self.session_limit_s = float(session_s)
        turns = session.get("turn_detection", {"type": "server_vad"})
        # Manual turns: ``null`` or ``{"type": null}``.
        self.model_detects_speech = isinstance(turns, dict) and turns.get("type") is not None

    def connect(self, url: str, api_key: str | None) -> tuple[str, dict[str, str]]:
        return url, ({"Authorization": f"Bearer {api_key}"} if api_key else {})

    def session_object(self, tools: list[Tool]) -> dict[str, Any]:
        ours: dict[str, Any] = {
            "turn_detection": {"type": "server_vad"},
            "audio": {"input": {"format": PCM16}, "output": {"format": PCM16}},
        }
        session = merge(ours, self.session)
        if tools:
            session["tools"] = list(session.get("tools") or []) + self.function_tools(tools)
        return session
