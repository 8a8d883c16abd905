"""A strict fake of Deepgram's Voice Agent API (``wss://agent.deepgram.com/v1/agent/converse``),
written from Deepgram's public Voice Agent reference (the ``Settings`` message, user started
speaking, function call request, keep alive, errors and warnings pages) and its Python SDK's
agent types. What the real service refuses is refused here too, recorded in ``errors``:

- a handshake without ``Authorization: Token <key>`` (or ``Bearer <token>``): HTTP 401;
- anything before ``Settings``, a second ``Settings``, binary audio before ``SettingsApplied``,
  a field ``Settings`` does not have, a sample rate that is not a JSON integer, an audio format
  other than raw ``linear16`` at :attr:`RATE` (this fake carries only that): an ``Error``, and
  the socket closed, as Deepgram does with every ``Error``;
- a ``FunctionCallResponse`` for no client-side request of its session (a request of an earlier
  socket's session included), or for one it cancelled (``FunctionCallCancelled``);
- silence: nothing (audio or ``KeepAlive``) for :attr:`IDLE_S` → ``CLIENT_MESSAGE_TIMEOUT``;
- a session older than :attr:`SESSION_LIMIT_S` (two hours for real) is ended with an ``Error``
  (its code is not public: :attr:`LIMIT_CODE`).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from .common import CallerAudioLog

SETTINGS_FIELDS = {"type", "tags", "mip_opt_out", "flags", "audio", "agent", "experimental"}
AGENT_FIELDS = {"listen", "think", "speak", "greeting", "context", "language"}
FUNCTION_FIELDS = {"name", "description", "parameters", "endpoint", "defer_until_eot"}
CLIENT_TYPES = {
    "Settings",
    "UpdatePrompt",
    "UpdateThink",
    "UpdateSpeak",
    "UpdateListen",
    "InjectUserMessage",
    "InjectAgentMessage",
    "FunctionCallResponse",
    "KeepAlive",
    "ForceEndTurn",
}


class FakeDeepgramAgent(CallerAudioLog):
    """One fake Voice Agent endpoint (``/v1/agent/converse``)."""

    PATH = "/v1/agent/converse"
    RATE = 16_000
    IDLE_S = 10.0
    SESSION_LIMIT_S = 7200.0
    LIMIT_CODE = "SESSION_LIMIT_REACHED"

    def __init__(self, api_key: str | None = "dg-test", token: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.token = token
        self.headers: list[dict[str, str]] = []
        self.settings: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        """Every JSON message the client sent."""
        self.errors: list[str] = []
        self.keepalives = 0
        self.connections = 0
        self.refuse = False
        self.ws: web.WebSocketResponse | None = None
        self.applied = asyncio.Event()
        self._asked: set[str] = set()
        self._cancelled: set[str] = set()
        self._last = 0.0

    def app(self) -> web.Application:
        app = self.new_app()
        app.router.add_get(self.PATH, self.handler)
        return app

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization")
        return self.api_key is None or given in (
            f"Token {self.api_key}",
            *((f"Bearer {self.token}",) if self.token else ()),
        )

    async def handler(self, request: web.Request) -> web.StreamResponse:
        if self.refuse:
            raise web.HTTPServiceUnavailable()
        self.headers.append(dict(request.headers))
        if not self._authorized(request):
            raise web.HTTPUnauthorized(text='{"err_code": "INVALID_AUTH"}')
        ws = web.WebSocketResponse(max_msg_size=16 << 20)
        await ws.prepare(request)
        self.served(ws)
        self.connections += 1
        self.ws = ws
        self.applied.clear()
        self._asked.clear()  # a new session: the calls it makes are its own
        self._cancelled.clear()
        self._last = time.monotonic()
        watch = asyncio.ensure_future(self._watch(ws, time.monotonic()))
        try:
            await self._send(ws, {"type": "Welcome", "request_id": f"req-{self.connections}"})
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    await self._audio(ws, msg.data)
                elif msg.type is WSMsgType.TEXT:
                    await self._message(ws, json.loads(msg.data))
        finally:
            watch.cancel()
        return ws

    async def _watch(self, ws: web.WebSocketResponse, opened: float) -> None:
        while not ws.closed:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if now - opened >= self.SESSION_LIMIT_S:
                await self._fatal(ws, self.LIMIT_CODE, "the session reached its time limit")
            elif now - self._last >= self.IDLE_S:
                await self._fatal(ws, "CLIENT_MESSAGE_TIMEOUT", "no message from the client")

    async def _send(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        if not ws.closed:
            await ws.send_str(json.dumps(body))

    async def _fatal(self, ws: web.WebSocketResponse, code: str, why: str) -> None:
        self.errors.append(f"{code}: {why}")
        await self._send(ws, {"type": "Error", "code": code, "description": why})
        await ws.close()

    async def error(self, code: str, why: str, close_after: float) -> None:
        """An ``Error`` of the service's own (scripted by the test: not in ``errors``), the
        socket closed ``close_after`` seconds later ("soon after": how soon is not public)."""
        ws = self.ws
        assert ws is not None
        await self._send(ws, {"type": "Error", "code": code, "description": why})
        await asyncio.sleep(close_after)
        await ws.close()

    async def _audio(self, ws: web.WebSocketResponse, data: bytes) -> None:
        self._last = time.monotonic()
        if not self.applied.is_set():
            await self._fatal(ws, "UNPARSABLE_CLIENT_MESSAGE", "audio before Settings")
            return
        self.keep_caller_audio(data)

    async def _message(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        self.events.append(body)
        self._last = time.monotonic()
        kind = body.get("type")
        if kind not in CLIENT_TYPES:
            await self._fatal(ws, "UNPARSABLE_CLIENT_MESSAGE", f"unknown type {kind!r}")
        elif kind == "Settings":
            if self.applied.is_set():
                await self._fatal(ws, "UNPARSABLE_CLIENT_MESSAGE", "a second Settings")
                return
            refused = self._check(body)
            if refused:
                await self._fatal(ws, "UNPARSABLE_CLIENT_MESSAGE", refused)
                return
            self.settings.append(body)
            self.applied.set()
            await self._send(ws, {"type": "SettingsApplied"})
        elif not self.applied.is_set():
            await self._fatal(ws, "UNPARSABLE_CLIENT_MESSAGE", f"{kind} before Settings")
        elif kind == "KeepAlive":
            self.keepalives += 1
        elif kind == "InjectUserMessage":
            if set(body) != {"type", "content"} or not isinstance(body.get("content"), str):
                self.errors.append(f"InjectUserMessage malformed: {body}")
        elif kind == "FunctionCallResponse":
            call_id = body.get("id")
            if set(body) != {"type", "id", "name", "content"} or not isinstance(
                body.get("content"), str
            ):
                self.errors.append(f"FunctionCallResponse malformed: {body}")
            elif call_id in self._cancelled:
                self.errors.append(f"FunctionCallResponse for cancelled {call_id}")
            elif call_id not in self._asked:
                self.errors.append(f"FunctionCallResponse for unknown {call_id}")
            self._asked.discard(str(call_id))

    def _check(self, body: dict[str, Any]) -> str | None:
        unknown = set(body) - SETTINGS_FIELDS
        agent = body.get("agent")
        if not isinstance(agent, dict):
            return "agent is required"
        unknown |= {f"agent.{k}" for k in set(agent) - AGENT_FIELDS}
        think = agent.get("think") or {}
        for each in think if isinstance(think, list) else [think]:
            for function in each.get("functions") or []:
                unknown |= {f"function.{k}" for k in set(function) - FUNCTION_FIELDS}
        if unknown:
            return f"unknown Settings fields {sorted(unknown)}"
        context = agent.get("context")
        for message in (context or {}).get("messages") or [] if isinstance(context, dict) else []:
            if (
                not isinstance(message, dict)
                or message.get("type") != "History"
                or message.get("role") not in ("user", "assistant")
                or not isinstance(message.get("content"), str)
            ):
                return f"agent.context.messages: {message!r} is no History line"
        audio = body.get("audio") or {}
        for side in ("input", "output"):
            fmt = audio.get(side) or {"encoding": "linear16", "sample_rate": 24000}
            rate = fmt.get("sample_rate")
            if not isinstance(rate, int) or isinstance(rate, bool):
                return f"audio.{side}.sample_rate must be an integer"
            if fmt.get("encoding") != "linear16" or rate != self.RATE:
                return f"audio.{side}: this fake carries linear16 at {self.RATE} Hz"
        if audio.get("output", {}).get("container") != "none":
            return "audio.output.container: this fake sends raw frames (none)"
        return None

    # -- what the test makes the agent do
    async def say(self, pcm: np.ndarray, text: str = "a tone", chunk: int = 1920) -> None:
        """A reply: ``AgentStartedSpeaking``, binary linear16 frames, its text, done."""
        ws = self.ws
        assert ws is not None
        await self._send(ws, {"type": "AgentStartedSpeaking", "total_latency": 0.5})
        raw = pcm.astype("<i2").tobytes()
        for at in range(0, len(raw), chunk):
            await ws.send_bytes(raw[at : at + chunk])
        await self._send(ws, {"type": "ConversationText", "role": "assistant", "content": text})
        await self._send(ws, {"type": "AgentAudioDone"})

    async def user_started_speaking(self) -> None:
        assert self.ws is not None
        await self._send(self.ws, {"type": "UserStartedSpeaking"})

    async def heard_user(self, text: str) -> None:
        assert self.ws is not None
        await self._send(self.ws, {"type": "ConversationText", "role": "user", "content": text})

    async def tool_call(self, name: str, arguments: dict[str, Any] | str, call_id: str) -> None:
        """A client-side function call; ``arguments`` text is sent as it is (the think
        model's own, which may be no JSON)."""
        assert self.ws is not None
        self._asked.add(call_id)
        function = {
            "id": call_id,
            "name": name,
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            "client_side": True,
        }
        await self._send(self.ws, {"type": "FunctionCallRequest", "functions": [function]})

    async def cancel_calls(self, *calls: tuple[str, str]) -> None:
        assert self.ws is not None
        for call_id, _ in calls:
            self._cancelled.add(call_id)
        functions = [{"id": i, "name": n} for i, n in calls]
        await self._send(self.ws, {"type": "FunctionCallCancelled", "functions": functions})

    async def drop(self) -> None:
        if self.ws is not None:
            await self.ws.close(code=1011, message=b"server error")
