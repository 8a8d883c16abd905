"""Azure AI Voice Live (``wss://<resource>.services.ai.azure.com/voice-live/realtime``): the
Realtime **beta** event names (``response.audio.delta``, ``response.audio_transcript.done``:
:class:`~.realtime.RealtimeFamily` reads both generations) with a flat session object.

The bridge is the client. Its one ``session.update`` names the audio both ways — ``pcm16`` at
``input_audio_sampling_rate`` 16000 up, ``pcm16_16000hz`` down (the rate is in the format's
name) — so nothing is resampled; the app's ``session`` is merged in as given: the voice,
``turn_detection`` (``azure_semantic_vad`` with ``end_of_utterance_detection``,
``remove_filler_words``, ``interrupt_response``, ``auto_truncate``…),
``input_audio_noise_reduction``, ``input_audio_echo_cancellation``,
``input_audio_transcription``, tools. Omitting ``turn_detection`` keeps the server's VAD on;
``null`` (sent as such) turns it off and the bridge hears the turns.

On a barge-in its own turn detection heard, the service stops the response itself unless
``interrupt_response`` is ``false`` (then the bridge sends ``response.cancel``), and truncates
the item itself when ``auto_truncate`` is ``true`` (else the bridge does). Either way the
audio it had already generated for that response is dropped. The key travels as the
``api-key`` header, or ``Authorization: Bearer`` for a Microsoft Entra token (:func:`auth`).
"""

from __future__ import annotations

from typing import Any

from ..errors import BadRequest
from .realtime import RealtimeFamily
from .wire import Tool, check_list, merge

RATE = 16_000
_FORMATS = ("input_audio_format", "input_audio_sampling_rate", "output_audio_format")


def auth(api_key: str) -> dict[str, str]:
    """The header of a key: ``Bearer …`` as given; a JWT (an Entra token: ``eyJ…``, three
    dot-separated parts) as ``Authorization: Bearer``; any other as ``api-key``."""
    if api_key.startswith("Bearer "):
        return {"Authorization": api_key}
    if api_key.startswith("eyJ") and api_key.count(".") == 2:
        return {"Authorization": f"Bearer {api_key}"}
    return {"api-key": api_key}


class AzureVoiceLive(RealtimeFamily):
    """The Azure Voice Live dialect (:class:`~.wire.ModelDialect`)."""

    provider = "azure-voice-live"
    rate_in = RATE
    rate_out = RATE

    def __init__(self, session: dict[str, Any] | None = None) -> None:
        super().__init__()
        session = dict(session or {})
        for name in _FORMATS:
            if name in session:
                raise BadRequest(f"field 'session': {name} is the bridge's (16 kHz pcm16)")
        check_list(session.get("tools"), "tools")
        turns = session.get("turn_detection", {})
        if turns is not None and not isinstance(turns, dict):
            raise BadRequest("field 'session': turn_detection must be an object or null")
        self.session = session
        self.model_detects_speech = turns is not None
        self.server_cancels = (turns or {}).get("interrupt_response") is not False
        self.server_truncates = (turns or {}).get("auto_truncate") is True

    def connect(self, url: str, api_key: str | None) -> tuple[str, dict[str, str]]:
        return url, (auth(api_key) if api_key else {})

    def session_object(self, tools: list[Tool]) -> dict[str, Any]:
        ours: dict[str, Any] = {
            "modalities": ["text", "audio"],
            "input_audio_format": "pcm16",
            "input_audio_sampling_rate": RATE,
            "output_audio_format": "pcm16_16000hz",
        }
        session = merge(ours, self.session)
        if tools:
            session["tools"] = list(session.get("tools") or []) + self.function_tools(tools)
        return session
