"""A strict fake of OpenAI's Realtime API (GA protocol, WebSocket), written from its public
reference: the bridge is its client. Anything the real service refuses is an error here too,
and recorded in ``errors`` (a test asserts it stays empty): an unknown client event, an
unknown session field, an audio format other than 24 kHz ``audio/pcm``, audio that is not
base64 of whole 16-bit samples, a truncate of an item it never sent.

The test drives the server side: :meth:`say` streams 24 kHz audio as one response item
(``response.output_audio.delta`` chunks), :meth:`speech_started` reports the caller's
speech as server VAD would, :meth:`drop` closes the socket abruptly. What the bridge sent
is kept: the caller's audio (``heard``, 24 kHz), ``truncates``, every client event.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

CLIENT_EVENTS = {
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
}
SESSION_FIELDS = {
    "type",
    "model",
    "instructions",
    "output_modalities",
    "audio",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "tracing",
    "truncation",
    "prompt",
    "include",
}
AUDIO_INPUT_FIELDS = {"format", "turn_detection", "noise_reduction", "transcription"}
AUDIO_OUTPUT_FIELDS = {"format", "voice", "speed"}
PCM24 = {"type": "audio/pcm", "rate": 24000}
RATE = 24_000


class FakeOpenAIRealtime:
    """One fake Realtime endpoint (``/v1/realtime``); a connection at a time is current."""

    def __init__(self, api_key: str | None = "sk-test") -> None:
        self.api_key = api_key
        self.errors: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.sessions: list[dict[str, Any]] = []
        self.truncates: list[dict[str, Any]] = []
        self.chunks: list[bytes] = []
        self.connections = 0
        self.headers: list[dict[str, str]] = []
        self.ws: web.WebSocketResponse | None = None
        self.configured = asyncio.Event()
        self.refuse = False
        """Refuse new connections (HTTP 503), as a server that is down."""
        self.drop_configured = False
        """Close each connection once its session is configured (``session.updated`` sent),
        as a server that takes sessions and cannot keep them."""
        self._items = 0
        self._outbox: list[dict[str, Any]] = []
        self._sent_items: set[str] = set()

    @property
    def heard(self) -> np.ndarray:
        """Every caller sample the bridge sent, 24 kHz int16."""
        return np.frombuffer(b"".join(self.chunks), dtype="<i2")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/realtime", self.handler)
        return app

    def _error(self, ws: web.WebSocketResponse, message: str, event_id: Any = None) -> None:
        self.errors.append(message)
        body = {
            "type": "invalid_request_error",
            "code": "invalid_value",
            "message": message,
            "param": None,
            "event_id": event_id,
        }
        self._outbox.append({"type": "error", "error": body})

    async def _send(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        if not ws.closed:
            await ws.send_str(json.dumps(body))

    async def handler(self, request: web.Request) -> web.StreamResponse:
        if self.refuse:
            raise web.HTTPServiceUnavailable()
        self.headers.append(dict(request.headers))
        if (
            self.api_key is not None
            and request.headers.get("Authorization") != f"Bearer {self.api_key}"
        ):
            raise web.HTTPUnauthorized(text='{"error": {"code": "invalid_api_key"}}')
        ws = web.WebSocketResponse(max_msg_size=16 << 20)
        await ws.prepare(request)
        self.connections += 1
        self.ws = ws
        self.configured.clear()
        await self._send(
            ws,
            {
                "type": "session.created",
                "event_id": "event_1",
                "session": {"type": "realtime", "id": f"sess_{self.connections}"},
            },
        )
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                self._error(ws, "binary frames are not part of the protocol")
                continue
            try:
                body = json.loads(msg.data)
            except ValueError:
                self._error(ws, "not JSON")
                continue
            await self._client_event(ws, body)
            while self._outbox:
                await self._send(ws, self._outbox.pop(0))
            if self.drop_configured and self.configured.is_set():
                await ws.close(code=1011, message=b"server error")
        return ws

    async def _client_event(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        self.events.append(body)
        kind, event_id = body.get("type"), body.get("event_id")
        if kind not in CLIENT_EVENTS:
            self._error(ws, f"unknown client event {kind!r}", event_id)
            return
        if event_id is not None and not isinstance(event_id, str):
            self._error(ws, "event_id must be a string", event_id)
        if kind == "session.update":
            self._session(ws, body)
        elif kind == "input_audio_buffer.append":
            self._append(ws, body)
        elif kind == "conversation.item.create":
            self._item(ws, body)
        elif kind == "conversation.item.truncate":
            extra = set(body) - {"type", "event_id", "item_id", "content_index", "audio_end_ms"}
            if extra or body.get("item_id") not in self._sent_items:
                self._error(ws, f"bad truncate {body}", event_id)
            elif not isinstance(body.get("audio_end_ms"), int) or body.get("content_index") != 0:
                self._error(ws, "truncate needs content_index 0 and an integer audio_end_ms")
            else:
                self.truncates.append(body)

    def _item(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        item = body.get("item")
        if set(body) - {"type", "event_id", "item", "previous_item_id"} or not isinstance(
            item, dict
        ):
            self._error(ws, "conversation.item.create takes one item")
            return
        if item.get("type") == "function_call_output":
            if set(item) - {"type", "call_id", "output", "id"} or not isinstance(
                item.get("output"), str
            ):
                self._error(ws, "function_call_output needs call_id and a string output")
            return
        if item.get("type") != "message" or item.get("role") not in ("system", "user", "assistant"):
            self._error(ws, f"unknown item {item.get('type')!r}/{item.get('role')!r}")
            return
        allowed = (
            {"output_text", "output_audio"}
            if item["role"] == "assistant"
            else {"input_text", "input_audio"}
        )
        for part in item.get("content") or [None]:
            if not isinstance(part, dict) or part.get("type") not in allowed:
                self._error(ws, f"bad content for a {item['role']} message: {part}")
                return

    def _session(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        session = body.get("session")
        if set(body) - {"type", "event_id", "session"} or not isinstance(session, dict):
            self._error(ws, "session.update takes one session object")
            return
        unknown = set(session) - SESSION_FIELDS
        audio = session.get("audio", {})
        unknown |= {f"audio.{k}" for k in set(audio) - {"input", "output"}}
        unknown |= {f"audio.input.{k}" for k in set(audio.get("input", {})) - AUDIO_INPUT_FIELDS}
        unknown |= {f"audio.output.{k}" for k in set(audio.get("output", {})) - AUDIO_OUTPUT_FIELDS}
        if unknown:
            self._error(ws, f"unknown session fields {sorted(unknown)}")
            return
        for side in ("input", "output"):
            fmt = audio.get(side, {}).get("format")
            if fmt != PCM24:
                self._error(ws, f"audio.{side}.format must be 24 kHz audio/pcm here, got {fmt}")
                return
        if session.get("type") != "realtime":
            self._error(ws, "session.type must be realtime")
            return
        self.sessions.append(session)
        self._outbox.append({"type": "session.updated", "session": session})
        self.configured.set()

    def _append(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        if set(body) - {"type", "event_id", "audio"}:
            self._error(ws, "unknown fields in input_audio_buffer.append")
            return
        try:
            raw = base64.b64decode(body.get("audio", ""), validate=True)
        except (binascii.Error, ValueError, TypeError):
            self._error(ws, "audio is not base64")
            return
        if len(raw) % 2:
            self._error(ws, "audio must be whole 16-bit samples")
            return
        if not self.configured.is_set():
            self._error(ws, "audio before the session was configured")
            return
        self.chunks.append(raw)

    # -- the server's side, driven by the test
    async def say(
        self, pcm24: np.ndarray, chunk_ms: int = 100, pace: float = 0.0, transcript: str = "a tone"
    ) -> str:
        """Stream ``pcm24`` (24 kHz int16) as one response's audio; returns the item id."""
        ws = self.ws
        assert ws is not None
        self._items += 1
        item, response = f"item_{self._items}", f"resp_{self._items}"
        self._sent_items.add(item)
        await self._send(ws, {"type": "response.created", "response": {"id": response}})
        step = RATE * chunk_ms // 1000
        for i in range(0, pcm24.size, step):
            delta = base64.b64encode(pcm24[i : i + step].astype("<i2").tobytes()).decode()
            await self._send(
                ws,
                {
                    "type": "response.output_audio.delta",
                    "response_id": response,
                    "item_id": item,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": delta,
                },
            )
            if pace:
                await asyncio.sleep(pace)
        await self._send(
            ws,
            {
                "type": "response.output_audio.done",
                "response_id": response,
                "item_id": item,
                "output_index": 0,
                "content_index": 0,
            },
        )
        await self._send(
            ws,
            {
                "type": "response.output_audio_transcript.done",
                "response_id": response,
                "item_id": item,
                "output_index": 0,
                "content_index": 0,
                "transcript": transcript,
            },
        )
        await self._send(ws, {"type": "response.done", "response": {"id": response}})
        return item

    async def late_delta(self, item: str, pcm24: np.ndarray) -> None:
        """More audio of ``item``, sent before the server saw the client's truncate."""
        assert self.ws is not None
        delta = base64.b64encode(pcm24.astype("<i2").tobytes()).decode()
        await self._send(
            self.ws,
            {
                "type": "response.output_audio.delta",
                "response_id": "resp_late",
                "item_id": item,
                "output_index": 0,
                "content_index": 0,
                "delta": delta,
            },
        )

    async def speech_started(self, audio_start_ms: int = 0) -> None:
        assert self.ws is not None
        await self._send(
            self.ws,
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": audio_start_ms,
                "item_id": "item_user",
            },
        )

    async def speech_stopped(self) -> None:
        assert self.ws is not None
        await self._send(
            self.ws,
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": 0,
                "item_id": "item_user",
            },
        )

    async def tool_call(self, name: str, arguments: dict[str, Any], call_id: str) -> None:
        assert self.ws is not None
        await self._send(
            self.ws,
            {
                "type": "response.function_call_arguments.done",
                "response_id": "resp_t",
                "item_id": "item_t",
                "output_index": 0,
                "call_id": call_id,
                "name": name,
                "arguments": json.dumps(arguments),
            },
        )

    async def drop(self) -> None:
        """Close the current connection as a failing server would."""
        if self.ws is not None:
            await self.ws.close(code=1011, message=b"server error")
