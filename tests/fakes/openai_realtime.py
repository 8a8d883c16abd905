"""A strict fake of OpenAI's Realtime API (GA protocol, WebSocket), written from its public
reference: the bridge is its client. Anything the real service refuses is an error here too,
and recorded in ``errors`` (a test asserts it stays empty): an unknown client event, an
unknown session field, an audio format other than 24 kHz ``audio/pcm``, audio that is not
base64 of whole 16-bit samples, a truncate of an item it never sent. The beta shape (an
``OpenAI-Beta`` header, ``transcription_session.update``, a flat ``input_audio_format`` or
``output_audio_format``) is ``beta_api_shape_disabled`` and the socket closed with 4000, as
the service does since May 2026 (:attr:`REFUSES_BETA`).

Also as the real service: ``response.cancel`` with no response in progress is
``response_cancel_not_active``, ``response.create`` while one is in progress is
``conversation_already_has_active_response``, a truncate past the audio sent of its item is
refused. A cancel of a response in progress ends it (``response.done``, status ``cancelled``).
A function call comes inside a response (:meth:`tool_call`; several in one:
:meth:`tool_calls`), so a ``response.create`` sent with its output before that response's
``response.done`` is refused as well; one taken is answered with a (silent) response, created
and done. A ``response.create`` after a function call's output while another call of the
same response has none yet is an error (not documented: the model would go on without that
call's answer).

The test drives the server side: :meth:`say` streams 24 kHz audio as one response item
(``response.output_audio.delta`` chunks; ``done=False`` leaves the response in progress, as a
model still generating), :meth:`speech_started` reports the caller's speech as server VAD
would (and ends the response in progress, as its ``interrupt_response`` does), :meth:`drop`
closes the socket abruptly, :meth:`stall` stops reading it (a model too slow to take the
caller's audio: what the bridge sends backs up, once the kernel's buffers are full;
serve it from a socket with a small receive buffer, :func:`small_receive_buffer`). What the
bridge sent is kept: the caller's audio (``heard``, 24 kHz), ``truncates``, ``cancels``, every
client event.

:class:`FakeOpenAIRealtime` is also the base of the fakes of its relatives (xAI Grok Voice,
Azure Voice Live): the class attributes name the path, the rate and the audio events, the
``_authorized``/``_greet``/``_check_session`` hooks what differs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import socket
import time
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web
from aiohttp.test_utils import get_port_socket

from .common import CallerAudioLog

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
    "reasoning",
    "parallel_tool_calls",
}
AUDIO_INPUT_FIELDS = {"format", "turn_detection", "noise_reduction", "transcription"}
AUDIO_OUTPUT_FIELDS = {"format", "voice", "speed"}
BETA_FIELDS = {"input_audio_format", "output_audio_format"}
"""The beta session's flat formats: the GA service refuses them as the beta shape."""
PCM24 = {"type": "audio/pcm", "rate": 24000}
RATE = 24_000


class FakeOpenAIRealtime(CallerAudioLog):
    """One fake Realtime endpoint (``/v1/realtime``); a connection at a time is current."""

    PATH = "/v1/realtime"
    RATE = RATE
    """The rate of the audio :meth:`say` takes and the caller's audio ``heard`` is at."""
    AUDIO_DELTA = "response.output_audio.delta"
    AUDIO_DONE = "response.output_audio.done"
    SESSION_LIMIT_S = 3600.0
    """A session lasts at most 60 minutes: then the service closes it (counted in
    ``expired``)."""
    TRANSCRIPT_DELTA = "response.output_audio_transcript.delta"
    TRANSCRIPT_DONE: str | None = "response.output_audio_transcript.done"
    """``None``: the service sends the reply's transcript in deltas only."""
    REFUSES_BETA = True
    """The beta shape is refused (``beta_api_shape_disabled``, closed 4000): OpenAI's GA
    service, not its relatives'."""
    STOPS_ITSELF = True
    """Its VAD ends the response in progress when it hears the caller (``interrupt_response``:
    :meth:`speech_started`)."""

    def __init__(self, api_key: str | None = "sk-test") -> None:
        super().__init__()
        self.api_key = api_key
        self.errors: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.sessions: list[dict[str, Any]] = []
        self.truncates: list[dict[str, Any]] = []
        self.cancels: list[str] = []
        """Responses the client cancelled while they were in progress (when: ``cancelled``)."""
        self.connections = 0
        self.expired = 0
        self.headers: list[dict[str, str]] = []
        self.ws: web.WebSocketResponse | None = None
        self._transport: asyncio.BaseTransport | None = None
        """The current connection's TCP transport (:meth:`stall`)."""
        self.configured = asyncio.Event()
        """The newest connection's session is configured (what a test waits for)."""
        self._configured_sockets: set[web.WebSocketResponse] = set()
        """Every connection whose own session is configured: each socket is its own session,
        so a worker's old socket still sending while a new one opens is no error."""
        self.refuse = False
        """Refuse new connections (HTTP 503), as a server that is down."""
        self.drop_configured = False
        """Close each connection once its session is configured (``session.updated`` sent),
        as a server that takes sessions and cannot keep them."""
        self.say_before_drop = False
        """With :attr:`drop_configured`: say 100 ms of audio first (the session works, then
        dies at once)."""
        self._items = 0
        self._outbox: list[dict[str, Any]] = []
        self._sent_items: dict[str, int] = {}
        """Items sent, with the milliseconds of audio each."""
        self._item_response: dict[str, str] = {}
        self._active: str | None = None
        """The response in progress."""
        self._tool_responses = 0
        self._unanswered: dict[str, str] = {}
        """Function calls without their output yet, with their response."""
        self._answering: str | None = None
        """The response of the last function call answered: a ``response.create`` while a
        call of that response is unanswered is an error (the model would go on without it)."""
        self._calls: set[str] = set()
        """The function calls of the current connection's session (its own conversation: an
        output for a call it never made is refused)."""
        self._beta: set[web.WebSocketResponse] = set()
        """Connections that spoke the beta shape: closed with 4000 once told."""

    def app(self) -> web.Application:
        app = self.new_app()
        app.router.add_get(self.PATH, self.handler)
        return app

    def _error(
        self,
        ws: web.WebSocketResponse,
        message: str,
        event_id: Any = None,
        code: str = "invalid_value",
    ) -> None:
        self.errors.append(message)
        body = {
            "type": "invalid_request_error",
            "code": code,
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
        if not self._authorized(request):
            raise web.HTTPUnauthorized(text='{"error": {"code": "invalid_api_key"}}')
        ws = web.WebSocketResponse(max_msg_size=16 << 20)
        await ws.prepare(request)
        self.served(ws)
        self.connections += 1
        self.ws = ws
        self._transport = request.transport
        self.configured.clear()
        self._active = None
        self._calls = set()
        self._unanswered = {}
        self._tasks = [
            asyncio.ensure_future(self._greet(ws)),
            asyncio.ensure_future(self._expire(ws)),
        ]
        try:
            if self.REFUSES_BETA and "OpenAI-Beta" in request.headers:
                self._refuse_beta(ws, "the OpenAI-Beta header")
                await self._flush(ws)
            else:
                await self._serve(ws)
        finally:
            for task in self._tasks:
                task.cancel()
            self._configured_sockets.discard(ws)
            self._beta.discard(ws)
        return ws

    def _refuse_beta(self, ws: web.WebSocketResponse, what: str) -> None:
        """The beta shape (``what``): an error, then the socket closed with 4000
        (:meth:`_flush`)."""
        message = (
            "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."
        )
        self._error(ws, f"{what}: {message}", code="beta_api_shape_disabled")
        self._beta.add(ws)

    async def _flush(self, ws: web.WebSocketResponse) -> None:
        while self._outbox:
            await self._send(ws, self._outbox.pop(0))
        if ws in self._beta:
            await ws.close(code=4000, message=b"beta_api_shape_disabled")

    async def _expire(self, ws: web.WebSocketResponse) -> None:
        """A session reaching the cap is over (the service's close code is not public)."""
        await asyncio.sleep(self.SESSION_LIMIT_S)
        if not ws.closed:
            self.expired += 1
            await ws.close(code=1000, message=b"session expired")

    def _authorized(self, request: web.Request) -> bool:
        return (
            self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"
        )

    async def _greet(self, ws: web.WebSocketResponse) -> None:
        await self._send(
            ws,
            {
                "type": "session.created",
                "event_id": "event_1",
                "session": {"type": "realtime", "id": f"sess_{self.connections}"},
            },
        )

    async def _serve(self, ws: web.WebSocketResponse) -> None:
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
            await self._flush(ws)
            if self.drop_configured and ws in self._configured_sockets:
                if self.say_before_drop:
                    await self.say(np.zeros(self.RATE // 10, dtype=np.int16))
                await ws.close(code=1011, message=b"server error")

    async def _client_event(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        self.events.append(body)
        kind, event_id = body.get("type"), body.get("event_id")
        if self.REFUSES_BETA and kind == "transcription_session.update":
            self._refuse_beta(ws, kind)
            return
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
            self._truncate(ws, body)
        elif kind == "response.cancel":
            if set(body) - {"type", "event_id", "response_id"}:
                self._error(ws, "unknown fields in response.cancel")
            elif self._active is None:
                code = "response_cancel_not_active"
                self._error(ws, "Cancellation failed: no active response found", event_id, code)
            else:
                self.cancels.append(self._active)
                self.cancelled.append(time.monotonic())
                self._end_response("cancelled")
        elif kind == "response.create":
            left = [c for c, r in self._unanswered.items() if r == self._answering]
            if left:  # (a call of another response may wait: the app's slow tool)
                self.errors.append(f"response.create with {left} of {self._answering} unanswered")
            if self._active is not None:
                code = "conversation_already_has_active_response"
                message = "Conversation already has an active response in progress"
                self._error(ws, message, event_id, code)
            else:  # the model answers (here with nothing to say): created, then done
                self._tool_responses += 1
                self._active = f"resp_reply_{self._tool_responses}"
                self._outbox.append({"type": "response.created", "response": {"id": self._active}})
                self._end_response("completed")

    def _end_response(self, status: str) -> None:
        response, self._active = self._active, None
        self._outbox.append(
            {"type": "response.done", "response": {"id": response, "status": status}}
        )

    def _truncate(self, ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
        extra = set(body) - {"type", "event_id", "item_id", "content_index", "audio_end_ms"}
        end = body.get("audio_end_ms")
        if extra or body.get("item_id") not in self._sent_items:
            self._error(ws, f"bad truncate {body}", body.get("event_id"))
        elif not isinstance(end, int) or body.get("content_index") != 0:
            self._error(ws, "truncate needs content_index 0 and an integer audio_end_ms")
        elif end > self._sent_items[body["item_id"]]:
            self._error(ws, f"audio_end_ms {end} is past the item's audio")
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
            elif ws is not self.ws or item.get("call_id") not in self._calls:
                self._error(ws, f"no function call {item.get('call_id')!r} in this conversation")
            else:
                self._answering = self._unanswered.pop(str(item.get("call_id")), None)
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
        beta = sorted(BETA_FIELDS & set(session)) if self.REFUSES_BETA else []
        if beta:
            self._refuse_beta(ws, f"session {beta}")
            return
        refused = self._check_session(session)
        if refused:
            self._error(ws, refused)
            return
        self.sessions.append(session)
        self._outbox.append({"type": "session.updated", "session": session})
        self._configured_sockets.add(ws)
        if ws is self.ws:
            self.configured.set()

    def _check_session(self, session: dict[str, Any]) -> str | None:
        """Why the service refuses this session (``None``: it takes it)."""
        unknown = set(session) - SESSION_FIELDS
        audio = session.get("audio", {})
        unknown |= {f"audio.{k}" for k in set(audio) - {"input", "output"}}
        unknown |= {f"audio.input.{k}" for k in set(audio.get("input", {})) - AUDIO_INPUT_FIELDS}
        unknown |= {f"audio.output.{k}" for k in set(audio.get("output", {})) - AUDIO_OUTPUT_FIELDS}
        if unknown:
            return f"unknown session fields {sorted(unknown)}"
        for side in ("input", "output"):
            fmt = audio.get(side, {}).get("format")
            if fmt != PCM24:
                return f"audio.{side}.format must be 24 kHz audio/pcm here, got {fmt}"
        if session.get("type") != "realtime":
            return "session.type must be realtime"
        return None

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
        if ws not in self._configured_sockets:
            self._error(ws, "audio before the session was configured")
            return
        self.keep_caller_audio(raw)

    # -- the server's side, driven by the test
    async def say(
        self,
        pcm: np.ndarray,
        chunk_ms: int = 100,
        pace: float = 0.0,
        transcript: str = "a tone",
        done: bool = True,
        so_far: bool = False,
    ) -> str:
        """Stream ``pcm`` (int16 at :attr:`RATE`) as one response's audio; returns the item id.
        ``done=False``: the response stays in progress (the model still generating); with
        ``so_far``, the deltas of its ``transcript`` came too (its ``.done`` has not)."""
        (item,) = await self.say_items(
            [pcm], chunk_ms, pace, transcript=transcript, done=done, so_far=so_far
        )
        return item

    async def say_items(
        self,
        pcms: list[np.ndarray],
        chunk_ms: int = 100,
        pace: float = 0.0,
        *,
        transcript: str = "a tone",
        done: bool = True,
        so_far: bool = False,
    ) -> list[str]:
        """Several items of audio in one response, one after the other (a reasoning model's
        preamble, then its answer: ``response.output_audio.delta`` of several items, each with
        its own ``output_index``), each with its ``transcript``; their ids. ``done`` and
        ``so_far`` are :meth:`say`'s, for the last item."""
        ws = self.ws
        assert ws is not None
        self._items += 1
        response = f"resp_{self._items}"
        self._active = response
        await self._send(ws, {"type": "response.created", "response": {"id": response}})
        step = self.RATE * chunk_ms // 1000
        items = []
        for index, pcm in enumerate(pcms):
            item = f"item_{self._items}" + (f"_{index}" if index else "")
            items.append(item)
            self._sent_items[item] = 0
            self._item_response[item] = response
            for i in range(0, pcm.size, step):
                await self._delta(ws, item, pcm[i : i + step], index)
                if pace:
                    await asyncio.sleep(pace)
            where = {
                "response_id": response,
                "item_id": item,
                "output_index": index,
                "content_index": 0,
            }
            last = index == len(pcms) - 1
            if last and not done and not so_far:
                return items
            for i, word in enumerate(transcript.split(" ")):  # a word a delta
                delta = word if i == 0 else " " + word
                await self._send(ws, {"type": self.TRANSCRIPT_DELTA, **where, "delta": delta})
            if last and not done:
                return items
            await self._send(ws, {"type": self.AUDIO_DONE, **where})
            if self.TRANSCRIPT_DONE:
                body = {"type": self.TRANSCRIPT_DONE, **where, "transcript": transcript}
                await self._send(ws, body)
        if self._active == response:
            self._active = None
            await self._send(
                ws, {"type": "response.done", "response": {"id": response, "status": "completed"}}
            )
        return items

    async def _delta(
        self, ws: web.WebSocketResponse, item: str, pcm: np.ndarray, index: int = 0
    ) -> None:
        self._sent_items[item] += pcm.size * 1000 // self.RATE
        await self._send(
            ws,
            {
                "type": self.AUDIO_DELTA,
                "response_id": self._item_response[item],
                "item_id": item,
                "output_index": index,
                "content_index": 0,
                "delta": base64.b64encode(pcm.astype("<i2").tobytes()).decode(),
            },
        )

    async def late_delta(self, item: str, pcm: np.ndarray) -> None:
        """More audio of ``item`` (of its response), sent before the server saw the client's
        truncate or cancel."""
        assert self.ws is not None
        await self._delta(self.ws, item, pcm)

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        """The current session's turn detection (``None``: off)."""
        session = self.sessions[-1] if self.sessions else {}
        audio = session.get("audio", {})
        turns = audio.get("input", {}).get("turn_detection", {"type": "server_vad"})
        return turns if isinstance(turns, dict) else None

    async def speech_started(self, audio_start_ms: int = 0) -> None:
        """The caller heard by the server's VAD: with ``interrupt_response`` (on unless the
        session says ``false``) it ends the response in progress itself (``response.done``
        ``cancelled``), where the service does (:attr:`STOPS_ITSELF`)."""
        assert self.ws is not None
        await self._send(
            self.ws,
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": audio_start_ms,
                "item_id": "item_user",
            },
        )
        turns = self.turn_detection
        if (
            self.STOPS_ITSELF
            and turns is not None
            and turns.get("interrupt_response", True) is not False
            and self._active is not None
        ):
            self._end_response("cancelled")
            while self._outbox:
                await self._send(self.ws, self._outbox.pop(0))

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

    async def tool_call(
        self,
        name: str,
        arguments: dict[str, Any],
        call_id: str,
        *,
        as_text: bool = True,
        done: bool = True,
    ) -> str:
        """A function call, its ``arguments`` as JSON text as the protocol has them (or, not
        ``as_text``, as an object, as a server of the family might send them), inside a
        response of its own as the service makes it: ``response.created``, the call, then
        ``response.done`` (``done=False``: later, by :meth:`end_response`; meanwhile a
        ``response.create`` is refused). Returns the response's id."""
        return await self.tool_calls([(name, arguments, call_id)], as_text=as_text, done=done)

    async def tool_calls(
        self,
        calls: list[tuple[str, dict[str, Any], str]],
        *,
        as_text: bool = True,
        done: bool = True,
    ) -> str:
        """Several function calls (``name``, ``arguments``, ``call_id``) in one response, as a
        model with parallel tool calls makes them (:meth:`tool_call`)."""
        assert self.ws is not None
        self._tool_responses += 1
        response = f"resp_tool_{self._tool_responses}"
        self._active = response
        await self._send(self.ws, {"type": "response.created", "response": {"id": response}})
        for index, (name, arguments, call_id) in enumerate(calls):
            self._calls.add(call_id)
            self._unanswered[call_id] = response
            await self._send(
                self.ws,
                {
                    "type": "response.function_call_arguments.done",
                    "response_id": response,
                    "item_id": f"item_{response}_{index}",
                    "output_index": index,
                    "call_id": call_id,
                    "name": name,
                    "arguments": json.dumps(arguments) if as_text else arguments,
                },
            )
        if done:
            await self.end_response()
        return response

    async def end_response(self) -> None:
        """The response in progress is done (``response.done``, completed)."""
        assert self.ws is not None
        if self._active is not None:
            self._end_response("completed")
        while self._outbox:
            await self._send(self.ws, self._outbox.pop(0))

    async def drop(self) -> None:
        """Close the current connection as a failing server would."""
        if self.ws is not None:
            await self.ws.close(code=1011, message=b"server error")

    def stall(self, stalled: bool = True) -> None:
        """Stop reading the current connection (``False``: read it again)."""
        assert isinstance(self._transport, asyncio.ReadTransport)
        if stalled:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()


def small_receive_buffer(host: str, port: int, family: socket.AddressFamily) -> socket.socket:
    """A listening socket whose connections have a 4 KiB receive buffer (``aiohttp_server``'s
    ``socket_factory``): a server that stops reading backs its client up at once."""
    sock = get_port_socket(host, port, family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock
