"""A strict fake of Azure AI Voice Live (``/voice-live/realtime?api-version=…&model=…``),
written from Microsoft's Voice Live how-to and API reference: the Realtime **beta** event
names (``response.audio.delta``, ``response.audio_transcript.delta`` — its reply's transcript
comes in deltas only, no ``.done`` in its event list) and a flat session, on
:class:`FakeOpenAIRealtime`. What the real service refuses is an error here too, recorded in
``errors``:

- no ``api-version`` or ``model`` in the query; a key neither in the ``api-key`` header (or
  query parameter) nor an ``Authorization: Bearer`` Entra token;
- a session field Voice Live does not have (``type``, ``audio``, ``output_modalities``… are
  GA fields it does not know), an ``input_audio_format`` other than ``pcm16``/``g711_ulaw``/
  ``g711_alaw``, an ``input_audio_sampling_rate`` other than 16000/24000, an
  ``output_audio_format`` not in its list, an unknown turn detection, noise suppression or
  echo cancellation type;
- a truncate past the audio received, or of an item the server truncated itself
  (``item_already_truncated``).

With server VAD on, :meth:`speech_started` does what the service does: with
``interrupt_response`` (on unless ``false``) it ends the response in progress itself
(``response.done`` ``cancelled``), with ``auto_truncate`` it truncates the item itself.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .openai_realtime import FakeOpenAIRealtime

PATH = "/voice-live/realtime"
SESSION_FIELDS = {
    "modalities",
    "instructions",
    "voice",
    "input_audio_format",
    "input_audio_sampling_rate",
    "output_audio_format",
    "turn_detection",
    "input_audio_noise_reduction",
    "input_audio_echo_cancellation",
    "input_audio_transcription",
    "tools",
    "tool_choice",
    "temperature",
    "max_response_output_tokens",
    "avatar",
    "animation",
    "output_audio_timestamp_types",
}
INPUT_FORMATS = {"pcm16", "g711_ulaw", "g711_alaw"}
OUTPUT_RATES = {"pcm16": 24000, "pcm16_16000hz": 16000, "pcm16_8000hz": 8000}
OUTPUT_FORMATS = {*OUTPUT_RATES, "g711_ulaw", "g711_alaw"}
TURN_TYPES = {
    "server_vad",
    "semantic_vad",
    "azure_semantic_vad",
    "azure_semantic_vad_multilingual",
}
NOISE_TYPES = {"near_field", "far_field", "azure_deep_noise_suppression"}


class FakeAzureVoiceLive(FakeOpenAIRealtime):
    """One fake Voice Live endpoint."""

    PATH = PATH
    RATE = 16_000
    AUDIO_DELTA = "response.audio.delta"
    AUDIO_DONE = "response.audio.done"
    TRANSCRIPT_DELTA = "response.audio_transcript.delta"
    TRANSCRIPT_DONE = None  # Voice Live's events list its transcript's deltas only
    REFUSES_BETA = False  # (OpenAI's own GA service's refusal)

    def __init__(self, api_key: str | None = "az-test", token: str | None = None) -> None:
        super().__init__(api_key)
        self.token = token
        """An Entra token the service also takes (``Authorization: Bearer``)."""
        self._auto_truncated: set[str] = set()

    def _authorized(self, request: web.Request) -> bool:
        if not request.query.get("api-version") or not request.query.get("model"):
            raise web.HTTPBadRequest(text='{"error": "api-version and model are required"}')
        if self.api_key is None:
            return True
        key = request.headers.get("api-key") or request.query.get("api-key")
        bearer = request.headers.get("Authorization")
        return key == self.api_key or (self.token is not None and bearer == f"Bearer {self.token}")

    async def _greet(self, ws: web.WebSocketResponse) -> None:
        await self._send(
            ws, {"type": "session.created", "session": {"id": f"sess_{self.connections}"}}
        )

    def _check_session(self, session: dict[str, Any]) -> str | None:
        unknown = set(session) - SESSION_FIELDS
        if unknown:
            return f"unknown session fields {sorted(unknown)}"
        if session.get("input_audio_format", "pcm16") not in INPUT_FORMATS:
            return f"input_audio_format {session['input_audio_format']!r}"
        if session.get("input_audio_sampling_rate", 24000) not in (16000, 24000):
            return f"input_audio_sampling_rate {session['input_audio_sampling_rate']!r}"
        if session.get("output_audio_format", "pcm16") not in OUTPUT_FORMATS:
            return f"output_audio_format {session['output_audio_format']!r}"
        rate_in = session.get("input_audio_sampling_rate", 24000)
        rate_out = OUTPUT_RATES.get(session.get("output_audio_format", "pcm16"))
        if session.get("input_audio_format", "pcm16") != "pcm16" or {rate_in, rate_out} != {
            self.RATE
        }:
            return f"this fake carries pcm16 at {self.RATE} Hz both ways"
        turns = session.get("turn_detection", {"type": "server_vad"})
        if turns is not None and (
            not isinstance(turns, dict) or turns.get("type") not in TURN_TYPES
        ):
            return f"turn_detection {turns!r}"
        noise = session.get("input_audio_noise_reduction")
        if noise is not None and (noise or {}).get("type") not in NOISE_TYPES:
            return f"input_audio_noise_reduction {noise!r}"
        echo = session.get("input_audio_echo_cancellation")
        if echo is not None and (echo or {}).get("type") != "server_echo_cancellation":
            return f"input_audio_echo_cancellation {echo!r}"
        return None

    def _truncate(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        if body.get("item_id") in self._auto_truncated:
            message = "Item already truncated"
            self._error(ws, message, body.get("event_id"), "item_already_truncated")
            return
        super()._truncate(ws, body)

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        session = self.sessions[-1] if self.sessions else {}
        turns = session.get("turn_detection", {"type": "server_vad"})
        return turns if isinstance(turns, dict) else None

    async def speech_started(self, audio_start_ms: int = 0) -> None:
        turns = self.turn_detection
        if turns is not None and turns.get("auto_truncate") is True and self._active is not None:
            items = [i for i, r in self._item_response.items() if r == self._active]
            self._auto_truncated.update(items)
        await super().speech_started(audio_start_ms)  # (``interrupt_response``: the base's)
