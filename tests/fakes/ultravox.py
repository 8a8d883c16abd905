"""A strict fake of Ultravox: REST call creation (``POST /api/calls``) and the
``serverWebSocket`` medium its ``joinUrl`` opens, written from Ultravox's public WebSocket and
data-message documents and the clients that speak it (pipecat's and LiveKit's plugins, the
example WebSocket client). What the real service refuses is refused here too, recorded in
``errors``:

- a creation without the right ``X-API-Key``: 401; a body field the call does not have, a
  medium other than ``serverWebSocket`` with an integer ``inputSampleRate``, a rate other than
  :attr:`RATE` (this fake carries only that), a client tool that is not a ``temporaryTool``
  with ``client: {}``, a ``maxDuration`` that is not a duration string, an unknown
  ``priorCallId``: 400 (404 for the call), never a call;
- a ``joinUrl`` opened twice, or one never created: 404 at the handshake;
- binary audio of an odd number of bytes; a message type clients do not send (the socket is
  closed, 1003); a ``client_tool_result`` for no invocation, or malformed (neither or both of
  ``result`` and ``errorType``, a field the message does not have, an ``agentReaction`` other
  than ``speaks``, ``listens`` or ``speaks-once``); a ``user_text_message`` with an unknown
  ``urgency``.
The call ends (the socket closed by the server, 1000) at its ``maxDuration``, on ``hang_up``,
or — with :attr:`idle_s` set — when no audio came for that long: the service needs no
keep-alive only while audio flows (``ping`` is for latency only), and how long it waits
without audio is not public, so the fake's wait is a setting (``None``: it never ends so).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from .common import CallerAudioLog

RATE = 16_000
CALL_FIELDS = {
    "systemPrompt",
    "model",
    "voice",
    "temperature",
    "languageHint",
    "firstSpeaker",
    "firstSpeakerSettings",
    "initialOutputMedium",
    "maxDuration",
    "joinTimeout",
    "metadata",
    "selectedTools",
    "medium",
    "recordingEnabled",
    "initialMessages",
    "timeExceededMessage",
    "inactivityMessages",
    "vadSettings",
}
TOOL_FIELDS = {"modelToolName", "description", "dynamicParameters", "client", "http"}
PARAMETER_FIELDS = {"name", "location", "schema", "required"}
CLIENT_TYPES = {
    "client_tool_result",
    "user_text_message",
    "input_text_message",
    "forced_agent_message",
    "set_output_medium",
    "hang_up",
    "ping",
}
TOOL_RESULT_FIELDS = {
    "type",
    "invocationId",
    "result",
    "errorType",
    "errorMessage",
    "responseType",
    "agentReaction",
    "updateCallState",
}
AGENT_REACTIONS = {"speaks", "listens", "speaks-once"}
_DURATION = re.compile(r"^\d+(\.\d+)?s$")


class FakeUltravox(CallerAudioLog):
    """One fake Ultravox API (``/api``) and its call sockets (``/calls/{id}/join``)."""

    def __init__(self, api_key: str = "uv-test") -> None:
        super().__init__()
        self.api_key = api_key
        self.created: list[dict[str, Any]] = []
        """Each creation: its ``body``, ``headers``, ``priorCallId`` (or ``None``) and
        ``query`` (all of it)."""
        self.joins: list[dict[str, str]] = []
        """The query of each join."""
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.connections = 0
        self.ws: web.WebSocketResponse | None = None
        self.call_id = ""
        self.idle_s: float | None = None
        """Seconds without the client's audio after which the call ends (module docstring)."""
        self.ended_idle = 0
        """Calls ended so, for want of audio."""
        self._heard_at = 0.0
        self.hung_up: list[str] = []
        """The calls the client ended with ``hang_up`` (one it only left runs on, billed,
        until its ``maxDuration``)."""
        self.forgotten: set[str] = set()
        """Calls whose history is gone (:meth:`forget`): a ``priorCallId`` naming one is 404."""
        self._calls: dict[str, dict[str, Any]] = {}
        self._asked: set[str] = set()
        self._ordinal = 0
        self._rest: dict[str, Any] | None = None

    def app(self) -> web.Application:
        app = self.new_app()
        app.router.add_post("/api/calls", self.create)
        app.router.add_get("/calls/{call}/join", self.join)
        return app

    async def create(self, request: web.Request) -> web.Response:
        if request.headers.get("X-API-Key") != self.api_key:
            raise web.HTTPUnauthorized(text='{"detail": "Invalid API key."}')
        body = await request.json()
        prior = request.query.get("priorCallId")
        refused = self._check(body) if isinstance(body, dict) else "the body is not an object"
        if refused:
            self.errors.append(refused)
            return web.json_response({"detail": refused}, status=400)
        if prior is not None and (prior not in self._calls or prior in self.forgotten):
            return web.json_response({"detail": "prior call not found"}, status=404)
        call_id = f"call-{len(self._calls) + 1}"
        token = secrets.token_hex(8)
        self._calls[call_id] = {"body": body, "token": token, "joined": False}
        self.created.append(
            {
                "body": body,
                "headers": dict(request.headers),
                "priorCallId": prior,
                "query": dict(request.query),
            }
        )
        join = f"ws://{request.host}/calls/{call_id}/join?token={token}"  # the host asked
        return web.json_response(
            {"callId": call_id, "joinUrl": join, "created": "2026-01-01T00:00:00Z"}, status=201
        )

    def _check(self, body: dict[str, Any]) -> str | None:
        unknown = set(body) - CALL_FIELDS
        if unknown:
            return f"unknown fields {sorted(unknown)}"
        medium = body.get("medium")
        socket = medium.get("serverWebSocket") if isinstance(medium, dict) else None
        if not isinstance(socket, dict) or set(medium) != {"serverWebSocket"}:
            return "this fake carries the serverWebSocket medium only"
        rate_in = socket.get("inputSampleRate")
        rate_out = socket.get("outputSampleRate", rate_in)
        if not isinstance(rate_in, int) or isinstance(rate_in, bool):
            return "medium.serverWebSocket.inputSampleRate is required (an integer)"
        if rate_in != RATE or rate_out != RATE:
            return f"this fake carries {RATE} Hz both ways"
        if "maxDuration" in body and not _DURATION.match(str(body["maxDuration"])):
            return "maxDuration is a duration string"
        for tool in body.get("selectedTools") or []:
            temporary = tool.get("temporaryTool") if isinstance(tool, dict) else None
            if not isinstance(temporary, dict) or set(temporary) - TOOL_FIELDS:
                return f"selectedTools: {tool}"
            if temporary.get("client") != {} or not temporary.get("modelToolName"):
                return f"selectedTools: not a client tool {tool}"
            for param in temporary.get("dynamicParameters") or []:
                if set(param) - PARAMETER_FIELDS or param.get("location") != (
                    "PARAMETER_LOCATION_BODY"
                ):
                    return f"selectedTools: parameter {param}"
        return None

    async def join(self, request: web.Request) -> web.StreamResponse:
        call = self._calls.get(request.match_info["call"])
        if call is None or call["joined"] or request.query.get("token") != call["token"]:
            raise web.HTTPNotFound()
        call["joined"] = True
        self.joins.append(dict(request.query))
        ws = web.WebSocketResponse(max_msg_size=16 << 20)
        await ws.prepare(request)
        self.served(ws)
        self.connections += 1
        self.ws = ws
        self.call_id = request.match_info["call"]
        self._asked.clear()  # a new call (``priorCallId`` carries its history, not its tools)
        seconds = float(str(call["body"].get("maxDuration", "3600s"))[:-1])
        limit = asyncio.get_running_loop().call_later(
            seconds, lambda: asyncio.ensure_future(ws.close(code=1000, message=b"maxDuration"))
        )
        self._heard_at = time.monotonic()
        idle = asyncio.ensure_future(self._idle(ws))
        try:
            await self._send({"type": "call_started", "callId": self.call_id})
            await self._send({"type": "state", "state": "listening"})
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    self._heard_at = time.monotonic()
                    if len(msg.data) % 2:
                        self.errors.append("an odd number of bytes of audio")
                    self.keep_caller_audio(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    await self._message(ws, json.loads(msg.data))
        finally:
            limit.cancel()
            idle.cancel()
        return ws

    async def _idle(self, ws: web.WebSocketResponse) -> None:
        while not ws.closed:
            await asyncio.sleep(0.05)
            if self.idle_s is not None and time.monotonic() - self._heard_at > self.idle_s:
                self.ended_idle += 1
                await ws.close(code=1000, message=b"no audio")

    async def _send(self, body: dict[str, Any]) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.send_str(json.dumps(body))

    async def _message(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        self.events.append(body)
        kind = body.get("type")
        if kind not in CLIENT_TYPES:
            self.errors.append(f"unknown type {kind!r}")
            await ws.close(code=1003)
        elif kind == "client_tool_result":
            invocation = body.get("invocationId")
            has_result = isinstance(body.get("result"), str)
            has_error = body.get("errorType") in ("undefined", "implementation-error")
            if has_error and not isinstance(body.get("errorMessage"), str):
                self.errors.append(f"client_tool_result errorType without errorMessage: {body}")
            elif (
                has_result == has_error
                or set(body) - TOOL_RESULT_FIELDS
                or body.get("responseType", "tool-response") != "tool-response"
                or body.get("agentReaction", "speaks") not in AGENT_REACTIONS
            ):
                self.errors.append(f"client_tool_result malformed: {body}")
            elif invocation not in self._asked:
                self.errors.append(f"client_tool_result for unknown {invocation}")
            self._asked.discard(str(invocation))
        elif kind == "user_text_message":
            if not isinstance(body.get("text"), str) or body.get("urgency", "soon") not in (
                "immediate",
                "soon",
                "later",
            ):
                self.errors.append(f"user_text_message malformed: {body}")
        elif kind == "hang_up":
            if set(body) - {"type", "message"}:
                self.errors.append(f"hang_up malformed: {body}")
            self.hung_up.append(self.call_id)
            await ws.close(code=1000)

    # -- what the test makes the agent do
    async def say(
        self, pcm: np.ndarray, text: str = "a tone", chunk: int = 1920, final: bool = True
    ) -> None:
        """A reply: ``state`` speaking, binary s16le frames, its transcript in deltas
        (``final=False``: the first half only, its ``final`` never sent: a reply cut off)."""
        ws = self.ws
        assert ws is not None
        self._ordinal += 1
        await self._send({"type": "state", "state": "speaking"})
        raw = pcm.astype("<i2").tobytes()
        for at in range(0, len(raw), chunk):
            await ws.send_bytes(raw[at : at + chunk])
        half = len(text) // 2
        for delta, last in ((text[:half], False), (text[half:], True)):
            message = {
                "type": "transcript",
                "role": "agent",
                "medium": "voice",
                "delta": delta,
                "final": last,
                "ordinal": self._ordinal,
            }
            if last and not final:
                self._rest = message
                break
            await self._send(message)

    async def late_final(self) -> None:
        """The transcript of the last reply sent with ``final=False`` made final after all:
        its second half, ``final``."""
        assert self._rest is not None
        rest, self._rest = self._rest, None
        await self._send(rest)

    async def clear_buffer(self) -> None:
        """The caller barged in: ``playback_clear_buffer``."""
        await self._send({"type": "playback_clear_buffer"})

    async def heard_user(self, text: str) -> None:
        self._ordinal += 1
        await self._send(
            {
                "type": "transcript",
                "role": "user",
                "medium": "voice",
                "text": text,
                "final": True,
                "ordinal": self._ordinal,
            }
        )

    async def tool_call(self, name: str, parameters: dict[str, Any], invocation: str) -> None:
        self._asked.add(invocation)
        await self._send(
            {
                "type": "client_tool_invocation",
                "toolName": name,
                "invocationId": invocation,
                "parameters": parameters,
            }
        )

    async def hang_up(self) -> None:
        """The agent's hang-up tool: the call ends, the socket closed normally."""
        if self.ws is not None:
            await self.ws.close(code=1000)

    def forget(self, call_id: str) -> None:
        """``call_id``'s history is gone (kept no longer by the service, or deleted): a new
        call's ``priorCallId`` naming it is refused."""
        self.forgotten.add(call_id)

    async def drop(self) -> None:
        if self.ws is not None:
            await self.ws.close(code=1011, message=b"server error")
