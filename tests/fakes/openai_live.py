"""A strict fake of OpenAI GPT-Live (``wss://api.openai.com/v1/live/sessions``), written from the
public description of the OpenAI GPT-Live API (connect, ``session.start``, client and server
events, audio and turn-taking, delegation and tools, end and limits). What the real service
refuses is refused here too, recorded in ``errors``:

- a handshake with a query string (the model is not in the URL) or without ``Authorization:
  Bearer <key>``: HTTP 400 / 401;
- anything before ``session.start``, a second one, audio before ``session.started``, a field
  the strict session schema does not have (``unknown_parameter``), a field sent as ``null``
  rather than omitted (anywhere in the session; ``delegation`` may be ``null``), a model that
  is not a GPT-Live one, an ``input`` item that is not a message of one text part of its
  role's kind (``input_text``, an assistant's ``output_text``), an audio format other than
  ``audio/pcm`` at :attr:`RATE` named explicitly (the default would be 24 kHz): an ``error``,
  and for a refused ``session.start`` the socket closed;
- audio that is not base64 of whole 16-bit samples; an unknown client event;
- ``response.item.create`` for no open function call, ``response.create`` while a call is
  unanswered (``function_call_outputs_required``), either without a Responses delegation;
- an ``*.append`` without its ``delegation_id`` key, or naming no live client delegation.

A session starts at once unless :attr:`START_S` says how long it takes (a test that sets it sees
what a client sent before ``session.started``).

The model's output is one continuous real-time stream from ``session.started`` on: chunks of
:attr:`CHUNK_MS` on an absolute schedule, its silences included; :meth:`say` queues a voice
into it (:attr:`voiced_since`), :meth:`fall_silent` stops it and :attr:`silent_since` says when
the stream turned silent after it. A session lives
:attr:`SESSION_S` (``expires_at``); one still open then is closed as ``expired``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import random
import time
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from .common import CallerAudioLog

SESSION_FIELDS = {"model", "instructions", "audio", "delegation", "input", "store"}
AUDIO_FIELDS = {"format", "output"}
RESPONSES_FIELDS = {
    "model",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "text",
    "max_output_tokens",
    "service_tier",
}
FUNCTION_FIELDS = {"type", "name", "description", "parameters", "strict"}
MODELS = {"gpt-live-1", "gpt-live-1.1"}
CLIENT_TYPES = {
    "session.start",
    "session.update",
    "session.input_audio.append",
    "session.input_audio.mute",
    "session.input_audio.unmute",
    "session.instructions.append",
    "session.thinking.append",
    "session.commentary.append",
    "response.item.create",
    "response.create",
    "session.close",
}
APPENDS = {
    "session.instructions.append": "session.instructions.appended",
    "session.thinking.append": "session.thinking.appended",
    "session.commentary.append": "session.commentary.appended",
}


class FakeOpenAILive(CallerAudioLog):
    """One fake GPT-Live endpoint (``/v1/live/sessions``)."""

    PATH = "/v1/live/sessions"
    RATE = 16_000
    CHUNK_MS = 40
    SESSION_S = 3600.0
    START_S = 0.0
    """Seconds the server takes to start a session (``session.start`` to ``session.started``;
    the spec gives no figure): while it starts, anything the client sends but the start is
    refused as sent before ``session.started``, so a test that sets it catches a client that
    did not wait for it."""

    _made = itertools.count()

    def __init__(self, api_key: str | None = "sk-live-test", *, seed: int | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        seed = next(self._made) if seed is None else seed
        self.phase = random.Random(seed).uniform(0, self.CHUNK_MS / 1000)
        """Seconds the stream's clock starts after ``session.started``: a real server's chunks
        keep a phase of their own against the bridge's ticks (seeded: the n-th fake of a run
        has the same phase in every run)."""
        self.headers: list[dict[str, str]] = []
        self.starts: list[dict[str, Any]] = []
        """The ``session`` of every accepted ``session.start``."""
        self.events: list[dict[str, Any]] = []
        """Every client event but audio."""
        self.errors: list[str] = []
        self.connections = 0
        self.closed_reasons: list[str] = []
        self.ended: list[int | None] = []
        """Each session socket's close code as its handler ended (1006: the client never
        answered the server's close frame, whose wait for it timed out)."""
        self.expired = 0
        self.ws: web.WebSocketResponse | None = None
        self.started = asyncio.Event()
        self.voiced_since: float | None = None
        """When the output stream's first chunk of the last voice went out (monotonic)."""
        self.silent_since: float | None = None
        """When the output stream turned silent after the last voice (monotonic): the model's
        only barge-in signal."""
        self._voice = np.zeros(0, dtype=np.int16)
        self._delegation: dict[str, Any] | None = None
        self._asked: set[str] = set()
        """Function calls of the backend not answered yet."""
        self._client_delegations: set[str] = set()
        self._ids = 0
        self._starting = False
        """A ``session.start`` was taken, ``session.started`` not sent yet."""

    def app(self) -> web.Application:
        app = self.new_app()
        app.router.add_get(self.PATH, self.handler)
        return app

    def _id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_{self._ids}"

    async def handler(self, request: web.Request) -> web.StreamResponse:
        if self.stopping:
            raise web.HTTPServiceUnavailable()
        self.headers.append(dict(request.headers))
        if request.query_string:
            self.errors.append(f"a query string: {request.query_string}")
            raise web.HTTPBadRequest(text='{"error": {"code": "invalid_request_error"}}')
        if self.api_key is not None and request.headers.get("Authorization") != (
            f"Bearer {self.api_key}"
        ):
            raise web.HTTPUnauthorized(text='{"error": {"code": "invalid_api_key"}}')
        ws = web.WebSocketResponse(max_msg_size=16 << 20)
        await ws.prepare(request)
        self.served(ws)
        self.connections += 1
        self.ws = ws
        self.started.clear()
        self._starting = False
        tasks: list[asyncio.Task[None]] = []
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    await self._error(ws, "invalid_request_error", "binary frames are not events")
                    continue
                await self._message(ws, json.loads(msg.data), tasks)
        finally:
            # Before the wait: a closed connection cancels its handler (aiohttp's
            # handler_cancellation, as test servers run) and this wait with it.
            self.ended.append(ws.close_code)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return ws

    async def _send(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        if not ws.closed:
            await ws.send_str(json.dumps({"event_id": self._id("event"), **body}))

    async def _error(
        self, ws: web.WebSocketResponse, code: str, why: str, client_event_id: Any = None
    ) -> None:
        self.errors.append(f"{code}: {why}")
        error = {"type": "invalid_request_error", "code": code, "message": why}
        if client_event_id is not None:
            error["client_event_id"] = client_event_id
        await self._send(ws, {"type": "error", "error": error})

    async def _message(
        self, ws: web.WebSocketResponse, body: dict[str, Any], tasks: list[asyncio.Task[None]]
    ) -> None:
        kind = body.get("type")
        event_id = body.get("event_id")
        if kind == "session.input_audio.append":
            await self._audio(ws, body)
            return
        self.events.append(body)
        if kind not in CLIENT_TYPES:
            await self._error(ws, "invalid_request_error", f"unknown event {kind!r}", event_id)
        elif kind == "session.start":
            if self.started.is_set() or self._starting:
                await self._error(ws, "invalid_request_error", "a second session.start")
                return
            nulls = _nulls(body.get("session"))
            refused = self._check(body.get("session"))
            if nulls:  # omitted, not null (the code of this refusal is not public)
                await self._error(ws, "invalid_type", f"null is not a value: {nulls}", event_id)
                await ws.close()
                return
            if refused:
                await self._error(ws, "unknown_parameter", refused, event_id)
                await ws.close()
                return
            self._starting = True
            if self.START_S:  # the socket is read meanwhile: what comes is refused
                tasks.append(
                    asyncio.ensure_future(self._start(ws, body["session"], event_id, tasks))
                )
            else:
                await self._start(ws, body["session"], event_id, tasks)
        elif not self.started.is_set():
            await self._error(ws, "invalid_request_error", f"{kind} before session.started")
        elif kind == "session.close":
            self.closed_reasons.append("close_requested")
            await self._close(ws, "close_requested", event_id)
        elif kind in APPENDS:
            await self._append(ws, kind, body)
        elif kind == "response.item.create":
            self._item(body.get("item"))
        elif kind == "response.create":
            if (self._delegation or {}).get("type") != "responses":
                self.errors.append("response.create without a Responses delegation")
            elif self._asked:
                await self._error(
                    ws, "function_call_outputs_required", f"unanswered {sorted(self._asked)}"
                )

    def _check(self, session: Any) -> str | None:
        if not isinstance(session, dict):
            return "session must be an object"
        unknown = set(session) - SESSION_FIELDS
        audio = session.get("audio")
        if not isinstance(audio, dict) or "format" not in audio:
            return f"audio.format: this fake carries only audio/pcm at {self.RATE} (default 24k)"
        unknown |= {f"audio.{k}" for k in set(audio) - AUDIO_FIELDS}
        unknown |= {f"audio.output.{k}" for k in set(audio.get("output") or {}) - {"voice"}}
        delegation = session.get("delegation")
        if isinstance(delegation, dict) and delegation.get("type") == "responses":
            responses = delegation.get("responses") or {}
            unknown |= {f"delegation.{k}" for k in set(delegation) - {"type", "responses"}}
            unknown |= {f"responses.{k}" for k in set(responses) - RESPONSES_FIELDS}
            for tool in responses.get("tools") or []:
                if tool.get("type") == "function":
                    unknown |= {f"tool.{k}" for k in set(tool) - FUNCTION_FIELDS}
                elif tool != {"type": "web_search"}:
                    return f"a tool of type {tool.get('type')!r}"
        elif delegation not in (None, {"type": "client"}):
            return f"delegation {delegation!r}"
        if unknown:
            return f"unknown parameters {sorted(unknown)}"
        if session.get("model") not in MODELS:
            return f"model {session.get('model')!r}"
        if audio["format"] != {"type": "audio/pcm", "rate": self.RATE}:
            return f"audio.format {audio['format']!r}: this fake carries audio/pcm at {self.RATE}"
        if len(session.get("input") or []) > 128:
            return f"input of {len(session['input'])} messages (at most 128)"
        for item in session.get("input") or []:
            if _input_refused(item):
                return f"input item {item!r}"
        return None

    async def _start(
        self,
        ws: web.WebSocketResponse,
        session: dict[str, Any],
        event_id: Any,
        tasks: list[asyncio.Task[None]],
    ) -> None:
        if self.START_S:
            await asyncio.sleep(self.START_S)
        self.starts.append(session)
        self._delegation = session.get("delegation")
        self._asked.clear()
        self._client_delegations.clear()
        resolved = {
            **session,
            "id": self._id("sess"),
            "expires_at": int(time.time() + self.SESSION_S),
            "status": "active",
        }
        self.started.set()
        self._starting = False
        await self._send(
            ws, {"type": "session.started", "session": resolved, "client_event_id": event_id}
        )
        tasks.append(asyncio.ensure_future(self._stream(ws)))
        tasks.append(asyncio.ensure_future(self._expire(ws, self.SESSION_S)))

    async def _audio(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        if not self.started.is_set():
            await self._error(ws, "invalid_request_error", "audio before session.started")
            return
        try:
            raw = base64.b64decode(body.get("audio") or "", validate=True)
        except (binascii.Error, ValueError):
            await self._error(ws, "invalid_request_error", "audio is not base64")
            return
        if set(body) - {"type", "event_id", "audio"} or len(raw) % 2:
            await self._error(ws, "invalid_request_error", "malformed session.input_audio.append")
            return
        self.keep_caller_audio(raw)

    async def _append(self, ws: web.WebSocketResponse, kind: str, body: dict[str, Any]) -> None:
        if "delegation_id" not in body or not isinstance(body.get("content"), str):
            await self._error(ws, "missing_required_parameter", f"{kind} needs delegation_id")
            return
        delegation_id = body["delegation_id"]
        if delegation_id is not None:
            if delegation_id not in self._client_delegations:
                await self._error(ws, "invalid_request_error", "no client delegation here")
                return
            self._client_delegations.discard(delegation_id)
        await self._send(ws, {"type": APPENDS[kind], "client_event_id": body.get("event_id")})

    def _item(self, item: Any) -> None:
        if (self._delegation or {}).get("type") != "responses":
            self.errors.append("response.item.create without a Responses delegation")
        elif not isinstance(item, dict) or item.get("type") != "function_call_output":
            self.errors.append(f"response.item.create of {item!r}")
        elif set(item) != {"type", "call_id", "output"} or not isinstance(item["output"], str):
            self.errors.append(f"function_call_output malformed: {item}")
        elif item["call_id"] not in self._asked:
            self.errors.append(f"function_call_output for unknown {item['call_id']}")
        else:
            self._asked.discard(item["call_id"])

    async def _close(self, ws: web.WebSocketResponse, reason: str, event_id: Any = None) -> None:
        body: dict[str, Any] = {"type": "session.closed", "reason": reason, "session": {}}
        body["usage"] = {"seconds": 1.0}
        if event_id is not None:
            body["client_event_id"] = event_id
        await self._send(ws, body)
        await ws.close()

    async def _expire(self, ws: web.WebSocketResponse, after: float) -> None:
        await asyncio.sleep(after)
        if not ws.closed:
            self.expired += 1
            await self._close(ws, "expired")

    async def _stream(self, ws: web.WebSocketResponse) -> None:
        """The model's continuous real-time output, silence included, on the server's own
        clock: its chunks' phase against the bridge's 20 ms ticks is the server's, unrelated to
        ours (:attr:`phase`)."""
        samples = self.RATE * self.CHUNK_MS // 1000
        await asyncio.sleep(self.phase)
        start = time.monotonic()
        sent = 0
        voiced = False
        while not ws.closed:
            chunk = self._voice[:samples]
            self._voice = self._voice[samples:]
            if chunk.size < samples:
                chunk = np.concatenate([chunk, np.zeros(samples - chunk.size, dtype=np.int16)])
            loud = bool(np.abs(chunk).max() > 0)
            if voiced and not loud:
                self.silent_since = time.monotonic()
            elif loud and not voiced:
                self.voiced_since = time.monotonic()
            voiced = loud
            delta = base64.b64encode(chunk.astype("<i2").tobytes()).decode()
            await self._send(ws, {"type": "session.output_audio.delta", "delta": delta})
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * self.CHUNK_MS / 1000 - time.monotonic()))

    # -- what the test makes the model do
    async def say(self, pcm: np.ndarray) -> None:
        """Say ``pcm`` (16 kHz) in the stream, from its next chunk on (it has no cancel)."""
        self._voice = np.concatenate([self._voice, pcm.astype(np.int16)])
        self.voiced_since = self.silent_since = None

    async def fall_silent(self) -> None:
        """The model stops by itself mid-reply (it heard the caller over itself): its stream
        turns silent from the next chunk (:attr:`silent_since`). GPT-Live's barge-in signal."""
        self._voice = self._voice[:0]

    async def transcript(self, role: str, text: str, start_ms: int, end_ms: int) -> None:
        assert self.ws is not None
        kind = (
            "session.input_transcript.delta"
            if role == "caller"
            else "session.output_transcript.delta"
        )
        await self._send(
            self.ws, {"type": kind, "delta": text, "start_ms": start_ms, "end_ms": end_ms}
        )

    async def delegate_function(self, name: str, arguments: dict[str, Any], call_id: str) -> None:
        """The backend of a Responses delegation calls a function."""
        ws = self.ws
        assert ws is not None
        delegation_id, response_id = self._id("del"), self._id("resp")
        await self._send(
            ws,
            {
                "type": "session.delegation.created",
                "offset_ms": 1200,
                "delegation": {
                    "id": delegation_id,
                    "type": "delegation",
                    "target": "responses",
                    "response_id": response_id,
                },
            },
        )
        response = {"id": response_id, "object": "response", "output": []}
        item = {
            "type": "function_call",
            "status": "completed",
            "id": self._id("fc"),
            "call_id": call_id,
            "name": name,
            "arguments": json.dumps(arguments),
        }
        self._asked.add(call_id)
        for nested in (
            {"type": "response.created", "response": {**response, "status": "in_progress"}},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": {**response, "status": "completed"}},
        ):
            await self._send(
                ws, {"type": "response.event", "delegation_id": delegation_id, "event": nested}
            )

    async def delegate_to_client(self, offset_ms: int = 1500) -> str:
        """A client delegation: the model hands the application a task (it names none: the
        client works it out from the conversation); its id, which one answer's appends may
        name (:meth:`_append`). Returns the id."""
        assert self.ws is not None
        delegation_id = self._id("del")
        self._client_delegations.add(delegation_id)
        await self._send(
            self.ws,
            {
                "type": "session.delegation.created",
                "offset_ms": offset_ms,
                "delegation": {"id": delegation_id, "type": "delegation", "target": "client"},
            },
        )
        return delegation_id

    async def drop(self) -> None:
        if self.ws is not None:
            await self.ws.close(code=1011, message=b"server error")


def _input_refused(item: Any) -> bool:
    """Whether ``item`` is not a startup history message: a ``developer``, ``user`` or
    ``assistant`` message of exactly one text part, ``output_text`` for the assistant and
    ``input_text`` for the others."""
    if not isinstance(item, dict) or set(item) - {"type", "role", "content"}:
        return True
    if item.get("type") != "message" or item.get("role") not in ("developer", "user", "assistant"):
        return True
    content = item.get("content")
    if not isinstance(content, list) or len(content) != 1 or not isinstance(content[0], dict):
        return True
    part = "output_text" if item["role"] == "assistant" else "input_text"
    return (
        set(content[0]) != {"type", "text"}
        or content[0]["type"] != part
        or not isinstance(content[0]["text"], str)
    )


def _nulls(value: Any, where: str = "session") -> list[str]:
    """Where ``value`` holds a ``null`` the strict schema refuses (every field but
    ``delegation``, which may be ``null``: no delegation)."""
    if isinstance(value, dict):
        return [
            path
            for key, item in value.items()
            if not (where == "session" and key == "delegation" and item is None)
            for path in ([f"{where}.{key}"] if item is None else _nulls(item, f"{where}.{key}"))
        ]
    if isinstance(value, list):
        return [path for i, item in enumerate(value) for path in _nulls(item, f"{where}[{i}]")]
    return []
