"""A strict fake of ElevenLabs Agents' conversation WebSocket and its signed-URL endpoint,
written from ElevenLabs' public client-events reference and its Python SDK
(``conversational_ai/conversation.py``, the client-event and override types). What the real
service refuses is refused here too, recorded in ``errors``:

- ``get-signed-url`` without the right ``xi-api-key``: HTTP 401; for another agent: 404;
- a private agent's socket without a valid signature, or with one already used (the fake asks
  for ``include_conversation_id``-style single use): HTTP 403 at the handshake;
- anything before ``conversation_initiation_client_data``, a second one, a field it does not
  have, an override the agent's security settings do not enable (:attr:`ENABLED_OVERRIDES`):
  the socket closed (:attr:`REFUSED_CLOSE`: the real code is not public);
- a ``user_audio_chunk`` message with any other field (it has no ``type``), not base64, or an
  odd number of bytes; a ``pong`` for no ``ping`` it sent, or twice; a ``client_tool_result``
  for no call it made, with a ``result`` that is not a string or an ``is_error`` not a bool;
- a ``ping`` left unanswered for :attr:`PONG_S`: the socket dropped, as the service does —
  also one it sends while the conversation starts (:attr:`ping_on_start`: after taking
  ``conversation_initiation_client_data``, before its ``conversation_initiation_metadata``).
The agent's formats are its configuration (:attr:`input_format`, :attr:`output_format`),
told in ``conversation_initiation_metadata``. So are its turn and silence timeouts, whose
lengths are not public: with :attr:`idle_s` set, nothing of the user — no ``user_audio_chunk``,
no ``user_activity`` (which resets the agent's turn timeout) — for that long ends the
conversation, the socket closed normally (1000) as the service's own end (``None``: never).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from .common import CallerAudioLog

INIT_FIELDS = {
    "type",
    "conversation_config_override",
    "dynamic_variables",
    "custom_llm_extra_body",
    "user_id",
    "source_info",
}
CLIENT_TYPES = {
    "conversation_initiation_client_data",
    "pong",
    "client_tool_result",
    "contextual_update",
    "user_message",
    "user_activity",
    "feedback",
    "multimodal_message",
}


class FakeElevenLabs(CallerAudioLog):
    """One fake ElevenLabs API host: one agent, private when it has an ``api_key``."""

    CONVERSATION = "/v1/convai/conversation"
    SIGNED = "/v1/convai/conversation/get-signed-url"
    REFUSED_CLOSE = 1008
    PONG_S = 2.0
    ENABLED_OVERRIDES = frozenset({"agent.prompt", "agent.first_message", "agent.language"})

    def __init__(self, agent_id: str = "agent_test", api_key: str | None = "xi-test") -> None:
        super().__init__()
        self.agent_id = agent_id
        self.api_key = api_key
        self.input_format = "pcm_16000"
        self.output_format = "pcm_16000"
        self.signed_asked: list[dict[str, str]] = []
        """Headers of each ``get-signed-url`` request."""
        self.handshakes: list[dict[str, str]] = []
        self.inits: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        """Every message but the audio chunks, in order."""
        self.errors: list[str] = []
        self.pongs: dict[int, float] = {}
        """``event_id`` → seconds from the ``ping`` to its ``pong``."""
        self.connections = 0
        self.ws: web.WebSocketResponse | None = None
        self.started = asyncio.Event()
        self.idle_s: float | None = None
        """Seconds of nothing from the user after which the conversation ends (module
        docstring)."""
        self.ended_idle = 0
        """Conversations ended so, for the user's silence."""
        self._heard_at = 0.0
        self.ping_on_start = False
        """Send a ``ping`` (``event_id`` 1000 + the connection's number) between taking the
        initiation data and answering its metadata."""
        self._signatures: set[str] = set()
        self._pings: dict[int, float] = {}
        self._asked: set[str] = set()
        self._event_id = 0

    def app(self) -> web.Application:
        app = self.new_app()
        app.router.add_get(self.SIGNED, self.signed_url)
        app.router.add_get(self.CONVERSATION, self.conversation)
        return app

    async def signed_url(self, request: web.Request) -> web.Response:
        self.signed_asked.append(dict(request.headers))
        if self.api_key is None or request.headers.get("xi-api-key") != self.api_key:
            raise web.HTTPUnauthorized(text='{"detail": "invalid api key"}')
        if request.query.get("agent_id") != self.agent_id:
            raise web.HTTPNotFound(text='{"detail": "agent not found"}')
        signature = secrets.token_hex(8)
        self._signatures.add(signature)
        url = (  # on the host asked, as the service names its own region's
            f"ws://{request.host}{self.CONVERSATION}?agent_id={self.agent_id}"
            f"&conversation_signature={signature}"
        )
        return web.json_response({"signed_url": url})

    async def conversation(self, request: web.Request) -> web.StreamResponse:
        self.handshakes.append(dict(request.headers))
        if request.query.get("agent_id") != self.agent_id:
            raise web.HTTPNotFound()
        if self.api_key is not None:  # a private agent: a signature, once
            signature = request.query.get("conversation_signature", "")
            if signature not in self._signatures:
                raise web.HTTPForbidden(text='{"detail": "invalid signature"}')
            self._signatures.discard(signature)
        ws = web.WebSocketResponse(max_msg_size=16 << 20)
        await ws.prepare(request)
        self.served(ws)
        self.connections += 1
        self.ws = ws
        self._asked.clear()  # a new conversation: the tool calls it makes are its own
        self.started.clear()
        self._pings.clear()
        self._event_id = 0
        watch = asyncio.ensure_future(self._watch(ws))
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._message(ws, json.loads(msg.data))
                else:
                    await self._refuse(ws, f"a {msg.type.name} frame")
        finally:
            watch.cancel()
        return ws

    async def _watch(self, ws: web.WebSocketResponse) -> None:
        self._heard_at = time.monotonic()
        while not ws.closed:
            await asyncio.sleep(0.05)
            if self.idle_s is not None and time.monotonic() - self._heard_at > self.idle_s:
                self.ended_idle += 1
                await ws.close(code=1000, message=b"the user was silent")
                return
            late = [i for i, at in self._pings.items() if time.monotonic() - at > self.PONG_S]
            if late:
                self.errors.append(f"ping {late[0]} unanswered")
                await ws.close(code=1008, message=b"ping timeout")

    async def _refuse(self, ws: web.WebSocketResponse, why: str) -> None:
        self.errors.append(why)
        await ws.close(code=self.REFUSED_CLOSE, message=why.encode()[:120])

    async def _send(self, body: dict[str, Any]) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.send_str(json.dumps(body))

    async def _message(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        if "user_audio_chunk" in body or body.get("type") == "user_activity":
            self._heard_at = time.monotonic()
        if "user_audio_chunk" in body:
            await self._audio(ws, body)
            return
        self.events.append(body)
        kind = body.get("type")
        if kind not in CLIENT_TYPES:
            await self._refuse(ws, f"unknown type {kind!r}")
        elif kind == "conversation_initiation_client_data":
            if self.started.is_set():
                await self._refuse(ws, "a second conversation_initiation_client_data")
                return
            refused = self._check(body)
            if refused:
                await self._refuse(ws, refused)
                return
            self.inits.append(body)
            self.started.set()
            if self.ping_on_start:
                await self.ping(1000 + self.connections)
            await self._send(
                {
                    "type": "conversation_initiation_metadata",
                    "conversation_initiation_metadata_event": {
                        "conversation_id": f"conv_{self.connections}",
                        "agent_output_audio_format": self.output_format,
                        "user_input_audio_format": self.input_format,
                    },
                }
            )
        elif not self.started.is_set():
            await self._refuse(ws, f"{kind} before conversation_initiation_client_data")
        elif kind == "pong":
            event_id = body.get("event_id")
            at = self._pings.pop(event_id, None) if isinstance(event_id, int) else None
            if at is None or set(body) != {"type", "event_id"}:
                self.errors.append(f"pong for no ping: {body}")
            else:
                self.pongs[event_id] = time.monotonic() - at
        elif kind == "client_tool_result":
            call_id = body.get("tool_call_id")
            if (
                set(body) != {"type", "tool_call_id", "result", "is_error"}
                or not isinstance(body.get("result"), str)
                or not isinstance(body.get("is_error"), bool)
            ):
                self.errors.append(f"client_tool_result malformed: {body}")
            elif call_id not in self._asked:
                self.errors.append(f"client_tool_result for unknown {call_id}")
            self._asked.discard(str(call_id))
        elif kind == "user_activity" and set(body) != {"type"}:
            self.errors.append(f"user_activity malformed: {body}")
        elif kind in ("contextual_update", "user_message"):
            if set(body) != {"type", "text"} or not isinstance(body.get("text"), str):
                self.errors.append(f"{kind} malformed: {body}")

    async def _audio(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        if not self.started.is_set():
            await self._refuse(ws, "audio before conversation_initiation_client_data")
            return
        if set(body) != {"user_audio_chunk"}:
            await self._refuse(ws, f"user_audio_chunk with {sorted(body)}")
            return
        try:
            pcm = base64.b64decode(body["user_audio_chunk"], validate=True)
        except (binascii.Error, TypeError):
            await self._refuse(ws, "user_audio_chunk is not base64")
            return
        if len(pcm) % 2:
            self.errors.append("user_audio_chunk of an odd number of bytes")
        self.keep_caller_audio(pcm)

    def _check(self, body: dict[str, Any]) -> str | None:
        unknown = set(body) - INIT_FIELDS
        if unknown:
            return f"unknown fields {sorted(unknown)}"
        override = body.get("conversation_config_override") or {}
        given = {f"{part}.{k}" for part, v in override.items() for k in (v or {})}
        if given - self.ENABLED_OVERRIDES:
            return f"override not enabled: {sorted(given - self.ENABLED_OVERRIDES)}"
        return None

    # -- what the test makes the agent do
    async def say(self, pcm: np.ndarray, text: str = "a tone", chunk: int = 4000) -> int:
        """A reply: ``audio`` events (base64 s16le at :attr:`output_format`'s rate), then its
        text; the last ``event_id``."""
        raw = pcm.astype("<i2").tobytes()
        for at in range(0, len(raw), chunk):
            await self.audio(raw[at : at + chunk])
        await self._send(
            {"type": "agent_response", "agent_response_event": {"agent_response": text}}
        )
        return self._event_id

    async def audio(self, raw: bytes, event_id: int | None = None) -> None:
        if event_id is None:
            self._event_id += 1
            event_id = self._event_id
        audio = {"audio_base_64": base64.b64encode(raw).decode(), "event_id": event_id}
        await self._send({"type": "audio", "audio_event": audio})

    async def interrupt(self) -> int:
        """The caller barged in: ``interruption`` with the last ``event_id`` sent."""
        await self._send(
            {"type": "interruption", "interruption_event": {"event_id": self._event_id}}
        )
        return self._event_id

    async def ping(self, event_id: int) -> None:
        self._pings[event_id] = time.monotonic()
        await self._send({"type": "ping", "ping_event": {"event_id": event_id, "ping_ms": 40}})

    async def tool_call(self, name: str, parameters: dict[str, Any], call_id: str) -> None:
        self._asked.add(call_id)
        call = {"tool_name": name, "tool_call_id": call_id, "parameters": parameters}
        await self._send({"type": "client_tool_call", "client_tool_call": call})

    async def heard_user(self, text: str) -> None:
        event = {"user_transcript": text}
        await self._send({"type": "user_transcript", "user_transcription_event": event})

    async def drop(self) -> None:
        if self.ws is not None:
            await self.ws.close(code=1011, message=b"server error")

    async def end_call(self) -> None:
        """The agent's ``end_call`` system tool: the conversation ends, the socket closed
        normally."""
        if self.ws is not None:
            await self.ws.close(code=1000)
