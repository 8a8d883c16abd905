"""A strict fake of xAI's Grok Voice Agent API (``wss://api.x.ai/v1/realtime``), written from
xAI's public voice-agent guide: the OpenAI Realtime GA events (:class:`FakeOpenAIRealtime`)
with xAI's own session and habits. What the real service refuses is an error here too,
recorded in ``errors``:

- a ``session.update`` before the server said ``conversation.created`` (it follows
  ``session.created`` here after :attr:`HELLO_DELAY`, so a client that does not wait is seen);
- a session field xAI does not have — the session is **flat**: ``voice`` and
  ``turn_detection`` at its top level, no ``type``, no ``output_modalities``, no ``model``
  (the model is the URL's ``?model=``, which is required);
- an audio format other than ``audio/pcm`` at one of xAI's rates (or 8 kHz G.711);
- a key other than ``Authorization: Bearer <key>``.

The server sends a ``ping`` keep-alive (:meth:`ping`) that wants no answer; its benign race
errors carry xAI's own codes (matched on their text by clients). Unlike OpenAI, xAI does not
stop its response when its VAD hears the caller: the client cancels it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from .openai_realtime import FakeOpenAIRealtime

SESSION_FIELDS = {
    "instructions",
    "voice",
    "turn_detection",
    "audio",
    "tools",
    "tool_choice",
    "reasoning",
    "replace",
    "resumption",
}
AUDIO_INPUT_FIELDS = {"format", "transcription", "transport"}
AUDIO_OUTPUT_FIELDS = {"format", "speed", "transport"}
RATES = {8000, 16000, 22050, 24000, 32000, 44100, 48000}
TURN_TYPES = {"server_vad", None}


class FakeXaiRealtime(FakeOpenAIRealtime):
    """One fake Grok Voice endpoint (``/v1/realtime?model=…``)."""

    RATE = 16_000
    HELLO_DELAY = 0.05
    STOPS_ITSELF = False  # the client cancels
    REFUSES_BETA = False  # (OpenAI's own GA service's refusal)

    def __init__(self, api_key: str | None = "xai-test") -> None:
        super().__init__(api_key)
        self.hello = asyncio.Event()
        self.models: list[str] = []
        self.pings = 0

    def _authorized(self, request: web.Request) -> bool:
        self.models.append(request.query.get("model", ""))
        if not request.query.get("model"):
            raise web.HTTPBadRequest(text='{"error": "model is required"}')
        return super()._authorized(request)

    async def _greet(self, ws: web.WebSocketResponse) -> None:
        self.hello.clear()
        await self._send(
            ws, {"type": "session.created", "session": {"id": f"sess_{self.connections}"}}
        )
        await asyncio.sleep(self.HELLO_DELAY)
        self.hello.set()
        await self._send(
            ws,
            {
                "type": "conversation.created",
                "conversation": {
                    "id": f"conv_{self.connections}",
                    "object": "realtime.conversation",
                },
            },
        )

    async def _client_event(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        if body.get("type") == "session.update" and not self.hello.is_set():
            self.events.append(body)
            self._error(ws, "session.update before conversation.created")
            return
        await super()._client_event(ws, body)

    def _error(
        self,
        ws: web.WebSocketResponse,
        message: str,
        event_id: Any = None,
        code: str = "invalid_value",
    ) -> None:
        # xAI's codes for the races differ from OpenAI's (the text says what happened).
        code = {"response_cancel_not_active": "invalid_request"}.get(code, code)
        super()._error(ws, message, event_id, code)

    def _check_session(self, session: dict[str, Any]) -> str | None:
        unknown = set(session) - SESSION_FIELDS
        audio = session.get("audio", {})
        unknown |= {f"audio.{k}" for k in set(audio) - {"input", "output"}}
        unknown |= {f"audio.input.{k}" for k in set(audio.get("input", {})) - AUDIO_INPUT_FIELDS}
        unknown |= {f"audio.output.{k}" for k in set(audio.get("output", {})) - AUDIO_OUTPUT_FIELDS}
        if unknown:
            return f"unknown session fields {sorted(unknown)}"
        for side in ("input", "output"):
            fmt = audio.get(side, {}).get("format", {"type": "audio/pcm", "rate": 24000})
            if fmt in ({"type": "audio/pcmu"}, {"type": "audio/pcma"}):
                return f"audio.{side}.format: G.711 is not what this fake carries"
            if (
                set(fmt) != {"type", "rate"}
                or fmt["type"] != "audio/pcm"
                or fmt["rate"] not in RATES
            ):
                return f"audio.{side}.format {fmt} is not audio/pcm at an xAI rate"
            if fmt["rate"] != self.RATE:
                return f"audio.{side}.format: this fake carries {self.RATE} Hz"
        turns = session.get("turn_detection", {"type": "server_vad"})
        if turns is not None and (
            not isinstance(turns, dict) or turns.get("type") not in TURN_TYPES
        ):
            return f"turn_detection {turns!r} is not server_vad, {{type: null}} or null"
        return None

    async def ping(self) -> None:
        """The server's keep-alive (no pong expected)."""
        assert self.ws is not None
        self.pings += 1
        await self._send(
            self.ws,
            {
                "type": "ping",
                "event_id": f"ping_{self.pings}",
                "timestamp": int(time.time() * 1000),
            },
        )
